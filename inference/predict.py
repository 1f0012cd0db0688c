"""Posterior prediction for new rows of known tasks and for tasks never seen in training.

`log_predictive` scores held-out rows of the training tasks: ``log p(y_n | training data)``, the
quantity that held-out comparisons (and predictive stacking) are made of.

`predict` reruns the model at each posterior draw on the new inputs. Sites fitted in training are
fixed at their posterior values; a site in the ``task`` plate that is larger than in training (the
new data has more tasks) keeps the posterior values of the known tasks and draws the new tasks'
values from the model's conditional prior given the posterior draw of the population parameters.
That is the posterior predictive of a new task, and it works for any model that names its task
plate ``"task"``.
"""

from __future__ import annotations

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from bayesmtl.data.taskdata import TaskData

__all__ = ["log_predictive", "predict"]


def predict(
    result,
    new_data: TaskData,
    *,
    seed: int = 0,
    num_draws: int | None = None,
    return_sites: tuple[str, ...] = ("y",),
) -> dict[str, np.ndarray]:
    """Posterior predictive draws at ``new_data``.

    Parameters
    ----------
    result : FitResult
        A fit of a model keeping the model contract.
    new_data : TaskData
        Rows to predict. Task indices ``< result.data.n_tasks`` are the training tasks; indices
        ``>= result.data.n_tasks`` are new tasks (set ``new_data.n_tasks`` accordingly). ``y``,
        if present, is ignored.
    seed : int
    num_draws : int, optional
        Use only the first ``num_draws`` posterior draws (default: all).
    return_sites : tuple of str
        Sites to return (default the observation ``"y"``; add e.g. ``"w"``).

    Returns
    -------
    dict
        Site name -> array ``(draws, ...)``.

    Examples
    --------
    >>> import jax
    >>> from bayesmtl.models.hierarchical import hierarchical, simulate
    >>> from bayesmtl.data import TaskData
    >>> from bayesmtl.inference.fit import fit
    >>> data, _ = simulate(jax.random.key(0), 4, 10, 1)
    >>> res = fit(hierarchical, data, num_chains=1, num_warmup=100, num_samples=100,
    ...           progress_bar=False)
    >>> new = TaskData.for_prediction([[0.5], [0.5]], task=[0, 4], n_tasks=5)  # task 4 is new
    >>> predict(res, new)["y"].shape
    (100, 2)
    """
    if not isinstance(new_data, TaskData):
        raise ValueError(f"new_data: expected a TaskData, got {type(new_data).__name__}")
    train = result.data
    if new_data.n_features != train.n_features:
        raise ValueError(
            f"new_data: {new_data.n_features} features, the model was fitted with "
            f"{train.n_features}"
        )
    if new_data.n_tasks < train.n_tasks:
        raise ValueError(
            f"new_data: n_tasks={new_data.n_tasks} is smaller than the {train.n_tasks} training "
            "tasks; keep the training task indices and append new tasks after them"
        )
    n_old = train.n_tasks
    flat = result.flat_samples()
    if num_draws is not None:
        if num_draws < 1:
            raise ValueError(f"num_draws: must be >= 1, got {num_draws}")
        flat = {k: v[:num_draws] for k, v in flat.items()}
    draws = {k: jnp.asarray(v) for k, v in flat.items()}
    n_draws = next(iter(draws.values())).shape[0]
    model, kwargs = result.model, result.model_kwargs
    x = new_data.without_y()

    def substitute_fn(draw):
        def fn(site):
            name = site["name"]
            if site["type"] != "sample" or name not in draw:
                return None
            val = draw[name]
            shape = site["fn"].shape()
            if tuple(shape) == tuple(val.shape):
                return val
            frames = [f for f in site["cond_indep_stack"] if f.name == "task"]
            if not frames:
                raise ValueError(
                    f"predict: site {name!r} changes shape with the new data but is not in a "
                    "'task' plate"
                )
            axis = len(shape) + frames[0].dim - len(site["fn"].event_shape)
            fresh = site["fn"].sample(site["kwargs"]["rng_key"])
            index = [slice(None)] * fresh.ndim
            index[axis] = slice(0, n_old)
            return fresh.at[tuple(index)].set(val)

        return fn

    def one(key, draw):
        seeded = numpyro.handlers.seed(model, key)
        sub = numpyro.handlers.substitute(seeded, substitute_fn=substitute_fn(draw))
        tr = numpyro.handlers.trace(sub).get_trace(x, **kwargs)
        missing = [s for s in return_sites if s not in tr]
        if missing:
            raise ValueError(f"return_sites: the model has no site(s) {missing}")
        return {s: tr[s]["value"] for s in return_sites}

    keys = jax.random.split(jax.random.key(seed), n_draws)
    out = jax.vmap(one)(keys, draws)
    return {k: np.asarray(v) for k, v in out.items()}


def log_predictive(result, new_data: TaskData, *, num_draws: int | None = None) -> np.ndarray:
    """Log pointwise predictive density of held-out rows of the training tasks.

    ``log p(y_n | training data) = log mean_s p(y_n | theta_s)`` over the posterior draws
    ``theta_s``, one value per row of ``new_data``: its sum is the held-out lppd.

    Parameters
    ----------
    result : FitResult or TreePosterior
        A fit (NUTS or SVI) of a model keeping the model contract (observed site ``"y"``,
        ``model(data, **model_kwargs)``), or anything with its own ``log_predictive(data)``
        method (`TreePosterior`).
    new_data : TaskData
        Rows to score, with ``y``; their tasks must be training tasks (a new task's density
        needs its weights integrated over the population, which `predict` draws).
    num_draws : int, optional
        Use only the first ``num_draws`` pooled draws (default: all).

    Returns
    -------
    numpy.ndarray, shape (new_data.n,)

    Examples
    --------
    >>> import jax
    >>> from bayesmtl.data import train_test_split
    >>> from bayesmtl.models.hierarchical import hierarchical, simulate
    >>> from bayesmtl.inference.fit import fit
    >>> data, _ = simulate(jax.random.key(0), 4, 12, 1)
    >>> train, test = train_test_split(data, test_fraction=0.25, seed=0)
    >>> res = fit(hierarchical, train, num_chains=1, num_warmup=100, num_samples=100,
    ...           progress_bar=False)
    >>> log_predictive(res, test).shape == (test.n,)
    True
    """
    if not isinstance(new_data, TaskData):
        raise ValueError(f"new_data: expected a TaskData, got {type(new_data).__name__}")
    if new_data.y is None:
        raise ValueError("new_data: has no y to score")
    if num_draws is not None and (
        isinstance(num_draws, bool) or not isinstance(num_draws, (int, np.integer)) or num_draws < 1
    ):
        raise ValueError(f"num_draws: must be an integer >= 1, got {num_draws!r}")
    own = getattr(result, "log_predictive", None)
    if own is not None:  # TreePosterior: weights (chain, draw, K, D)
        n_tasks, n_features = np.shape(result.samples["w"])[-2:]
        task_features = None
    else:
        train = result.data
        n_tasks, n_features, task_features = train.n_tasks, train.n_features, train.task_features
    if new_data.n_features != n_features:
        raise ValueError(
            f"new_data: {new_data.n_features} features, the model was fitted with {n_features}"
        )
    if new_data.task.max() >= n_tasks:
        raise ValueError(
            f"new_data: task {int(new_data.task.max())} is not one of the {n_tasks} training "
            "tasks (unknown task); log_predictive scores rows of known tasks"
        )
    if new_data.n_tasks != n_tasks:  # the plates keep their training sizes
        new_data = replace(new_data, n_tasks=n_tasks, task_names=None,
                           task_features=task_features, allow_empty_tasks=True)  # fmt: skip
    if own is not None:
        if num_draws is not None:
            raise ValueError(f"num_draws: not supported for a {type(result).__name__}")
        return np.asarray(own(new_data), dtype=float)
    draws = {k: jnp.asarray(v[:num_draws]) for k, v in result.flat_samples().items()}
    ll = numpyro.infer.log_likelihood(result.model, draws, new_data, **result.model_kwargs)
    if "y" not in ll:
        raise ValueError(f"result: the model has no observed site 'y' (has {sorted(ll)})")
    ll = np.asarray(ll["y"], dtype=float).reshape(-1, new_data.n)
    return np.logaddexp.reduce(ll, axis=0) - np.log(ll.shape[0])

"""Bayesian multitask linear models over task weights: pooled, independent and hierarchical.

These are the "no interconnection" baseline of Bakker & Heskes (2003) and the backbone of the
later families. Each row ``n`` of task ``k = task[n]`` has linear predictor
``eta_n = [1, x_n] . w_k`` (the leading 1 when ``intercept=True``) and

* ``likelihood="gaussian"``: ``y_n ~ N(eta_n, sigma)`` (``noise="shared"``) or
  ``N(eta_n, sigma_k)`` (``noise="task"``);
* ``likelihood="bernoulli"``: ``y_n ~ Bernoulli(sigmoid(eta_n))``.

The three priors on the task weights:

* `pooled`: one ``w`` shared by every task;
* `independent`: ``w_k ~ N(0, prior_scale^2 I)`` with no pooling;
* `hierarchical`: ``w_k ~ N(mu, Sigma)``, ``Sigma = diag(tau) L L' diag(tau)``,
  ``L ~ LKJCholesky(eta)``; non-centred (``w_k = mu + diag(tau) L z_k``) by default, centred with
  ``centered=True``.

Posterior variables carry the ArviZ dimensions ``task``, ``feature`` (with ``"intercept"`` first
when present) and ``obs``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from bayesmtl.data.taskdata import TaskData
from numpyro.infer import Predictive

__all__ = [
    "LIKELIHOODS",
    "MODELS",
    "NOISE",
    "coords",
    "hierarchical",
    "independent",
    "pooled",
    "simulate",
]

LIKELIHOODS = ("gaussian", "bernoulli")
NOISE = ("shared", "task")


def _check_options(likelihood: str, noise: str) -> None:
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood: expected one of {LIKELIHOODS}, got {likelihood!r}")
    if noise not in NOISE:
        raise ValueError(f"noise: expected one of {NOISE}, got {noise!r}")


def _positive(name: str, value: float) -> None:
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name}: must be a positive finite number, got {value!r}")


def _design(data: TaskData, intercept: bool) -> jnp.ndarray:
    X = jnp.asarray(data.X)
    if intercept:
        X = jnp.concatenate([jnp.ones((X.shape[0], 1), X.dtype), X], axis=1)
    return X


def coords(data: TaskData, *, intercept: bool = True, **_) -> dict[str, list]:
    """ArviZ coordinates of a model fitted to ``data`` (``feature`` includes ``"intercept"``)."""
    c = data.coords()
    if intercept:
        c["feature"] = ["intercept", *c["feature"]]
    c["feature_"] = list(c["feature"])
    return c


def _observe(eta, data: TaskData, y, likelihood: str, noise: str, sigma_scale: float) -> None:
    """The likelihood of ``y`` given linear predictors ``eta`` (one per row)."""
    y = data.y if y is None else y
    if likelihood == "bernoulli":
        if y is not None and not isinstance(y, jax.core.Tracer):
            data.with_y(y).check_binary()
        with numpyro.plate("obs", eta.shape[0]):
            numpyro.sample("y", dist.Bernoulli(logits=eta), obs=y)
        return
    if noise == "shared":
        sigma = numpyro.sample("sigma", dist.HalfNormal(sigma_scale))
        scale = sigma
    else:
        with numpyro.plate("task", data.n_tasks, dim=-1):
            sigma = numpyro.sample("sigma", dist.HalfNormal(sigma_scale))
        scale = sigma[jnp.asarray(data.task)]
    with numpyro.plate("obs", eta.shape[0]):
        numpyro.sample("y", dist.Normal(eta, scale), obs=y)


def pooled(
    data: TaskData,
    *,
    likelihood: str = "gaussian",
    noise: str = "shared",
    intercept: bool = True,
    prior_scale: float = 2.5,
    sigma_scale: float = 1.0,
    y=None,
) -> None:
    """Complete pooling: one weight vector ``w`` for every task.

    Examples
    --------
    >>> import jax
    >>> from numpyro.infer import Predictive
    >>> from bayesmtl.models.hierarchical import simulate
    >>> data, _ = simulate(jax.random.key(0), n_tasks=3, n_per_task=5, n_features=2)
    >>> Predictive(pooled, num_samples=2)(jax.random.key(1), data.without_y())["y"].shape
    (2, 15)
    """
    _check_options(likelihood, noise)
    _positive("prior_scale", prior_scale)
    X = _design(data, intercept)
    with numpyro.plate("feature", X.shape[1]):
        w = numpyro.sample("w", dist.Normal(0.0, prior_scale))
    _observe(X @ w, data, y, likelihood, noise, sigma_scale)


def independent(
    data: TaskData,
    *,
    likelihood: str = "gaussian",
    noise: str = "shared",
    intercept: bool = True,
    prior_scale: float = 2.5,
    sigma_scale: float = 1.0,
    y=None,
) -> None:
    """No pooling: ``w_k ~ N(0, prior_scale^2 I)`` independently for each task.

    Examples
    --------
    >>> import jax
    >>> from numpyro.infer import Predictive
    >>> from bayesmtl.models.hierarchical import simulate
    >>> data, _ = simulate(jax.random.key(0), n_tasks=3, n_per_task=5, n_features=2)
    >>> Predictive(independent, num_samples=2)(jax.random.key(1), data.without_y())["w"].shape
    (2, 3, 3)
    """
    _check_options(likelihood, noise)
    _positive("prior_scale", prior_scale)
    X = _design(data, intercept)
    with numpyro.plate("task", data.n_tasks, dim=-2), numpyro.plate("feature", X.shape[1], dim=-1):
        w = numpyro.sample("w", dist.Normal(0.0, prior_scale))
    eta = jnp.sum(X * w[jnp.asarray(data.task)], axis=-1)
    _observe(eta, data, y, likelihood, noise, sigma_scale)


def hierarchical(
    data: TaskData,
    *,
    likelihood: str = "gaussian",
    noise: str = "shared",
    intercept: bool = True,
    centered: bool = False,
    mu_scale: float = 2.5,
    tau_scale: float = 1.0,
    lkj_concentration: float = 2.0,
    sigma_scale: float = 1.0,
    y=None,
) -> None:
    """Partial pooling: ``w_k ~ N(mu, diag(tau) L L' diag(tau))`` with ``L ~ LKJCholesky``.

    Parameters
    ----------
    data : TaskData
    likelihood : {"gaussian", "bernoulli"}
    noise : {"shared", "task"}
        One noise scale, or one per task (Gaussian likelihood only).
    intercept : bool
        Prepend a column of ones to ``X`` (a task-specific intercept, pooled like the slopes).
    centered : bool
        Sample ``w`` directly (centred) instead of ``z ~ N(0, I)`` with ``w = mu + diag(tau) L z``.
        The non-centred default avoids the funnel when tasks have few rows.
    mu_scale, tau_scale, lkj_concentration, sigma_scale : float
        Prior scales: ``mu ~ N(0, mu_scale)``, ``tau ~ HalfNormal(tau_scale)``,
        ``L ~ LKJCholesky(lkj_concentration)``, ``sigma ~ HalfNormal(sigma_scale)``.
    y : array, optional
        Observations overriding ``data.y``.

    Examples
    --------
    >>> import jax
    >>> from bayesmtl.models.hierarchical import simulate
    >>> data, truth = simulate(jax.random.key(0), n_tasks=4, n_per_task=6, n_features=2)
    >>> sorted(k for k in truth if not k.startswith("_"))
    ['L', 'mu', 'sigma', 'tau', 'w', 'y', 'z']
    """
    _check_options(likelihood, noise)
    for name, v in [("mu_scale", mu_scale), ("tau_scale", tau_scale),
                    ("lkj_concentration", lkj_concentration), ("sigma_scale", sigma_scale)]:
        _positive(name, v)
    X = _design(data, intercept)
    p = X.shape[1]
    if p == 0:
        raise ValueError("data: no inputs and intercept=False; the model has no weights")
    with numpyro.plate("feature", p):
        mu = numpyro.sample("mu", dist.Normal(0.0, mu_scale))
        tau = numpyro.sample("tau", dist.HalfNormal(tau_scale))
    if p >= 2:
        L = numpyro.sample(
            "L",
            dist.LKJCholesky(p, lkj_concentration),
            infer={"event_dims": ["feature", "feature_"]},
        )
    else:  # one coefficient per task: no correlations to learn
        L = jnp.ones((1, 1))
    scale_tril = tau[..., :, None] * L
    with numpyro.plate("task", data.n_tasks, dim=-1):
        if centered:
            w = numpyro.sample(
                "w",
                dist.MultivariateNormal(mu, scale_tril=scale_tril),
                infer={"event_dims": ["feature"]},
            )
        else:
            z = numpyro.sample(
                "z", dist.Normal(0.0, 1.0).expand([p]).to_event(1), infer={"event_dims": ["feature"]}
            )
            w = mu + jnp.einsum("...ij,...tj->...ti", scale_tril, z)
    if not centered:
        numpyro.deterministic("w", w)
    eta = jnp.sum(X * w[jnp.asarray(data.task)], axis=-1)
    _observe(eta, data, y, likelihood, noise, sigma_scale)


MODELS: dict[str, Callable] = {
    "pooled": pooled,
    "independent": independent,
    "hierarchical": hierarchical,
}

for _m in MODELS.values():
    _m.coords = coords  # type: ignore[attr-defined]
# Deterministic sites whose dims ArviZ cannot infer from plates.
hierarchical.extra_dims = {"w": ["task", "feature"]}  # type: ignore[attr-defined]


def simulate(
    key: jax.Array,
    n_tasks: int,
    n_per_task: int | list[int],
    n_features: int,
    *,
    model: str | Callable = "hierarchical",
    x_scale: float = 1.0,
    **options,
) -> tuple[TaskData, dict[str, np.ndarray]]:
    """Simulate multi-task data from a model's prior predictive, or at given true values.

    Parameters
    ----------
    key : jax.Array
        PRNG key.
    n_tasks : int
        Number of tasks.
    n_per_task : int or list of int
        Rows per task (a list gives ragged tasks).
    n_features : int
        Inputs per row, drawn i.i.d. ``N(0, x_scale^2)``.
    model : str or callable
        ``"pooled"``, ``"independent"``, ``"hierarchical"`` or a model function.
    **options
        Model keyword arguments (``likelihood``, ``noise``, ``intercept``, ``centered``, prior
        scales) and true values of latent sites (``mu=...``, ``tau=...``, ``L=...``, ``sigma=...``,
        ``w=...``), which are fixed instead of drawn from the prior.

    Returns
    -------
    data : TaskData
        Inputs, task index and simulated ``y``.
    truth : dict
        The values of every latent site used to simulate (and ``y``).

    Examples
    --------
    >>> import jax, numpy as np
    >>> data, truth = simulate(jax.random.key(0), 5, 10, 3, mu=np.zeros(4), tau=np.ones(4))
    >>> data.n, truth["w"].shape
    (50, (5, 4))
    """
    if isinstance(model, str) and model not in MODELS:
        raise ValueError(f"model: unknown model {model!r}; choose from {sorted(MODELS)}")
    fn = MODELS[model] if isinstance(model, str) else model
    if n_tasks < 1:
        raise ValueError(f"n_tasks: must be >= 1, got {n_tasks}")
    if n_features < 0:
        raise ValueError(f"n_features: must be >= 0, got {n_features}")
    sizes = np.full(n_tasks, n_per_task) if np.ndim(n_per_task) == 0 else np.asarray(n_per_task)
    if sizes.shape != (n_tasks,) or (sizes < 1).any():
        raise ValueError(
            f"n_per_task: expected a positive int or {n_tasks} positive ints, got {n_per_task!r}"
        )
    import inspect

    params = inspect.signature(fn).parameters
    model_kwargs = {k: v for k, v in options.items() if k in params}
    truth_in = {k: jnp.asarray(v) for k, v in options.items() if k not in params}
    kx, ky = jax.random.split(key)
    task = np.repeat(np.arange(n_tasks), sizes)
    X = x_scale * np.asarray(jax.random.normal(kx, (int(sizes.sum()), n_features)))
    data = TaskData(X=X, task=task, n_tasks=n_tasks)
    conditioned = numpyro.handlers.condition(fn, data=truth_in) if truth_in else fn
    draws = Predictive(conditioned, num_samples=1, condition_deterministic=True)(
        ky, data, **model_kwargs
    )
    truth = {k: np.asarray(v[0]) for k, v in draws.items()}
    for k, v in truth_in.items():
        truth.setdefault(k, np.asarray(v))
    return data.with_y(truth["y"]), truth

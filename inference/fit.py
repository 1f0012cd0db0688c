"""`fit`: NUTS or SVI for any model that keeps the model contract, returning an ArviZ DataTree.

The DataTree holds ``posterior``, ``sample_stats``, ``log_likelihood``, ``observed_data`` and
``posterior_predictive`` with dimensions named after the model's plates (``task``, ``feature``,
``obs``, ...). NUTS and SVI results have the same form (SVI draws as one chain), so diagnostics,
comparison and prediction treat them alike.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from arviz_base import from_dict
from arviz_base.io_numpyro import infer_dims
from bayesmtl.data.multioutput import MultiOutputData
from bayesmtl.data.taskdata import TaskData
from bayesmtl.inference.runtime import quiet
from bayesmtl.inference.svi import SVIFit, run_svi
from numpyro.distributions import constraints
from numpyro.infer import MCMC, NUTS, Predictive, init_to_uniform, log_likelihood

__all__ = ["METHODS", "FitResult", "fit", "sample_nuts", "to_datatree"]

METHODS = ("nuts", "svi")


@dataclass
class FitResult:
    """What `fit` returns.

    Attributes
    ----------
    idata : xarray.DataTree
        ArviZ DataTree (posterior, sample_stats, log_likelihood, observed_data,
        posterior_predictive).
    samples : dict
        Posterior draws grouped by chain, ``(chain, draw, ...)``, as NumPy arrays.
    model, data, model_kwargs, method
        What was fitted and how.
    runtime_s : float
        Wall-clock seconds of the inference (compilation included).
    svi : SVIFit, optional
        The SVI state (guide, parameters, ELBO trace) when ``method="svi"``.
    """

    idata: Any
    samples: dict[str, np.ndarray]
    model: Callable
    data: TaskData
    model_kwargs: dict[str, Any]
    method: str
    runtime_s: float
    num_chains: int
    svi: SVIFit | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def flat_samples(self) -> dict[str, np.ndarray]:
        """Draws with chain and draw merged: ``(chain * draw, ...)``."""
        return {k: v.reshape((-1,) + v.shape[2:]) for k, v in self.samples.items()}

    def diagnose(self, **kwargs):
        """Shortcut for `bayesmtl.inference.diagnose(self, **kwargs)`."""
        from bayesmtl.inference.diagnostics import diagnose

        return diagnose(self, **kwargs)


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _observed_sites(model, data, kwargs) -> list[str]:
    tr = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace(data, **kwargs)
    return [k for k, s in tr.items() if s["type"] == "sample" and s["is_observed"]]


def to_datatree(
    model: Callable,
    data: TaskData,
    model_kwargs: dict,
    samples: dict[str, np.ndarray],
    *,
    key: jax.Array,
    sample_stats: dict | None = None,
    posterior_predictive: bool = True,
    coords: dict | None = None,
    attrs: dict | None = None,
):
    """Build the ArviZ DataTree for draws ``samples`` grouped ``(chain, draw, ...)``.

    Dimensions come from the model's plates (`arviz_base`'s ``infer_dims``), completed by the
    model's ``extra_dims`` attribute for deterministic sites; coordinates from the model's
    ``coords(data, **kwargs)`` if it has one, else from ``data.coords()``.
    """
    dims = infer_dims(model, (data,), model_kwargs)
    dims.update({k: v for k, v in getattr(model, "extra_dims", {}).items() if k in samples})
    if coords is None:
        cfn = getattr(model, "coords", None)
        coords = cfn(data, **model_kwargs) if cfn else data.coords()
    jsamples = {k: jnp.asarray(v) for k, v in samples.items()}
    groups: dict[str, dict] = {"posterior": samples}
    if sample_stats:
        groups["sample_stats"] = sample_stats
    if data.y is not None:
        obs_names = _observed_sites(model, data, model_kwargs)
        ll = log_likelihood(model, jsamples, data, batch_ndims=2, **model_kwargs)
        groups["log_likelihood"] = {k: np.asarray(v) for k, v in ll.items() if k in obs_names}
        groups["observed_data"] = {"y": np.asarray(data.y)}
        if posterior_predictive:
            pred = Predictive(model, posterior_samples=jsamples, batch_ndims=2,
                              return_sites=obs_names)
            pp = pred(key, data.without_y(), **model_kwargs)
            groups["posterior_predictive"] = {k: np.asarray(v) for k, v in pp.items()}
    # Keep only dims/coords that are used, and drop dims of sites that are absent.
    used = {d for v in dims.values() for d in v}
    coords = {k: v for k, v in coords.items() if k in used}
    return from_dict(groups, coords=coords, dims=dims, attrs=attrs or {})


def _with_deterministic(model, data, kwargs, draws: dict, key) -> dict:
    """Add the model's deterministic sites, computed at each draw of the latents."""
    tr = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace(data, **kwargs)
    det = [k for k, s in tr.items() if s["type"] == "deterministic"]
    if not det:
        return dict(draws)
    pred = Predictive(model, posterior_samples={k: jnp.asarray(v) for k, v in draws.items()},
                      return_sites=det)
    out = dict(draws)
    out.update({k: np.asarray(v) for k, v in pred(key, data, **kwargs).items()})
    return out


def start_strategy(site=None, values=None):
    """Where NUTS starts: uniform within radius 1 in unconstrained space, correlation factors nearer.

    NumPyro's default, uniform(-2, 2) in unconstrained space, puts an LKJ Cholesky factor's partial
    correlations up to tanh(2) = 0.96; their product of ``sqrt(1 - r^2)`` factors makes the last
    diagonal entries of a ``d``-dimensional factor shrink like ``0.27^d``, so beyond ~20 dimensions the
    starting covariance is numerically singular (potential ~1e11, every NUTS step diverges, the chain
    never leaves its start). Here the other sites start within radius 1 and correlation sites
    (``corr_cholesky`` / ``corr_matrix`` supports) within ``1/sqrt(d)``, where the product stays near
    ``exp(-1/2)`` for every ``d`` while chains still start apart. ``values`` (a dict site -> constrained
    value) pins sites, as `numpyro.infer.init_to_value` does.
    """
    if site is None:
        return functools.partial(start_strategy, values=values)
    if site["type"] == "sample" and not site["is_observed"]:
        if values and site["name"] in values:
            return values[site["name"]]
        support = site["fn"].support
        if isinstance(support, (type(constraints.corr_cholesky), type(constraints.corr_matrix))):
            d = site["fn"].event_shape[-1]
            return init_to_uniform(site, radius=min(1.0, 1.0 / float(np.sqrt(d))))
    return init_to_uniform(site, radius=1.0)


@functools.lru_cache(maxsize=32)
def _mcmc(model, kwargs_items, num_chains, num_warmup, num_samples, target_accept,
          max_tree_depth, chain_method, progress_bar, dense_mass, init_strategy=None):
    kernel = NUTS(
        functools.partial(model, **dict(kwargs_items)) if kwargs_items else model,
        target_accept_prob=target_accept,
        max_tree_depth=max_tree_depth,
        dense_mass=dense_mass,
        init_strategy=init_strategy or start_strategy,
    )
    return MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=progress_bar,
        jit_model_args=True,
    )


def _freeze(kwargs: dict):
    try:
        items = tuple(sorted(kwargs.items()))
        hash(items)
        return items
    except TypeError:
        return None


def sample_nuts(
    model: Callable,
    data: TaskData,
    model_kwargs: dict,
    *,
    key: jax.Array,
    num_chains: int,
    num_warmup: int,
    num_samples: int,
    target_accept: float = 0.8,
    max_tree_depth: int = 10,
    dense_mass: bool = False,
    chain_method: str | None = None,
    progress_bar: bool = False,
    init_values: dict | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """NUTS draws ``(chain, draw, ...)`` and sampler statistics, with no DataTree.

    The compiled kernel is cached per (model, options, sizes) and reused for new data of the same
    shapes (``jit_model_args=True``), which is what makes SBC and refits cheap.
    """
    if chain_method is None:
        chain_method = "parallel" if jax.local_device_count() >= num_chains else "sequential"
    frozen = _freeze(model_kwargs)
    args = (num_chains, num_warmup, num_samples, float(target_accept), int(max_tree_depth),
            chain_method, bool(progress_bar), bool(dense_mass))
    if init_values is not None:
        sites = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace(
            data, **model_kwargs)
        latent = {k for k, v in sites.items() if v["type"] == "sample" and not v["is_observed"]}
        unknown = sorted(set(init_values) - latent)
        if unknown:
            raise ValueError(f"init_values: {unknown} are not latent sites of the model "
                             f"(latent sites: {sorted(latent)})")
        values = {k: jnp.asarray(v) for k, v in init_values.items()}
        mcmc = _mcmc.__wrapped__(model, tuple(model_kwargs.items()), *args,
                                 init_strategy=start_strategy(values=values))
    elif frozen is not None:
        mcmc = _mcmc(model, frozen, *args)
    else:
        mcmc = _mcmc.__wrapped__(model, tuple(model_kwargs.items()), *args)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="There are not enough devices")
        mcmc.run(key, data, extra_fields=("diverging", "energy", "num_steps", "accept_prob"))
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    extra = mcmc.get_extra_fields(group_by_chain=True)
    stats = {
        "diverging": np.asarray(extra["diverging"]),
        "energy": np.asarray(extra["energy"]),
        "n_steps": np.asarray(extra["num_steps"]),
        "acceptance_rate": np.asarray(extra["accept_prob"]),
    }
    return samples, stats


def fit(
    model: Callable,
    data: TaskData,
    *,
    method: str = "nuts",
    num_chains: int = 4,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    seed: int = 0,
    model_kwargs: dict | None = None,
    target_accept: float = 0.8,
    max_tree_depth: int = 10,
    dense_mass: bool = False,
    chain_method: str | None = None,
    progress_bar: bool | None = None,
    posterior_predictive: bool = True,
    guide: str = "normal",
    svi_steps: int = 20000,
    learning_rate: float = 0.01,
    elbo_rtol: float = 1e-4,
    rank: int | None = None,
    init_values: dict | None = None,
) -> FitResult:
    """Fit ``model`` to ``data`` by NUTS or SVI.

    Parameters
    ----------
    model : callable
        A NumPyro model ``model(data, **model_kwargs)`` keeping the model contract.
    data : TaskData
        Observations (``data.y`` must be set).
    method : {"nuts", "svi"}
    num_chains, num_warmup, num_samples : int
        NUTS chains, warm-up and kept draws per chain. For SVI, ``num_samples * num_chains``
        draws are taken from the fitted guide (stored as one chain).
    seed : int
        Seed of the PRNG key.
    model_kwargs : dict, optional
        Keyword arguments of the model (likelihood, priors, ...).
    target_accept, max_tree_depth, dense_mass : NUTS settings.
    chain_method : {"parallel", "sequential", "vectorized"}, optional
        Defaults to ``"parallel"`` when there are as many JAX devices as chains, else
        ``"sequential"``.
    progress_bar : bool, optional
        Defaults to on, off when the ``CI`` environment variable is set.
    posterior_predictive : bool
        Store posterior-predictive draws of the observed sites.
    guide : {"normal", "mvn", "lowrank"}
        SVI guide: AutoNormal, AutoMultivariateNormal or AutoLowRankMultivariateNormal.
    svi_steps, learning_rate, elbo_rtol, rank : SVI settings (see `run_svi`).
    init_values : dict, optional
        NUTS starting values of latent sites (constrained space), e.g. from a paper's point
        estimate (`bayesmtl.inference.empirical_bayes.nuts_init_values`). Sites not given start as
        `start_strategy` says (uniformly within radius 1 in unconstrained space; correlation
        factors within ``1/sqrt(d)``). All chains start at the given values,
        so R-hat is then less able to reveal multimodality.

    Returns
    -------
    FitResult

    Examples
    --------
    >>> import jax
    >>> from bayesmtl.models.hierarchical import hierarchical, simulate
    >>> data, _ = simulate(jax.random.key(0), n_tasks=4, n_per_task=10, n_features=1)
    >>> res = fit(hierarchical, data, num_chains=1, num_warmup=50, num_samples=50,
    ...           progress_bar=False)
    >>> res.idata.posterior["w"].dims
    ('chain', 'draw', 'task', 'feature')
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if not isinstance(data, (TaskData, MultiOutputData)):
        raise ValueError(f"data: expected a TaskData or MultiOutputData, got {type(data).__name__}")
    if data.y is None:
        raise ValueError("data: y is missing; fit needs observations (use simulate for draws)")
    num_chains = _check_positive_int("num_chains", num_chains)
    num_warmup = _check_positive_int("num_warmup", num_warmup, 0)
    num_samples = _check_positive_int("num_samples", num_samples)
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept: must be in (0, 1), got {target_accept!r}")
    kwargs = dict(model_kwargs or {})
    if progress_bar is None:
        progress_bar = not quiet()
    # Validate the model options eagerly (a clear error before any compilation).
    _observed_sites(model, data, kwargs)
    key = jax.random.key(seed)
    k_run, k_pp = jax.random.split(key)
    t0 = time.perf_counter()
    svi_fit = None
    if method == "nuts":
        samples, stats = sample_nuts(
            model, data, kwargs, key=k_run, num_chains=num_chains, num_warmup=num_warmup,
            num_samples=num_samples, target_accept=target_accept, max_tree_depth=max_tree_depth,
            dense_mass=dense_mass, chain_method=chain_method, progress_bar=progress_bar,
            init_values=init_values,
        )
    else:
        svi_fit = run_svi(
            model, data, key=k_run, model_kwargs=kwargs, guide=guide, max_steps=svi_steps,
            learning_rate=learning_rate, rtol=elbo_rtol, num_draws=num_samples * num_chains,
            rank=rank, progress_bar=progress_bar,
        )
        samples = _with_deterministic(model, data, kwargs, svi_fit.draws, k_pp)
        samples = {k: v[None] for k, v in samples.items()}
        stats = None
    runtime = time.perf_counter() - t0
    samples = {k: v for k, v in samples.items() if not k.startswith("_")}
    idata = to_datatree(
        model, data, kwargs, samples, key=k_pp, sample_stats=stats,
        posterior_predictive=posterior_predictive,
        attrs={"posterior": {"inference": method, "runtime_s": runtime,
                             "model": getattr(model, "__name__", "")}},
    )
    return FitResult(
        idata=idata, samples=samples, model=model, data=data, model_kwargs=kwargs,
        method=method, runtime_s=runtime, num_chains=num_chains if method == "nuts" else 1,
        svi=svi_fit,
    )

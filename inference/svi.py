"""Stochastic variational inference with an ELBO stopping rule and importance-weight diagnostics.

`run_svi` optimises an autoguide with optax's Adam in jitted chunks of steps (``lax.scan``) and
stops when the mean ELBO of a chunk changes by less than ``rtol`` (relative) from the previous
chunk. Posterior draws come from the fitted guide; the Pareto-k of the importance weights
``log p(theta, y) - log q(theta)`` (PSIS, Yao et al. 2018) says whether the guide is trustworthy
(k < 0.7).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import (
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)
from tqdm.auto import tqdm

__all__ = ["GUIDES", "SVIFit", "importance_log_weights", "run_svi"]

GUIDES = {
    "normal": AutoNormal,
    "mvn": AutoMultivariateNormal,
    "lowrank": AutoLowRankMultivariateNormal,
}


@dataclass
class SVIFit:
    """A fitted guide.

    Attributes
    ----------
    guide : numpyro autoguide
    params : dict
        Variational parameters.
    elbo : np.ndarray
        ELBO per step (the negative loss).
    converged : bool
        Whether the stopping rule fired before ``max_steps``.
    draws : dict
        Posterior draws of the latent sites from the guide, ``(num_draws, ...)``.
    log_weights : np.ndarray
        Importance log weights ``log p(theta, y) - log q(theta)`` of the draws.
    pareto_k : float
        Pareto-k of the importance weights (< 0.7: the guide is usable for expectations).
    """

    guide: Any
    params: dict
    elbo: np.ndarray
    converged: bool
    draws: dict[str, np.ndarray]
    log_weights: np.ndarray
    pareto_k: float


def importance_log_weights(model: Callable, guide, params, data, model_kwargs, key, num: int):
    """Draw ``num`` latents from the guide and return ``(draws, log p - log q)``.

    Both densities are taken over the same (constrained) latent values; the guide's trace includes
    its auxiliary sites and the Jacobian terms, so the difference is a valid importance weight.
    """
    from numpyro.infer.util import log_density

    def one(k):
        seeded = numpyro.handlers.seed(numpyro.handlers.substitute(guide, data=params), k)
        tr = numpyro.handlers.trace(seeded).get_trace(data, **model_kwargs)
        log_q = 0.0
        latents = {}
        for name, site in tr.items():
            if site["type"] != "sample":
                continue
            log_q = log_q + jnp.sum(site["fn"].log_prob(site["value"]))
            if not site["infer"].get("is_auxiliary", False):
                latents[name] = site["value"]
        log_p, _ = log_density(model, (data,), model_kwargs, latents)
        return latents, log_p - log_q

    latents, lw = jax.vmap(one)(jax.random.split(key, num))
    return {k: np.asarray(v) for k, v in latents.items()}, np.asarray(lw)


def run_svi(
    model: Callable,
    data,
    *,
    key: jax.Array,
    model_kwargs: dict | None = None,
    guide: str = "normal",
    max_steps: int = 20000,
    chunk: int = 500,
    learning_rate: float = 0.01,
    rtol: float = 1e-4,
    num_draws: int = 1000,
    rank: int | None = None,
    progress_bar: bool = False,
) -> SVIFit:
    """Fit an autoguide to ``model`` by SVI with Adam, stopping on a flat ELBO.

    Parameters
    ----------
    model : callable
    data : TaskData
    key : jax.Array
    model_kwargs : dict, optional
    guide : {"normal", "mvn", "lowrank"}
    max_steps : int
        Upper bound on optimisation steps.
    chunk : int
        Steps per jitted chunk; the stopping rule compares successive chunk means.
    learning_rate : float
        Adam step size.
    rtol : float
        Stop when ``|mean(chunk) - mean(previous)| <= rtol * |mean(chunk)|``.
    num_draws : int
        Draws from the fitted guide.
    rank : int, optional
        Rank of the low-rank guide.
    progress_bar : bool

    Examples
    --------
    >>> import jax
    >>> from bayesmtl.models.hierarchical import pooled, simulate
    >>> data, _ = simulate(jax.random.key(0), 3, 20, 1, model="pooled")
    >>> fit = run_svi(pooled, data, key=jax.random.key(1), max_steps=2000, num_draws=100)
    >>> fit.draws["w"].shape
    (100, 2)
    """
    if guide not in GUIDES:
        raise ValueError(f"guide: expected one of {sorted(GUIDES)}, got {guide!r}")
    for name, v in [("max_steps", max_steps), ("chunk", chunk), ("num_draws", num_draws)]:
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}: expected a positive integer, got {v!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate: must be positive, got {learning_rate!r}")
    kwargs = dict(model_kwargs or {})
    gkw = {"rank": rank} if guide == "lowrank" and rank is not None else {}
    g = GUIDES[guide](model, **gkw)
    svi = SVI(model, g, optax.adam(learning_rate), Trace_ELBO())
    k_init, k_draw, k_w = jax.random.split(key, 3)
    state = svi.init(k_init, data, **kwargs)

    @jax.jit
    def run_chunk(state, data):
        def body(s, _):
            s, loss = svi.update(s, data, **kwargs)
            return s, loss

        return jax.lax.scan(body, state, None, length=chunk)

    losses: list[np.ndarray] = []
    converged = False
    prev = None
    n_chunks = max(1, -(-max_steps // chunk))
    bar = tqdm(total=n_chunks * chunk, desc="SVI", disable=not progress_bar, leave=False)
    for _ in range(n_chunks):
        state, loss = run_chunk(state, data)
        loss = np.asarray(loss)
        losses.append(loss)
        bar.update(chunk)
        cur = float(np.mean(loss))
        if not np.isfinite(cur):
            bar.close()
            raise FloatingPointError(
                "SVI: the ELBO became non-finite; lower learning_rate or check the data scale"
            )
        bar.set_postfix(elbo=f"{-cur:.4g}")
        if prev is not None and abs(cur - prev) <= rtol * abs(cur):
            converged = True
            break
        prev = cur
    bar.close()
    params = svi.get_params(state)
    draws, lw = importance_log_weights(model, g, params, data, kwargs, k_w, num_draws)
    from arviz_stats.base import array_stats

    _, khat = array_stats.psislw(lw, r_eff=1.0)
    return SVIFit(
        guide=g,
        params=params,
        elbo=-np.concatenate(losses),
        converged=converged,
        draws=draws,
        log_weights=lw,
        pareto_k=float(khat),
    )

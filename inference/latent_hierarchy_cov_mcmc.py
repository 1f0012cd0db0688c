"""The full posterior of Daume's covariance-sharing latent hierarchy: trees and continuous parameters.

Model (`bayesmtl.models.latent_hierarchy.covariance_sharing`): ``R = corr(Sigma_R)``,
``Sigma_R ~ IW(I, D+1)``, ``Lambda ~ IW(s2 I, D+1)``, tree ``~ Kingman``, leaf log standard deviations
``S ~ Brownian(tree, Lambda)`` from a root ``N(0, root_var Lambda)``,
``w_k ~ N(0, diag(exp S_k) R diag(exp S_k))``, ``y`` Gaussian or Bernoulli.

Each sweep (Metropolis-within-Gibbs, every step exact for its conditional):

1. ``S, Sigma_R, noise | tree, Lambda, y`` (Bernoulli: ``S, Sigma_R, w_z``): one transition of a
   NumPyro NUTS kernel on `bayesmtl.inference.latent_hierarchy_cov_target.target_model`
   (``covariance_sharing(centered=True)`` with ``Lambda`` conditioned and, for the Gaussian
   likelihood, the weights integrated out exactly). The kernel is initialised once per chain with
   ``num_warmup`` (step size and diagonal mass matrix adapt during warmup only) and then driven one
   ``kernel.sample`` at a time with the current tree and ``Lambda`` passed as model arguments, in a
   single jitted function (compiled once per call, shared by the chains; tree arrays are arguments).
   The stored potential energy and its gradient are recomputed under the new tree first, so every
   transition is exact for the current conditional.
2. ``Lambda | S, tree ~ IW(s2 I + Q, D+1+K)`` (conjugate; ``Q`` the message scatter of ``S``).
   Keeping ``Lambda`` out of NUTS removes the funnel between the log-scales and their diffusion
   covariance from the gradient sampler.
3. ``tree | S, Lambda``: ``tree_steps`` steps of `bayesmtl.inference.tree_mcmc.tree_mh_step` (node
   times, narrow exchange, prune-and-regraft, root time) with the Brownian likelihood of ``S`` (internal nodes
   marginalised by messages).
4. a joint scale move on ``(times, Lambda) | S``: ``times -> c times``, ``Lambda -> Lambda / c``,
   ``log c ~ U(-0.5, 0.5)``, Jacobian ``c^(K-1-D(D+1)/2)``.

For the Gaussian likelihood the stored weights ``w`` are exact draws of ``W | S, R, noise, y``.
Chains start from independent Kingman trees; `TreePosterior` gives clade probabilities, the ASDSF,
ArviZ R-hat (``log_scale``, ``R``, ``Lambda``, ``noise``, ``w``, ``tree_height``), the MCC tree and
the posterior similarity.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from bayesmtl.data import TaskData
from bayesmtl.inference.latent_hierarchy_cov_target import (
    lambda_scatter,
    target_model,
    task_statistics,
    weights_posterior,
    z_from_s,
)
from bayesmtl.inference.tree_draws import TreePosterior
from bayesmtl.inference.tree_gibbs import (
    _brown,
    _iw_log_prob,
    _kingman_draw,
    _kingman_log_prob,
    _scale_mh,
    _sweeps,
    _tree_moves,
)
from bayesmtl.inference.tree_posterior import _check
from bayesmtl.models.coalescent import Tree
from numpyro.infer import NUTS, init_to_uniform
from scipy import stats

__all__ = ["covariance_tree_posterior"]


@jax.jit
def _scatter(s, merges, times, root_var):
    return lambda_scatter(s, Tree(merges, times), root_var)


def _draw_lambda(rng, tree, s, s2, root_var):
    """Exact draw of ``Lambda | S, tree``."""
    k, d = s.shape
    q = np.asarray(_scatter(jnp.asarray(s), tree.merges, tree.times, root_var))
    lam = stats.invwishart.rvs(d + 1 + k, s2 * np.eye(d) + q, random_state=rng)
    return np.atleast_2d(lam)


def _whiten(s, lam):
    return jnp.asarray(np.linalg.solve(np.linalg.cholesky(lam), s.T).T)


def _log_target(tree, s, lam, s2, root_var):
    """Kingman + Brownian(S | tree, Lambda) + IW(Lambda; s2 I, D+1), up to constants."""
    k = s.shape[0]
    brown = float(_brown(tree.merges, jnp.asarray(tree.times), _whiten(s, lam), root_var))
    logdet = np.linalg.slogdet(lam)[1]
    return _kingman_log_prob(tree.times, k) + brown - 0.5 * k * logdet + _iw_log_prob(lam, s2)


def _scale_move(rng, tree, s, lam, s2, root_var, acc):
    """``(times, Lambda) -> (c times, Lambda / c)`` given ``S`` (`_scale_mh`)."""

    def target(times, lam):
        return _log_target(Tree(tree.merges, times), s, lam, s2, root_var)

    state = (np.asarray(tree.times, float), np.asarray(lam, float))
    times, lam = _scale_mh(rng, target, state, [("scale", (1, -1))], acc)
    return Tree(tree.merges, times), lam


def _make_step(kernel, data, static_kw, stats, gaussian, counter):
    """The jitted NUTS transition given (tree, Lambda), plus the constrained values and weights."""
    xtx, xty = (jnp.asarray(a) for a in stats[:2])

    def step(state, merges, times, lam, s, key):
        counter[0] += 1  # runs at trace time only: counts compilations
        tree = Tree(merges, times)
        kw = {**static_kw, "tree": tree, "lam": lam}
        z = dict(state.z)
        if not static_kw["centered"]:  # the same S in the coordinates of the new tree and Lambda
            z["log_scale_z"] = z_from_s(s, tree, lam, static_kw["root_var"])
        pe, grad = jax.value_and_grad(kernel.get_potential_fn((data,), kw))(z)
        state = kernel.sample(state._replace(z=z, potential_energy=pe, z_grad=grad), (data,), kw)
        val = kernel.postprocess_fn((data,), kw)(state.z)
        out = {"log_scale": val["log_scale"], "R": val["R"]}
        if "noise" in val:
            out["noise"] = val["noise"]
        if gaussian:
            noise = val.get("noise", static_kw["noise_scale"])
            z = jax.random.normal(key, xty.shape, xty.dtype)
            out["w"] = weights_posterior(val["log_scale"], val["R"], noise, xtx, xty, z)
        else:
            out["w"] = val["w"]
        return state, out

    return jax.jit(step)


def covariance_tree_posterior(
    data: TaskData,
    *,
    likelihood: str = "gaussian",
    num_chains: int = 4,
    num_warmup: int = 500,
    num_samples: int = 1000,
    seed: int = 0,
    s2: float = 1.0,
    root_var: float = 1.0,
    noise_scale: float | None = None,
    tree_steps: int | None = None,
    thin: int = 1,
    init: str = "random",
    target_accept: float = 0.8,
    max_tree_depth: int = 8,
    centered: bool = False,
    progress_bar: bool | None = None,
) -> TreePosterior:
    """Sample the joint posterior over trees and parameters of the covariance-sharing hierarchy.

    Parameters
    ----------
    data : TaskData
        At least 3 tasks; ``y`` may be ``None`` (then the sampler draws from the prior).
    likelihood : {"gaussian", "bernoulli"}
    num_chains, num_warmup, num_samples : int
        Chains (run one after another), warmup sweeps (NUTS adapts during these) and kept sweeps.
    seed : int
    s2, root_var : float
        ``Lambda ~ IW(s2 I, D+1)``; variance factor of the root of the log-scales.
    noise_scale : float, optional
        Fixed Gaussian noise sd; sampled under ``HalfNormal(1)`` when omitted.
    tree_steps : int, optional
        Tree Metropolis-Hastings steps per sweep (each tries all three moves); ``max(3, K // 2)``.
    thin : int
        Keep every ``thin``-th sweep.
    init : {"random", "greedy"}
        Starting trees: independent Kingman draws (the honest default for the ASDSF) or the greedy
        coalescent on the log sizes of per-task ridge estimates.
    target_accept : float
        NUTS target acceptance probability.
    max_tree_depth : int
        NUTS maximum tree depth.
    centered : bool
        NUTS in the centred log-scale coordinates instead of the model's non-centred ones.
    progress_bar : bool, optional
        A progress bar per chain; by default shown unless the ``CI`` environment variable is set.

    Returns
    -------
    TreePosterior
        ``samples``: ``log_scale (chain, draw, K, D)``, ``R``, ``Lambda``, ``w``, ``noise`` (when
        sampled), ``tree_height``; ``accept`` adds ``nuts`` (mean acceptance probability after
        warmup); ``extra`` holds ``divergences`` and ``n_compilations``.

    Examples
    --------
    >>> import jax
    >>> from bayesmtl.models.latent_hierarchy import simulate
    >>> data, _ = simulate(jax.random.PRNGKey(0), 4, 20, 2, model="covariance")
    >>> post = covariance_tree_posterior(data, num_chains=2, num_warmup=20, num_samples=20)
    >>> post.samples["log_scale"].shape, post.extra["n_compilations"]
    ((2, 20, 4, 2), 1)
    """
    steps = _check(data, likelihood, noise_scale, s2, root_var, init, num_chains=num_chains,
                   num_warmup=num_warmup, num_samples=num_samples, seed=seed, thin=thin,
                   tree_steps=tree_steps, max_tree_depth=(max_tree_depth, 1))  # fmt: skip
    if not (np.ndim(target_accept) == 0 and 0 < target_accept < 1):
        raise ValueError(f"target_accept: expected a number in (0, 1), got {target_accept!r}")
    cfg = {"s2": float(s2), "root_var": float(root_var), "steps": steps, "init": init,
           "progress_bar": progress_bar}
    t0 = time.perf_counter()
    seqs = np.random.SeedSequence(seed).spawn(num_chains)
    counter = [0]
    with jax.enable_x64(True):
        gaussian = likelihood == "gaussian" or data.y is None
        stats_ = task_statistics(data)
        static_kw = {
            "likelihood": likelihood, "s2": cfg["s2"], "root_var": cfg["root_var"],
            "noise_scale": None if noise_scale is None else float(noise_scale),
            "centered": bool(centered),
            "stats": tuple(jnp.asarray(a) for a in stats_) if gaussian and data.y is not None
            else None,
        }  # fmt: skip
        kernel = NUTS(
            target_model,
            target_accept_prob=target_accept,
            max_tree_depth=max_tree_depth,
            init_strategy=init_to_uniform(radius=1.0),
        )
        step = _make_step(kernel, data, static_kw, stats_, gaussian, counter)
        chains = [
            _run_chain(np.random.default_rng(seqs[c]), data, kernel, step, static_kw, stats_,
                       {**cfg, "chain": c}, num_warmup, num_samples, thin)
            for c in range(num_chains)
        ]  # fmt: skip
    return TreePosterior.from_chains(
        chains, data, likelihood=likelihood, root_var=root_var,
        runtime_s=time.perf_counter() - t0,
        extra={"noise_scale": noise_scale, "tree_steps": steps,
               "divergences": int(sum(ch[3] for ch in chains)), "n_compilations": counter[0],
               "model": "covariance"},
    )  # fmt: skip


def _start_tree(rng, data, stats_, init):
    k, d = data.n_tasks, data.n_features
    if init == "random" or data.y is None:
        return _kingman_draw(rng, k)
    from bayesmtl.inference.coalescent_greedy import greedy_coalescent

    w = np.linalg.solve(stats_[0] + np.eye(d), stats_[1][..., None])[..., 0]
    t = greedy_coalescent(np.log(np.abs(w) + 0.1) + 0.1 * rng.normal(size=w.shape),
                          min_duration=1e-3)  # fmt: skip
    return Tree(np.asarray(t.merges), np.asarray(t.times, float))


def _run_chain(rng, data, kernel, step, static_kw, stats_, cfg, n_warmup, n_samples, thin):
    """One chain: NUTS(S, Sigma_R, noise | tree, Lambda) -> Lambda | S, tree -> tree | S, Lambda
    -> scale move on (times, Lambda) | S."""
    d = data.n_features
    s2, root_var, steps = cfg["s2"], cfg["root_var"], cfg["steps"]
    tree = _start_tree(rng, data, stats_, cfg["init"])
    lam = s2 * np.eye(d)
    key = jax.random.key(int(rng.integers(2**31)))
    key, k_init = jax.random.split(key)
    kw = {**static_kw, "tree": Tree(jnp.asarray(tree.merges, jnp.int32), jnp.asarray(tree.times)),
          "lam": jnp.asarray(lam)}  # fmt: skip
    state = kernel.init(k_init, n_warmup, model_args=(data,), model_kwargs=kw)
    s = np.asarray(kernel.postprocess_fn((data,), kw)(state.z)["log_scale"], float)
    trees, draws = [], {n: [] for n in ("log_scale", "R", "Lambda", "noise", "w", "tree_height")}
    acc = {"time": 0, "exchange": 0, "spr": 0, "root": 0, "scale": 0}
    nuts_acc, divergences = [], 0
    for it in _sweeps(n_warmup + n_samples, cfg):
        key, k_w = jax.random.split(key)
        state, out = step(state, jnp.asarray(tree.merges, jnp.int32),
                          jnp.asarray(tree.times, jnp.float64), jnp.asarray(lam), s,
                          k_w)  # fmt: skip
        s = np.asarray(out["log_scale"], float)
        lam = _draw_lambda(rng, tree, s, s2, root_var)
        xw = _whiten(s, lam)

        def loglik(tr, xw=xw):
            return float(_brown(tr.merges, tr.times, xw, root_var))

        tree = _tree_moves(rng, tree, loglik, steps, acc)
        tree, lam = _scale_move(rng, tree, s, lam, s2, root_var, acc)
        if it >= n_warmup:
            nuts_acc.append(float(state.accept_prob))
            divergences += bool(state.diverging)
            if (it - n_warmup) % thin == 0:
                trees.append(tree)
                for name in ("log_scale", "R", "noise", "w"):
                    if name in out:
                        draws[name].append(np.array(out[name], float))
                draws["Lambda"].append(np.array(lam, float))
                draws["tree_height"].append(float(tree.times[-1]))
    draws = {n: np.asarray(v) for n, v in draws.items() if v}
    total = n_warmup + n_samples
    rates = {m: acc[m] / max(total * steps, 1) for m in ("time", "exchange", "spr", "root")}
    rates["scale"] = acc["scale"] / total
    rates["nuts"] = float(np.mean(nuts_acc))
    return trees, draws, rates, divergences

"""The full posterior of Daume's mean-sharing latent hierarchy: trees and continuous parameters.

Model (`bayesmtl.models.latent_hierarchy.mean_sharing`): ``Lambda ~ IW(s2 I, D+1)``,
``mu0 | Lambda ~ N(0, Lambda)``, tree ``~ Kingman``, task weights ``W ~ MN(1 mu0', C(tree), Lambda)``
(Brownian diffusion, ``C_kl = root_var + t_root - t_LCA``), ``y ~ N(x'w_task, noise^2)`` with
``noise ~ HalfNormal(1)`` (or fixed), or ``y ~ Bernoulli(sigmoid(x'w_task))``.

Each sweep of the sampler is partially collapsed Gibbs, every step exact for its conditional:

0. Bernoulli only: Polya-Gamma augmentation (Polson, Scott & Windle 2013). ``omega_n | W ~
   PG(1, x_n'w_task)``; given ``omega`` the likelihood is Gaussian in ``W``,
   ``exp((y_n - 1/2) eta_n - omega_n eta_n^2 / 2)``, so every later step is the Gaussian one with
   leaf factors ``J_k = sum_n omega_n x_n x_n'``, ``h_k = sum_n (y_n - 1/2) x_n`` (noise 1).
1. ``tree | Lambda, noise, y`` with ``W`` and ``mu0`` integrated out (`mean_sharing_log_evidence`,
   one upward pass of Gaussian messages per proposal): ``tree_steps`` Metropolis-Hastings steps of
   `tree_mh_step` (node times, root time, narrow exchange, time-preserving prune-and-regraft).
2. ``scale_moves`` rescalings of ``Lambda`` and of (times, ``Lambda``), again with ``W`` and ``mu0``
   integrated, which cross the ridge between the tree height and the scale of ``Lambda``.
3. ``W | tree, Lambda, noise, y`` (``mu0`` integrated): Gaussian with precision
   ``(C + leaf_var I + 11')^-1 (x) Lambda^-1 + blockdiag(J_k)``, drawn exactly.
4. ``(Lambda, mu0) | W, tree``: conjugate. The upward messages factor the Brownian density into
   ``K-1`` local evidences ``N(d_i; 0, s_i Lambda)`` and the root term ``N(m_root; mu0, s_r Lambda)``,
   so ``Lambda ~ IW(s2 I + sum_i d_i d_i'/s_i + m m'/(1 + s_r), D+1+K)`` and
   ``mu0 | Lambda ~ N(m/(1 + s_r), s_r/(1 + s_r) Lambda)``.
5. a joint scale move on ``(times, Lambda) | W, mu0``: ``times -> c times``, ``Lambda -> Lambda / c``
   with ``log c ~ U(-0.5, 0.5)`` (Jacobian ``c^(K-1-D(D+1)/2)``).
6. Gaussian, noise sampled: ``noise^2 | W, y ~ GIG((1-n)/2, 1, SSR)`` (exact for the half-normal
   prior on ``noise``).

With ``leaf_var=None`` (an extension: every leaf's branch lengthened by a learnt ``leaf_var ~
HalfCauchy(1 / C(K, 2))``, so ``C -> C + leaf_var I``) the scale moves also rescale ``leaf_var``
with the times, log-scale random walks on ``leaf_var`` alone join steps 2 and 5, and step 2 adds
long jumps of ``leaf_var`` that keep each task's prior variance (`tree_gibbs._leaf_jump`), which
carry the chain between the tree-shaped and the flat modes.

Several chains start from independent Kingman trees; tree convergence is the ASDSF between chains
(`bayesmtl.inference.tree_mcmc.asdsf`), continuous convergence ArviZ's R-hat. The conditional draws
and moves live in `bayesmtl.inference.tree_gibbs`.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from bayesmtl.data import TaskData
from bayesmtl.inference.tree_draws import TreePosterior
from bayesmtl.inference.tree_gibbs import (
    _collapsed,
    _collapsed_scale_moves,
    _cov_and_messages,
    _draw_w_gaussian,
    _init,
    _lam_mu0,
    _noise,
    _polya_gamma_precisions,
    _scale_move,
    _segments,
    _segsum,
    _stats,
    _sweeps,
    _tree_moves,
)
from bayesmtl.models.latent_hierarchy import (
    check_leaf_var,
    leaf_evidence,
    leaf_var_prior_scale,
)

__all__ = ["TreePosterior", "tree_posterior"]


def _check(data, likelihood, noise_scale, s2, root_var, init, *, num_chains, num_warmup,
           num_samples, seed, thin, tree_steps, **more_ints) -> int:
    """The argument checks both tree samplers share; returns the tree steps per sweep (given, or
    ``max(3, K // 2)``). ``more_ints``: ``name=(value, lowest allowed)``."""
    ints = {"num_chains": (num_chains, 1), "num_warmup": (num_warmup, 0),
            "num_samples": (num_samples, 1), "seed": (seed, 0), "thin": (thin, 1), **more_ints}
    if tree_steps is not None:
        ints["tree_steps"] = (tree_steps, 0)
    if not isinstance(data, TaskData):
        raise ValueError(f"data: expected a TaskData, got {type(data).__name__}")  # noqa: TRY004
    if data.n_tasks < 3:
        raise ValueError(f"data: the tree posterior needs at least 3 tasks, got {data.n_tasks}")
    if likelihood not in ("gaussian", "bernoulli"):
        raise ValueError(f"likelihood: expected 'gaussian' or 'bernoulli', got {likelihood!r}")
    if likelihood == "bernoulli" and data.y is not None:
        data.check_binary()
    for name, v in (("s2", s2), ("root_var", root_var)):
        if not (np.ndim(v) == 0 and np.isfinite(v) and v > 0):
            raise ValueError(f"{name}: expected a positive finite number, got {v!r}")
    if noise_scale is not None and not (np.isfinite(noise_scale) and noise_scale > 0):
        raise ValueError(f"noise_scale: expected a positive number or None, got {noise_scale!r}")
    for name, (v, lo) in ints.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")
    if init not in ("random", "greedy"):
        raise ValueError(f"init: expected 'random' or 'greedy', got {init!r}")
    return max(3, data.n_tasks // 2) if tree_steps is None else int(tree_steps)


def tree_posterior(
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
    scale_moves: int = 5,
    leaf_var: float | None = 0.0,
    progress_bar: bool | None = None,
) -> TreePosterior:
    """Sample the joint posterior over trees and parameters of the mean-sharing latent hierarchy.

    Parameters
    ----------
    data : TaskData
        At least 3 tasks; ``y`` may be ``None`` (then the sampler draws from the prior).
    likelihood : {"gaussian", "bernoulli"}
    num_chains, num_warmup, num_samples : int
        Chains (run one after another), discarded and kept sweeps per chain.
    seed : int
    s2, root_var : float
        ``Lambda ~ IW(s2 I, D+1)``; variance factor of the root around ``mu0``.
    noise_scale : float, optional
        Fixed Gaussian noise sd; sampled under ``HalfNormal(1)`` when omitted.
    tree_steps : int, optional
        Tree Metropolis-Hastings steps per sweep (each tries all four moves); ``max(3, K // 2)``.
    thin : int
        Keep every ``thin``-th sweep.
    init : {"random", "greedy"}
        Starting trees: independent Kingman draws per chain (over-dispersed, the honest default
        for the ASDSF) or the greedy coalescent on ridge estimates of the weights.
    scale_moves : int
        Rescalings of ``Lambda`` and of (tree times, ``Lambda``), each tried
        this many times per sweep with the weights integrated out (cheap: one message pass each);
        0 turns them off. They are what lets ``Lambda`` and the tree height mix on real data.
    leaf_var : float or None
        Extra length of every leaf's branch (`~bayesmtl.models.latent_hierarchy.mean_sharing`):
        0, the paper's model, by default; ``None`` learns it under a ``HalfCauchy(1 / C(K, 2))``
        prior (`~bayesmtl.models.latent_hierarchy.leaf_var_prior_scale`; sampled with the scale
        moves, ``samples["leaf_var"]``), which lets the posterior fall back on the flat hierarchy
        when the tasks show no tree. Its long jumps come with the scale moves (``scale_moves > 0``).
    progress_bar : bool, optional
        A progress bar per chain; by default shown unless the ``CI`` environment variable is set.

    Returns
    -------
    TreePosterior

    Examples
    --------
    >>> import jax
    >>> from bayesmtl.models.latent_hierarchy import simulate
    >>> data, truth = simulate(jax.random.PRNGKey(0), 4, 20, 2)
    >>> post = tree_posterior(data, num_chains=2, num_warmup=20, num_samples=30)
    >>> sorted(post.summary())[:5]
    ['acceptance', 'asdsf', 'clade_probabilities', 'elpd_loo', 'elpd_loo_se']
    """
    steps = _check(data, likelihood, noise_scale, s2, root_var, init, num_chains=num_chains,
                   num_warmup=num_warmup, num_samples=num_samples, seed=seed, thin=thin,
                   tree_steps=tree_steps, scale_moves=(scale_moves, 0))  # fmt: skip
    check_leaf_var(leaf_var)
    cfg = {"likelihood": likelihood, "noise_scale": noise_scale}
    cfg.update(s2=float(s2), root_var=float(root_var), scale_moves=int(scale_moves),
               progress_bar=progress_bar, leaf_var=None if leaf_var is None else float(leaf_var))
    t0 = time.perf_counter()
    seqs = np.random.SeedSequence(seed).spawn(num_chains)
    chains = []
    with jax.enable_x64(True):
        for c in range(num_chains):
            chains.append(
                _run_chain(
                    np.random.default_rng(seqs[c]), data, {**cfg, "chain": c}, num_warmup,
                    num_samples, thin, steps, init,
                )
            )  # fmt: skip
    return TreePosterior.from_chains(
        chains, data, likelihood=likelihood, root_var=root_var,
        runtime_s=time.perf_counter() - t0,
        extra={"noise_scale": noise_scale, "tree_steps": steps, "scale_moves": int(scale_moves),
               "leaf_var": leaf_var},
    )  # fmt: skip


def _run_chain(rng, data, cfg, n_warmup, n_samples, thin, steps, init):
    """One chain of partially collapsed Gibbs sweeps: [Bernoulli: omega | W (Polya-Gamma)] ->
    tree | Lambda, y (W and mu0 integrated, `mean_sharing_log_evidence`) -> collapsed scale moves
    -> W | tree, Lambda, y (mu0 integrated) -> (Lambda, mu0) | W, tree -> scale move given W ->
    [Gaussian: noise | W]. For the Bernoulli likelihood every "given y" reads "given omega, y":
    the Polya-Gamma identity makes the likelihood Gaussian in W with leaf factors
    ``J_k = sum_n omega_n x_n x_n'``, ``h_k = sum_n (y_n - 1/2) x_n``."""
    k, d = data.n_tasks, data.n_features
    lik, root_var, s2 = cfg["likelihood"], cfg["root_var"], cfg["s2"]
    learn_leaf = cfg.get("leaf_var", 0.0) is None
    # a learnt leaf variance starts at its prior median, in the tree-shaped mode
    lv = leaf_var_prior_scale(k) if learn_leaf else float(cfg.get("leaf_var", 0.0))
    polya_gamma = lik == "bernoulli" and data.y is not None
    xtx, xty = _stats(data)
    if data.y is None:
        xtx, xty = xtx * 0, xty * 0
    yty = np.bincount(data.task, data.y**2, k) if data.y is not None else np.zeros(k)
    n_rows = np.bincount(data.task, minlength=k) if data.y is not None else np.zeros(k)
    w, tree = _init(rng, data, cfg, xtx, xty, init)
    if polya_gamma:  # omega-weighted statistics replace xtx; kappa = y - 1/2 replaces y
        x = np.asarray(data.X, float)
        seg = _segments(data.task, k)
        xxt = x[:, :, None] * x[:, None, :]
        xty = _segsum(x * (data.y - 0.5)[:, None], seg)
        yty, n_rows = np.zeros(k), np.zeros(k)
    noise = 1.0 if cfg["noise_scale"] is None or polya_gamma else float(cfg["noise_scale"])
    sample_noise = lik == "gaussian" and cfg["noise_scale"] is None
    mu0, lam = w.mean(0), s2 * np.eye(d)
    names = ("w", "mu0", "Lambda", "noise", "leaf_var", "tree_height")
    trees, draws = [], {n: [] for n in names}
    acc = {"time": 0, "exchange": 0, "spr": 0, "root": 0, "scale": 0, "leaf": 0}
    acc.update(collapsed_lambda=0, collapsed_height=0, collapsed_leaf=0, collapsed_leaf_jump=0)
    scale_moves = cfg.get("scale_moves", 0)
    for it in _sweeps(n_warmup + n_samples, cfg):
        if polya_gamma:
            xtx = _polya_gamma_precisions(rng, w, x, xxt, data.task, seg)
        leaf = tuple(jnp.asarray(a) for a in leaf_evidence(xtx, xty, yty, n_rows, noise))
        lam_j = jnp.asarray(lam)

        def loglik(tr, leaf=leaf, lam_j=lam_j, lv=lv):
            return float(_collapsed(tr.merges, tr.times, *leaf, lam_j, root_var, lv))

        tree = _tree_moves(rng, tree, loglik, steps, acc)
        if scale_moves:
            tree, lam, lv = _collapsed_scale_moves(rng, tree, lam, leaf, s2, root_var,
                                                   scale_moves, acc, lv, learn_leaf)  # fmt: skip
        c, _ = _cov_and_messages(tree.merges, tree.times, jnp.asarray(w), root_var, lv)
        w = _draw_w_gaussian(rng, c + 1.0, lam, np.zeros(d), xtx, xty, noise)
        lam, mu0 = _lam_mu0(rng, tree, w, s2, root_var, lv)
        tree, lam, lv = _scale_move(rng, tree, w, mu0, lam, s2, root_var, lv, learn_leaf, acc)
        if sample_noise:
            noise = _noise(rng, data, w)
        if it >= n_warmup and (it - n_warmup) % thin == 0:
            trees.append(tree)
            for name, v in (("w", w), ("mu0", mu0), ("Lambda", lam), ("noise", noise),
                            ("leaf_var", lv)):  # fmt: skip
                draws[name].append(np.array(v, float))
            draws["tree_height"].append(float(tree.times[-1]))
    if not sample_noise:
        draws.pop("noise")
    if not learn_leaf:
        draws.pop("leaf_var")
    total = n_warmup + n_samples
    rates = {m: acc[m] / max(total * steps, 1) for m in ("time", "exchange", "spr", "root")}
    rates["scale"] = acc["scale"] / total
    if learn_leaf:
        rates["leaf"] = acc["leaf"] / total
    if scale_moves:
        learnt = ("collapsed_leaf", "collapsed_leaf_jump") if learn_leaf else ()
        for m in ("collapsed_lambda", "collapsed_height", *learnt):
            rates[m] = acc[m] / (total * scale_moves)
    return trees, {n: np.asarray(v) for n, v in draws.items()}, rates

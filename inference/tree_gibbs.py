"""Conditional draws and Metropolis-Hastings moves of the latent-hierarchy tree samplers.

The building blocks of the Metropolis-within-Gibbs sweeps in `bayesmtl.inference.tree_posterior`
(mean sharing) and `bayesmtl.inference.latent_hierarchy_cov_mcmc` (covariance sharing), each exact
for its conditional:

* ``_draw_w_gaussian``: ``W | tree, mu0, Lambda, noise, y`` for the Gaussian likelihood (dense
  precision ``C^-1 (x) Lambda^-1 + blockdiag(X_k'X_k / noise^2)``);
* ``_polya_gamma_precisions``: the Polya-Gamma augmentation that turns the Bernoulli likelihood
  into a Gaussian one in ``W`` given ``omega``;
* ``_lam_mu0``: the conjugate ``(Lambda, mu0) | W, tree`` from the message sufficient statistics;
* ``_noise``: ``noise^2 | W, y ~ GIG((1-n)/2, 1, SSR)`` under a ``HalfNormal(1)`` noise prior;
* ``_scale_move``: the joint rescaling of merge times and ``Lambda`` (and of a learnt leaf
  variance) given ``W``;
* ``_collapsed_scale_moves``: rescalings of ``Lambda``, of (times, ``Lambda``) and of a learnt
  leaf variance, and long jumps of the latter (`_leaf_jump`), with ``W`` and ``mu0`` integrated
  (the Gaussian likelihood, or the Bernoulli one given its Polya-Gamma variables);
* ``_scale_mh``: the log-scale random-walk Metropolis-Hastings step behind all of them;
* ``_tree_moves``: ``tree_steps`` steps of `bayesmtl.inference.tree_mcmc.tree_mh_step`;
* ``_kingman_draw`` / ``_init``: starting trees and weights.

Everything here is private to the samplers (no public API).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from bayesmtl.inference.runtime import quiet
from bayesmtl.inference.tree_mcmc import kingman_times_log_prob, tree_mh_init, tree_mh_step
from bayesmtl.models.coalescent import (
    Tree,
    brownian_log_likelihood,
    tree_covariance,
    upward_messages,
)
from bayesmtl.models.latent_hierarchy import leaf_var_prior_scale, mean_sharing_log_evidence
from polyagamma import random_polyagamma
from scipy import stats
from tqdm.auto import tqdm

__all__: list[str] = []

TREE_MOVES = ("time", "exchange", "spr", "root")  # the samplers' tree moves, each once per step


def _sweeps(total: int, cfg: dict):
    """``range(total)`` with a progress bar for chain ``cfg["chain"]`` unless ``cfg["progress_bar"]``
    is False (``None``: shown unless the ``CI`` environment variable is set)."""
    show = cfg.get("progress_bar")
    show = (not quiet()) if show is None else bool(show)
    return tqdm(range(total), desc=f"tree MCMC, chain {cfg.get('chain', 0)}", disable=not show,
                leave=False)


@jax.jit
def _brown(merges, times, x, root_var, leaf_var=0.0):
    return brownian_log_likelihood(Tree(merges, times), x, root_var=root_var, leaf_var=leaf_var)


@jax.jit
def _collapsed(merges, times, leaf_j, leaf_h, leaf_g, lam, root_var, leaf_var=0.0):
    return mean_sharing_log_evidence(
        Tree(merges, times), leaf_j, leaf_h, leaf_g, lam, root_var, leaf_var
    )


@jax.jit
def _cov_and_messages(merges, times, w, root_var, leaf_var=0.0):
    tree = Tree(merges, times)
    return tree_covariance(tree, root_var, leaf_var), upward_messages(tree, w, leaf_var)


def _stats(data):
    k, d = data.n_tasks, data.n_features
    x = np.asarray(data.X, float)
    seg = _segments(data.task, k)
    xtx = _segsum(x[:, :, None] * x[:, None, :], seg)
    xty = np.zeros((k, d)) if data.y is None else _segsum(x * data.y[:, None], seg)
    return xtx, xty


# Dense linear algebra runs in XLA: numpy's threaded OpenBLAS stalls on a shared, loaded CPU.
def _precision(c, lam, blocks):
    k, d, _ = blocks.shape
    cinv, laminv = jnp.linalg.inv(c), jnp.linalg.inv(lam)
    ar = jnp.arange(k)
    p = jnp.kron(cinv, laminv).reshape(k, d, k, d).at[ar, :, ar, :].add(blocks)
    return p.reshape(k * d, k * d), cinv, laminv


@jax.jit
def _w_gaussian(c, lam, mu0, xtx, xty, noise, z):
    k, d = xty.shape
    p, cinv, laminv = _precision(c, lam, xtx / noise**2)
    b = (cinv.sum(1)[:, None] * (laminv @ mu0)[None, :] + xty / noise**2).ravel()
    chol = jnp.linalg.cholesky(p)
    mean = jax.scipy.linalg.cho_solve((chol, True), b)
    return (mean + jax.scipy.linalg.solve_triangular(chol.T, z, lower=False)).reshape(k, d)


def _draw_w_gaussian(rng, c, lam, mu0, xtx, xty, noise):
    """Exact draw of ``W | tree, mu0, Lambda, noise, y`` (``c``: the tree covariance ``C``)."""
    z = rng.normal(size=xty.size)
    return np.asarray(_w_gaussian(c, lam, mu0, xtx, xty, noise, z))


def _segments(task, k):
    """Row order by task, segment starts and the empty tasks (per-task sums by ``reduceat``)."""
    order = np.argsort(task, kind="stable")
    starts = np.searchsorted(task[order], np.arange(k))
    empty = np.bincount(task, minlength=k) == 0
    return order, np.minimum(starts, len(task) - 1), empty


def _segsum(values, seg):
    order, starts, empty = seg
    out = np.add.reduceat(values[order], starts, axis=0)
    out[empty] = 0.0
    return out


def _polya_gamma_precisions(rng, w, x, xxt, task, seg):
    """Bernoulli likelihood: ``omega_n ~ PG(1, x_n'w_task)`` (``polyagamma``'s exact sampler) and
    the per-task ``sum_n omega_n x_n x_n'`` ``(K, D, D)`` that, with ``h_k = sum_n (y_n - 1/2) x_n``,
    makes the likelihood given ``omega`` Gaussian in ``W`` (``xxt``: per-row outer products)."""
    omega = random_polyagamma(1.0, np.sum(x * w[task], 1), random_state=rng)
    return _segsum(omega[:, None, None] * xxt, seg)


_kingman_log_prob = kingman_times_log_prob


def _iw_log_prob(lam, s2):
    """``log IW(Lambda; s2 I, D+1)`` (scipy's inverse Wishart)."""
    d = lam.shape[0]
    return float(stats.invwishart.logpdf(lam, df=d + 1, scale=s2 * np.eye(d)))


def _leaf_var_log_prior(leaf_var, k):
    """``log HalfCauchy(leaf_var; leaf_var_prior_scale(K))``: the prior of a learnt leaf variance."""
    return float(stats.halfcauchy.logpdf(leaf_var, scale=leaf_var_prior_scale(k)))


def _free_size(x, symmetric: bool) -> float:
    """Free entries of ``x``: ``D(D+1)/2`` for a symmetric ``(D, D)`` matrix, else its size."""
    x = np.asarray(x)
    return x.shape[0] * (x.shape[0] + 1) / 2 if symmetric else float(x.size)


def _scale_mh(rng, target, state, moves, acc, step=0.5, symmetric=(1,)):
    """Random-walk Metropolis-Hastings on log scales, shared by the samplers' rescaling moves.

    ``state`` is a tuple of arrays, ``target(*state)`` its log density, and each of ``moves`` a
    ``(name, powers)`` pair: with ``log c ~ U(-step, step)`` the move multiplies ``state[i]`` by
    ``c ** powers[i]`` (a power 0 leaves it alone). The Jacobian is ``c ** sum_i powers[i] * n_i``
    with ``n_i`` the free entries of ``state[i]``: ``D(D+1)/2`` for the symmetric matrices at the
    indices ``symmetric`` (``Lambda``, second in every caller's state), the size otherwise.
    Accepted moves are counted in ``acc[name]``. Returns the new state.
    """
    free = [_free_size(x, i in symmetric) for i, x in enumerate(state)]
    cur = target(*state)
    for name, powers in moves:
        eps = rng.uniform(-step, step)
        prop = tuple(x if p == 0 else x * np.exp(p * eps) for x, p in zip(state, powers))
        jac = eps * sum(p * n for n, p in zip(free, powers))
        new = target(*prop)
        if np.log(rng.uniform()) < new - cur + jac:
            state, cur = prop, new
            acc[name] = acc.get(name, 0) + 1
    return state


def _given_w_target(merges, w, mu0, s2, root_var, learn_leaf):
    """Log joint of (times, ``Lambda``, ``leaf_var``) given ``W`` and ``mu0``: Kingman, Brownian
    density of ``W``, ``mu0 | Lambda``, ``IW`` prior (and the leaf-variance prior when learnt)."""
    k = w.shape[0]

    def target(times, lam, leaf_var):
        chol = np.linalg.cholesky(lam)
        xw = np.linalg.solve(chol, (w - mu0).T).T  # whitened: Lambda's terms added below
        logdet = 2 * np.sum(np.log(np.diag(chol)))
        brown = float(_brown(merges, jnp.asarray(times), jnp.asarray(xw), root_var, leaf_var))
        z = np.linalg.solve(chol, mu0)
        lp = (_kingman_log_prob(times, k) + brown - 0.5 * (k + 1) * logdet - 0.5 * z @ z
              + _iw_log_prob(lam, s2))  # fmt: skip
        return lp + (_leaf_var_log_prior(float(leaf_var), k) if learn_leaf else 0.0)

    return target


def _scale_move(rng, tree, w, mu0, lam, s2, root_var, leaf_var=0.0, learn_leaf=False, acc=None):
    """``(times, leaf_var, Lambda) -> (c times, c leaf_var, Lambda / c)`` given ``W`` and ``mu0``
    (``leaf_var`` only when learnt), plus ``leaf_var -> c leaf_var`` when learnt. The leaf
    covariance ``(C + leaf_var I) (x) Lambda`` is nearly invariant along the first, which Gibbs
    steps cross slowly. Returns ``(tree, Lambda, leaf_var)``."""
    acc = {} if acc is None else acc
    target = _given_w_target(tree.merges, w, mu0, s2, root_var, learn_leaf)
    moves = [("scale", (1, -1, 1 if learn_leaf else 0))]
    if learn_leaf:
        moves.append(("leaf", (0, 0, 1)))
    state = (np.asarray(tree.times, float), np.asarray(lam, float), np.asarray(float(leaf_var)))
    times, lam, leaf_var = _scale_mh(rng, target, state, moves, acc)
    return Tree(tree.merges, times), lam, float(leaf_var)


def _collapsed_scale_moves(rng, tree, lam, leaf, s2, root_var, n_moves, acc, leaf_var=0.0,
                           learn_leaf=False):  # fmt: skip
    """Metropolis-Hastings on ``(tree times, Lambda, leaf_var) | noise, y`` with ``W`` and ``mu0``
    integrated (Gaussian likelihood; Bernoulli given its Polya-Gamma variables).

    ``n_moves`` rounds of: ``Lambda -> c Lambda`` and ``(times, leaf_var, Lambda) -> (c times,
    c leaf_var, Lambda / c)`` (``leaf_var`` only when learnt), and, when it is learnt,
    ``leaf_var -> c leaf_var``, each followed by a `_leaf_jump`; ``log c ~ U(-0.5, 0.5)``,
    Jacobians from `_scale_mh`, on the target Kingman x IW (x HalfCauchy) x
    `mean_sharing_log_evidence`. With ``W`` integrated they cross the
    ridges between the overall scale of ``Lambda``, the tree height and the spread of the weights
    that the conditional steps (``Lambda | W``, the scale move given ``W``) cross only slowly.
    Returns ``(tree, Lambda, leaf_var)``.
    """
    k = tree.merges.shape[0] + 1

    def target(times, lam, lv):
        ll = float(_collapsed(tree.merges, jnp.asarray(times), *leaf, jnp.asarray(lam), root_var,
                              float(lv)))  # fmt: skip
        lp = ll + _kingman_log_prob(times, k) + _iw_log_prob(lam, s2)
        return lp + (_leaf_var_log_prior(float(lv), k) if learn_leaf else 0.0)

    moves = [("collapsed_lambda", (0, 1, 0)),
             ("collapsed_height", (1, -1, 1 if learn_leaf else 0))]  # fmt: skip
    if learn_leaf:
        moves.append(("collapsed_leaf", (0, 0, 1)))
    state = (np.asarray(tree.times, float), np.asarray(lam, float), np.asarray(float(leaf_var)))
    for _ in range(n_moves):
        state = _scale_mh(rng, target, state, moves, acc)
        if learn_leaf:
            state = _leaf_jump(rng, target, state, root_var, acc)
    times, lam, lv = state
    return Tree(tree.merges, times), lam, float(lv)


def _leaf_jump(rng, target, state, root_var, acc, step=3.0):
    """A long jump of a learnt ``leaf_var`` that keeps each task's prior variance.

    ``leaf_var' = c leaf_var`` with ``log c ~ U(-step, step)`` (up to 20-fold) and ``Lambda' = g
    Lambda``, ``g = (a + leaf_var) / (a + leaf_var')``, ``a = root_var + 1 + t_root``, so the
    marginal variance ``(a + leaf_var) Lambda`` of every task's weights is unchanged. The map is its
    own reverse for ``-log c``; its Jacobian is ``c g^(D(D+1)/2)``. It carries the chain between
    the tree-shaped mode (small ``leaf_var``) and the flat one (``leaf_var`` far above the tree
    height), which the small steps cross only through improbable ``Lambda``.
    """
    times, lam, lv = state
    eps = rng.uniform(-step, step)
    lv2 = lv * np.exp(eps)
    a = root_var + 1.0 + float(times[-1])
    g = (a + float(lv)) / (a + float(lv2))
    prop = (times, lam * g, lv2)
    log_a = target(*prop) - target(*state) + eps + _free_size(lam, True) * np.log(g)
    if np.log(rng.uniform()) < log_a:
        acc["collapsed_leaf_jump"] = acc.get("collapsed_leaf_jump", 0) + 1
        return prop
    return state


def _init(rng, data, cfg, xtx, xty, init):
    k, d = data.n_tasks, data.n_features
    if data.y is None:
        w = rng.normal(size=(k, d)) * np.sqrt(cfg["s2"])
    else:  # ridge estimates, jittered so that chains start apart
        w = np.linalg.solve(xtx + np.eye(d), xty[..., None])[..., 0]
        w = w + 0.1 * rng.normal(size=w.shape)
    if init == "greedy":
        from bayesmtl.inference.coalescent_greedy import greedy_coalescent

        tree = greedy_coalescent(w, min_duration=1e-3)
    else:
        tree = _kingman_draw(rng, k)
    tree = Tree(np.asarray(tree.merges), np.asarray(tree.times, float))
    return w, tree


def _kingman_draw(rng, k):
    active = list(range(k))
    merges, times, t = [], [], 0.0
    for i in range(k - 1):
        m = k - i
        t += rng.exponential() / (m * (m - 1) / 2.0)
        a, b = sorted(rng.choice(m, size=2, replace=False))
        merges.append(sorted((active[a], active[b])))
        times.append(t)
        active.pop(b)
        active[a] = k + i
    return Tree(np.asarray(merges, np.int32), np.asarray(times))


def _lam_mu0(rng, tree, w, s2, root_var, leaf_var=0.0):
    """Exact draw of ``(Lambda, mu0) | W, tree`` from the message sufficient statistics."""
    k, d = w.shape
    _, msg = _cov_and_messages(tree.merges, tree.times, jnp.asarray(w), root_var, leaf_var)
    diff, spread = np.asarray(msg.diff), np.asarray(msg.spread)
    m_root, s_root = np.asarray(msg.mean)[-1], float(np.asarray(msg.var)[-1]) + root_var
    scatter = (diff / spread[:, None]).T @ diff + np.outer(m_root, m_root) / (1 + s_root)
    lam = np.atleast_2d(stats.invwishart.rvs(d + 1 + k, s2 * np.eye(d) + scatter, random_state=rng))
    mu0 = rng.multivariate_normal(m_root / (1 + s_root), s_root / (1 + s_root) * lam)
    return lam, mu0


def _noise(rng, data, w):
    """Exact draw of ``noise | W, y`` under ``HalfNormal(1)``: ``noise^2 ~ GIG((1-n)/2, 1, SSR)``."""
    if data.y is None:
        return abs(float(rng.normal()))
    resid = data.y - np.sum(data.X * w[data.task], 1)
    ssr = max(float(resid @ resid), 1e-12)
    g = stats.geninvgauss.rvs((1 - data.n) / 2, np.sqrt(ssr), random_state=rng)
    return float(np.sqrt(np.sqrt(ssr) * g))


def _tree_moves(rng, tree, loglik, steps, acc):
    state = tree_mh_init(tree, loglik)
    for _ in range(steps):
        state, ok = tree_mh_step(rng, state, loglik, moves=TREE_MOVES)
        for m, v in ok.items():
            acc[m] = acc.get(m, 0) + v
    return state.tree

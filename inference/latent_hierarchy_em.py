"""Daume III (2009) EM for the mean-sharing latent hierarchy: greedy coalescent tree + MAP weights.

The routine maximises, by block-coordinate ascent, the joint log density

    F(W, tree, mu0, Lambda) = log p(y | W) + log p(W | tree, mu0, Lambda)      (Brownian, messages)
                              + log Kingman(tree) + log N(mu0; 0, Lambda) + log IW(Lambda; s2 I, D+1)

with the observation noise fixed. Each iteration

1. **tree**: the greedy agglomerative coalescent (Teh et al. 2007; Greedy-MaxProb by default) on the
   current task weights whitened by ``Lambda``; the proposal is kept only if it raises ``F``;
2. **weights**: ``W`` maximises ``F`` given the tree (L-BFGS in float64; concave for both likelihoods);
3. **mu0, Lambda**: closed-form joint mode from the message sufficient statistics
   ``mu0 = m_root / (1 + v_root + root_var)``,
   ``Lambda = (s2 I + S + mu0 mu0') / (K + 2D + 3)``, ``S = sum_i d_i d_i' / (a_l + a_r)_i + root term``.

Every step is non-decreasing in ``F``, so the ``objective`` trace is monotone. ``F`` is unbounded above
when merge durations shrink to 0 on coinciding weights; ``min_duration`` (a floor on the waits of the
greedy trees) keeps it bounded.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from bayesmtl.data import TaskData
from bayesmtl.inference.coalescent_greedy import GREEDY_METHODS, greedy_coalescent
from bayesmtl.inference.runtime import quiet
from bayesmtl.models.coalescent import (
    Tree,
    as_tree,
    brownian_log_likelihood,
    clades,
    kingman_log_prob,
    to_newick,
    upward_messages,
)
from scipy.optimize import minimize
from tqdm.auto import tqdm

__all__ = ["EMResult", "em_objective", "latent_hierarchy_em"]


class EMResult(NamedTuple):
    """Output of `latent_hierarchy_em`: the tree, MAP weights ``(K, D)``, ``mu0``, ``Lambda``,
    the fixed noise sd, the objective after each iteration, iterations run, convergence flag."""

    tree: Tree
    w: np.ndarray
    mu0: np.ndarray
    Lambda: np.ndarray
    noise: float | None
    objective: np.ndarray
    n_iter: int
    converged: bool

    def summary(self, *, names=None) -> dict:
        """The dict the CLI writes to ``summary.json`` for ``--method em``: the greedy-EM tree in
        Newick form, its clades (task index lists, smallest first), the final objective, the
        iterations run and the convergence flag."""
        return em_summary(self, names)


def em_summary(res, names=None) -> dict:
    """`EMResult.summary` for any result with ``tree``, ``objective``, ``n_iter``, ``converged``."""
    cl = sorted(clades(res.tree), key=lambda c: (len(c), sorted(c)))
    return {
        "newick": to_newick(res.tree, names),
        "clades": [sorted(int(i) for i in c) for c in cl],
        "objective": float(res.objective[-1]),
        "n_iter": int(res.n_iter),
        "converged": bool(res.converged),
    }


def _loglik(w, x, y, task, noise, likelihood):
    eta = jnp.sum(x * w[task], axis=-1)
    if likelihood == "gaussian":
        return jnp.sum(dist.Normal(eta, noise).log_prob(y))
    return jnp.sum(dist.Bernoulli(logits=eta).log_prob(y))


def em_objective(
    w, tree, mu0, lam, data: TaskData, *, likelihood="gaussian", noise=1.0, s2=1.0, root_var=1.0
):
    """The joint log density ``F`` that `latent_hierarchy_em` increases (see the module docs)."""
    w = jnp.asarray(w)
    x, y, task = jnp.asarray(data.X, w.dtype), jnp.asarray(data.y, w.dtype), jnp.asarray(data.task)
    tree = as_tree(tree)
    return _objective(
        w,
        tree.merges,
        jnp.asarray(tree.times, w.dtype),
        jnp.asarray(mu0, w.dtype),
        jnp.asarray(lam, w.dtype),
        x,
        y,
        task,
        noise,
        s2,
        root_var,
        likelihood,
    )


@partial(jax.jit, static_argnames=("likelihood",))
def _objective(w, merges, times, mu0, lam, x, y, task, noise, s2, root_var, likelihood):
    d = w.shape[1]
    tree = Tree(merges, times)
    return (
        _loglik(w, x, y, task, noise, likelihood)
        + brownian_log_likelihood(tree, w, loc=mu0, cov=lam, root_var=root_var)
        + kingman_log_prob(tree)
        + dist.MultivariateNormal(jnp.zeros(d), lam).log_prob(mu0)
        + dist.InverseWishart(d + 1.0, scale_matrix=s2 * jnp.eye(d)).log_prob(lam)
    )


@partial(jax.jit, static_argnames=("likelihood", "iid"))
def _w_value_and_grad(
    w_flat, x, y, task, merges, times, mu0, lam, noise, root_var, likelihood, iid=False
):
    def neg(wf):
        w = wf.reshape(-1, mu0.shape[0])
        if iid:  # initial fit: independent N(0, root_var I) task weights
            prior = -0.5 * jnp.sum(w**2) / root_var
        else:
            prior = brownian_log_likelihood(
                Tree(merges, times), w, loc=mu0, cov=lam, root_var=root_var
            )
        return -(_loglik(w, x, y, task, noise, likelihood) + prior)

    return jax.value_and_grad(neg)(w_flat)


def _update_w(w, tree, mu0, lam, arrays, noise, root_var, likelihood, iid=False):
    x, y, task = arrays
    k, d = w.shape

    def fun(wf):
        v, g = _w_value_and_grad(
            jnp.asarray(wf),
            x,
            y,
            task,
            tree.merges,
            tree.times,
            mu0,
            lam,
            noise,
            root_var,
            likelihood,
            iid,
        )
        return float(v), np.asarray(g, dtype=float)

    res = minimize(
        fun,
        np.asarray(w, dtype=float).ravel(),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 500, "gtol": 1e-8},
    )
    return res.x.reshape(k, d)


@jax.jit
def _update_params(w, tree, s2, root_var):
    k, d = w.shape
    msg = upward_messages(tree, jnp.asarray(w))
    s_root = msg.var[-1] + root_var
    mu0 = msg.mean[-1] / (1.0 + s_root)
    r = msg.mean[-1] - mu0
    stats = (msg.diff / msg.spread[:, None]).T @ msg.diff + jnp.outer(r, r) / s_root
    lam = (s2 * jnp.eye(d) + stats + jnp.outer(mu0, mu0)) / (k + 2 * d + 3)
    return mu0, 0.5 * (lam + lam.T)


def check_inputs(data, likelihood, noise_scale, s2, root_var, greedy, min_duration, max_iter,
                 tol=0.0):
    """Input checks shared by the two latent-hierarchy EMs (clear errors naming the argument)."""
    if not isinstance(data, TaskData):
        raise ValueError(f"data: expected a TaskData, got {type(data).__name__}")  # noqa: TRY004
    if data.n_tasks < 2:
        raise ValueError(f"data: a latent hierarchy needs at least 2 tasks, got {data.n_tasks}")
    if data.y is None:
        raise ValueError("data: EM needs observed targets y")
    if likelihood not in ("gaussian", "bernoulli"):
        raise ValueError(f"likelihood: expected 'gaussian' or 'bernoulli', got {likelihood!r}")
    if likelihood == "bernoulli":
        data.check_binary()
    if greedy not in GREEDY_METHODS:
        raise ValueError(f"greedy: expected one of {GREEDY_METHODS}, got {greedy!r}")
    for name, v in (("s2", s2), ("root_var", root_var), ("min_duration", min_duration)):
        if not (np.ndim(v) == 0 and np.isfinite(v) and v > 0):
            raise ValueError(f"{name}: expected a positive finite number, got {v!r}")
    if noise_scale is not None and not (np.isfinite(noise_scale) and noise_scale > 0):
        raise ValueError(f"noise_scale: expected a positive number or None, got {noise_scale!r}")
    if isinstance(max_iter, bool) or not (isinstance(max_iter, int) and max_iter >= 1):
        raise ValueError(f"max_iter: expected a positive int, got {max_iter!r}")
    if not (np.ndim(tol) == 0 and np.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol: expected a finite number >= 0, got {tol!r}")


def latent_hierarchy_em(
    data: TaskData,
    *,
    likelihood: str = "gaussian",
    noise_scale: float | None = None,
    s2: float = 1.0,
    root_var: float = 1.0,
    greedy: str = "maxprob",
    min_duration: float = 1e-3,
    max_iter: int = 30,
    tol: float = 1e-6,
    progress_bar: bool | None = None,
) -> EMResult:
    """Fit Daume's mean-sharing latent hierarchy by greedy-tree EM.

    Parameters
    ----------
    data : TaskData
        At least 2 tasks, observed ``y``.
    likelihood : {"gaussian", "bernoulli"}
    noise_scale : float, optional
        Gaussian noise sd, fixed during EM; when omitted, set once from the residuals of the
        initial independent per-task fits.
    s2, root_var : float
        ``Lambda ~ IW(s2 I, D+1)``; root variance factor.
    greedy : {"maxprob", "rate1"}
        Greedy coalescent variant for the tree step.
    min_duration : float
        Floor on merge waits in the greedy trees (keeps the objective bounded).
    max_iter : int
    tol : float
        Stop when the objective gains less than ``tol * (1 + |F|)``.
    progress_bar : bool, optional
        A bar over the iterations with the objective; by default shown unless ``CI`` is set.

    Returns
    -------
    EMResult

    Examples
    --------
    >>> import jax
    >>> from bayesmtl.models.latent_hierarchy import simulate
    >>> data, truth = simulate(jax.random.PRNGKey(0), 6, 20, 2)
    >>> res = latent_hierarchy_em(data, max_iter=5)
    >>> res.w.shape, bool((res.objective[1:] >= res.objective[:-1] - 1e-6).all())
    ((6, 2), True)
    """
    check_inputs(data, likelihood, noise_scale, s2, root_var, greedy, min_duration, max_iter, tol)
    with jax.enable_x64(True):
        return _run(
            data, likelihood, noise_scale, s2, root_var, greedy, min_duration, max_iter, tol,
            progress_bar,
        )  # fmt: skip


def em_progress(max_iter: int, progress_bar: bool | None, desc: str):
    """``tqdm`` over EM iterations ``1..max_iter`` (``None``: shown unless `quiet`)."""
    show = (not quiet()) if progress_bar is None else bool(progress_bar)
    return tqdm(range(1, max_iter + 1), desc=desc, disable=not show, leave=False)


def _run(data, likelihood, noise_scale, s2, root_var, greedy, min_duration, max_iter, tol,
         progress_bar=None):  # fmt: skip
    k, d = data.n_tasks, data.n_features
    arrays = (
        jnp.asarray(data.X, jnp.float64),
        jnp.asarray(data.y, jnp.float64),
        jnp.asarray(data.task),
    )
    noise = 1.0 if noise_scale is None else float(noise_scale)
    mu0, lam = jnp.zeros(d), s2 * jnp.eye(d)
    star = Tree(jnp.zeros((k - 1, 2), jnp.int32), jnp.ones(k - 1))  # unused by the iid prior
    w = _update_w(
        np.zeros((k, d)), star, mu0, lam, arrays, noise, s2 + root_var, likelihood, iid=True
    )
    if likelihood == "gaussian" and noise_scale is None:
        resid = np.asarray(data.y) - np.sum(np.asarray(data.X) * w[np.asarray(data.task)], -1)
        noise = float(max(np.sqrt(np.mean(resid**2) * data.n / max(data.n - k * d, 1)), 1e-3))
    else:
        noise = noise if likelihood == "gaussian" else None
    kw = {"likelihood": likelihood, "noise": noise, "s2": s2, "root_var": root_var}

    def objective(w, tree, mu0, lam):
        return float(em_objective(jnp.asarray(w), tree, mu0, lam, data, **kw))

    def propose(w, lam):
        t = greedy_coalescent(w, cov=np.asarray(lam), method=greedy, min_duration=min_duration)
        return Tree(t.merges, jnp.asarray(np.asarray(t.times), jnp.float64))

    tree = propose(w, lam)
    mu0, lam = _update_params(w, tree, s2, root_var)
    trace = [objective(w, tree, mu0, lam)]
    converged = False
    bar = em_progress(max_iter, progress_bar, "latent-hierarchy EM")
    for it in bar:
        cand = propose(w, lam)
        f_cand = objective(w, cand, mu0, lam)
        if f_cand > trace[-1]:
            tree = cand
        w_new = _update_w(w, tree, mu0, lam, arrays, noise, root_var, likelihood)
        if objective(w_new, tree, mu0, lam) >= objective(w, tree, mu0, lam):
            w = w_new
        mu0, lam = _update_params(w, tree, s2, root_var)
        trace.append(objective(w, tree, mu0, lam))
        bar.set_postfix(objective=f"{trace[-1]:.4g}", refresh=False)
        if abs(trace[-1] - trace[-2]) < tol * (1.0 + abs(trace[-1])):
            converged = True
            break
    bar.close()
    return EMResult(
        tree=Tree(np.asarray(tree.merges), np.asarray(tree.times)),
        w=np.asarray(w),
        mu0=np.asarray(mu0),
        Lambda=np.asarray(lam),
        noise=noise,
        objective=np.asarray(trace),
        n_iter=it,
        converged=converged,
    )

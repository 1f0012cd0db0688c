"""Daume III (2009) greedy-tree EM for the covariance-sharing latent hierarchy.

Model and collapsed target: `bayesmtl.inference.latent_hierarchy_cov_target` (``W`` integrated out
for the Gaussian likelihood: ``y_k ~ N(0, X_k Sigma_k X_k' + noise^2 I)``,
``Sigma_k = diag(exp S_k) R diag(exp S_k)``).

EM (`covariance_sharing_em`) is block-coordinate ascent on a log joint ``F`` (``W`` integrated for
the Gaussian likelihood; for the Bernoulli likelihood ``+ log N(w_z; 0, I)`` with ``w_z`` a
parameter), plus ``log Kingman(tree)``:

1. **tree**: the greedy coalescent (`bayesmtl.inference.coalescent_greedy.greedy_coalescent`) on the
   current leaf log-scales ``S`` whitened by ``Lambda``; kept only if it raises ``F``;
2. **continuous parameters** given the tree: L-BFGS (float64, JAX gradients through NumPyro's
   ``log_density`` and bijections); kept only if it raises ``F``;
3. (``centered=True`` only) **Lambda**: the closed-form conditional mode ``(s2 I + Q) / (K + 2D + 2)``,
   ``Q`` the message scatter of ``S`` (`lambda_scatter`).

Every step is non-decreasing in ``F``, so the objective trace is monotone.

A MAP depends on the parametrisation. ``F`` is the density of the model's own sites in their own
coordinates, optimised through NumPyro's bijections without their Jacobians:

* ``centered=False`` (default): the log-scales in the model's non-centred coordinates
  ``S = chol(C) Z chol(Lambda)'`` (site ``log_scale_z``, ``C`` the tree covariance), so
  ``F = log p(y | S(Z), R, noise) + log N(Z; 0, I) + log IW(Lambda) + log IW(Sigma_R)
  + log HalfNormal(noise) + log Kingman``, maximised over ``(Z, Sigma_R, Lambda, noise)``. It is
  bounded.
* ``centered=True``: the log-scales themselves, ``F`` with ``log N(S; 0, C (x) Lambda)``. This joint
  density is unbounded: as the merge waits shrink, coinciding log-scales gain
  ``-(D/2) log(wait)`` per merge, and the data cannot stop the collapse because each task informs its
  log-scales only through its one weight vector. Only the greedy trees' floor ``min_duration``
  bounds it; measured on 8 tasks in two groups of log-scale +-1.5 (D = 3, 25 rows each), 60
  iterations took every ``S`` to 0.5, every merge wait to the floor and ``R``'s correlations to
  0.99. Kept for comparison.

For the Bernoulli likelihood the weights cannot be integrated in closed form and the MAP is joint
in the *non-centred* ``w_z`` (``w_k = exp(S_k) * (L_R w_z,k)``): in the centred ``w`` the joint
density is unbounded (``S -> -inf`` with ``w -> 0``, the funnel), in ``w_z`` it is not.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from bayesmtl.data import TaskData
from bayesmtl.inference.coalescent_greedy import greedy_coalescent
from bayesmtl.inference.latent_hierarchy_cov_target import (
    JITTER,
    lambda_scatter,
    s_from_z,
    target_model,
    task_statistics,
    weights_posterior,
    z_from_s,
)
from bayesmtl.inference.latent_hierarchy_em import check_inputs, em_progress, em_summary
from bayesmtl.models.coalescent import Tree, kingman_log_prob
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer.util import log_density
from scipy.optimize import minimize

__all__ = ["CovarianceEMResult", "covariance_sharing_em"]


@jax.jit
def _s_from_z(z, merges, times, lam, root_var):
    return s_from_z(z, Tree(merges, times), lam, root_var)


@jax.jit
def _z_from_s(s, merges, times, lam, root_var):
    return z_from_s(s, Tree(merges, times), lam, root_var)


@partial(jax.jit, static_argnames=("root_var",))
def _lambda_mode(log_scale, merges, times, s2, root_var):
    k, d = log_scale.shape
    q = lambda_scatter(log_scale, Tree(merges, times), root_var)
    lam = (s2 * jnp.eye(d) + q) / (k + 2 * d + 2)
    return 0.5 * (lam + lam.T)


class CovarianceEMResult(NamedTuple):
    """Output of `covariance_sharing_em`: the tree, leaf log-scales ``S (K, D)``, ``R`` (and the
    ``Sigma_R`` it is the correlation of), ``Lambda``, the weights ``W (K, D)`` (Gaussian: posterior
    mean given the MAP; Bernoulli: the MAP), the noise sd (``None`` for Bernoulli), the objective
    after each iteration, iterations run, convergence flag."""

    tree: Tree
    S: np.ndarray
    R: np.ndarray
    Sigma_R: np.ndarray
    Lambda: np.ndarray
    W: np.ndarray
    noise: float | None
    objective: np.ndarray
    n_iter: int
    converged: bool

    def summary(self, *, names=None) -> dict:
        """The dict the CLI writes to ``summary.json`` for ``--method em`` (the keys of
        `bayesmtl.inference.latent_hierarchy_em.EMResult.summary`): ``newick``, ``clades`` (task
        index lists, smallest first), ``objective``, ``n_iter``, ``converged``."""
        return em_summary(self, names)


def covariance_sharing_em(
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
    centered: bool = False,
    progress_bar: bool | None = None,
) -> CovarianceEMResult:
    """Fit Daume's covariance-sharing latent hierarchy by greedy-tree EM (see the module docs).

    Parameters
    ----------
    data : TaskData
        At least 2 tasks, observed ``y``.
    likelihood : {"gaussian", "bernoulli"}
    noise_scale : float, optional
        Fixed Gaussian noise sd; optimised with the other parameters (``HalfNormal(1)`` prior)
        when omitted.
    s2, root_var : float
        ``Lambda ~ IW(s2 I, D+1)``; variance factor of the root of the log-scales.
    greedy : {"maxprob", "rate1"}
        Greedy coalescent variant for the tree step.
    min_duration : float
        Floor on merge waits in the greedy trees (keeps the objective bounded).
    max_iter : int
    tol : float
        Stop when the objective gains less than ``tol * (1 + |F|)``.
    centered : bool
        MAP in the centred log-scales (degenerate, see the module docs) instead of the model's
        non-centred coordinates.
    progress_bar : bool, optional
        A bar over the iterations with the objective; by default shown unless ``CI`` is set.

    Returns
    -------
    CovarianceEMResult

    Examples
    --------
    >>> import jax
    >>> from bayesmtl.models.latent_hierarchy import simulate
    >>> data, _ = simulate(jax.random.PRNGKey(0), 5, 20, 2, model="covariance")
    >>> res = covariance_sharing_em(data, max_iter=3)
    >>> res.S.shape, bool((res.objective[1:] >= res.objective[:-1]).all())
    ((5, 2), True)
    """
    check_inputs(data, likelihood, noise_scale, s2, root_var, greedy, min_duration, max_iter, tol)
    with jax.enable_x64(True):
        return _run(
            data, likelihood, noise_scale, float(s2), float(root_var), greedy,
            float(min_duration), max_iter, tol, bool(centered), progress_bar,
        )  # fmt: skip


def _start(data, likelihood, stats):
    """Ridge weights per task, log-scales from their sizes, noise from their residuals."""
    xtx, xty = stats[:2]
    d = data.n_features
    if likelihood == "bernoulli":  # least squares on 4 (y - 1/2): the logit's slope at 0
        xty = np.zeros_like(xty)
        np.add.at(xty, data.task, data.X * (4.0 * (data.y - 0.5))[:, None])
    w = np.linalg.solve(xtx + np.eye(d), xty[..., None])[..., 0]
    s = np.log(np.abs(w) + 0.1)
    resid = np.asarray(data.y) - np.sum(np.asarray(data.X) * w[np.asarray(data.task)], -1)
    noise = float(np.clip(np.sqrt(np.mean(resid**2)), 1e-2, 10.0))
    return w, s, noise


def _run(
    data, likelihood, noise_scale, s2, root_var, greedy, min_duration, max_iter, tol, centered,
    progress_bar=None,
):
    d = data.n_features
    stats = tuple(jnp.asarray(a) for a in task_statistics(data))
    bern = likelihood == "bernoulli"
    kw = {"likelihood": likelihood, "s2": s2, "root_var": root_var, "noise_scale": noise_scale,
          "stats": None if bern else stats, "centered": centered}  # fmt: skip
    w0, s0, noise0 = _start(data, likelihood, task_statistics(data))

    def propose(s, lam):
        t = greedy_coalescent(np.asarray(s), cov=np.asarray(lam), method=greedy,
                              min_duration=min_duration)  # fmt: skip
        return Tree(jnp.asarray(t.merges), jnp.asarray(np.asarray(t.times), jnp.float64))

    tree = propose(s0, s2 * np.eye(d))
    lam = _lambda_mode(jnp.asarray(s0), tree.merges, tree.times, s2, root_var)
    params = {"Sigma_R": jnp.eye(d)}
    if centered:  # Lambda is conditioned and has its closed-form step
        params["log_scale"] = jnp.asarray(s0)
    else:  # Lambda is optimised with the rest; lam_arg None leaves it a latent site
        params["Lambda"] = lam
        params["log_scale_z"] = _z_from_s(jnp.asarray(s0), tree.merges, tree.times, lam, root_var)
    if bern:
        params["w_z"] = jnp.asarray(w0 / np.exp(s0))
    elif noise_scale is None:
        params["noise"] = jnp.asarray(noise0)
    lam_arg = lam if centered else None
    probe = handlers.trace(handlers.seed(target_model, 0)).get_trace(
        data, tree=tree, lam=lam_arg, **kw
    )
    bij = {n: biject_to(probe[n]["fn"].support) for n in params}
    flat, unravel = ravel_pytree({n: bij[n].inv(v) for n, v in params.items()})

    def constrain(u):
        return {n: bij[n](v) for n, v in unravel(u).items()}

    def unconstrain(p):
        return ravel_pytree({n: bij[n].inv(v) for n, v in p.items()})[0]

    def log_scales(p, tree, lam):
        if centered:
            return p["log_scale"], lam
        return _s_from_z(p["log_scale_z"], tree.merges, tree.times, p["Lambda"], root_var), p[
            "Lambda"
        ]

    def logjoint(u, merges, times, lam):
        t = Tree(merges, times)
        lp, _ = log_density(target_model, (data,), {**kw, "tree": t, "lam": lam}, constrain(u))
        return lp + kingman_log_prob(t)

    # one compiled function serves the objective and L-BFGS (tree arrays are arguments)
    neg_vg = jax.jit(jax.value_and_grad(lambda u, m, t, lam: -logjoint(u, m, t, lam)))

    def objective(u, tree, lam):
        return -float(neg_vg(u, tree.merges, tree.times, lam)[0])

    def optimise(u, tree, lam):
        def fun(x):
            v, g = neg_vg(jnp.asarray(x), tree.merges, tree.times, lam)
            return float(v), np.asarray(g, float)

        res = minimize(fun, np.asarray(u, float), jac=True, method="L-BFGS-B",
                       options={"maxiter": 500, "gtol": 1e-6})  # fmt: skip
        return jnp.asarray(res.x)

    trace = [objective(flat, tree, lam_arg)]
    converged, it = False, 0
    bar = em_progress(max_iter, progress_bar, "covariance-sharing EM")
    for it in bar:
        p = constrain(flat)
        s_cur, lam_cur = log_scales(p, tree, lam_arg)
        cand = propose(s_cur, lam_cur)
        flat_cand = flat
        if not centered:  # the same log-scales in the coordinates of the candidate tree
            z = _z_from_s(s_cur, cand.merges, cand.times, lam_cur, root_var)
            flat_cand = unconstrain({**p, "log_scale_z": z})
        f_tree, f_cand = trace[-1], objective(flat_cand, cand, lam_arg)
        if f_cand > f_tree:
            tree, flat, f_tree = cand, flat_cand, f_cand
        new = optimise(flat, tree, lam_arg)
        f_new = objective(new, tree, lam_arg)
        if f_new > f_tree:
            flat, f_tree = new, f_new
        if centered:
            s_cur = constrain(flat)["log_scale"]
            lam_new = _lambda_mode(s_cur, tree.merges, tree.times, s2, root_var)
            f_lam = objective(flat, tree, lam_new)
            if f_lam >= f_tree:  # the exact conditional mode; the guard only absorbs rounding
                lam_arg, f_tree = lam_new, f_lam
        trace.append(f_tree)
        bar.set_postfix(objective=f"{trace[-1]:.4g}", refresh=False)
        if abs(trace[-1] - trace[-2]) < tol * (1.0 + abs(trace[-1])):
            converged = True
            break
    bar.close()
    p = constrain(flat)
    s, lam = log_scales(p, tree, lam_arg)
    return _result(p, s, tree, lam, trace, it, converged, stats, bern, noise_scale)


def _result(p, s, tree, lam, trace, it, converged, stats, bern, noise_scale):
    sig = p["Sigma_R"]
    sd = jnp.sqrt(jnp.diagonal(sig))
    r = sig / sd[:, None] / sd[None, :]
    if bern:
        d = r.shape[0]
        w = jnp.exp(s) * (p["w_z"] @ jnp.linalg.cholesky(r + JITTER * jnp.eye(d)).T)
        noise = None
    else:
        noise = float(p["noise"]) if "noise" in p else float(noise_scale)
        w = weights_posterior(s, r, noise, stats[0], stats[1])
    return CovarianceEMResult(
        tree=Tree(np.asarray(tree.merges), np.asarray(tree.times)),
        S=np.asarray(s),
        R=np.asarray(r),
        Sigma_R=np.asarray(sig),
        Lambda=np.asarray(lam),
        W=np.asarray(w),
        noise=noise,
        objective=np.asarray(trace),
        n_iter=it,
        converged=converged,
    )

"""Daume III (2009) covariance sharing: the model given a tree with the weights integrated, and EM.

Model (`bayesmtl.models.latent_hierarchy.covariance_sharing`): ``R`` is the correlation of
``Sigma_R ~ IW(I, D+1)``, ``Lambda ~ IW(s2 I, D+1)``, tree ``~ Kingman``, the log standard deviations
``S`` (site ``log_scale``) diffuse down the tree from a root ``N(0, root_var Lambda)``,
``w_k ~ N(0, Sigma_k)`` with ``Sigma_k = diag(exp S_k) R diag(exp S_k)``, and ``y`` is Gaussian
(``noise ~ HalfNormal(1)`` unless fixed) or Bernoulli.

Given the tree, both routes (this EM and `bayesmtl.inference.latent_hierarchy_cov_mcmc`) work with
`target_model`: ``covariance_sharing(centered=True)`` with ``Lambda`` conditioned (it has its own
exact step: a closed-form mode here, a conjugate draw in the sampler) and, for the Gaussian
likelihood, the weights integrated out exactly,

    y_k ~ N(0, X_k Sigma_k X_k' + noise^2 I),

evaluated per task in O(D^3) from ``X_k'X_k``, ``X_k'y_k``, ``y_k'y_k`` (`gaussian_log_marginal`).

EM (`covariance_sharing_em`) is block-coordinate ascent on the log joint
``F = log p(y, S, Sigma_R, Lambda, noise | tree) + log Kingman(tree)`` (``W`` integrated; for the
Bernoulli likelihood ``+ log N(w_z; 0, I)`` and ``w_z`` is a parameter):

1. **tree**: the greedy coalescent (`bayesmtl.inference.coalescent_greedy.greedy_coalescent`) on the
   current leaf log-scales ``S`` whitened by ``Lambda``; kept only if it raises ``F``;
2. **S, Sigma_R, noise** (Gaussian) or **S, Sigma_R, w_z** (Bernoulli): L-BFGS (float64, JAX
   gradients) of ``F`` given the tree and ``Lambda``; kept only if it raises ``F``;
3. **Lambda**: the closed-form mode ``(s2 I + Q) / (K + 2D + 2)``, with ``Q`` the message scatter of
   ``S`` (local evidences ``d_i d_i' / s_i`` plus the root term ``m m' / (v_root + root_var)``).

Every step is non-decreasing in ``F``, so the objective trace is monotone. A MAP depends on the
parametrisation; ``F`` is the density of the model's own sites in their own coordinates (``Sigma_R``
a covariance matrix, ``log_scale`` the log standard deviations, ``noise`` the standard deviation,
``w_z`` the standard-normal non-centred weights), optimised through NumPyro's bijections but without
their Jacobians. For the Gaussian likelihood it is a marginal MAP over ``(S, Sigma_R, Lambda, noise)``;
for the Bernoulli likelihood the weights cannot be integrated in closed form and the MAP is joint in
the *non-centred* ``w_z`` (``w_k = exp(S_k) * (L_R w_z,k)``): in the centred ``w`` the joint density
is unbounded (``S -> -inf`` with ``w -> 0``, the funnel), in ``w_z`` it is not.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from bayesmtl.data import TaskData
from bayesmtl.inference.coalescent_greedy import GREEDY_METHODS, greedy_coalescent
from bayesmtl.models.coalescent import Tree, clades, kingman_log_prob, to_newick, upward_messages
from bayesmtl.models.latent_hierarchy import covariance_sharing
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer.util import log_density
from scipy.optimize import minimize

__all__ = [
    "CovarianceEMResult",
    "covariance_sharing_em",
    "gaussian_log_marginal",
    "lambda_scatter",
    "target_model",
    "task_statistics",
    "weights_posterior",
]

JITTER = 1e-6  # the model's jitter on R before its Cholesky factor


def task_statistics(data: TaskData) -> tuple:
    """Per-task sums ``X_k'X_k (K, D, D)``, ``X_k'y_k (K, D)``, ``y_k'y_k (K,)`` and row counts.

    Examples
    --------
    >>> import numpy as np
    >>> d = TaskData(X=np.ones((3, 1)), y=[1.0, 2.0, 3.0], task=[0, 0, 1])
    >>> [np.asarray(a).ravel().tolist() for a in task_statistics(d)]
    [[2.0, 1.0], [3.0, 3.0], [5.0, 9.0], [2.0, 1.0]]
    """
    k, d = data.n_tasks, data.n_features
    x, task = np.asarray(data.X, float), np.asarray(data.task)
    xtx = np.zeros((k, d, d))
    np.add.at(xtx, task, x[:, :, None] * x[:, None, :])
    y = np.zeros(data.n) if data.y is None else np.asarray(data.y, float)
    xty = np.zeros((k, d))
    np.add.at(xty, task, x * y[:, None])
    return xtx, xty, np.bincount(task, y**2, k), np.bincount(task, minlength=k).astype(float)


def _factors(log_scale, r, noise, xtx, xty):
    d = log_scale.shape[-1]
    g = jnp.exp(log_scale)[:, :, None] * jnp.linalg.cholesky(r + JITTER * jnp.eye(d))[None]
    v = noise**2
    m = jnp.eye(d) + jnp.einsum("kji,kjl,klm->kim", g, xtx, g) / v
    u = jnp.einsum("kji,kj->ki", g, xty) / v
    return g, jnp.linalg.cholesky(m), u


def gaussian_log_marginal(log_scale, r, noise, xtx, xty, yty, n_rows):
    """``log p(y_k | S_k, R, noise)`` per task, the weights integrated out: shape ``(K,)``.

    ``y_k ~ N(0, X_k Sigma_k X_k' + noise^2 I)`` with ``Sigma_k = G_k G_k'``,
    ``G_k = diag(exp S_k) chol(R + 1e-6 I)`` (the model's own jitter). With
    ``M_k = I + G_k'X_k'X_k G_k / noise^2`` and ``u_k = G_k'X_k'y_k / noise^2`` (Woodbury and
    Sylvester): ``-n_k/2 log(2 pi noise^2) - y_k'y_k / (2 noise^2) - log|M_k| / 2 + u_k'M_k^-1 u_k / 2``.
    O(K D^3); tasks without rows contribute 0.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> lp = gaussian_log_marginal(jnp.zeros((1, 1)), jnp.eye(1), 1.0, jnp.ones((1, 1, 1)),
    ...                            jnp.ones((1, 1)), jnp.ones(1), jnp.ones(1))
    >>> round(float(lp[0]), 4)   # y = 1 ~ N(0, 1 + 1e-6 + 1)
    -1.5155
    """
    _, cm, u = _factors(log_scale, r, noise, xtx, xty)
    a = jax.scipy.linalg.solve_triangular(cm, u[..., None], lower=True)[..., 0]
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(cm, axis1=-2, axis2=-1)), -1)
    v = noise**2
    return (
        -0.5 * n_rows * jnp.log(2 * jnp.pi * v)
        - 0.5 * yty / v
        - 0.5 * logdet
        + 0.5 * jnp.sum(a**2, -1)
    )


def weights_posterior(log_scale, r, noise, xtx, xty, z=None):
    """Mean of ``W | S, R, noise, y`` ``(K, D)`` (Gaussian likelihood), or a draw given ``z``.

    Per task ``N(G M^-1 u, G M^-1 G')`` (see `gaussian_log_marginal`); with standard-normal
    ``z (K, D)`` the draw ``G (M^-1 u + chol(M)^-T z)``.
    """
    g, cm, u = _factors(log_scale, r, noise, xtx, xty)
    mean = jax.scipy.linalg.cho_solve((cm, True), u[..., None])[..., 0]
    if z is not None:
        mean = (
            mean
            + jax.scipy.linalg.solve_triangular(
                jnp.swapaxes(cm, -1, -2), z[..., None], lower=False
            )[..., 0]
        )
    return jnp.einsum("kij,kj->ki", g, mean)


_HIDDEN = ("w_z", "w", "y")


def target_model(
    data: TaskData,
    *,
    tree,
    lam,
    stats=None,
    likelihood: str = "gaussian",
    s2: float = 1.0,
    root_var: float = 1.0,
    noise_scale: float | None = None,
    centered: bool = True,
):
    """``covariance_sharing`` given ``Lambda = lam``, the Gaussian weights integrated.

    Bernoulli with observed ``y``: the model itself (non-centred ``w_z``). Otherwise the weights and
    ``y`` are hidden from outer handlers and replaced by the factor ``y_marginal`` =
    ``sum_k gaussian_log_marginal`` (omitted when ``stats`` is ``None``: a prior run). Latent sites:
    ``Sigma_R``, ``log_scale`` (``log_scale_z`` when ``centered=False``: ``S = chol(C) Z chol(Lambda)'``),
    ``noise`` (unless fixed) and, for Bernoulli, ``w_z``.
    """
    model = handlers.condition(covariance_sharing, data={"Lambda": lam})
    kw = {"tree": tree, "s2": s2, "root_var": root_var, "centered": centered}
    if likelihood == "bernoulli" and data.y is not None:
        model(data, likelihood="bernoulli", **kw)
        return
    fill = {"w_z": jnp.zeros((data.n_tasks, data.n_features)), "y": jnp.zeros(data.n)}
    if likelihood != "gaussian":  # a prior run of the Bernoulli model: no noise site
        noise_scale = 1.0
    with handlers.trace() as tr, handlers.block(hide=list(_HIDDEN)), handlers.condition(data=fill):
        model(data.without_y(), likelihood="gaussian", noise_scale=noise_scale, **kw)
    if stats is not None:
        noise = tr["noise"]["value"] if "noise" in tr else noise_scale
        lp = gaussian_log_marginal(tr["log_scale"]["value"], tr["R"]["value"], noise, *stats)
        numpyro.factor("y_marginal", jnp.sum(lp))


def lambda_scatter(log_scale, tree, root_var: float = 1.0):
    """``Q``: the message scatter of the leaf log-scales, so ``Lambda | S, tree ~ IW(s2 I + Q, D+1+K)``.

    ``Q = sum_i d_i d_i' / s_i + m m' / (v_root + root_var)`` over the ``K - 1`` local evidences
    ``N(d_i; 0, s_i Lambda)`` and the root term ``N(m; 0, (v_root + root_var) Lambda)``.
    """
    msg = upward_messages(tree, log_scale)
    m = msg.mean[-1]
    return (msg.diff / msg.spread[:, None]).T @ msg.diff + jnp.outer(m, m) / (
        msg.var[-1] + root_var
    )


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
        cl = sorted(clades(self.tree), key=lambda c: (len(c), sorted(c)))
        return {
            "newick": to_newick(self.tree, names),
            "clades": [sorted(int(i) for i in c) for c in cl],
            "objective": float(self.objective[-1]),
            "n_iter": int(self.n_iter),
            "converged": bool(self.converged),
        }


def _check(data, likelihood, noise_scale, s2, root_var, greedy, min_duration, max_iter):
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
    _check(data, likelihood, noise_scale, s2, root_var, greedy, min_duration, max_iter)
    with jax.enable_x64(True):
        return _run(
            data, likelihood, noise_scale, float(s2), float(root_var), greedy,
            float(min_duration), max_iter, tol,
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


def _run(data, likelihood, noise_scale, s2, root_var, greedy, min_duration, max_iter, tol):
    d = data.n_features
    stats = tuple(jnp.asarray(a) for a in task_statistics(data))
    bern = likelihood == "bernoulli"
    kw = {"likelihood": likelihood, "s2": s2, "root_var": root_var, "noise_scale": noise_scale,
          "stats": None if bern else stats}  # fmt: skip
    w0, s, noise0 = _start(data, likelihood, task_statistics(data))
    params = {"Sigma_R": jnp.eye(d), "log_scale": jnp.asarray(s)}
    if bern:
        params["w_z"] = jnp.asarray(w0 / np.exp(s))
    elif noise_scale is None:
        params["noise"] = jnp.asarray(noise0)

    def propose(s, lam):
        t = greedy_coalescent(np.asarray(s), cov=np.asarray(lam), method=greedy,
                              min_duration=min_duration)  # fmt: skip
        return Tree(jnp.asarray(t.merges), jnp.asarray(np.asarray(t.times), jnp.float64))

    tree = propose(s, s2 * np.eye(d))
    lam = _lambda_mode(params["log_scale"], tree.merges, tree.times, s2, root_var)
    probe = handlers.trace(handlers.seed(target_model, 0)).get_trace(data, tree=tree, lam=lam, **kw)
    bij = {n: biject_to(probe[n]["fn"].support) for n in params}
    flat, unravel = ravel_pytree({n: bij[n].inv(v) for n, v in params.items()})

    def constrain(u):
        return {n: bij[n](v) for n, v in unravel(u).items()}

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

    trace = [objective(flat, tree, lam)]
    converged, it = False, 0
    for it in range(1, max_iter + 1):
        s_cur = constrain(flat)["log_scale"]
        cand = propose(s_cur, lam)
        f_tree, f_cand = trace[-1], objective(flat, cand, lam)
        if f_cand > f_tree:
            tree, f_tree = cand, f_cand
        new = optimise(flat, tree, lam)
        f_new = objective(new, tree, lam)
        if f_new > f_tree:
            flat, f_tree = new, f_new
        lam_new = _lambda_mode(constrain(flat)["log_scale"], tree.merges, tree.times, s2, root_var)
        f_lam = objective(flat, tree, lam_new)
        if f_lam >= f_tree:  # the exact conditional mode; the guard only absorbs rounding
            lam, f_tree = lam_new, f_lam
        trace.append(f_tree)
        if abs(trace[-1] - trace[-2]) < tol * (1.0 + abs(trace[-1])):
            converged = True
            break
    return _result(constrain(flat), tree, lam, trace, it, converged, stats, bern, noise_scale)


def _result(p, tree, lam, trace, it, converged, stats, bern, noise_scale):
    sig = p["Sigma_R"]
    sd = jnp.sqrt(jnp.diagonal(sig))
    r = sig / sd[:, None] / sd[None, :]
    s = p["log_scale"]
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

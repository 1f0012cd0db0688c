"""The covariance-sharing latent hierarchy given a tree, with the Gaussian weights integrated out.

Model (`bayesmtl.models.latent_hierarchy.covariance_sharing`): ``R`` is the correlation of
``Sigma_R ~ IW(I, D+1)``, ``Lambda ~ IW(s2 I, D+1)``, tree ``~ Kingman``, the log standard deviations
``S`` (site ``log_scale``) diffuse down the tree from a root ``N(0, root_var Lambda)``,
``w_k ~ N(0, Sigma_k)`` with ``Sigma_k = diag(exp S_k) R diag(exp S_k)``, and ``y`` is Gaussian
(``noise ~ HalfNormal(1)`` unless fixed) or Bernoulli.

Both inference routes (`bayesmtl.inference.latent_hierarchy_cov` EM and
`bayesmtl.inference.latent_hierarchy_cov_mcmc`) work with `target_model`: ``covariance_sharing``
with ``Lambda`` optionally conditioned (when it has its own step) and, for the Gaussian likelihood,
the weights integrated out exactly,

    y_k ~ N(0, X_k Sigma_k X_k' + noise^2 I),

evaluated per task in O(D^3) from ``X_k'X_k``, ``X_k'y_k``, ``y_k'y_k`` (`gaussian_log_marginal`).
Also here: the posterior of the weights given the scales (`weights_posterior`), the message scatter
of the log-scales that makes ``Lambda`` conjugate (`lambda_scatter`), and the map between the
log-scales and the model's non-centred coordinates (`s_from_z`, `z_from_s`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from bayesmtl.data import TaskData
from bayesmtl.models.coalescent import tree_covariance, upward_messages
from bayesmtl.models.latent_hierarchy import covariance_sharing
from numpyro import handlers

__all__ = [
    "JITTER",
    "gaussian_log_marginal",
    "lambda_scatter",
    "s_from_z",
    "target_model",
    "task_statistics",
    "weights_posterior",
    "z_from_s",
]

JITTER = 1e-6  # the model's jitter on R before its Cholesky factor


def task_statistics(data: TaskData) -> tuple:
    """Per-task sums ``X_k'X_k (K, D, D)``, ``X_k'y_k (K, D)``, ``y_k'y_k (K,)`` and row counts.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesmtl.data import TaskData
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
    """``covariance_sharing`` given ``Lambda = lam`` (free when ``None``), the Gaussian weights
    integrated.

    Bernoulli with observed ``y``: the model itself (non-centred ``w_z``). Otherwise the weights and
    ``y`` are hidden from outer handlers and replaced by the factor ``y_marginal`` =
    ``sum_k gaussian_log_marginal`` (omitted when ``stats`` is ``None``: a prior run). Latent sites:
    ``Sigma_R``, ``log_scale`` (``log_scale_z`` when ``centered=False``: ``S = chol(C) Z chol(Lambda)'``),
    ``noise`` (unless fixed) and, for Bernoulli, ``w_z``.
    """
    model = (
        covariance_sharing
        if lam is None
        else handlers.condition(covariance_sharing, data={"Lambda": lam})
    )
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


def s_from_z(z, tree, lam, root_var: float = 1.0):
    """Log-scales from the model's non-centred coordinates: ``S = chol(C) Z chol(Lambda)'``."""
    lc = jnp.linalg.cholesky(tree_covariance(tree, root_var))
    return lc @ z @ jnp.linalg.cholesky(lam).T


def z_from_s(s, tree, lam, root_var: float = 1.0):
    """The inverse of `s_from_z`: ``Z = chol(C)^-1 S chol(Lambda)^-T``."""
    lc = jnp.linalg.cholesky(tree_covariance(tree, root_var))
    a = jax.scipy.linalg.solve_triangular(lc, s, lower=True)
    return jax.scipy.linalg.solve_triangular(jnp.linalg.cholesky(lam), a.T, lower=True).T

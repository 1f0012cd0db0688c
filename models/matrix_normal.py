"""Matrix-normal helpers: W ~ MN(M, U, V) for W in R^{P x D}.

``U`` (P x P) is the row (task) covariance and ``V`` (D x D) the column (feature) covariance:
``vec(W) ~ N(vec(M), V kron U)`` with ``vec`` stacking columns. Both are passed as lower Cholesky
factors so the log density costs two triangular solves and no P D x P D matrix.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

__all__ = ["matrix_normal_log_prob", "sample_matrix_normal", "vec_covariance"]


def _check(W_shape, row_tril, col_tril) -> None:
    P, D = W_shape[-2:]
    if row_tril.shape[-2:] != (P, P):
        raise ValueError(
            f"row_scale_tril: expected shape (..., {P}, {P}) for {P} rows, got {row_tril.shape}"
        )
    if col_tril.shape[-2:] != (D, D):
        raise ValueError(
            f"col_scale_tril: expected shape (..., {D}, {D}) for {D} columns, got {col_tril.shape}"
        )


def matrix_normal_log_prob(W, loc, row_scale_tril, col_scale_tril):
    """Log density of the matrix-normal MN(loc, U, V) at ``W``.

    Parameters
    ----------
    W : array_like, shape (..., P, D)
    loc : array_like, broadcastable to W
    row_scale_tril : array_like, shape (..., P, P)
        Lower Cholesky factor of the row covariance ``U``.
    col_scale_tril : array_like, shape (..., D, D)
        Lower Cholesky factor of the column covariance ``V``.

    Returns
    -------
    jax.Array, shape (...)

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> round(float(matrix_normal_log_prob(jnp.zeros((2, 3)), 0.0, jnp.eye(2), jnp.eye(3))), 3)
    -5.514
    """
    W = jnp.asarray(W)
    Lr = jnp.asarray(row_scale_tril)
    Lc = jnp.asarray(col_scale_tril)
    _check(W.shape, Lr, Lc)
    P, D = W.shape[-2:]
    R = W - loc
    A = solve_triangular(Lr, R, lower=True)  # Lr^-1 R, (..., P, D)
    B = solve_triangular(Lc, jnp.swapaxes(A, -1, -2), lower=True)  # Lc^-1 A', (..., D, P)
    maha = jnp.sum(B**2, axis=(-2, -1))
    logdet_r = jnp.sum(jnp.log(jnp.abs(jnp.diagonal(Lr, axis1=-2, axis2=-1))), -1)
    logdet_c = jnp.sum(jnp.log(jnp.abs(jnp.diagonal(Lc, axis1=-2, axis2=-1))), -1)
    return -0.5 * (P * D * jnp.log(2 * jnp.pi) + maha) - D * logdet_r - P * logdet_c


def sample_matrix_normal(key, loc, row_scale_tril, col_scale_tril, sample_shape=()):
    """Draw ``W = loc + L_r Z L_c'`` with ``Z`` standard normal.

    Parameters
    ----------
    key : jax.random key
    loc : array_like, shape (P, D)
    row_scale_tril, col_scale_tril : array_like
        Lower Cholesky factors of the row (P x P) and column (D x D) covariances.
    sample_shape : tuple of int

    Returns
    -------
    jax.Array, shape ``sample_shape + (P, D)``

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> sample_matrix_normal(jax.random.key(0), jnp.zeros((2, 3)), jnp.eye(2), jnp.eye(3), (5,)).shape
    (5, 2, 3)
    """
    Lr = jnp.asarray(row_scale_tril)
    Lc = jnp.asarray(col_scale_tril)
    loc = jnp.asarray(loc)
    P, D = Lr.shape[-1], Lc.shape[-1]
    _check(loc.shape if loc.ndim >= 2 else (P, D), Lr, Lc)
    Z = jax.random.normal(key, tuple(sample_shape) + (P, D), jnp.result_type(loc, Lr, float))
    return loc + Lr @ Z @ jnp.swapaxes(Lc, -1, -2)


def vec_covariance(row_cov, col_cov):
    """Dense covariance ``V kron U`` of ``vec(W)`` (columns stacked); a reference for small sizes.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> vec_covariance(jnp.eye(2), 2.0 * jnp.eye(3)).shape
    (6, 6)
    """
    return jnp.kron(jnp.asarray(col_cov), jnp.asarray(row_cov))

"""Bernoulli-logit output for the sparse multitask VEM: the Jaakkola-Jordan bound.

`bayesmtl.inference.vem_sparse.fit_vem_sparse` with ``likelihood="bernoulli"`` uses the pieces here.
Each task p has ``P(y_np = 1) = sigmoid(f_np)``, ``f_np = w_p' x_n + mu_p``, and no noise. With
``s = (2 y - 1) f`` the local variational bound of Jaakkola & Jordan (2000),

    log sigmoid(s) >= log sigmoid(xi) + (s - xi) / 2 - lambda(xi) (s^2 - xi^2),
    lambda(xi) = tanh(xi / 2) / (4 xi)      (1/8 at xi = 0),

holds for every xi and is tight at ``xi = |s|``. Since ``s^2 = f^2`` it is quadratic in W, so under
the mean-field factorisation of the Gaussian case every update stays in closed form:

* q(W) factorises over tasks (the prior ``W_i = V Z_i + E_i`` has task covariance ``tau I_P`` once
  Z and V are fixed): row p has precision ``X' diag(2 lambda(xi_p)) X + diag(E gamma) / tau`` and mean
  from ``X' (y_p - 1/2 - 2 lambda(xi_p) mu_p) + (V_bar Z_bar)_p E gamma / tau``.
* ``xi_np^2 = E[f_np^2]`` maximises the bound given q(W) and mu.
* mu_p (a point estimate with a flat prior) is the bound's maximiser at fixed xi:
  ``sum_n (y_np - 1/2 - 2 lambda_np x_n' w_p) / (2 sum_n lambda_np)``. A task whose labels are all
  equal has no finite maximum likelihood intercept: its mu then creeps up (by ~ 2 mu e^-mu per sweep)
  until the ELBO's relative change falls below ``tol``.
* q(Z), q(V), q(gamma), tau and the type-II hyperparameter step are the Gaussian case's, unchanged.

Every step maximises the bound over its block, so the ELBO (with the Jaakkola-Jordan term in place of
the exact expected log likelihood) never decreases.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from bayesmtl.inference._vem_sparse_core import (
    _elbo_given_loglik,
    _gamma_moments,
    _initial_state,
    _State,
    _update_latents,
    _update_tau,
)

__all__ = ["bernoulli_start", "expected_jj_bound", "jj_lambda", "optimal_xi"]


def jj_lambda(xi):
    """``lambda(xi) = tanh(xi / 2) / (4 xi)``, even in xi, with its limit 1/8 at 0.

    Examples
    --------
    >>> float(jj_lambda(0.0)), round(float(jj_lambda(2.0)), 6)
    (0.125, 0.095199)
    """
    xi = jnp.abs(jnp.asarray(xi))
    small = xi < 1e-4  # 1/8 - xi^2/96 is exact to O(xi^4) = 1e-16 there
    safe = jnp.where(small, 1.0, xi)
    return jnp.where(small, 0.125 - xi**2 / 96.0, jnp.tanh(0.5 * safe) / (4.0 * safe))


def _f_moments(X, M, Sw, mu):
    """E[f_np] and E[f_np^2] under q(w_p) = N(M_p, Sw_p), independent over tasks."""
    Ef = X @ M.T + mu
    quad = jnp.einsum("nd,pde,ne->np", X, Sw, X)
    return Ef, Ef**2 + quad


def optimal_xi(X, M, Sw, mu):
    """``xi_np = sqrt(E[f_np^2])``, the maximiser of `expected_jj_bound` over xi.

    Parameters
    ----------
    X : array_like, shape (N, D)
    M : array_like, shape (P, D)
        Means of q(w_p).
    Sw : array_like, shape (P, D, D)
        Covariances of q(w_p).
    mu : array_like, shape (P,)

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[1.0, -2.0]])
    >>> optimal_xi(X, np.array([[0.5, 1.0]]), np.zeros((1, 2, 2)), np.array([0.0])).tolist()
    [[1.5]]
    """
    _, Ef2 = _f_moments(X, M, Sw, mu)
    return jnp.sqrt(jnp.maximum(Ef2, 0.0))


def expected_jj_bound(X, Y, M, Sw, mu, xi):
    """The Jaakkola-Jordan lower bound of ``E_q[log p(y_np | f_np)]``, per observation and task.

    ``log sigmoid(xi) - xi/2 + lambda(xi) xi^2 + (y - 1/2) E[f] - lambda(xi) E[f^2]`` with
    ``q(w_p) = N(M_p, Sw_p)``; it is at most the exact expectation for every ``xi`` and equals
    ``log sigmoid((2y - 1) f)`` when q is a point mass and ``xi = |f|``.

    Parameters
    ----------
    X : array_like, shape (N, D)
    Y : array_like, shape (N, P)
        Labels in {0, 1}.
    M, Sw, mu : array_like
        As in `optimal_xi`.
    xi : array_like, shape (N, P)

    Returns
    -------
    jax.Array, shape (N, P)

    Examples
    --------
    >>> import jax, numpy as np
    >>> X, M, mu = np.array([[1.0, -2.0]]), np.array([[0.5, 1.0]]), np.array([0.25])
    >>> b = expected_jj_bound(X, np.array([[0.0]]), M, np.zeros((1, 2, 2)), mu, np.array([[1.25]]))
    >>> abs(float(b[0, 0] - jax.nn.log_sigmoid(1.25))) < 1e-6  # tight: point mass, xi = |f|
    True
    """
    Ef, Ef2 = _f_moments(X, M, Sw, mu)
    lam = jj_lambda(xi)
    return (jax.nn.log_sigmoid(xi) - 0.5 * xi + lam * xi**2 + (jnp.asarray(Y) - 0.5) * Ef
            - lam * Ef2)


def _elbo(s: _State, X, Y, XtX, b, Dq, ard):
    ll = jnp.sum(expected_jj_bound(X, Y, s.M, s.Sw, s.mu, s.xi))
    return _elbo_given_loglik(s, ll, b, ard)


def _update_w(s: _State, X, Y, Eg, lam):
    """q(W) at fixed xi (``lam = lambda(xi)``), mu and prior: one D-dim Gaussian per task."""
    P, D = s.M.shape
    A = jnp.einsum("nd,np,ne->pde", X, 2.0 * lam, X) + jnp.diag(Eg / s.tau)[None]
    rhs = (Y - 0.5 - 2.0 * lam * s.mu).T @ X + (s.Vm @ s.Zm) * (Eg / s.tau)
    Lc = jnp.linalg.cholesky(A)
    M = jax.vmap(lambda L, r: jax.scipy.linalg.cho_solve((L, True), r))(Lc, rhs)
    Sw = jax.vmap(lambda L: jax.scipy.linalg.cho_solve((L, True), jnp.eye(D)))(Lc)
    return s._replace(M=M, Uw=jnp.eye(P), Sw=Sw)


def _update_mu(s: _State, X, Y, lam):
    """The intercepts maximising the bound at fixed xi (``lam = lambda(xi)``) and q(W)."""
    XM = X @ s.M.T
    return s._replace(mu=jnp.sum(Y - 0.5 - 2.0 * lam * XM, 0) / (2.0 * jnp.sum(lam, 0)))


def _sweep(s: _State, X, Y, XtX, b, Dq, ard):
    """One round of coordinate updates: q(W), q(Z), q(V), q(gamma), mu, xi, tau."""
    Eg = _gamma_moments(s.gq, ard)[0][b]
    lam = jj_lambda(s.xi)  # (N, P)
    s = _update_w(s, X, Y, Eg, lam)
    s = _update_latents(s, b, Dq, ard, Eg)
    s = _update_mu(s, X, Y, lam)
    s = s._replace(xi=optimal_xi(X, s.M, s.Sw, s.mu))
    return _update_tau(s, b, ard)


def _elbo_then_sweep(s: _State, X, Y, XtX, b, Dq, ard):
    """The ELBO at ``s``, one sweep, and the moments of the new q(gamma), compiled as one program."""
    elbo = _elbo(s, X, Y, XtX, b, Dq, ard)
    s = _sweep(s, X, Y, XtX, b, Dq, ard)
    return elbo, s, _gamma_moments(s.gq, ard)[:3]


_step_jit = jax.jit(_elbo_then_sweep, static_argnums=(6,))


def _init_state(X, Y, XtX, rank, Q, hyper, ard, ridge) -> _State:
    """Start from the linearised logit: mu from the label means, W from a ridge fit of
    ``4 (y - mean y)`` (sigmoid has slope 1/4 at 0), xi = |f| at those weights."""
    N, D = X.shape
    ybar = jnp.clip(Y.mean(0), 0.5 / N, 1.0 - 0.5 / N)
    mu0 = jnp.log(ybar) - jnp.log1p(-ybar)
    M0 = jnp.linalg.solve(XtX + ridge * jnp.eye(D), X.T @ (4.0 * (Y - Y.mean(0)))).T
    xi0 = jnp.abs(X @ M0.T + mu0)
    return _initial_state(M0, mu0, rank, Q, hyper, ard, Sigma=None, xi=xi0)


def bernoulli_start(X, Y, XtX, b, Dq, *, rank: int, hyper, ard: bool, ridge: float):
    """Starting state, compiled step and its arguments for the Bernoulli VEM.

    The entry `bayesmtl.inference.vem_sparse.fit_vem_sparse` uses with ``likelihood="bernoulli"``:
    ``step(state, *args)`` returns the ELBO at ``state``, the state after one sweep and the moments
    of the new q(gamma); the ELBO at the start itself is not defined (q(W) has no covariance yet).
    Arrays are float64 (call it under ``jax.enable_x64``).

    Parameters
    ----------
    X : jax.Array, shape (N, D)
    Y : jax.Array, shape (N, P)
        Labels in {0, 1}.
    XtX : jax.Array, shape (D, D)
        ``X' X``.
    b : jax.Array of int, shape (D,)
        Block of each feature.
    Dq : jax.Array, shape (Q,)
        Number of features per block.
    rank : int
    hyper : tuple of float
        ``(omega, chi, phi)`` of the mixing prior (`bayesmtl.inference.vem_sparse.prior_hyperparameters`).
    ard : bool
        Type-II point estimates of the block precisions instead of a mixing prior.
    ridge : float
        Ridge penalty of the initial fit of the linearised logit.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> with jax.enable_x64(True):
    ...     X = jnp.asarray(np.random.default_rng(0).normal(size=(20, 2)))
    ...     Y = (X[:, :1] > 0) * jnp.ones((1, 3))
    ...     s, step, args = bernoulli_start(X, Y, X.T @ X, jnp.array([0, 1]), jnp.ones(2), rank=1,
    ...                                     hyper=(np.nan,) * 3, ard=True, ridge=1.0)
    ...     _, s, _ = step(s, *args)  # the start has no q(W) covariance yet: its ELBO is -inf
    ...     elbo, s, moments = step(s, *args)
    >>> s.M.shape, bool(jnp.isfinite(elbo))
    ((3, 2), True)
    """
    s = _init_state(X, Y, XtX, rank, Dq.shape[0], hyper, ard, ridge)
    return s, _step_jit, (X, Y, XtX, b, Dq, ard)

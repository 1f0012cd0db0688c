"""Mean-field variational EM for sparse Bayesian multitask learning (Archambeau, Guo & Zoeter 2011).

The model of `bayesmtl.models.sparse_mtl` (Gaussian likelihood, Omega_i = I) with the low-rank task
covariance written through a latent Z: ``W_i = V Z_i + E_i``, ``Z_i ~ MN(0, I_K, gamma_i^-1 I)``,
``E_i ~ MN(0, tau I_P, gamma_i^-1 I)``, ``V ~ MN(0, I_P, I_K)``. The factorisation
``q(W) q(Z) q(V) prod_i q(gamma_i)`` has closed-form coordinate updates:

* q(W) Gaussian with precision ``X'X kron Sigma^-1 + diag(E gamma) / tau kron I_P``: in the eigenbasis
  of Sigma it splits into P independent D-dim Gaussians (exact, O(P D^3); matrix-normal when Sigma is
  isotropic).
* q(z_j) = N(.., (E gamma_j)^-1 (E[V'V]/tau + I)^-1); q(V) = MN(V_bar, I_P, B^-1).
* q(gamma_i) = GIG(omega + (P + K) D_i / 2, chi, phi + E_i) with E_i the expected block energy; for
  ``prior="ard"`` a type-II point estimate ``gamma_i = (P + K) D_i / E_i``.

The M-step sets mu, Sigma (full or diagonal) and tau in closed form, and the mixing hyperparameters
(the free ones among omega, chi, phi) by L-BFGS on the expected log prior, accepted only if it improves.
Each step maximises the ELBO over one block, so the ELBO never decreases (checked by the tests).
Everything runs in float64.

``likelihood="bernoulli"`` (a Bernoulli-logit output per task, no noise covariance) replaces the
Gaussian log likelihood in the ELBO by the Jaakkola-Jordan bound, which is quadratic in W, so the
updates above carry over with q(W) factorising over tasks instead of over the eigenbasis of Sigma
(`bayesmtl.inference.vem_sparse_logit`). What both likelihoods share (the state, the q(Z), q(V),
q(gamma) and tau updates, the type-II step and the loop) is in the private
``bayesmtl.inference._vem_sparse_core``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from bayesmtl.inference._vem_sparse_core import (
    _LOG2PI,
    _elbo_given_loglik,
    _gamma_moments,
    _initial_state,
    _iterate,
    _State,
    _update_latents,
    _update_tau,
)
from bayesmtl.inference.runtime import quiet
from bayesmtl.inference.vem_sparse_logit import bernoulli_start
from bayesmtl.models.sparse_mtl import as_multioutput, check_config, resolve_blocks

__all__ = ["VEMResult", "active_blocks", "fit_vem_sparse", "prior_hyperparameters"]

_TINY = 1e-12  # chi or phi of the limiting priors (Gamma: chi -> 0, inverse Gamma: phi -> 0)


class VEMResult(NamedTuple):
    """Posterior moments and the ELBO trace of `fit_vem_sparse`.

    ``Sigma`` is the (P, P) noise covariance for the Gaussian likelihood and ``None`` for
    ``likelihood="bernoulli"`` (no noise); ``xi`` is ``None`` for the Gaussian likelihood and the
    (N, P) Jaakkola-Jordan variational parameters ``sqrt(E[f_np^2])`` for the Bernoulli one, whose
    ``elbo`` is the bound with the Jaakkola-Jordan term in place of the exact expected log likelihood.
    """

    W_mean: np.ndarray  # (P, D)
    W_var: np.ndarray  # (P, D) marginal posterior variances
    V_mean: np.ndarray  # (P, K)
    task_cov: np.ndarray  # (P, P) E[V V'] + tau I
    gamma_mean: np.ndarray  # (Q,) E[gamma_i]
    gamma_q: np.ndarray  # (Q, 3) q(gamma_i) = GIG(omega, chi, phi) (nan for ard)
    mu: np.ndarray  # (P,)
    Sigma: np.ndarray | None  # (P, P); None for bernoulli
    tau: float
    prior: tuple  # (omega, chi, phi) after type-II ML (nan for ard)
    elbo: np.ndarray  # (n_iter,)
    converged: bool
    blocks: np.ndarray  # (D,)
    likelihood: str = "gaussian"
    xi: np.ndarray | None = None  # (N, P) Jaakkola-Jordan parameters (bernoulli only)


def prior_hyperparameters(prior: str, params: dict | None = None):
    """(omega, chi, phi) of the GIG (or its limit) for a named prior, and which ones type-II learns.

    Examples
    --------
    >>> prior_hyperparameters("laplace", {"rate": 2.0})[0]
    (-1.0, 4.0, 1e-12)
    """
    p = dict(params or {})
    if prior == "gig":
        h = (p.get("omega", 1.0), p.get("chi", 1.0), p.get("phi", 1.0))
        free = (True, True, True)
    elif prior == "student_t":
        df, s = p.get("df", 3.0), p.get("scale", 1.0)
        h, free = (0.5 * df, _TINY, df * s**2), (True, False, True)
    elif prior == "laplace":
        h, free = (-1.0, p.get("rate", 1.0) ** 2, _TINY), (False, True, False)
    elif prior == "nig":
        h, free = (0.5, p.get("chi", 1.0), p.get("phi", 1.0)), (False, True, True)
    elif prior == "ard":
        h, free = (np.nan, np.nan, np.nan), (False, False, False)
    else:
        raise ValueError(f"prior: unknown mixing prior {prior!r}")
    for name, v in zip(("chi", "phi"), h[1:]):
        if prior != "ard" and not v > 0:
            raise ValueError(f"prior_params: {name} must be positive, got {v} (non-positive {name})")
    return tuple(float(x) for x in h), free


def _residual_scatter(s: _State, X, Y, XtX):
    R = Y - X @ s.M.T - s.mu
    extra = jnp.einsum("pij,ji->p", s.Sw, XtX)  # tr(S_p X'X) per rotated row
    return R.T @ R + (s.Uw * extra) @ s.Uw.T


def _elbo(s: _State, X, Y, XtX, b, Dq, ard):
    N, P = Y.shape
    S = _residual_scatter(s, X, Y, XtX)
    Lsig = jnp.linalg.cholesky(s.Sigma)
    ll = -0.5 * N * P * _LOG2PI - N * jnp.sum(jnp.log(jnp.diag(Lsig))) - 0.5 * jnp.trace(
        jax.scipy.linalg.cho_solve((Lsig, True), S))
    return _elbo_given_loglik(s, ll, b, ard)


def _sweep(s: _State, X, Y, XtX, b, Dq, ard, full_noise):
    """One round of coordinate updates: q(W), q(Z), q(V), q(gamma), mu, Sigma, tau."""
    N, P = Y.shape
    D = s.M.shape[1]
    Eg = _gamma_moments(s.gq, ard)[0][b]
    # q(W): rotate by the eigenvectors of Sigma
    evals, U = jnp.linalg.eigh(s.Sigma)
    lam = 1.0 / evals
    Yc = (Y - s.mu) @ U  # (N, P)
    prior_mean = U.T @ (s.Vm @ s.Zm)  # (P, D) rotated
    A = lam[:, None, None] * XtX + jnp.diag(Eg / s.tau)[None]
    rhs = lam[:, None] * (Yc.T @ X) + prior_mean * (Eg / s.tau)
    Lc = jnp.linalg.cholesky(A)
    Mrot = jax.vmap(lambda L, r: jax.scipy.linalg.cho_solve((L, True), r))(Lc, rhs)
    Sw = jax.vmap(lambda L: jax.scipy.linalg.cho_solve((L, True), jnp.eye(D)))(Lc)
    s = s._replace(M=U @ Mrot, Uw=U, Sw=Sw)
    s = _update_latents(s, b, Dq, ard, Eg)
    # M-step: mu, Sigma, tau
    s = s._replace(mu=jnp.mean(Y - X @ s.M.T, 0))
    S = _residual_scatter(s, X, Y, XtX) / N
    S = S if full_noise else jnp.diag(jnp.diag(S))
    s = s._replace(Sigma=S + 1e-10 * jnp.eye(P))
    return _update_tau(s, b, ard)


def _elbo_then_sweep(s: _State, X, Y, XtX, b, Dq, ard, full_noise):
    """The ELBO at ``s``, one sweep from ``s``, and the moments of the new q(gamma): one compiled
    program per shape (the Bessel quadrature inside the moments is what makes compiling slow)."""
    elbo = _elbo(s, X, Y, XtX, b, Dq, ard)
    s = _sweep(s, X, Y, XtX, b, Dq, ard, full_noise)
    return elbo, s, _gamma_moments(s.gq, ard)[:3]


_step_jit = jax.jit(_elbo_then_sweep, static_argnums=(6, 7))


def _gaussian_start(X, Y, XtX, b, Dq, *, rank, hyper, ard, ridge, noise):
    """Initial state (ridge fit, SVD for V and Z, residual covariance), compiled step and its
    arguments for the Gaussian likelihood."""
    (N, P), D = Y.shape, X.shape[1]
    mu0 = Y.mean(0)
    M0 = jnp.linalg.solve(XtX + ridge * jnp.eye(D), X.T @ (Y - mu0)).T
    R = Y - X @ M0.T - mu0
    Sigma = R.T @ R / N + 1e-3 * jnp.eye(P) * jnp.var(Y)
    Sigma = Sigma if noise == "full" else jnp.diag(jnp.diag(Sigma))
    s = _initial_state(M0, mu0, rank, Dq.shape[0], hyper, ard, Sigma=Sigma)
    return s, _step_jit, (X, Y, XtX, b, Dq, ard, noise == "full")


def fit_vem_sparse(
    data,
    *,
    blocks=None,
    rank: int = 1,
    prior: str = "laplace",
    prior_params: dict | None = None,
    learn_prior: bool = True,
    noise: str = "full",
    likelihood: str = "gaussian",
    max_iter: int = 200,
    tol: float = 1e-7,
    ridge: float = 1.0,
    progress_bar: bool | None = None,
) -> VEMResult:
    """Fit the sparse multitask model by mean-field variational EM with type-II ML hyperparameters.

    Parameters
    ----------
    data : MultiOutputData or TaskData
        Shared inputs ``X (N, D)`` and outputs ``Y (N, P)``: real values for ``likelihood="gaussian"``,
        labels in {0, 1} for ``likelihood="bernoulli"``.
    blocks : array_like of int, shape (D,), optional
        Feature blocks (default ``data.feature_blocks``, else one block per feature).
    rank : int
        K, with ``1 <= K < P``.
    prior : {"laplace", "student_t", "nig", "gig", "ard"}
        Mixing prior on block precisions (`bayesmtl.models.gig.mixing_prior` parameterisation).
    prior_params : dict, optional
        Initial mixing-prior parameters.
    learn_prior : bool
        Type-II ML of the prior's free parameters (Laplace: rate; Student-t: df-shape and rate;
        NIG: chi, phi; GIG: omega, chi, phi).
    noise : {"full", "diag"}
        Full or diagonal noise covariance Sigma (a point estimate). Validated but ignored for
        ``likelihood="bernoulli"``, which has no noise.
    likelihood : {"gaussian", "bernoulli"}
        Gaussian outputs, or a Bernoulli-logit output per task, ``P(y_np = 1) = sigmoid(w_p' x_n +
        mu_p)``, fitted through the Jaakkola-Jordan bound (`bayesmtl.inference.vem_sparse_logit`);
        the intercepts mu are then the bound's closed-form maximisers (a flat prior).
    max_iter : int
    tol : float
        Stop when the ELBO rises by less than ``tol * |ELBO|``.
    ridge : float
        Ridge penalty of the initial least-squares fit (of ``4 (y - mean y)`` for Bernoulli labels,
        the linearised logit).
    progress_bar : bool, optional
        Show the iterations and the current ELBO (a tqdm bar on stderr, cleared when done).
        ``None``: shown unless `bayesmtl.inference.runtime.quiet` (the ``CI`` environment variable).

    Returns
    -------
    VEMResult
        ``Sigma`` is ``None`` and ``xi`` holds the Jaakkola-Jordan parameters for the Bernoulli
        likelihood.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from bayesmtl.models.sparse_mtl import simulate
    >>> data, truth = simulate(jax.random.key(0), n=60, n_tasks=4, n_features=8, n_blocks=4)
    >>> res = fit_vem_sparse(data, rank=1, max_iter=30)
    >>> bool((jnp.diff(res.elbo) > -1e-6 * abs(res.elbo[-1])).all())
    True
    >>> data, truth = simulate(jax.random.key(0), n=60, n_tasks=4, n_features=8, n_blocks=4,
    ...                        likelihood="bernoulli")
    >>> res = fit_vem_sparse(data, rank=1, likelihood="bernoulli", max_iter=30)
    >>> res.Sigma is None, res.xi.shape
    (True, (60, 4))
    """
    data = as_multioutput(data)
    if data.Y is None:
        raise ValueError("data: Y is required to fit (got None)")
    P = data.n_tasks
    check_config(P, rank=rank, prior=prior, noise=noise, likelihood=likelihood)
    if not (isinstance(max_iter, (int, np.integer)) and max_iter >= 1):
        raise ValueError(f"max_iter: must be a positive integer, got {max_iter!r}")
    if progress_bar is not None and not isinstance(progress_bar, bool):
        raise ValueError(f"progress_bar: must be True, False or None, got {progress_bar!r}")
    show = (not quiet()) if progress_bar is None else progress_bar
    if likelihood == "bernoulli":
        y = np.asarray(data.Y, float)
        bad = ~np.isin(y, (0.0, 1.0))
        if bad.any():
            raise ValueError(f"y: likelihood='bernoulli' needs labels in {{0, 1}}; {int(bad.sum())} "
                             f"entries are not, e.g. {np.unique(y[bad])[:3].tolist()}")
    b_np = resolve_blocks(data, blocks)
    hyper, free = prior_hyperparameters(prior, prior_params)
    free = np.asarray(free) & bool(learn_prior)
    ard = prior == "ard"
    with jax.enable_x64(True):
        X = jnp.asarray(data.X, jnp.float64)
        Y = jnp.asarray(data.Y, jnp.float64)
        b = jnp.asarray(b_np)
        Q = int(b_np.max()) + 1
        Dq = jnp.asarray(np.bincount(b_np, minlength=Q), jnp.float64)
        XtX = X.T @ X
        cfg = {"rank": rank, "hyper": hyper, "ard": ard, "ridge": ridge}
        if likelihood == "bernoulli":
            s, step, args = bernoulli_start(X, Y, XtX, b, Dq, **cfg)
        else:
            s, step, args = _gaussian_start(X, Y, XtX, b, Dq, noise=noise, **cfg)
        s, moments, trace, converged = _iterate(
            step, s, args, free, max_iter, tol, progress_bar=show,
            desc="VEM (Bernoulli)" if likelihood == "bernoulli" else "VEM")
        Eg = np.asarray(moments[0])
        W_var = np.asarray(jnp.einsum("pq,qj->pj", s.Uw**2, jnp.einsum("qjj->qj", s.Sw)))
        # E[V V'] = V_bar V_bar' + tr(Vc) I (rows of V independent with covariance Vc)
        task_cov = np.asarray(s.Vm @ s.Vm.T + (jnp.trace(s.Vc) + s.tau) * jnp.eye(P))
        return VEMResult(
            W_mean=np.asarray(s.M), W_var=W_var, V_mean=np.asarray(s.Vm), task_cov=task_cov,
            gamma_mean=Eg, gamma_q=np.full((Q, 3), np.nan) if ard else np.asarray(s.gq),
            mu=np.asarray(s.mu), Sigma=None if s.Sigma is None else np.asarray(s.Sigma),
            tau=float(s.tau), prior=tuple(float(x) for x in s.hyper), elbo=np.asarray(trace),
            converged=converged, blocks=b_np, likelihood=likelihood,
            xi=None if s.xi is None else np.asarray(s.xi),
        )


def active_blocks(gamma_mean, *, ratio: float = 100.0) -> np.ndarray:
    """Blocks judged active: ``E[gamma_i] < ratio * min_j E[gamma_j]`` (a switched-off block's precision
    runs to the hundreds or thousands while an active block's stays near its signal level).

    Examples
    --------
    >>> active_blocks([1.5, 900.0, 4.0]).tolist()
    [True, False, True]
    """
    g = np.asarray(gamma_mean, float)
    if not ratio > 1:
        raise ValueError(f"ratio: must be > 1, got {ratio}")
    return g < ratio * g.min()

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
(`bayesmtl.inference.vem_sparse_logit`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from bayesmtl.models.gig import GeneralizedInverseGaussian, log_bessel_kv
from bayesmtl.models.sparse_mtl import as_multioutput, check_config, resolve_blocks

__all__ = ["VEMResult", "active_blocks", "fit_vem_sparse", "prior_hyperparameters"]

_TINY = 1e-12  # chi or phi of the limiting priors (Gamma: chi -> 0, inverse Gamma: phi -> 0)
_LOG2PI = float(np.log(2 * np.pi))


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


class _State(NamedTuple):
    M: jax.Array
    Uw: jax.Array  # rotation of q(W)
    Sw: jax.Array  # (P, D, D) covariance of rotated rows
    Zm: jax.Array
    Zc: jax.Array
    zscale: jax.Array  # (D,) Cov z_j = Zc * zscale_j
    Vm: jax.Array
    Vc: jax.Array
    gq: jax.Array  # (Q, 3) GIG params of q(gamma), or (Q, 3) with gq[:,0] = point value for ard
    mu: jax.Array
    Sigma: jax.Array | None  # None for bernoulli
    tau: jax.Array
    hyper: jax.Array  # (3,) omega, chi, phi
    xi: jax.Array | None = None  # (N, P) Jaakkola-Jordan parameters (bernoulli only)


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


def _gamma_moments(gq, ard):
    if ard:
        g = gq[:, 0]
        return g, jnp.log(g), 1.0 / g, jnp.zeros_like(g)
    m = GeneralizedInverseGaussian(gq[:, 0], gq[:, 1], gq[:, 2]).moments()
    return m["mean"], m["log"], m["inverse"], m["entropy"]


def _expected_log_prior(hyper, Elog, Einv, Eg):
    w, c, p = hyper[0], hyper[1], hyper[2]
    log_norm = jnp.log(2.0) + log_bessel_kv(w, jnp.sqrt(c * p)) + 0.5 * w * (jnp.log(c) - jnp.log(p))
    return jnp.sum(-log_norm + (w - 1.0) * Elog - 0.5 * (c * Einv + p * Eg))


def _energies(s: _State):
    """e_j = E||w_j - V z_j||^2 and f_j = E||z_j||^2, per feature."""
    EVtV = s.Vm.T @ s.Vm + s.Vm.shape[0] * s.Vc
    trSw = jnp.einsum("pjj->j", s.Sw)
    Vz = s.Vm @ s.Zm
    Ezz_quad = jnp.einsum("kj,kl,lj->j", s.Zm, EVtV, s.Zm) + jnp.trace(EVtV @ s.Zc) * s.zscale
    e = jnp.sum(s.M**2, 0) + trSw - 2 * jnp.sum(s.M * Vz, 0) + Ezz_quad
    f = jnp.sum(s.Zm**2, 0) + jnp.trace(s.Zc) * s.zscale
    return e, f, EVtV


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


def _elbo_given_loglik(s: _State, ll, b, ard):
    """``ll`` (the expected log likelihood, or a lower bound of it) plus the expected log priors of
    W, Z, V, gamma and the entropies of q: the part of the ELBO that both likelihoods share."""
    P, D = s.M.shape
    K = s.Zm.shape[0]
    Eg, Elog, Einv, Hg = _gamma_moments(s.gq, ard)
    Egf, Elogf = Eg[b], Elog[b]
    e, f, _ = _energies(s)
    lw = 0.5 * P * jnp.sum(Elogf) - 0.5 * P * D * (_LOG2PI + jnp.log(s.tau)) - 0.5 / s.tau * jnp.sum(
        Egf * e)
    lz = 0.5 * K * jnp.sum(Elogf) - 0.5 * K * D * _LOG2PI - 0.5 * jnp.sum(Egf * f)
    lv = -0.5 * P * K * _LOG2PI - 0.5 * (jnp.sum(s.Vm**2) + P * jnp.trace(s.Vc))
    ent = 0.5 * (1 + _LOG2PI) * (P * D + K * D + P * K)
    ent += 0.5 * jnp.sum(jnp.linalg.slogdet(s.Sw)[1])
    ent += 0.5 * D * jnp.linalg.slogdet(s.Zc)[1] + 0.5 * K * jnp.sum(jnp.log(s.zscale))
    ent += 0.5 * P * jnp.linalg.slogdet(s.Vc)[1]
    total = ll + lw + lz + lv + ent
    if not ard:
        total += _expected_log_prior(s.hyper, Elog, Einv, Eg) + jnp.sum(Hg)
    return total


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


def _update_latents(s: _State, b, Dq, ard, Eg):
    """q(Z), q(V) and q(gamma) given q(W) and the current block precisions ``Eg`` (per feature)."""
    P, K, Q = s.M.shape[0], s.Zm.shape[0], Dq.shape[0]
    # q(Z)
    EVtV = s.Vm.T @ s.Vm + P * s.Vc
    Zc = jnp.linalg.inv(EVtV / s.tau + jnp.eye(K))
    s = s._replace(Zm=Zc @ s.Vm.T @ s.M / s.tau, Zc=Zc, zscale=1.0 / Eg)
    # q(V)
    Ezz = (s.Zm * Eg) @ s.Zm.T + jnp.sum(Eg * s.zscale) * s.Zc
    Vc = jnp.linalg.inv(Ezz / s.tau + jnp.eye(K))
    s = s._replace(Vm=(s.M * Eg) @ s.Zm.T @ Vc / s.tau, Vc=Vc)
    # q(gamma)
    e, f, _ = _energies(s)
    Ei = jax.ops.segment_sum(e / s.tau + f, b, Q)
    if ard:
        g = (P + K) * Dq / Ei
        s = s._replace(gq=jnp.stack([g, g, g], 1))
    else:
        w, c, p = s.hyper
        s = s._replace(gq=jnp.stack([w + 0.5 * (P + K) * Dq, jnp.full(Q, c), p + Ei], 1))
    return s


def _update_tau(s: _State, b, ard):
    """The closed-form type-II tau given q(W), q(Z), q(V), q(gamma)."""
    P, D = s.M.shape
    Eg = _gamma_moments(s.gq, ard)[0][b]
    e, _, _ = _energies(s)
    return s._replace(tau=jnp.sum(Eg * e) / (P * D))


def _elbo_then_sweep(s: _State, X, Y, XtX, b, Dq, ard, full_noise):
    """The ELBO at ``s``, one sweep from ``s``, and the moments of the new q(gamma): one compiled
    program per shape (the Bessel quadrature inside the moments is what makes compiling slow)."""
    elbo = _elbo(s, X, Y, XtX, b, Dq, ard)
    s = _sweep(s, X, Y, XtX, b, Dq, ard, full_noise)
    return elbo, s, _gamma_moments(s.gq, ard)[:3]


_step_jit = jax.jit(_elbo_then_sweep, static_argnums=(6, 7))


def _hyper_objective(theta, fixed, free, Elog, Einv, Eg):
    h = jnp.where(free, theta, fixed)
    hyper = jnp.stack([h[0], jnp.exp(h[1]), jnp.exp(h[2])])
    return -_expected_log_prior(hyper, Elog, Einv, Eg)


_hyper_grad = jax.jit(jax.value_and_grad(_hyper_objective))


def _update_hyper(s: _State, free: np.ndarray, moments) -> _State:
    """Type-II ML step for the free prior parameters, given ``(E g, E log g, E 1/g)`` of q(gamma)."""
    Eg, Elog, Einv = moments
    h0 = np.array([float(s.hyper[0]), np.log(float(s.hyper[1])), np.log(float(s.hyper[2]))])
    args = (jnp.asarray(h0), jnp.asarray(free), Elog, Einv, Eg)
    f0 = float(_hyper_grad(jnp.asarray(h0), *args)[0])

    def fg(x):
        th = h0.copy()
        th[free] = x
        v, g = _hyper_grad(jnp.asarray(th), *args)
        return float(v), np.asarray(g)[free]

    bounds = [(-50, 50), (-28, 28), (-28, 28)]
    res = scipy.optimize.minimize(fg, h0[free], jac=True, method="L-BFGS-B",
                                  bounds=[bd for bd, fr in zip(bounds, free) if fr],
                                  options={"maxiter": 50})
    if not np.isfinite(res.fun) or res.fun >= f0:
        return s
    th = h0.copy()
    th[free] = res.x
    return s._replace(hyper=jnp.asarray([th[0], np.exp(th[1]), np.exp(th[2])]))


def _initial_state(M0, mu0, rank, Q, hyper, ard, Sigma=None, xi=None) -> _State:
    """Start from weights ``M0``: V and Z from its leading singular vectors, tau from the rest, every
    q(gamma) alike; float64 leaves (strong-typed, so the compiled step is reused from the first call)."""
    P, D = M0.shape
    K = rank
    u, sv, vt = jnp.linalg.svd(M0, full_matrices=False)
    Vm = u[:, :K] * jnp.sqrt(sv[:K] / np.sqrt(D))
    Zm = (vt[:K] * jnp.sqrt(sv[:K] * np.sqrt(D))[:, None])
    tau0 = jnp.maximum(jnp.mean((M0 - Vm @ Zm) ** 2), 1e-3)
    init_g = jnp.ones(Q)
    s = _State(
        M=M0, Uw=jnp.eye(P), Sw=jnp.zeros((P, D, D)), Zm=Zm, Zc=jnp.eye(K),
        zscale=jnp.ones(D), Vm=Vm, Vc=jnp.eye(K) * 1e-3,
        gq=jnp.stack([init_g] * 3, 1) if ard else jnp.stack(
            [jnp.full(Q, hyper[0] + 0.5 * (P + K)), jnp.full(Q, hyper[1]),
             jnp.full(Q, hyper[2] + 1.0)], 1),
        mu=mu0, Sigma=Sigma, tau=tau0, hyper=jnp.asarray(hyper), xi=xi,
    )
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), s)


def _iterate(step, s: _State, args, free, max_iter: int, tol: float):
    """Alternate the compiled ``step`` (ELBO, then one sweep) with the type-II hyperparameter step
    until the ELBO's relative rise falls below ``tol``."""
    trace, converged = [], False
    _, s, moments = step(s, *args)  # the first sweep (the initial ELBO is not recorded)
    for it in range(max_iter):
        if free.any():
            s = _update_hyper(s, free, moments)  # leaves q(gamma), hence `moments`, unchanged
        # the ELBO of s (after sweep it + 1 and the hyperparameter step) and the next sweep,
        # which is kept only if the loop goes on
        elbo, s_next, moments_next = step(s, *args)
        trace.append(float(elbo))
        converged = it > 0 and abs(trace[-1] - trace[-2]) < tol * abs(trace[-1])
        if converged or it == max_iter - 1:
            break
        s, moments = s_next, moments_next
    return s, moments, trace, converged


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

    Returns
    -------
    VEMResult
        ``Sigma`` is ``None`` and ``xi`` holds the Jaakkola-Jordan parameters for the Bernoulli
        likelihood.

    Examples
    --------
    >>> import jax
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
    P, D, N = data.n_tasks, data.n_features, data.n
    check_config(P, rank=rank, prior=prior, noise=noise, likelihood=likelihood)
    if not (isinstance(max_iter, (int, np.integer)) and max_iter >= 1):
        raise ValueError(f"max_iter: must be a positive integer, got {max_iter!r}")
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
    K = rank
    with jax.enable_x64(True):
        X = jnp.asarray(data.X, jnp.float64)
        Y = jnp.asarray(data.Y, jnp.float64)
        b = jnp.asarray(b_np)
        Q = int(b_np.max()) + 1
        Dq = jnp.asarray(np.bincount(b_np, minlength=Q), jnp.float64)
        XtX = X.T @ X
        if likelihood == "bernoulli":
            from bayesmtl.inference import vem_sparse_logit

            s = vem_sparse_logit._init_state(X, Y, XtX, K, Q, hyper, ard, ridge)
            step, args = vem_sparse_logit._step_jit, (X, Y, XtX, b, Dq, ard)
        else:
            # initialisation: ridge fit, SVD for V and Z, residual covariance
            mu0 = Y.mean(0)
            M0 = jnp.linalg.solve(XtX + ridge * jnp.eye(D), X.T @ (Y - mu0)).T
            R = Y - X @ M0.T - mu0
            Sigma = R.T @ R / N + 1e-3 * jnp.eye(P) * jnp.var(Y)
            Sigma = Sigma if noise == "full" else jnp.diag(jnp.diag(Sigma))
            s = _initial_state(M0, mu0, K, Q, hyper, ard, Sigma=Sigma)
            step, args = _step_jit, (X, Y, XtX, b, Dq, ard, noise == "full")
        s, moments, trace, converged = _iterate(step, s, args, free, max_iter, tol)
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

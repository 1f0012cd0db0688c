"""The shared core of the sparse multitask VEM: state, the latent-variable and tau updates, the
ELBO terms that do not depend on the likelihood, the type-II hyperparameter step and the loop.

`bayesmtl.inference.vem_sparse` (Gaussian outputs) and `bayesmtl.inference.vem_sparse_logit`
(Bernoulli-logit outputs, the Jaakkola-Jordan bound) each add their own q(W) update and expected log
likelihood on top of these pieces; both import this module and neither imports the other's private
names. Private: the public entry point is `bayesmtl.inference.vem_sparse.fit_vem_sparse`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
from bayesmtl.models.gig import GeneralizedInverseGaussian, log_bessel_kv
from tqdm.auto import tqdm

__all__: list[str] = []

_LOG2PI = float(np.log(2 * np.pi))


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


def _iterate(step, s: _State, args, free, max_iter: int, tol: float, *,
             progress_bar: bool = False, desc: str = "VEM"):
    """Alternate the compiled ``step`` (ELBO, then one sweep) with the type-II hyperparameter step
    until the ELBO's relative rise falls below ``tol``; ``progress_bar`` shows the iterations with
    the current ELBO."""
    trace, converged = [], False
    _, s, moments = step(s, *args)  # the first sweep (the initial ELBO is not recorded)
    with tqdm(total=max_iter, desc=desc, disable=not progress_bar, leave=False) as bar:
        for it in range(max_iter):
            if free.any():
                s = _update_hyper(s, free, moments)  # leaves q(gamma), hence `moments`, unchanged
            # the ELBO of s (after sweep it + 1 and the hyperparameter step) and the next sweep,
            # which is kept only if the loop goes on
            elbo, s_next, moments_next = step(s, *args)
            trace.append(float(elbo))
            bar.update(1)
            bar.set_postfix(elbo=f"{trace[-1]:.6g}", refresh=False)
            converged = it > 0 and abs(trace[-1] - trace[-2]) < tol * abs(trace[-1])
            if converged or it == max_iter - 1:
                break
            s, moments = s_next, moments_next
    return s, moments, trace, converged

"""The generalised inverse Gaussian (GIG) distribution and a log modified Bessel function K_v(z).

The GIG(omega, chi, phi) density on g > 0 is

    p(g) = (phi/chi)^(omega/2) / (2 K_omega(sqrt(chi phi))) g^(omega-1) exp(-(chi/g + phi g)/2),

scipy's ``geninvgauss(p=omega, b=sqrt(chi*phi), scale=sqrt(chi/phi))``. It is the mixing density of the
sparse multitask prior (Archambeau, Guo & Zoeter 2011), where g is a block *precision*.

`log_bessel_kv` evaluates log K_v(z) for any real order by Gauss-Legendre quadrature of
``K_v(z) = int_0^inf exp(-z cosh t) cosh(v t) dt`` in log space, over the interval where the integrand
is within ``exp(-40)`` of its peak (found by bisection; the peak is at ``asinh(|v|/z)``). The result is
differentiable in both ``v`` and ``z`` (the interval is held fixed under differentiation: the integrand is
negligible outside it). Measured against ``scipy.special.kve`` on ``|v| <= 60``, ``z in [1e-9, 1e5]`` in
float64: relative error below 1e-13, gradients below 1e-9.

Sampling is exact: rejection from a three-piece hat (flat in the middle, exponential tails from tangent
lines) for the log-concave density of ``log g``, a variant of Devroye (2014); vectorised with one
``lax.while_loop``.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from numpy.polynomial.legendre import leggauss
from numpyro.distributions import Distribution, Gamma, InverseGamma, constraints
from numpyro.distributions.util import promote_shapes, validate_sample

__all__ = [
    "MIXING_PRIORS",
    "GeneralizedInverseGaussian",
    "log_bessel_kv",
    "mixing_prior",
]

_NODES, _WEIGHTS = leggauss(64)
_LOG_DROP = 40.0  # the quadrature interval holds the integrand within exp(-40) of its peak
_BISECT = 60

MIXING_PRIORS = ("gig", "student_t", "laplace", "nig", "ard")


def log_bessel_kv(v, z):
    """Log of the modified Bessel function of the second kind, ``log K_v(z)``, for real ``v``, ``z > 0``.

    Parameters
    ----------
    v : array_like
        Order (any real; ``K_v = K_{-v}``).
    z : array_like
        Argument, positive. Broadcast against ``v``.

    Returns
    -------
    jax.Array
        ``log K_v(z)``; differentiable in ``v`` and ``z``.

    Examples
    --------
    >>> import numpy as np
    >>> round(float(np.exp(log_bessel_kv(0.5, 2.0))), 4)  # K_1/2(z) = sqrt(pi/(2z)) e^-z
    0.1199
    """
    v = jnp.asarray(v)
    z = jnp.asarray(z)
    dtype = jnp.result_type(v, z, float)
    v, z = jnp.broadcast_arrays(v.astype(dtype), z.astype(dtype))
    a = jnp.abs(lax.stop_gradient(v))
    zs = lax.stop_gradient(z)
    t_peak = jnp.arcsinh(a / zs)

    def g(t):  # log integrand up to log cosh(vt) - vt in [-log 2, 0]
        return a * t - zs * jnp.cosh(t)

    target = g(t_peak) - _LOG_DROP
    # brackets: right of the peak g falls at least like -sqrt(z^2+v^2)(cosh d - 1); left like -z d^2/2
    right_out = t_peak + jnp.arccosh(1.0 + _LOG_DROP / jnp.hypot(a, zs))
    left_out = jnp.maximum(t_peak - jnp.sqrt(2.0 * _LOG_DROP / zs), 0.0)

    def bisect(carry, _):
        r_in, r_out, l_out, l_in = carry
        m = 0.5 * (r_in + r_out)
        inside = g(m) > target
        r_in, r_out = jnp.where(inside, m, r_in), jnp.where(inside, r_out, m)
        m = 0.5 * (l_out + l_in)
        inside = g(m) > target
        l_out, l_in = jnp.where(inside, l_out, m), jnp.where(inside, m, l_in)
        return (r_in, r_out, l_out, l_in), None

    (_, hi, lo, _), _ = lax.scan(bisect, (t_peak, right_out, left_out, t_peak), None, _BISECT)
    half = 0.5 * (hi - lo)
    t = (0.5 * (hi + lo))[..., None] + half[..., None] * jnp.asarray(_NODES, dtype)
    vt = v[..., None] * t
    log_f = -z[..., None] * jnp.cosh(t) + jnp.logaddexp(vt, -vt) - jnp.log(2.0)
    return jax.nn.logsumexp(log_f + jnp.log(jnp.asarray(_WEIGHTS, dtype)), axis=-1) + jnp.log(half)


def _d_order_log_kv(v, z):
    """Elementwise derivative of ``log K_v(z)`` with respect to the order ``v``."""
    dtype = jnp.result_type(v, z, float)
    v, z = jnp.broadcast_arrays(jnp.asarray(v, dtype), jnp.asarray(z, dtype))
    return jax.jvp(lambda vv: log_bessel_kv(vv, z), (v,), (jnp.ones_like(v),))[1]


def _check_positive(name: str, value) -> None:
    if isinstance(value, jax.core.Tracer):
        return
    arr = np.asarray(value)
    if arr.dtype == object:
        return
    if np.isnan(arr).any():
        raise ValueError(f"{name}: NaN given (must be positive)")
    if (arr <= 0).any():
        raise ValueError(f"{name}: must be positive, got {arr.min()!r} (non-positive {name})")


def _check_finite(name: str, value) -> None:
    if isinstance(value, jax.core.Tracer):
        return
    arr = np.asarray(value)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: must be finite, got {value!r}")


def _sample_log_standard(key, lam, beta, shape, dtype):
    """Exact draws of log Y, Y with density proportional to y^(lam-1) exp(-beta (y + 1/y)/2), lam >= 0."""
    lam = jnp.broadcast_to(lam, shape).astype(dtype)
    beta = jnp.broadcast_to(beta, shape).astype(dtype)
    c = jnp.hypot(lam, beta)  # curvature at the mode
    mode = jnp.arcsinh(lam / beta)

    def psi(x):  # log density of log Y minus its value at the mode (<= 0), concave
        return lam * x - 2.0 * beta * jnp.sinh(mode + 0.5 * x) * jnp.sinh(0.5 * x)

    def dpsi(x):
        return lam - beta * jnp.sinh(mode + x)

    # points where psi = -1 (any t, s > 0 give a valid hat; these make it tight): bisection on brackets
    t_in, t_out = jnp.zeros_like(c), jnp.sqrt(2.0 / c)
    s_in, s_out = jnp.sqrt(2.0 / c), mode + jnp.arccosh((c + 1.0) / beta)

    def bisect(carry, _):
        t_in, t_out, s_in, s_out = carry
        m = 0.5 * (t_in + t_out)
        ok = psi(m) > -1.0
        t_in, t_out = jnp.where(ok, m, t_in), jnp.where(ok, t_out, m)
        m = 0.5 * (s_in + s_out)
        ok = psi(-m) > -1.0
        s_in, s_out = jnp.where(ok, m, s_in), jnp.where(ok, s_out, m)
        return (t_in, t_out, s_in, s_out), None

    (_, t, _, s), _ = lax.scan(bisect, (t_in, t_out, s_in, s_out), None, 40)
    psi_t, slope_t = psi(t), dpsi(t)  # slope_t < 0
    psi_s, slope_s = psi(-s), dpsi(-s)  # slope_s > 0
    area_mid = t + s
    area_right = jnp.exp(psi_t) / (-slope_t)
    area_left = jnp.exp(psi_s) / slope_s
    total = area_mid + area_right + area_left

    def propose(k):
        k1, k2, k3 = jax.random.split(k, 3)
        u = jax.random.uniform(k1, shape, dtype) * total
        e = jax.random.exponential(k2, shape, dtype)
        w = jax.random.uniform(k3, shape, dtype, minval=0.0, maxval=1.0)
        mid = u < area_mid
        right = (~mid) & (u < area_mid + area_right)
        x_mid = -s + u
        x_right = t + e / (-slope_t)
        x_left = -s - e / slope_s
        x = jnp.where(mid, x_mid, jnp.where(right, x_right, x_left))
        log_hat = jnp.where(
            mid, 0.0, jnp.where(right, psi_t + slope_t * (x - t), psi_s + slope_s * (x + s))
        )
        accept = jnp.log(w) <= psi(x) - log_hat
        return x, accept

    def cond(state):
        return ~jnp.all(state[2])

    def body(state):
        k, x, done = state
        k, sub = jax.random.split(k)
        x_new, acc = propose(sub)
        take = (~done) & acc
        return k, jnp.where(take, x_new, x), done | acc

    init = (key, jnp.zeros(shape, dtype), jnp.zeros(shape, bool))
    _, x, _ = lax.while_loop(cond, body, init)
    return mode + x


class GeneralizedInverseGaussian(Distribution):
    """Generalised inverse Gaussian distribution GIG(omega, chi, phi) on the positive reals.

    Density ``(phi/chi)^(omega/2) / (2 K_omega(sqrt(chi phi))) g^(omega-1) exp(-(chi/g + phi g)/2)``;
    equal to ``scipy.stats.geninvgauss(p=omega, b=sqrt(chi*phi), scale=sqrt(chi/phi))``.
    ``chi -> 0`` (omega > 0) gives Gamma(omega, rate=phi/2); ``phi -> 0`` (omega < 0) gives
    InverseGamma(-omega, rate=chi/2); omega = -1/2 is the inverse Gaussian.

    Parameters
    ----------
    omega : array_like
        Real order (index) parameter.
    chi, phi : array_like
        Positive parameters (a non-positive value raises ``ValueError``).

    Examples
    --------
    >>> import jax
    >>> d = GeneralizedInverseGaussian(1.5, 2.0, 3.0)
    >>> g = d.sample(jax.random.key(0), (1000,))
    >>> g.shape, bool((g > 0).all())
    ((1000,), True)
    """

    arg_constraints: ClassVar[dict] = {
        "omega": constraints.real,
        "chi": constraints.positive,
        "phi": constraints.positive,
    }
    support = constraints.positive
    reparametrized_params: ClassVar[list[str]] = []

    def __init__(self, omega, chi, phi, *, validate_args=None):
        _check_finite("omega", omega)
        _check_positive("chi", chi)
        _check_positive("phi", phi)
        self.omega, self.chi, self.phi = promote_shapes(omega, chi, phi)
        batch_shape = lax.broadcast_shapes(
            jnp.shape(omega), jnp.shape(chi), jnp.shape(phi)
        )
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    # --------------------------------------------------------------- helpers
    @property
    def _z(self):
        return jnp.sqrt(self.chi * self.phi)

    @property
    def _log_scale(self):  # log sqrt(chi/phi)
        return 0.5 * (jnp.log(self.chi) - jnp.log(self.phi))

    def log_normalizer(self):
        """``log(2 K_omega(sqrt(chi phi))) - (omega/2) log(phi/chi)`` (the log partition function)."""
        return jnp.log(2.0) + log_bessel_kv(self.omega, self._z) + self.omega * self._log_scale

    def _bessel_ratio(self, shift):
        return jnp.exp(log_bessel_kv(self.omega + shift, self._z) - log_bessel_kv(self.omega, self._z))

    # ---------------------------------------------------------- distribution
    @validate_sample
    def log_prob(self, value):
        return (
            (self.omega - 1.0) * jnp.log(value)
            - 0.5 * (self.chi / value + self.phi * value)
            - self.log_normalizer()
        )

    def sample(self, key, sample_shape=()):
        shape = tuple(sample_shape) + tuple(self.batch_shape)
        dtype = jnp.result_type(self.omega, self.chi, self.phi, float)
        omega = jnp.broadcast_to(self.omega, shape)
        flip = omega < 0  # 1/Y ~ GIG(-lam, beta) for the standardised form
        log_y = _sample_log_standard(key, jnp.abs(omega), jnp.broadcast_to(self._z, shape), shape,
                                     dtype)
        log_y = jnp.where(flip, -log_y, log_y)
        return jnp.exp(log_y + self._log_scale)

    @property
    def mean(self):
        return jnp.exp(self._log_scale) * self._bessel_ratio(1.0)

    @property
    def variance(self):
        r1 = self._bessel_ratio(1.0)
        r2 = self._bessel_ratio(2.0)
        return jnp.exp(2.0 * self._log_scale) * (r2 - r1**2)

    def expected_inverse(self):
        """``E[1/g] = sqrt(phi/chi) K_{omega-1}(z) / K_omega(z)``."""
        return jnp.exp(-self._log_scale) * self._bessel_ratio(-1.0)

    def expected_log(self):
        """``E[log g] = log sqrt(chi/phi) + d/domega log K_omega(z)``."""
        return self._log_scale + _d_order_log_kv(
            jnp.broadcast_to(self.omega, self.batch_shape), jnp.broadcast_to(self._z, self.batch_shape)
        )

    def entropy(self):
        return -(
            (self.omega - 1.0) * self.expected_log()
            - 0.5 * (self.chi * self.expected_inverse() + self.phi * self.mean)
            - self.log_normalizer()
        )

    def moments(self) -> dict:
        """E[g], Var[g], E[1/g], E[log g] and the entropy from one stacked Bessel evaluation
        (cheaper to compile than the separate properties)."""
        shape = self.batch_shape
        w = jnp.broadcast_to(self.omega, shape)
        z = jnp.broadcast_to(self._z, shape)
        orders = jnp.stack([w - 1.0, w, w + 1.0, w + 2.0])
        tangent = jnp.zeros_like(orders).at[1].set(1.0)
        lk, dlk = jax.jvp(lambda o: log_bessel_kv(o, jnp.broadcast_to(z, o.shape)), (orders,),
                          (tangent,))
        ls = jnp.broadcast_to(self._log_scale, shape)
        mean = jnp.exp(ls + lk[2] - lk[1])
        var = jnp.exp(2 * ls) * (jnp.exp(lk[3] - lk[1]) - jnp.exp(2 * (lk[2] - lk[1])))
        inv = jnp.exp(-ls + lk[0] - lk[1])
        elog = ls + dlk[1]
        log_norm = jnp.log(2.0) + lk[1] + w * ls
        ent = -((w - 1.0) * elog - 0.5 * (self.chi * inv + self.phi * mean) - log_norm)
        return {"mean": mean, "variance": var, "inverse": inv, "log": elog, "entropy": ent}

    def cdf(self, value):  # pragma: no cover - not needed by the library
        raise NotImplementedError("GeneralizedInverseGaussian.cdf: use scipy.stats.geninvgauss")


def mixing_prior(prior: str = "gig", **params) -> Distribution | None:
    """The prior on a block precision ``gamma`` for one of the named special cases.

    The block prior is ``W_i | gamma_i ~ MN(0, C, gamma_i^-1 Omega_i)``; ``gamma_i`` is a *precision*.

    ============  =========================================  =====================================
    prior         distribution of gamma (precision)          marginal of one weight (C_pp = 1)
    ============  =========================================  =====================================
    ``gig``       GIG(omega, chi, phi)                       generalised hyperbolic
    ``student_t`` Gamma(df/2, rate=df*scale^2/2)  (chi->0)   Student-t(df, 0, scale)
    ``laplace``   InverseGamma(1, rate=rate^2/2)  (phi->0)   Laplace(0, 1/rate): variance ~ Exp
    ``nig``       GIG(1/2, chi, phi): variance inverse       normal-inverse-Gaussian
                  Gaussian, i.e. GIG(-1/2, phi, chi)
    ``ard``       ``None``: a type-II point estimate
    ============  =========================================  =====================================

    Parameters
    ----------
    prior : {"gig", "student_t", "laplace", "nig", "ard"}
    **params
        ``gig``: omega, chi, phi (all required). ``student_t``: df (default 3), scale (default 1).
        ``laplace``: rate (default 1). ``nig``: chi, phi (default 1, 1). ``ard``: none.

    Examples
    --------
    >>> mixing_prior("student_t", df=4.0).concentration
    2.0
    """
    allowed = {
        "gig": ("omega", "chi", "phi"),
        "student_t": ("df", "scale"),
        "laplace": ("rate",),
        "nig": ("chi", "phi"),
        "ard": (),
    }
    if prior not in allowed:
        raise ValueError(f"prior: unknown mixing prior {prior!r}; choose one of {MIXING_PRIORS}")
    extra = set(params) - set(allowed[prior])
    if extra:
        raise ValueError(f"prior={prior!r}: unexpected parameter(s) {sorted(extra)}; "
                         f"allowed {allowed[prior]}")
    if prior == "gig":
        missing = [k for k in ("omega", "chi", "phi") if params.get(k) is None]
        if missing:
            raise ValueError(f"prior='gig': missing parameter(s) {missing}")
        return GeneralizedInverseGaussian(params["omega"], params["chi"], params["phi"])
    if prior == "student_t":
        df, scale = params.get("df", 3.0), params.get("scale", 1.0)
        _check_positive("df", df)
        _check_positive("scale", scale)
        return Gamma(0.5 * df, 0.5 * df * scale**2)
    if prior == "laplace":
        rate = params.get("rate", 1.0)
        _check_positive("rate", rate)
        return InverseGamma(1.0, 0.5 * rate**2)
    if prior == "nig":
        return GeneralizedInverseGaussian(0.5, params.get("chi", 1.0), params.get("phi", 1.0))
    return None

"""GIG distribution and log Bessel K: checked against scipy and closed-form limits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special as sps
import scipy.stats as st
from bayesmtl.models.gig import GeneralizedInverseGaussian, log_bessel_kv, mixing_prior
from numpyro.distributions import Gamma, InverseGamma

# parameter sets (omega, chi, phi) where scipy's geninvgauss cdf/moments are reliable
PARAMS = np.array([
    [1.5, 2.0, 3.0], [-0.5, 1.0, 1.0], [-3.0, 0.01, 5.0],
    [20.0, 5.0, 0.1], [-20.0, 0.5, 50.0], [0.3, 3000.0, 1.0],
])


def scipy_gig(omega, chi, phi):
    return st.geninvgauss(p=omega, b=np.sqrt(chi * phi), scale=np.sqrt(chi / phi))


@pytest.fixture(scope="module")
def draws():
    """4000 draws per parameter set, one compiled call (float64)."""
    with jax.enable_x64(True):
        d = GeneralizedInverseGaussian(*(jnp.asarray(PARAMS[:, i]) for i in range(3)))
        return np.asarray(d.sample(jax.random.key(20250), (4000,)))


def test_log_bessel_kv_matches_scipy_on_wide_grid():
    V, Z = np.meshgrid(np.linspace(-20, 20, 41), np.logspace(-3, 3, 61))
    ref = np.log(sps.kve(V, Z)) - Z
    with jax.enable_x64(True):
        out = np.asarray(log_bessel_kv(V, Z))
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10)


def test_log_bessel_kv_gradients_match_closed_form_and_finite_differences():
    v = np.array([-7.3, -0.5, 0.0, 0.4, 2.5, 15.0, 19.0])
    z = np.array([1e-3, 0.2, 1.0, 7.0, 50.0, 3.0, 900.0])
    with jax.enable_x64(True):
        gv, gz = jax.vmap(jax.grad(log_bessel_kv, argnums=(0, 1)))(jnp.asarray(v), jnp.asarray(z))
    # d/dz log K_v(z) = K_v'(z) / K_v(z): scipy's kvp in closed form
    # d/dz log K_v(z) = -K_{v-1}(z)/K_v(z) - v/z (recurrence), in scaled form to avoid overflow
    np.testing.assert_allclose(gz, -sps.kve(v - 1, z) / sps.kve(v, z) - v / z, rtol=1e-9)
    h = 1e-5  # central differences in the order, error O(h^2) ~ 1e-10
    fd = (np.log(sps.kve(v + h, z)) - np.log(sps.kve(v - h, z))) / (2 * h)
    np.testing.assert_allclose(gv, fd, rtol=1e-6, atol=1e-8)


def test_log_prob_matches_scipy_density_over_parameter_grid():
    om, lc, lp = np.meshgrid(np.linspace(-6, 6, 7), np.linspace(-2, 2, 5), np.linspace(-2, 2, 5))
    om, chi, phi = om.ravel(), 10.0**lc.ravel(), 10.0**lp.ravel()
    ref = scipy_gig(om, chi, phi)
    # points from far below to far above the bulk: mean * factor, (9 points, 175 parameter sets)
    g = ref.mean() * np.geomspace(1e-2, 1e1, 9)[:, None]
    with jax.enable_x64(True):
        lp_ours = np.asarray(GeneralizedInverseGaussian(om, chi, phi).log_prob(g))
    # relative error of the density itself
    np.testing.assert_allclose(np.expm1(lp_ours - ref.logpdf(g)), 0.0, atol=1e-6)


def test_moments_match_scipy_and_quadrature():
    with jax.enable_x64(True):
        d = GeneralizedInverseGaussian(*(jnp.asarray(PARAMS[:, i]) for i in range(3)))
        mean, var = np.asarray(d.mean), np.asarray(d.variance)
        e_inv, e_log = np.asarray(d.expected_inverse()), np.asarray(d.expected_log())
        m = {k: np.asarray(v) for k, v in d.moments().items()}
    # the stacked evaluation agrees with the separate properties
    np.testing.assert_allclose(m["mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(m["variance"], var, rtol=1e-9)
    np.testing.assert_allclose(m["log"], e_log, rtol=1e-12)
    for k, (w, c, p) in enumerate(PARAMS):
        ref = scipy_gig(w, c, p)
        np.testing.assert_allclose(mean[k], ref.mean(), rtol=1e-8)
        np.testing.assert_allclose(var[k], ref.var(), rtol=1e-6)
        # 1/g ~ GIG(-omega, phi, chi): an independent closed form for E[1/g]
        np.testing.assert_allclose(e_inv[k], scipy_gig(-w, p, c).mean(), rtol=1e-8)
        # E[log g] by trapezoid quadrature in u = log g
        u = np.linspace(np.log(ref.ppf(1e-12)), np.log(ref.ppf(1 - 1e-12)), 50001)
        dens = ref.pdf(np.exp(u)) * np.exp(u)
        np.testing.assert_allclose(e_log[k], np.trapezoid(u * dens, u) / np.trapezoid(dens, u),
                                   rtol=1e-6, atol=1e-7)


def test_samples_pass_ks_against_scipy(draws):
    # n = 4000: KS detects a sup-distance of ~0.03 with power ~1 (see the next test); threshold 1e-3
    for k, (w, c, p) in enumerate(PARAMS):
        assert np.all(draws[:, k] > 0)
        assert st.kstest(draws[:, k], scipy_gig(w, c, p).cdf).pvalue > 1e-3, (w, c, p)


def test_ks_has_power_against_a_nearby_gig(draws):
    # the same draws must be rejected against omega + 0.5: the KS check above is not vacuous
    for k, (w, c, p) in enumerate(PARAMS[:3]):
        assert st.kstest(draws[:, k], scipy_gig(w + 0.5, c, p).cdf).pvalue < 1e-4, (w, c, p)


def test_sampler_exact_for_small_argument_against_quadrature_cdf():
    w, c, p = 0.1, 1e-4, 1e-4  # z = 1e-4: scipy's cdf integration is unreliable here
    with jax.enable_x64(True):
        d = GeneralizedInverseGaussian(w, c, p)
        x = np.asarray(d.sample(jax.random.key(7), (4000,)))
        u = np.linspace(np.log(x.min()) - 5, np.log(x.max()) + 5, 200001)
        dens = np.exp(np.asarray(d.log_prob(np.exp(u))) + u)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(u))])
    assert abs(cdf[-1] - 1) < 1e-8
    assert st.kstest(x, lambda q: np.interp(np.log(q), u, cdf)).pvalue > 1e-3


def test_gamma_limit_chi_to_zero():
    g = np.geomspace(1e-3, 30.0, 25)
    a, b = 2.5, 0.7
    with jax.enable_x64(True):
        d = GeneralizedInverseGaussian(a, 1e-12, 2 * b)
        np.testing.assert_allclose(d.log_prob(g), Gamma(a, b).log_prob(g), rtol=1e-7)
        np.testing.assert_allclose(d.mean, a / b, rtol=1e-8)
        np.testing.assert_allclose(d.expected_log(), sps.digamma(a) - np.log(b), rtol=1e-7)


def test_inverse_gamma_limit_phi_to_zero():
    g = np.geomspace(1e-2, 100.0, 25)
    a, b = 3.0, 1.3
    with jax.enable_x64(True):
        d = GeneralizedInverseGaussian(-a, 2 * b, 1e-12)
        np.testing.assert_allclose(d.log_prob(g), InverseGamma(a, b).log_prob(g), rtol=1e-7)
        np.testing.assert_allclose(d.mean, b / (a - 1), rtol=1e-8)
        np.testing.assert_allclose(d.expected_inverse(), a / b, rtol=1e-8)


@pytest.mark.parametrize("name", ["chi", "phi"])
@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan])
def test_non_positive_chi_phi_raise(name, bad):
    kw = {"omega": 1.0, "chi": 1.0, "phi": 1.0, name: bad}
    with pytest.raises(ValueError, match=name):
        GeneralizedInverseGaussian(**kw)


@pytest.mark.parametrize(
    "prior, kw, marginal",
    [
        ("student_t", {"df": 3.0, "scale": 2.0}, st.t(3.0, scale=2.0)),
        ("laplace", {"rate": 1.5}, st.laplace(scale=1 / 1.5)),
        ("nig", {"chi": 4.0, "phi": 1.0}, st.norminvgauss(2.0, 0.0)),
    ],
)
def test_special_cases_give_named_scalar_marginals(prior, kw, marginal):
    # w | gamma ~ N(0, 1/gamma), gamma from the named prior: the scalar marginal is the named law
    with jax.enable_x64(True):
        k1, k2 = jax.random.split(jax.random.key(11))
        gamma = mixing_prior(prior, **kw).sample(k1, (4000,))
        w = np.asarray(jax.random.normal(k2, (4000,)) / jnp.sqrt(gamma))
    assert st.kstest(w, marginal.cdf).pvalue > 1e-3


def test_mixing_prior_rejects_unknown_names_and_parameters():
    with pytest.raises(ValueError, match="prior"):
        mixing_prior("horseshoe")
    with pytest.raises(ValueError, match="unexpected"):
        mixing_prior("laplace", df=3.0)
    assert mixing_prior("ard") is None

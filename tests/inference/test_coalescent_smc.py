"""SMC-PriorPost over coalescent trees (inference/coalescent_smc.py) against exact enumeration."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bayesmtl.inference.coalescent_smc import smc_prior_post
from bayesmtl.models.coalescent import brownian_log_likelihood
from bayesmtl.models.tree import Tree, clades, ranked_histories
from scipy.special import logsumexp

X4 = np.array([[0.0, 0.2], [0.5, -0.1], [1.6, 1.2], [1.2, 0.9]])
COV = np.array([[1.0, 0.3], [0.3, 0.8]])
LOC = np.array([0.4, 0.2])


@pytest.fixture(scope="module")
def exact():
    """p(history, x) for all 18 ranked histories over 4 leaves: the Kingman density of a history
    is prod_i exp(-c_i delta_i) = prod_i q(delta_i) / c_i with q the Exp(c_i) density, so
    p(h, x) = (1/18) E_q[lik(x | h, t)], estimated with 15000 shared draws of the durations."""
    hist = ranked_histories(4)
    draws = 15000
    c = np.array([6.0, 3.0, 1.0])
    with jax.enable_x64(True):
        deltas = jax.random.exponential(jax.random.PRNGKey(0), (draws, 3)) / c
        times = jnp.cumsum(deltas, -1)

        def lik(m, t):
            return brownian_log_likelihood(Tree(m, t), jnp.asarray(X4), loc=LOC, cov=COV)

        f = jax.jit(jax.vmap(jax.vmap(lik, (None, 0)), (0, None)))
        ll = np.asarray(f(jnp.asarray(hist), times))  # (18, draws)
    log_p = logsumexp(ll, axis=1) - np.log(draws) - np.log(len(hist))
    # relative MC error of each history's integral (delta method)
    w = np.exp(ll - ll.max(1, keepdims=True))
    rel_se = w.std(1) / w.mean(1) / np.sqrt(draws)
    probs = {}
    post = np.exp(log_p - logsumexp(log_p))
    for h, p in zip(hist, post, strict=True):
        for cl in clades(Tree(h, np.arange(1.0, 4))):
            probs[cl] = probs.get(cl, 0.0) + p
    return probs, float(logsumexp(log_p)), float(rel_se.max())


def test_clade_probabilities_match_exact_enumeration(exact):
    probs, _, rel_se = exact
    assert rel_se < 0.03
    runs = [smc_prior_post(X4, cov=COV, loc=LOC, n_particles=3000, seed=s) for s in range(6)]
    for cl, p in probs.items():
        est = np.array([r.clade_probabilities().get(cl, 0.0) for r in runs])
        se = est.std(ddof=1) / np.sqrt(len(est))
        # 4 SE of the SMC runs plus 3 SE of the exact side's own IS error (< 3% relative)
        assert abs(est.mean() - p) < 4 * se + 3 * rel_se * p + 1e-3, (sorted(cl), est.mean(), p)
    assert max(probs.values()) > 0.5  # the data are informative: not the uniform prior


def test_log_evidence_matches_exact_enumeration(exact):
    _, log_z, rel_se = exact
    ests = np.array(
        [smc_prior_post(X4, cov=COV, loc=LOC, n_particles=3000, seed=10 + s).log_evidence
         for s in range(6)]
    )  # fmt: skip
    # unbiased in Z: compare the mean of exp(estimates); spread from the runs
    z = np.exp(ests - log_z)
    assert abs(z.mean() - 1) < 4 * z.std(ddof=1) / np.sqrt(len(z)) + 3 * rel_se + 1e-3


def test_particles_are_valid_trees_and_resampling_happens():
    x = np.random.default_rng(0).normal(size=(7, 2)) * 2
    res = smc_prior_post(x, n_particles=200, seed=1, resample_threshold=1.0)
    assert res.n_resampled == 5  # every merge but the last
    assert np.isclose(res.weights.sum(), 1.0)
    t = res.map_tree()
    assert np.all(np.diff(np.asarray(t.times)) >= 0)
    assert len(clades(res.mcc_tree())) == 5


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="at least 2 leaves"):
        smc_prior_post(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="NaN"):
        smc_prior_post(np.array([[0.0], [np.nan]]))
    with pytest.raises(ValueError, match="n_particles"):
        smc_prior_post(np.zeros((3, 1)), n_particles=1)
    with pytest.raises(ValueError, match="positive definite"):
        smc_prior_post(np.zeros((3, 1)), cov=-np.eye(1))

"""Kingman coalescent prior and Brownian diffusion on a tree."""

from collections import Counter
from math import comb, factorial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bayesmtl.models.coalescent import (
    BrownianTree,
    KingmanCoalescent,
    Tree,
    brownian_log_likelihood,
    brownian_log_likelihood_dense,
    clades,
    kingman_log_prob,
    pack,
    ranked_histories,
    to_newick,
    tree_covariance,
    tree_from_merges,
    unpack,
)


def _height_sd(n):
    # height = sum of independent Exp(C(m, 2)) waits, m = n..2
    return np.sqrt(sum(1.0 / comb(m, 2) ** 2 for m in range(2, n + 1)))


def test_mean_height_is_2_1_minus_1_over_n():
    n, draws = 6, 4000
    v = KingmanCoalescent(n).sample(jax.random.PRNGKey(0), (draws,))
    h = np.asarray(v[:, -1, 2], dtype=float)
    se = _height_sd(n) / np.sqrt(draws)
    assert abs(h.mean() - 2 * (1 - 1 / n)) < 4 * se
    # the spread matches the sum of exponential waits too (sd of sd ~ sd/sqrt(2N), heavier tail)
    assert abs(h.std() - _height_sd(n)) < 0.1 * _height_sd(n)


@pytest.mark.parametrize("n", [4, 5])
def test_density_integrates_to_one_over_ranked_histories(n):
    hist = ranked_histories(n)
    assert len(hist) == factorial(n) * factorial(n - 1) // 2 ** (n - 1)
    # Importance sampling over times: durations ~ Exp(1) i.i.d., weight = p(history, t) / q(t).
    draws = 400
    key = jax.random.PRNGKey(n)
    deltas = jax.random.exponential(key, (len(hist), draws, n - 1))
    times = jnp.cumsum(deltas, -1)
    merges = jnp.broadcast_to(jnp.asarray(hist)[:, None], (len(hist), draws, n - 1, 2))
    lp = kingman_log_prob(Tree(merges, times))
    w = np.asarray(jnp.exp(lp + deltas.sum(-1)), dtype=float)  # (histories, draws)
    total = w.mean(1).sum()
    se = np.sqrt((w.var(1) / draws).sum())
    assert abs(total - 1.0) < 4 * se + 1e-6


def test_sampled_clade_frequencies_match_exact_kingman():
    # Exact clade probabilities for n = 4 by enumeration (ranked histories are equally likely).
    n, draws = 4, 3000
    exact = Counter()
    hist = ranked_histories(n)
    for h in hist:
        for c in clades(Tree(h, np.arange(1.0, n))):
            exact[c] += 1 / len(hist)
    v = KingmanCoalescent(n).sample(jax.random.PRNGKey(1), (draws,))
    merges = np.asarray(unpack(v).merges)
    seen = Counter()
    for m in merges:
        for c in clades(Tree(m, np.arange(1.0, n))):
            seen[c] += 1 / draws
    for c, p in exact.items():
        assert abs(seen[c] - p) < 4 * np.sqrt(p * (1 - p) / draws), (sorted(c), seen[c], p)


def test_log_prob_closed_form_and_invalid_history():
    t = tree_from_merges([[0, 1], [2, 3]], [0.5, 1.5])
    assert float(kingman_log_prob(t)) == pytest.approx(-3 * 0.5 - 1 * 1.0)
    d = KingmanCoalescent(3)
    bad = pack(Tree(jnp.array([[0, 1], [0, 3]]), jnp.array([0.5, 1.5])))  # leaf 0 merged twice
    assert float(d.log_prob(bad)) == -np.inf
    backwards = pack(Tree(jnp.array([[0, 1], [2, 3]]), jnp.array([1.5, 0.5])))
    assert float(d.log_prob(backwards)) == -np.inf
    assert bool(d.support(d.sample(jax.random.PRNGKey(0))))


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="n_leaves"):
        KingmanCoalescent(1)
    with pytest.raises(ValueError, match="merged twice"):
        tree_from_merges([[0, 1], [0, 3]], [0.5, 1.0])
    with pytest.raises(ValueError, match="NaN"):
        tree_from_merges([[0, 1], [2, 3]], [0.5, np.nan])


def test_tree_covariance_closed_form_and_newick():
    t = tree_from_merges([[0, 1], [2, 3]], [0.5, 1.5])
    c = np.asarray(tree_covariance(t, root_var=0.25))
    # leaves 0,1 share the 1.0-long edge below the root; 2 shares nothing
    np.testing.assert_allclose(c, [[1.75, 1.25, 0.25], [1.25, 1.75, 0.25], [0.25, 0.25, 1.75]])
    assert to_newick(t, ["a", "b", "c"]) == "(c:1.5,(a:0.5,b:0.5):1);"
    # a leaf variance lengthens every leaf's branch: only the diagonal grows
    np.testing.assert_allclose(tree_covariance(t, 0.25, 0.4), c + 0.4 * np.eye(3))


@pytest.mark.parametrize("leaf_var", [0.0, 0.8])
def test_message_passing_matches_dense_matrix_normal(leaf_var):
    k, d = 7, 3
    with jax.enable_x64(True):
        fast_fn = jax.jit(
            lambda t, x, loc, cov: brownian_log_likelihood(
                t, x, loc=loc, cov=cov, root_var=0.7, leaf_var=leaf_var
            )
        )
        dense_fn = jax.jit(
            lambda t, x, loc, cov: brownian_log_likelihood_dense(
                t, x, loc=loc, cov=cov, root_var=0.7, leaf_var=leaf_var
            )
        )
        rng = np.random.default_rng(0)
        for seed in range(3):
            tree = KingmanCoalescent(k).sample_tree(jax.random.PRNGKey(seed))
            a = rng.normal(size=(d, d))
            args = (
                tree,
                jnp.asarray(rng.normal(size=(k, d)) * 2),
                jnp.asarray(rng.normal(size=d)),
                jnp.asarray(a @ a.T + 0.5 * np.eye(d)),
            )
            assert float(fast_fn(*args)) == pytest.approx(float(dense_fn(*args)), abs=1e-8, rel=0)


@pytest.mark.parametrize("leaf_var", [0.0, 0.6])
def test_brownian_tree_sampler_has_covariance_c_kron_lambda(leaf_var):
    t = tree_from_merges([[0, 1], [2, 3]], [0.5, 1.5])
    cov = jnp.array([[1.0, 0.5], [0.5, 2.0]])
    draws = 8000
    dist = BrownianTree(t, jnp.array([1.0, -1.0]), cov, 0.5, leaf_var)
    x = dist.sample(jax.random.PRNGKey(3), (draws,))
    x = np.asarray(x, dtype=float).reshape(draws, -1)  # row-major vec: (leaf, feature)
    expected = np.kron(np.asarray(tree_covariance(t, 0.5, leaf_var)), np.asarray(cov))
    emp = np.cov(x, rowvar=False)
    # sd of a sample covariance ~ sqrt((s_ii s_jj + s_ij^2) / N) <= 4.5 / sqrt(8000) ~ 0.05
    np.testing.assert_allclose(emp, expected, atol=0.2)
    np.testing.assert_allclose(x.mean(0), np.tile([1.0, -1.0], 3), atol=0.1)

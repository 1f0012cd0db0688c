"""Metropolis-Hastings over coalescent trees and tree summaries (inference/tree_mcmc.py)."""

from collections import Counter

import numpy as np
import pytest
from bayesmtl.inference.tree_mcmc import asdsf, clade_probabilities, mcc_tree, tree_mcmc
from bayesmtl.models.tree import Tree, clades, ranked_histories, tree_from_merges


def _exact_kingman_clades(n):
    # ranked histories are equally likely under Kingman's coalescent
    exact = Counter()
    hist = ranked_histories(n)
    for h in hist:
        for c in clades(Tree(h, np.arange(1.0, n))):
            exact[c] += 1 / len(hist)
    return exact


@pytest.mark.parametrize("moves", [("time", "exchange"), ("time", "spr")])
def test_tree_mcmc_leaves_kingman_prior_invariant(moves):
    n, steps, batches = 4, 8000, 20
    chain = tree_mcmc(0, n, n_steps=steps, moves=moves)
    sets = [set(clades(t)) for t in chain.trees]
    for c, p in _exact_kingman_clades(n).items():
        ind = np.array([c in s for s in sets], float).reshape(batches, -1)
        se = ind.mean(1).std(ddof=1) / np.sqrt(batches)  # batch means: autocorrelation included
        assert abs(ind.mean() - p) < 4 * se + 0.005, (sorted(c), ind.mean(), p)
    height = np.array([float(t.times[-1]) for t in chain.trees]).reshape(batches, -1).mean(1)
    assert abs(height.mean() - 1.5) < 4 * height.std(ddof=1) / np.sqrt(batches)


def test_asdsf_closed_form():
    a = tree_from_merges([[0, 1], [2, 3], [4, 5]], [0.1, 0.2, 1.0])  # {0,1}, {2,3}
    b = tree_from_merges([[0, 2], [1, 3], [4, 5]], [0.1, 0.2, 1.0])  # {0,2}, {1,3}
    # chain 1: {0,1},{2,3} at 1.0; chain 2: half a, half b -> those at 0.5, {0,2},{1,3} at 0.5
    sd = np.std([1.0, 0.5], ddof=1)
    assert asdsf([[a, a], [a, b]]) == pytest.approx(np.mean([sd, sd, sd, sd]))
    assert asdsf([[a, b], [b, a]]) == 0.0
    with pytest.raises(ValueError, match="chains"):
        asdsf([[a]])


def test_mcc_tree_picks_the_most_credible_topology():
    a = tree_from_merges([[0, 1], [2, 3], [4, 5]], [0.1, 0.2, 1.0])
    a2 = tree_from_merges([[0, 1], [2, 3], [4, 5]], [0.3, 0.4, 2.0])
    b = tree_from_merges([[0, 2], [1, 3], [4, 5]], [0.1, 0.2, 1.0])
    mcc = mcc_tree([b, a, a2])
    assert set(clades(mcc)) == {frozenset({0, 1}), frozenset({2, 3})}
    np.testing.assert_allclose(np.asarray(mcc.times), [0.2, 0.3, 1.0 + 1 / 3])
    probs = clade_probabilities([b, a, a2], weights=[0.8, 0.1, 0.1])
    assert probs[frozenset({0, 2})] == pytest.approx(0.8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"n_steps": True}, "n_steps"), ({"n_steps": 0}, "n_steps"), ({"n_steps": 2.5}, "n_steps"),
     ({"n_steps": 5, "thin": 0}, "thin"), ({"n_steps": 5, "thin": False}, "thin"),
     ({"n_steps": 5, "moves": ("swap",)}, "moves"), ({"n_steps": 5, "n_leaves": 2}, "n_leaves")],
)
def test_bad_arguments_raise_a_value_error_naming_them(kwargs, match):
    kwargs = {"n_leaves": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        tree_mcmc(0, kwargs.pop("n_leaves"), **kwargs)


def test_numpy_kingman_density_equals_the_distributions_log_prob():
    import jax
    from bayesmtl.inference.tree_mcmc import kingman_times_log_prob
    from bayesmtl.models.coalescent import KingmanCoalescent, pack

    for seed, k in ((0, 3), (1, 6), (2, 11)):
        dist = KingmanCoalescent(k)
        tree = dist.sample_tree(jax.random.PRNGKey(seed))
        expected = float(dist.log_prob(pack(tree)))
        assert kingman_times_log_prob(np.asarray(tree.times), k) == pytest.approx(expected, rel=1e-5)

"""Greedy agglomerative coalescent inference (Teh, Daume & Roy 2007)."""

import numpy as np
import pytest
from bayesmtl.inference.coalescent_greedy import greedy_coalescent, optimal_duration
from bayesmtl.models.coalescent import clades, tree_from_merges
from scipy.optimize import minimize_scalar
from scipy.stats import multivariate_normal


def _numeric_best(q, a, rate, dim):
    # maximise -rate*delta + log N(d; 0, (a + 2 delta) I_D) with |d|^2 = q, on delta in [0, 50]
    def neg(delta):
        s = a + 2 * delta
        return rate * delta + 0.5 * dim * np.log(2 * np.pi * s) + 0.5 * q / s

    res = minimize_scalar(neg, bounds=(0.0, 50.0), method="bounded", options={"xatol": 1e-10})
    return res.x, -res.fun


@pytest.mark.parametrize(
    "q,a,rate,dim",
    [(4.0, 0.0, 1.0, 1), (30.0, 0.3, 6.0, 5), (2.5, 1.2, 3.0, 2), (0.01, 2.0, 10.0, 3)],
)
def test_closed_form_duration_matches_numerical_optimiser(q, a, rate, dim):
    closed = float(optimal_duration(q, a, rate=rate, dim=dim))
    numeric, _ = _numeric_best(q, a, rate, dim)
    assert closed == pytest.approx(numeric, abs=1e-6)


def test_maxprob_first_merge_is_bruteforce_best_pair():
    rng = np.random.default_rng(1)
    k, dim = 6, 2
    x = rng.normal(size=(k, dim)) * 1.5
    cov = np.array([[1.0, 0.6], [0.6, 2.0]])
    tree = greedy_coalescent(x, cov=cov, method="maxprob")
    best, best_score, best_t = None, -np.inf, None
    c = k * (k - 1) / 2
    for i in range(k):
        for j in range(i + 1, k):
            # independent score: numeric optimum over delta with scipy's Gaussian density
            def neg(delta, i=i, j=j):
                return c * delta - multivariate_normal(np.zeros(dim), 2 * delta * cov).logpdf(
                    x[i] - x[j]
                )

            r = minimize_scalar(
                neg, bounds=(1e-9, 20.0), method="bounded", options={"xatol": 1e-10}
            )
            if -r.fun > best_score:
                best, best_score, best_t = [i, j], -r.fun, r.x
    assert np.asarray(tree.merges[0]).tolist() == best
    assert float(tree.times[0]) == pytest.approx(best_t, rel=1e-4)


@pytest.mark.parametrize("method", ["maxprob", "rate1"])
def test_recovers_well_separated_clades(method):
    rng = np.random.default_rng(2)
    centres = np.array([[0.0, 0.0, 0.0], [6.0, 0.0, 0.0], [0.0, 6.0, 6.0]])
    x = np.concatenate([c + 0.1 * rng.normal(size=(4, 3)) for c in centres])
    perm = rng.permutation(len(x))
    tree = greedy_coalescent(x[perm], method=method)
    truth = [frozenset(np.flatnonzero(perm // 4 == g).tolist()) for g in range(3)]
    found = set(clades(tree))
    assert all(c in found for c in truth)


@pytest.mark.parametrize("method", ["maxprob", "rate1"])
def test_output_is_a_valid_ranked_tree(method):
    x = np.random.default_rng(3).normal(size=(40, 3))
    tree = greedy_coalescent(x, method=method, min_duration=1e-6)
    merges, times = np.asarray(tree.merges), np.asarray(tree.times, dtype=float)
    tree_from_merges(merges, times)  # raises on a malformed tree
    assert np.all(np.diff(times) >= 1e-6 * 0.99)


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="at least 2 tasks"):
        greedy_coalescent(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="NaN"):
        greedy_coalescent(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="method"):
        greedy_coalescent(np.zeros((3, 2)), method="fastest")
    with pytest.raises(ValueError, match="positive definite"):
        greedy_coalescent(np.zeros((3, 2)), cov=-np.eye(2))


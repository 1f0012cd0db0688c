"""Daume III 2009 greedy-tree EM for the mean-sharing latent hierarchy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bayesmtl.data import TaskData
from bayesmtl.inference.latent_hierarchy_em import em_objective, latent_hierarchy_em
from bayesmtl.models.coalescent import clades, kingman_log_prob, tree_covariance, tree_from_merges
from bayesmtl.models.latent_hierarchy import simulate
from scipy import stats

# two well-separated clades {0,1,2,3} and {4,5,6,7}: within-clade merges by t = 0.3, root at 3
TREE8 = tree_from_merges(
    [[0, 1], [4, 5], [2, 3], [6, 7], [8, 10], [9, 11], [12, 13]],
    [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 3.0],
)


@pytest.fixture(scope="module")
def fitted():
    data, truth = simulate(
        jax.random.PRNGKey(0),
        8,
        30,
        3,
        tree=TREE8,
        noise_scale=0.3,
        params={"Lambda": np.eye(3), "mu0": np.zeros(3)},
    )
    return data, truth, latent_hierarchy_em(data, max_iter=20)


def test_objective_trace_is_non_decreasing(fitted):
    _, _, res = fitted
    assert len(res.objective) >= 3
    assert np.all(np.diff(res.objective) >= -1e-8 * np.abs(res.objective[1:]))
    assert res.objective[-1] > res.objective[0]


def test_recovers_well_separated_clades(fitted):
    _, truth, res = fitted
    found = set(clades(res.tree))
    assert frozenset(range(4)) in found and frozenset(range(4, 8)) in found
    # MAP weights close to the truth: 30 rows, noise 0.3 -> per-coefficient sd ~ 0.06
    assert np.max(np.abs(res.w - np.asarray(truth["w"]))) < 0.3


def test_summary_lists_the_em_tree(fitted):
    _, _, res = fitted
    s = res.summary(names=[f"t{i}" for i in range(8)])
    assert [0, 1, 2, 3] in s["clades"] and [4, 5, 6, 7] in s["clades"]
    assert len(s["clades"]) == 6 and s["newick"].count("t") == 8
    assert s["objective"] == pytest.approx(res.objective[-1])


def test_objective_is_the_documented_joint_density(fitted):
    data, _, res = fitted
    w, lam, mu0 = res.w, res.Lambda, res.mu0
    k, d = w.shape
    with jax.enable_x64(True):
        f = float(
            em_objective(
                jnp.asarray(w), res.tree, jnp.asarray(mu0), jnp.asarray(lam), data, noise=res.noise
            )
        )
        kingman = float(kingman_log_prob(res.tree))
        c = np.asarray(tree_covariance(res.tree, 1.0))
    # independent pieces: scipy densities and the dense matrix-normal covariance C kron Lambda
    eta = np.sum(data.X * w[data.task], 1)
    loglik = stats.norm(eta, res.noise).logpdf(data.y).sum()
    brown = stats.multivariate_normal(np.tile(mu0, k), np.kron(c, lam)).logpdf(w.ravel())
    mu_prior = stats.multivariate_normal(np.zeros(d), lam).logpdf(mu0)
    iw = stats.invwishart(df=d + 1, scale=np.eye(d)).logpdf(lam)
    assert f == pytest.approx(loglik + brown + kingman + mu_prior + iw, abs=1e-6)


def test_parameter_step_is_the_joint_mode(fitted):
    data, _, res = fitted
    with jax.enable_x64(True):

        def f(mu0, lam):
            return float(
                em_objective(
                    jnp.asarray(res.w),
                    res.tree,
                    jnp.asarray(mu0),
                    jnp.asarray(lam),
                    data,
                    noise=res.noise,
                )
            )

        best = f(res.mu0, res.Lambda)
        rng = np.random.default_rng(0)
        for _ in range(5):
            e = rng.normal(size=(3, 3)) * 0.02
            assert f(res.mu0, res.Lambda + e @ e.T) < best
            assert f(res.mu0, res.Lambda * 0.97) < best
            assert f(res.mu0 + rng.normal(size=3) * 0.02, res.Lambda) < best


def test_bernoulli_em_objective_non_decreasing():
    data, _ = simulate(
        jax.random.PRNGKey(1),
        4,
        40,
        2,
        likelihood="bernoulli",
        tree=tree_from_merges([[0, 1], [2, 3], [4, 5]], [0.1, 0.2, 3.0]),
    )
    res = latent_hierarchy_em(data, likelihood="bernoulli", greedy="rate1", max_iter=10)
    assert res.noise is None and res.w.shape == (4, 2)
    assert np.all(np.diff(res.objective) >= -1e-8 * np.abs(res.objective[1:]))


def test_bad_input_raises_value_error():
    one = TaskData(X=np.zeros((3, 2)), y=np.zeros(3), task=[0, 0, 0])
    with pytest.raises(ValueError, match="at least 2 tasks"):
        latent_hierarchy_em(one)
    two = TaskData(X=np.zeros((4, 2)), y=[0.0, 1.0, 2.0, 0.0], task=[0, 0, 1, 1])
    with pytest.raises(ValueError, match="greedy"):
        latent_hierarchy_em(two, greedy="best")
    with pytest.raises(ValueError, match="label"):
        latent_hierarchy_em(two, likelihood="bernoulli")
    with pytest.raises(ValueError, match="y"):
        latent_hierarchy_em(two.without_y())
    for bad in (float("nan"), -1.0):
        with pytest.raises(ValueError, match="tol"):
            latent_hierarchy_em(two, tol=bad)
    with pytest.raises(ValueError, match="max_iter"):
        latent_hierarchy_em(two, max_iter=True)


@pytest.mark.parametrize("show", [True, False])
def test_progress_bar_shows_the_objective_only_when_asked(fitted, capsys, show):
    from bayesmtl.inference.latent_hierarchy_cov import covariance_sharing_em

    data = fitted[0]
    capsys.readouterr()
    latent_hierarchy_em(data, max_iter=2, progress_bar=show)
    covariance_sharing_em(data, max_iter=1, progress_bar=show)
    err = capsys.readouterr().err
    assert ("latent-hierarchy EM" in err and "covariance-sharing EM" in err) == show
    assert ("objective=" in err) == show
    if not show:
        assert err == ""

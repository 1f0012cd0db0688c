"""Covariance-sharing latent hierarchy: the collapsed target, greedy-tree EM."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bayesmtl.data import TaskData
from bayesmtl.inference.latent_hierarchy_cov import covariance_sharing_em
from bayesmtl.inference.latent_hierarchy_cov_target import (
    gaussian_log_marginal,
    task_statistics,
    weights_posterior,
)
from bayesmtl.models.coalescent import (
    clades,
    tree_covariance,
)
from scipy import stats

CLADES = [frozenset({0, 2, 4, 6}), frozenset({1, 3, 5, 7})]


def two_scale_clades(seed=0, k=8, n=30, d=3, hi=1.0, lo=-2.0, noise=0.3):
    """Tasks 0, 2, 4, ... have weights of size e^hi, tasks 1, 3, 5, ... of size e^lo."""
    rng = np.random.default_rng(seed)
    s = np.where((np.arange(k) % 2 == 0)[:, None], hi, lo) + 0.1 * rng.normal(size=(k, d))
    w = np.exp(s) * rng.choice([-1.0, 1.0], size=(k, d))
    task = np.repeat(np.arange(k), n)
    x = rng.normal(size=(len(task), d))
    y = np.sum(x * w[task], 1) + noise * rng.normal(size=len(task))
    return TaskData(X=x, y=y, task=task), w


@pytest.fixture(scope="module")
def fitted():
    data, w = two_scale_clades(seed=1)
    return data, w, covariance_sharing_em(data, max_iter=30)


def test_objective_trace_is_non_decreasing(fitted):
    _, _, res = fitted
    assert len(res.objective) >= 3 and res.objective[-1] > res.objective[0] + 10
    assert np.all(np.diff(res.objective) >= 0)


def test_em_recovers_two_clades_of_scales(fitted):
    _, w, res = fitted
    found = set(clades(res.tree))
    assert set(CLADES) <= found, res.summary()["newick"]
    # the log-scales of the two clades are far apart, the weights close to the truth
    assert res.S[0::2].mean() - res.S[1::2].mean() > 2.0
    assert np.max(np.abs(res.W - w)) < 0.3  # 30 rows, noise 0.3: coefficient sd ~ 0.06
    assert 0.2 < res.noise < 0.4 and np.allclose(np.diag(res.R), 1.0)


def test_summary_has_the_mean_sharing_keys(fitted):
    _, _, res = fitted
    s = res.summary(names=[f"t{i}" for i in range(8)])
    assert set(s) == {"newick", "clades", "objective", "n_iter", "converged"}
    assert [0, 2, 4, 6] in s["clades"] and s["newick"].count("t") == 8
    assert s["objective"] == pytest.approx(res.objective[-1])


def test_marginal_likelihood_and_weight_draws_are_the_dense_gaussian():
    rng = np.random.default_rng(0)
    k, d, noise = 3, 2, 0.7
    data = TaskData(X=rng.normal(size=(9, d)), y=rng.normal(size=9), task=[0] * 5 + [1] * 3 + [2])
    s = rng.normal(size=(k, d))
    r = np.array([[1.0, -0.6], [-0.6, 1.0]])
    with jax.enable_x64(True):
        st = [jnp.asarray(a) for a in task_statistics(data)]
        lp = np.asarray(gaussian_log_marginal(jnp.asarray(s), jnp.asarray(r), noise, *st))
        mean = np.asarray(weights_posterior(jnp.asarray(s), jnp.asarray(r), noise, st[0], st[1]))
        # a draw is mean + A_t z_t: unit vectors z give A's columns, and A A' must be the
        # posterior covariance
        cols = np.stack([np.asarray(weights_posterior(jnp.asarray(s), jnp.asarray(r), noise, st[0],
                                                      st[1], jnp.tile(np.eye(d)[j], (k, 1))))
                         - mean for j in range(d)], -1)  # fmt: skip
    for t in range(k):
        x, y = data.X[data.task == t], data.y[data.task == t]
        sig = np.exp(s[t])[:, None] * (r + 1e-6 * np.eye(d)) * np.exp(s[t])[None, :]
        dense = stats.multivariate_normal(
            np.zeros(len(y)), x @ sig @ x.T + noise**2 * np.eye(len(y))
        )
        assert lp[t] == pytest.approx(dense.logpdf(y), abs=1e-9)
        post_mean = sig @ x.T @ np.linalg.solve(x @ sig @ x.T + noise**2 * np.eye(len(y)), y)
        np.testing.assert_allclose(mean[t], post_mean, atol=1e-9)
        post_cov = sig - sig @ x.T @ np.linalg.solve(x @ sig @ x.T + noise**2 * np.eye(len(y)),
                                                     x @ sig)
        np.testing.assert_allclose(cols[t] @ cols[t].T, post_cov, atol=1e-9)


def test_objective_is_the_documented_joint_density(fitted):
    # the last objective value against independent scipy pieces at the returned point, in the
    # non-centred coordinates Z = chol(C)^-1 S chol(Lambda)^-T: IW(Sigma_R; I, D+1)
    # + IW(Lambda; I, D+1) + N(Z; 0, I) + HalfNormal(noise) + Kingman
    # + sum_k N(y_k; 0, X_k Sigma_k X_k' + noise^2 I)
    data, _, res = fitted
    k, d = res.S.shape
    with jax.enable_x64(True):  # C's entries may differ by 1e-3: float32 would blur them
        c = np.asarray(tree_covariance(res.tree, 1.0))
    z = np.linalg.solve(np.linalg.cholesky(c), res.S)
    z = np.linalg.solve(np.linalg.cholesky(res.Lambda), z.T).T
    m = k - np.arange(k - 1)
    kingman = -np.sum(m * (m - 1) / 2 * np.diff(np.asarray(res.tree.times), prepend=0.0))
    expected = (
        stats.invwishart(d + 1, np.eye(d)).logpdf(res.Sigma_R)
        + stats.invwishart(d + 1, np.eye(d)).logpdf(res.Lambda)
        + stats.norm.logpdf(z).sum()
        + stats.halfnorm.logpdf(res.noise)
        + kingman
    )
    for t in range(k):
        x, y = data.X[data.task == t], data.y[data.task == t]
        sig = np.exp(res.S[t])[:, None] * (res.R + 1e-6 * np.eye(d)) * np.exp(res.S[t])[None, :]
        cov = x @ sig @ x.T + res.noise**2 * np.eye(len(y))
        expected += stats.multivariate_normal(np.zeros(len(y)), cov).logpdf(y)
    assert res.objective[-1] == pytest.approx(expected, abs=1e-6)
    sd = np.sqrt(np.diag(res.Sigma_R))
    np.testing.assert_allclose(res.R, res.Sigma_R / np.outer(sd, sd))


def test_centred_route_is_monotone_with_the_conditional_mode_of_lambda():
    # centered=True: Lambda gets its closed-form step, so at the end IW prior + dense Brownian
    # density of S is largest at the returned Lambda
    data, _ = two_scale_clades(seed=2, k=4, n=20, d=2)
    res = covariance_sharing_em(data, centered=True, max_iter=3)
    assert np.all(np.diff(res.objective) >= 0)
    k, d = res.S.shape
    with jax.enable_x64(True):
        c = np.asarray(tree_covariance(res.tree, 1.0))

    def f(lam):
        brown = stats.multivariate_normal(np.zeros(k * d), np.kron(c, lam)).logpdf(res.S.ravel())
        return brown + stats.invwishart(d + 1, np.eye(d)).logpdf(lam)

    base = f(res.Lambda)
    rng = np.random.default_rng(0)
    scale = np.sqrt(np.outer(np.diag(res.Lambda), np.diag(res.Lambda)))
    for _ in range(5):
        e = 0.02 * rng.normal(size=(d, d)) * scale
        assert f(res.Lambda + (e + e.T) / 2) < base


def test_bernoulli_em_objective_is_the_documented_joint_density():
    # at the returned point, against independent scipy pieces: IW(Sigma_R) + IW(Lambda)
    # + N(Z; 0, I) for the non-centred log-scales + N(w_z; 0, I) + Kingman + Bernoulli log-pmf,
    # with w_k = exp(S_k) * chol(R) w_z,k
    data, _ = two_scale_clades(seed=3, k=4, n=30, d=2)
    data = data.with_y((data.y > 0).astype(float))
    res = covariance_sharing_em(data, likelihood="bernoulli", max_iter=4)
    assert res.noise is None and res.W.shape == (4, 2) and np.all(np.isfinite(res.S))
    k, d = res.S.shape
    with jax.enable_x64(True):
        c = np.asarray(tree_covariance(res.tree, 1.0))
    z = np.linalg.solve(np.linalg.cholesky(c), res.S)
    z = np.linalg.solve(np.linalg.cholesky(res.Lambda), z.T).T
    wz = np.linalg.solve(np.linalg.cholesky(res.R + 1e-6 * np.eye(d)), (res.W / np.exp(res.S)).T).T
    m = k - np.arange(k - 1)
    eta = np.sum(data.X * res.W[data.task], 1)
    expected = (
        stats.invwishart(d + 1, np.eye(d)).logpdf(res.Sigma_R)
        + stats.invwishart(d + 1, np.eye(d)).logpdf(res.Lambda)
        + stats.norm.logpdf(z).sum()
        + stats.norm.logpdf(wz).sum()
        - np.sum(m * (m - 1) / 2 * np.diff(np.asarray(res.tree.times), prepend=0.0))
        + stats.bernoulli.logpmf(data.y, 1 / (1 + np.exp(-eta))).sum()
    )
    assert res.objective[-1] == pytest.approx(expected, abs=1e-6)


def test_bad_input_raises_value_error():
    one = TaskData(X=np.zeros((2, 1)), y=[0.0, 1.0], task=[0, 0])
    ok = TaskData(X=np.ones((4, 1)), y=[0.0, 1.0, 2.0, 1.0], task=[0, 0, 1, 1])
    with pytest.raises(ValueError, match="at least 2 tasks"):
        covariance_sharing_em(one)
    with pytest.raises(ValueError, match="likelihood"):
        covariance_sharing_em(ok, likelihood="poisson")
    with pytest.raises(ValueError, match="label"):
        covariance_sharing_em(ok, likelihood="bernoulli")
    with pytest.raises(ValueError, match="needs observed targets"):
        covariance_sharing_em(ok.without_y())
    with pytest.raises(ValueError, match="max_iter"):
        covariance_sharing_em(ok, max_iter=0)

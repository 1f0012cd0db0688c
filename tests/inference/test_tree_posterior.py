"""Full posterior over trees and parameters of the mean-sharing latent hierarchy."""

import json
from collections import Counter

import jax
import numpy as np
import pytest
from bayesmtl.data import TaskData
from bayesmtl.inference.predict import log_predictive
from bayesmtl.inference.tree_gibbs import (
    _draw_w_gaussian,
    _polya_gamma_precisions,
    _segments,
    _segsum,
)
from bayesmtl.inference.tree_posterior import tree_posterior
from bayesmtl.models.coalescent import tree_covariance
from bayesmtl.models.tree import Tree, clades, ranked_histories, tree_from_merges
from scipy import stats

# two well-separated clades of three tasks: weights near (2, 0) for tasks {0, 2, 4} and near
# (-1, 2) for {1, 3, 5} (within-clade spread 0.15, between-clade distance 3.6)
TRUE_CLADES = [frozenset({0, 2, 4}), frozenset({1, 3, 5})]


def _two_clades(seed=0, n_per_task=15, noise=0.3):
    rng = np.random.default_rng(seed)
    centres = np.array([[2.0, 0.0], [-1.0, 2.0]])
    w = centres[np.arange(6) % 2] + 0.15 * rng.normal(size=(6, 2))
    task = np.repeat(np.arange(6), n_per_task)
    x = rng.normal(size=(len(task), 2))
    y = np.sum(x * w[task], 1) + noise * rng.normal(size=len(task))
    return TaskData(X=x, y=y, task=task)


@pytest.fixture(scope="module")
def posterior():
    data = _two_clades()
    return data, tree_posterior(data, num_chains=2, num_warmup=100, num_samples=200, seed=1)


def test_true_clades_get_high_posterior_probability(posterior):
    _, post = posterior
    probs = post.clade_probabilities()
    for c in TRUE_CLADES:
        assert probs.get(c, 0.0) >= 0.9, (sorted(c), probs.get(c))
    assert set(TRUE_CLADES) <= set(clades(post.mcc_tree()))
    assert post.asdsf() < 0.1  # chains started from independent random trees agree


def test_summary_is_json_ready_and_consistent(posterior):
    _, post = posterior
    s = json.loads(json.dumps(post.summary(names=list("abcdef"))))
    ps = [c["probability"] for c in s["clade_probabilities"]]
    assert ps == sorted(ps, reverse=True) and min(ps) >= 0.05
    assert s["clade_probabilities"][0]["tasks"] in ([0, 2, 4], [1, 3, 5])
    for c in s["clade_probabilities"]:  # the names the Newick tree and the plots use
        assert c["names"] == ["abcdef"[i] for i in c["tasks"]]
    assert s["newick"].endswith(";") and all(n in s["newick"] for n in "abcdef")
    assert s["max_rhat"] == pytest.approx(post.max_rhat) and 1.0 <= s["max_rhat"] < 1.2
    assert s["asdsf"] == pytest.approx(post.asdsf())
    assert s["elpd_loo"] == pytest.approx(post.loo().elpd) and s["pareto_k_high"] >= 0
    assert set(post.samples) == {"w", "mu0", "Lambda", "noise", "tree_height"}
    assert post.samples["w"].shape == (2, 200, 6, 2)


def test_log_likelihood_group_holds_each_draws_pointwise_density_for_loo(posterior):
    import arviz as az

    data, post = posterior
    ll = post.idata.log_likelihood["y"]
    assert ll.dims == ("chain", "draw", "obs") and ll.shape == (2, 200, data.n)
    c, s = 1, 57  # one draw, by hand
    w, noise = post.samples["w"][c, s], post.samples["noise"][c, s]
    expected = stats.norm.logpdf(data.y, np.sum(data.X * w[data.task], 1), noise)
    np.testing.assert_allclose(ll.values[c, s], expected, rtol=1e-10)
    np.testing.assert_array_equal(post.idata.observed_data["y"].values, data.y)
    # PSIS-LOO runs on it (so `compare` puts the tree beside NUTS fits), and the in-sample lppd
    # from `log_predictive` is at least the LOO estimate
    loo = post.loo()
    assert np.isfinite(loo.elpd) and loo.elpd == pytest.approx(az.loo(post.idata).elpd)
    assert loo.elpd <= post.log_predictive(data).sum() + 1e-9
    # the library-wide `log_predictive` (used by the stacked predictive) defers to it, on rows
    # of a subset of the tasks too, and checks the rows first
    part = data.subset(data.task < 2)
    np.testing.assert_allclose(log_predictive(post, part), post.log_predictive(data)[data.task < 2])
    with pytest.raises(ValueError, match="unknown task"):
        log_predictive(post, TaskData.for_prediction(np.ones((1, 2)), [6], 7).with_y([0.0]))


def test_similarity_is_the_average_tree_covariance(posterior):
    _, post = posterior
    trees = post.all_trees[::50]
    sub = type(post)(
        trees=[trees], samples={}, idata=None, accept={}, likelihood="gaussian", root_var=1.0
    )
    expected = np.mean([np.asarray(tree_covariance(t, 1.0)) for t in trees], 0)
    np.testing.assert_allclose(sub.similarity(), expected, rtol=1e-6)  # float32 expected


def test_gaussian_weight_step_is_the_exact_conditional():
    # independent dense form: vec(W) row-major ~ N(1 mu0', C kron Lambda) a priori, and
    # y = B vec(W) + noise with B the (n, K*D) block design
    rng = np.random.default_rng(0)
    k, d, n, noise = 3, 2, 12, 0.7
    tree = tree_from_merges([[0, 1], [2, 3]], [0.3, 1.2])
    c = np.asarray(tree_covariance(tree, 0.5))
    lam = np.array([[1.0, 0.4], [0.4, 0.6]])
    mu0 = np.array([0.3, -0.2])
    x, task = rng.normal(size=(n, d)), np.repeat(np.arange(k), n // k)
    y = rng.normal(size=n)
    b = np.zeros((n, k * d))
    for i in range(n):
        b[i, task[i] * d : task[i] * d + d] = x[i]
    prior_cov = np.kron(c, lam)
    post_cov = np.linalg.inv(np.linalg.inv(prior_cov) + b.T @ b / noise**2)
    post_mean = post_cov @ (np.linalg.solve(prior_cov, np.tile(mu0, k)) + b.T @ y / noise**2)
    xtx = np.zeros((k, d, d))
    np.add.at(xtx, task, x[:, :, None] * x[:, None, :])
    xty = np.zeros((k, d))
    np.add.at(xty, task, x * y[:, None])
    with jax.enable_x64(True):  # as inside tree_posterior
        draws = np.array(
            [_draw_w_gaussian(rng, c, lam, mu0, xtx, xty, noise).ravel() for _ in range(4000)]
        )
    se = np.sqrt(np.diag(post_cov) / 4000)
    assert np.all(np.abs(draws.mean(0) - post_mean) < 4 * se)
    # sample covariance: sd of an entry <= sqrt(2/4000) * max variance
    np.testing.assert_allclose(np.cov(draws.T), post_cov, atol=4 * np.sqrt(2 / 4000) * 0.5)


def test_polya_gamma_weight_steps_leave_the_bernoulli_conditional_invariant():
    # K = 3 tasks, D = 1: omega | W then W | omega (the sampler's two steps, tree and Lambda fixed);
    # compare the chain's mean and sd with importance sampling from the prior
    rng = np.random.default_rng(1)
    tree = tree_from_merges([[0, 1], [2, 3]], [0.3, 1.2])
    c = np.asarray(tree_covariance(tree, 1.0))
    x = rng.normal(size=(30, 1)) * 2
    task = np.repeat(np.arange(3), 10)
    y = (rng.uniform(size=30) < 1 / (1 + np.exp(-1.5 * x[:, 0] * (task - 1)))).astype(float)
    seg = _segments(task, 3)
    xxt, kappa_x = x[:, :, None] * x[:, None, :], _segsum(x * (y - 0.5)[:, None], seg)
    w, chain = np.zeros((3, 1)), []
    with jax.enable_x64(True):  # as inside tree_posterior
        for _ in range(2000):
            xtx = _polya_gamma_precisions(rng, w, x, xxt, task, seg)
            w = _draw_w_gaussian(rng, c, np.eye(1), np.zeros(1), xtx, kappa_x, 1.0)
            chain.append(w[:, 0])
    chain = np.array(chain)
    prior = rng.multivariate_normal(np.zeros(3), c, size=200000)
    eta = x[:, 0][None] * prior[:, task]
    logw = np.sum(y * eta - np.logaddexp(0, eta), 1)
    wts = np.exp(logw - logw.max())
    wts /= wts.sum()
    exact = wts @ prior
    sd = np.sqrt(wts @ prior**2 - exact**2)
    # batch means for the chain's MC error; the IS side is ~ 10x more precise
    bm = chain.reshape(20, -1, 3).mean(1)
    se = bm.std(0, ddof=1) / np.sqrt(20)
    assert np.all(np.abs(chain.mean(0) - exact) < 4 * se + 0.02 * sd), (chain.mean(0), exact)
    bs = chain.reshape(20, -1, 3).std(1)  # batch sds: their spread sizes the check on the sd
    assert np.all(np.abs(bs.mean(0) - sd) < 4 * bs.std(0, ddof=1) / np.sqrt(20) + 0.03 * sd)


def _height_cdf(h, rates=(6.0, 3.0, 1.0)):
    # hypoexponential CDF: 1 - sum_i prod_{j != i} r_j / (r_j - r_i) exp(-r_i h)
    out = np.ones_like(h)
    for i, ri in enumerate(rates):
        c = np.prod([rj / (rj - ri) for j, rj in enumerate(rates) if j != i])
        out = out - c * np.exp(-ri * h)
    return out


@pytest.mark.parametrize(
    ("sweeps", "leaf_var", "d"),
    [(800, 0.0, 1), (1200, None, 1), (1200, 0.0, 2),
     pytest.param(6000, 0.0, 1, marks=pytest.mark.slow)],
    ids=["fast", "learnt-leaf-var", "two-features", "long"],
)  # fmt: skip
def test_without_data_the_sampler_leaves_the_kingman_prior_invariant(sweeps, leaf_var, d):
    n, batches = 4, 20
    exact = Counter()
    hist = ranked_histories(n)
    for h in hist:
        for c in clades(Tree(h, np.arange(1.0, n))):
            exact[c] += 1 / len(hist)
    data = TaskData(X=np.zeros((4, d)), task=[0, 1, 2, 3])
    post = tree_posterior(
        data, num_chains=1, num_warmup=100, num_samples=sweeps, tree_steps=2, seed=0,
        leaf_var=leaf_var,
    )
    sets = [set(clades(t)) for t in post.trees[0]]
    for c, p in exact.items():
        ind = np.array([c in s for s in sets], float).reshape(batches, -1)
        se = ind.mean(1).std(ddof=1) / np.sqrt(batches)
        assert abs(ind.mean() - p) < 4 * se + 0.005, (sorted(c), ind.mean(), p)
    # each diagonal entry of Lambda ~ IW(I, D + 1) is InvGamma(1, 1/2), its correlation (D = 2)
    # is uniform on (-1, 1), and the height is a sum of Exp(6), Exp(3), Exp(1) waits: their CDFs
    # at the draws are uniform (mean 1/2). D = 2 checks the rescalings' Jacobians for a matrix
    # Lambda (D(D+1)/2 free entries), which D = 1 cannot tell from a scalar's
    lam = post.samples["Lambda"][0]
    us = [stats.invgamma(1.0, scale=0.5).cdf(lam[:, j, j]) for j in range(d)]
    if d == 2:
        us.append((lam[:, 0, 1] / np.sqrt(lam[:, 0, 0] * lam[:, 1, 1]) + 1) / 2)
    h = post.samples["tree_height"][0]
    us.append(_height_cdf(h))
    if leaf_var is None:  # and the learnt leaf variance keeps its HalfCauchy(1 / C(4, 2)) prior
        us.append(stats.halfcauchy.cdf(post.samples["leaf_var"][0], scale=1 / 6))
        assert post.accept["collapsed_leaf"] > 0.2 and post.accept["collapsed_leaf_jump"] > 0.1
    else:
        assert "leaf_var" not in post.samples
    for u in us:
        bm = u.reshape(batches, -1).mean(1)
        assert abs(bm.mean() - 0.5) < 4 * bm.std(ddof=1) / np.sqrt(batches)


def test_bernoulli_posterior_runs_and_recovers_a_clear_split():
    # labels ~ Bernoulli(sigmoid(2 y)) from the outputs y of the two-clade regression
    base = _two_clades(seed=2, n_per_task=40)
    u = np.random.default_rng(3).uniform(size=base.n)
    data = base.with_y((u < 1 / (1 + np.exp(-2 * base.y))).astype(float))
    post = tree_posterior(
        data, likelihood="bernoulli", num_chains=2, num_warmup=50, num_samples=100, seed=3
    )
    assert "noise" not in post.samples
    p = post.clade_probabilities()
    assert min(p.get(c, 0) for c in TRUE_CLADES) > 0.5
    assert np.all(np.isfinite(post.log_predictive(data)))


@pytest.mark.parametrize("sampler", ["mean", "covariance"])
def test_bad_input_raises_value_error(sampler):
    # both tree samplers share their argument checks (tree_posterior._check)
    from bayesmtl.inference.latent_hierarchy_cov_mcmc import covariance_tree_posterior

    run = tree_posterior if sampler == "mean" else covariance_tree_posterior
    two = TaskData(X=np.zeros((4, 1)), y=np.zeros(4), task=[0, 0, 1, 1])
    three = TaskData(X=np.zeros((3, 1)), y=[0.0, 2.0, 1.0], task=[0, 1, 2])
    with pytest.raises(ValueError, match="at least 3 tasks"):
        run(two)
    bad = [({"likelihood": "poisson"}, "likelihood"), ({"likelihood": "bernoulli"}, "label"),
           ({"num_chains": 0}, "num_chains"), ({"num_samples": True}, "num_samples"),
           ({"thin": 0}, "thin"), ({"tree_steps": -1}, "tree_steps"), ({"init": "best"}, "init"),
           ({"s2": float("nan")}, "s2"), ({"noise_scale": -1.0}, "noise_scale")]
    bad += ([({"leaf_var": -1.0}, "leaf_var"), ({"leaf_var": True}, "leaf_var"),
             ({"scale_moves": -1}, "scale_moves")] if sampler == "mean" else
            [({"target_accept": 1.5}, "target_accept"), ({"max_tree_depth": 0}, "max_tree_depth")])
    for kwargs, match in bad:
        with pytest.raises(ValueError, match=match):
            run(three, **kwargs)

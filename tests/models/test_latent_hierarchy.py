"""Daume III 2009 latent-hierarchy models conditioned on a tree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bayesmtl.data import TaskData
from bayesmtl.models.coalescent import Tree, tree_covariance, tree_from_merges
from bayesmtl.models.latent_hierarchy import covariance_sharing, mean_sharing, simulate
from numpyro import handlers
from numpyro.infer import MCMC, NUTS, Predictive
from numpyro.infer.util import log_density
from scipy import stats

TREE4 = tree_from_merges([[0, 1], [2, 3], [4, 5]], [0.2, 0.4, 1.5])  # ((0,1),(2,3))
MODELS = {"mean": mean_sharing, "covariance": covariance_sharing}


@pytest.mark.parametrize("model", ["mean", "covariance"])
@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_simulate_shapes_and_finite_log_density(model, likelihood):
    data, truth = simulate(jax.random.PRNGKey(0), 4, 5, 2, model=model, likelihood=likelihood)
    assert (data.n, data.n_tasks, data.n_features) == (20, 4, 2)
    assert truth["w"].shape == (4, 2) and truth["tree"].n_leaves == 4
    if likelihood == "bernoulli":
        assert set(np.unique(data.y)) <= {0.0, 1.0}
    latent = {
        k: v for k, v in truth.items() if k.endswith("_z") or k in ("Lambda", "mu0", "Sigma_R")
    }
    kw = {
        "tree": truth["tree"],
        "likelihood": likelihood,
        "noise_scale": 0.5 if likelihood == "gaussian" else None,
    }
    lp, tr = log_density(MODELS[model], (data,), kw, latent)
    assert np.isfinite(float(lp))
    np.testing.assert_allclose(tr["w"]["value"], truth["w"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("leaf_var", [0.0, 0.5])
def test_mean_sharing_weights_have_covariance_c_kron_lambda(leaf_var):
    lam = jnp.array([[0.5, 0.2], [0.2, 1.0]])
    data = TaskData(X=np.zeros((4, 2)), task=[0, 1, 2, 3])
    model = handlers.condition(mean_sharing, data={"Lambda": lam, "mu0": jnp.array([1.0, -1.0])})
    draws = 6000
    w = Predictive(model, num_samples=draws)(
        jax.random.PRNGKey(1), data, tree=TREE4, root_var=0.3, noise_scale=1.0, leaf_var=leaf_var
    )["w"]
    w = np.asarray(w, dtype=float).reshape(draws, -1)
    expected = np.kron(np.asarray(tree_covariance(TREE4, 0.3, leaf_var)), np.asarray(lam))
    # sample-covariance sd <= sqrt(2 * 1.8^2 / 6000) ~ 0.033; 4 sd
    np.testing.assert_allclose(np.cov(w, rowvar=False), expected, atol=0.14)
    np.testing.assert_allclose(w.mean(0), np.tile([1.0, -1.0], 4), atol=0.1)


def test_covariance_sharing_correlations_marginally_uniform():
    # Barnard-McCulloch-Meng: the correlation of IW(I, D+1) has uniform(-1, 1) marginals.
    data = TaskData(X=np.zeros((4, 3)), task=[0, 1, 2, 3])
    r = Predictive(covariance_sharing, num_samples=3000)(
        jax.random.PRNGKey(2), data, tree=TREE4, noise_scale=1.0
    )["R"]
    for i, j in [(0, 1), (1, 2)]:
        rij = np.asarray(r[:, i, j], dtype=float)
        assert stats.kstest(rij, stats.uniform(-1, 2).cdf).pvalue > 1e-3


@pytest.mark.slow  # ~15 s of NUTS; the fast suite checks weights given data in test_tree_posterior
def test_nuts_recovers_task_weights_given_the_tree():
    data, truth = simulate(jax.random.PRNGKey(3), 4, 40, 2, tree=TREE4, noise_scale=0.3)
    # centred form: with 40 rows per task the non-centred one needs ~700 leapfrog steps per draw
    mcmc = MCMC(NUTS(mean_sharing), num_warmup=200, num_samples=200, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(4), data, tree=TREE4, noise_scale=0.3, centered=True)
    w = np.asarray(mcmc.get_samples()["w"], dtype=float)
    z = (w.mean(0) - np.asarray(truth["w"])) / w.std(0)
    assert np.all(np.abs(z) < 4), z  # 8 roughly independent N(0,1) scores


def test_bad_input_raises_value_error():
    data = TaskData(X=np.zeros((3, 2)), y=[0.0, 1.0, 2.0], task=[0, 1, 2])
    with pytest.raises(ValueError, match="tree: has 4 leaves"):
        handlers.seed(mean_sharing, 0)(data, tree=TREE4)
    with pytest.raises(ValueError, match="likelihood"):
        handlers.seed(mean_sharing, 0)(data, tree=TREE4, likelihood="poisson")
    tree3 = tree_from_merges([[0, 1], [2, 3]], [0.5, 1.0])
    with pytest.raises(ValueError, match="label"):
        handlers.seed(covariance_sharing, 0)(data, tree=tree3, likelihood="bernoulli")
    with pytest.raises(ValueError, match="at least 2 tasks"):
        simulate(jax.random.PRNGKey(0), 1, 5, 2)
    with pytest.raises(ValueError, match="leaf_var"):
        handlers.seed(mean_sharing, 0)(data, tree=tree3, leaf_var=-1.0)
    with pytest.raises(ValueError, match="leaf_var"):
        handlers.seed(mean_sharing, 0)(data, tree=tree3, leaf_var=float("nan"))


@pytest.mark.parametrize("leaf_var", [0.0, 0.9])
def test_collapsed_evidence_matches_dense_gaussian(leaf_var):
    from bayesmtl.models.latent_hierarchy import leaf_evidence, mean_sharing_log_evidence

    rng = np.random.default_rng(5)
    k, d, noise, root_var = 4, 2, 0.6, 0.7
    task = np.array([0, 0, 0, 1, 2, 2, 3, 3, 3, 3])  # task 1 has fewer rows than features
    x, y = rng.normal(size=(len(task), d)), rng.normal(size=len(task))
    lam = np.array([[1.0, 0.3], [0.3, 0.5]])
    b = np.zeros((len(task), k * d))
    for i, t in enumerate(task):
        b[i, t * d : t * d + d] = x[i]
    with jax.enable_x64(True):
        tree = Tree(TREE4.merges, jnp.asarray(np.asarray(TREE4.times), jnp.float64))
        c = np.asarray(tree_covariance(tree, root_var, leaf_var)) + 1.0  # + 11': mu0 ~ N(0, Lambda)
    dense = stats.multivariate_normal(
        np.zeros(len(task)), b @ np.kron(c, lam) @ b.T + noise**2 * np.eye(len(task))
    ).logpdf(y)
    xtx = np.zeros((k, d, d))
    np.add.at(xtx, task, x[:, :, None] * x[:, None, :])
    xty = np.zeros((k, d))
    np.add.at(xty, task, x * y[:, None])
    yty, n_rows = np.bincount(task, y * y), np.bincount(task)
    with jax.enable_x64(True):
        j, h, g = leaf_evidence(
            jnp.asarray(xtx), jnp.asarray(xty), jnp.asarray(yty), jnp.asarray(n_rows), noise
        )
        fast = mean_sharing_log_evidence(tree, j, h, g, jnp.asarray(lam), root_var, leaf_var)
    assert float(fast) == pytest.approx(dense, abs=1e-8)


def test_learnt_leaf_var_is_a_half_cauchy_site_and_nests_the_flat_hierarchy():
    data, truth = simulate(jax.random.PRNGKey(6), 4, 5, 2, leaf_var=None)
    assert truth["leaf_var"] > 0
    latent = {k: truth[k] for k in ("Lambda", "mu0", "w_z", "leaf_var")}
    lp, tr = log_density(mean_sharing, (data,), {"tree": TREE4, "leaf_var": None,
                                                  "noise_scale": 0.5}, latent)  # fmt: skip
    assert np.isfinite(float(lp))
    # HalfCauchy with the mean first Kingman wait as scale: 1 / C(4, 2)
    assert float(tr["leaf_var"]["fn"].log_prob(2.0)) == pytest.approx(
        stats.halfcauchy(scale=1 / 6).logpdf(2.0)
    )
    # a tree of height 1e-6 with leaf_var 1 is the flat hierarchy: tasks equicorrelated through
    # the common root only
    flat_tree = tree_from_merges([[0, 1], [2, 3], [4, 5]], [1e-7, 5e-7, 1e-6])
    np.testing.assert_allclose(
        tree_covariance(flat_tree, 0.3, 1.0), 0.3 + np.eye(4), atol=1e-5
    )

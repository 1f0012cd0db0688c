"""Empirical Bayes for Bakker & Heskes: closed forms, EM, reduction, recovery, NUTS agreement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bayesmtl.data import TaskData
from bayesmtl.inference.empirical_bayes import (
    component_evidence,
    fit_empirical_bayes,
    log_evidence,
    predict,
    predictive_log_density,
    task_statistics,
)
from bayesmtl.models.task_clustering import gaussian_prior_model, hidden_features, simulate
from bayesmtl.models.task_clustering_metrics import adjusted_rand_index
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC, NUTS
from scipy.stats import multivariate_normal


def _random_problem(rng, T=4, d=2, C=2):
    sizes = np.array([1, 3, 5, 7])[:T]
    task = np.repeat(np.arange(T), sizes)
    X = rng.normal(size=(task.size, d))
    y = rng.normal(size=task.size)
    p = d + 1
    loc = rng.normal(size=(T, C, p))
    B = rng.normal(size=(C, p, p))
    cov = B @ np.swapaxes(B, -1, -2) + 0.5 * np.eye(p)
    s2 = rng.uniform(0.3, 2.0, size=T)
    return X, y, task, loc, cov, s2


def test_closed_form_evidence_equals_dense_gaussian():
    rng = np.random.default_rng(0)
    X, y, task, loc, cov, s2 = _random_problem(rng)
    T, C, _ = loc.shape
    with jax.enable_x64(True):
        Hx = hidden_features(jnp.asarray(X))
        stats = task_statistics(Hx, jnp.asarray(y), jnp.asarray(task), T)
        logL, _, _ = component_evidence(stats, jnp.asarray(loc), jnp.linalg.cholesky(cov),
                                        jnp.asarray(s2))
        logL = np.asarray(logL)
    Hn = np.asarray(Hx)
    for i in range(T):
        Hi, yi = Hn[task == i], y[task == i]
        for a in range(C):
            dense = multivariate_normal(Hi @ loc[i, a], Hi @ cov[a] @ Hi.T + s2[i] * np.eye(
                len(yi))).logpdf(yi)
            np.testing.assert_allclose(logL[i, a], dense, rtol=1e-10, atol=1e-10)


def test_closed_form_posterior_equals_gaussian_conditioning():
    rng = np.random.default_rng(1)
    X, y, task, loc, cov, s2 = _random_problem(rng, C=1)
    T = loc.shape[0]
    with jax.enable_x64(True):
        Hx = hidden_features(jnp.asarray(X))
        stats = task_statistics(Hx, jnp.asarray(y), jnp.asarray(task), T)
        _, mu, V = component_evidence(stats, jnp.asarray(loc), jnp.linalg.cholesky(cov),
                                      jnp.asarray(s2))
    Hn = np.asarray(Hx)
    for i in range(T):
        Hi, yi = Hn[task == i], y[task == i]
        K = cov[0] @ Hi.T @ np.linalg.inv(Hi @ cov[0] @ Hi.T + s2[i] * np.eye(len(yi)))
        np.testing.assert_allclose(mu[i, 0], loc[i, 0] + K @ (yi - Hi @ loc[i, 0]), atol=1e-10)
        np.testing.assert_allclose(V[i, 0], cov[0] - K @ Hi @ cov[0], atol=1e-10)


def test_nuts_posterior_matches_closed_form_linear_fixed_hyperparameters():
    data, _ = simulate(jax.random.key(3), prior="gaussian", n_tasks=3, n_per_task=6)
    p = data.n_features + 1
    mean, cov, sigma = np.full(p, 0.5), 0.8 * np.eye(p) + 0.2, 0.7
    mcmc = MCMC(NUTS(gaussian_prior_model), num_warmup=200, num_samples=800,
                num_chains=1, progress_bar=False)
    mcmc.run(jax.random.key(4), data, mean=mean, cov=cov, noise_scale=sigma)
    A = np.asarray(mcmc.get_samples(group_by_chain=True)["A"])   # (1, S, T, p)
    stats = task_statistics(hidden_features(data.X), jnp.asarray(data.y), data.task, 3)
    _, mu, V = component_evidence(stats, jnp.broadcast_to(mean, (1, 1, p)),
                                  jnp.linalg.cholesky(cov)[None], jnp.full(3, sigma**2))
    sd = np.sqrt(np.diagonal(np.asarray(V[:, 0]), axis1=-2, axis2=-1))
    ess = np.asarray(effective_sample_size(A))
    # posterior means within 4 Monte Carlo standard errors, variances within 4 sd of their MC error
    z = (A[0].mean(0) - np.asarray(mu[:, 0])) / (sd / np.sqrt(ess))
    assert np.all(np.abs(z) < 4), z
    rel = A[0].var(0) / sd**2 - 1
    assert np.all(np.abs(rel) < 4 * np.sqrt(2 / ess)), rel


@pytest.fixture(scope="module")
def clustered():
    return simulate(jax.random.key(5), prior="clustering", n_tasks=30, n_per_task=12,
                    n_clusters=3, separation=4.0)


@pytest.fixture(scope="module")
def clustered_fit(clustered):
    with jax.enable_x64(True):
        return fit_empirical_bayes(clustered[0], prior="clustering", n_clusters=3, n_iter=100)


def test_em_recovers_three_well_separated_clusters(clustered, clustered_fit):
    assert adjusted_rand_index(clustered[1]["labels"], clustered_fit.labels) >= 0.9


def test_converged_flag_says_whether_the_objective_settled(clustered, clustered_fit):
    obj = clustered_fit.objective_trace
    assert clustered_fit.converged and len(obj) - 2 < 100  # stopped on tol, before n_iter
    with jax.enable_x64(True):
        short = fit_empirical_bayes(clustered[0], prior="clustering", n_clusters=3, n_iter=2,
                                    n_init=1)
    assert not short.converged  # cut off by n_iter while the objective still climbed


def test_responsibilities_sum_to_one(clustered_fit):
    r = np.asarray(clustered_fit.responsibilities)
    assert r.shape == (30, 3) and np.all(r >= 0)
    np.testing.assert_allclose(r.sum(1), 1.0, atol=1e-12)


def test_em_never_decreases_the_objective_clustering(clustered):
    data, _ = clustered
    with jax.enable_x64(True):
        res = fit_empirical_bayes(data, prior="clustering", n_clusters=3, n_iter=100, n_init=1,
                                  tol=0.0)
    obj = res.objective_trace
    assert obj[-1] - obj[0] > 1.0  # EM actually moved
    assert np.all(np.diff(obj) >= -1e-9 * np.abs(obj[1:])), np.diff(obj).min()


def test_em_never_decreases_the_objective_gating_tanh():
    data, _ = simulate(jax.random.key(6), prior="gating", n_tasks=12, n_per_task=8,
                       n_clusters=2, hidden=2)
    with jax.enable_x64(True):
        res = fit_empirical_bayes(data, prior="gating", n_clusters=2, hidden=2, n_iter=40,
                                  n_init=1, tol=0.0, noise="task")
    obj = res.objective_trace
    assert obj[-1] > obj[0]
    assert np.all(np.diff(obj) >= -1e-9 * np.abs(obj[1:])), np.diff(obj).min()


def test_gating_with_constant_features_reduces_to_clustering(clustered):
    data, _ = clustered
    q = np.array([0.2, 0.3, 0.5])
    p = data.n_features + 1
    base = {"W": None, "mean": np.random.default_rng(0).normal(size=(3, p)),
                "cov": np.broadcast_to(0.5 * np.eye(p), (3, p, p)), "noise_var": np.full(30, 0.3)}
    ones = np.ones((data.n_tasks, 1))
    _, joint_c = log_evidence(data, dict(base, log_weights=np.log(q)), prior="clustering")
    _, joint_g = log_evidence(data, dict(base, gates=np.log(q)[None]), prior="gating",
                                 task_features=ones, intercept=False)
    np.testing.assert_allclose(joint_g, joint_c, rtol=1e-6)
    # and the two EM fits from the same start reach the same evidence and memberships
    start = dict(base, log_weights=np.log(np.full(3, 1 / 3)), gates=np.zeros((1, 3)))
    with jax.enable_x64(True):
        fc = fit_empirical_bayes(data, prior="clustering", n_clusters=3, init=start, n_iter=20)
        fg = fit_empirical_bayes(data, prior="gating", n_clusters=3, init=start, n_iter=20,
                                 task_features=ones, intercept=False, gate_l2=0.0,
                                 gate_steps=200)
    assert abs(fc.log_evidence - fg.log_evidence) < 1e-3 * abs(fc.log_evidence)
    np.testing.assert_allclose(fg.responsibilities, fc.responsibilities, atol=0.02)


def test_predictions_beat_the_mean_and_predictive_density_is_finite(clustered,
                                                                      clustered_fit):
    data = clustered[0]
    with jax.enable_x64(True):
        pred = np.asarray(predict(clustered_fit, data))
        lpd = np.asarray(predictive_log_density(clustered_fit, data))
    assert pred.shape == (data.n,) and np.all(np.isfinite(lpd))
    assert np.mean((pred - data.y) ** 2) < 0.5 * np.var(data.y)


@pytest.mark.parametrize("kwargs, match", [
    ({"prior": "gating", "n_clusters": 2}, "task_features"),
    ({"prior": "clustering", "n_clusters": 0}, "n_clusters"),
    ({"prior": "task_mean", "task_features": np.ones((5, 2))}, "task_features"),
    ({"prior": "nonsense"}, "prior"),
])
def test_bad_inputs_raise_clear_errors(kwargs, match):
    data = TaskData(X=np.ones((4, 1)), y=np.zeros(4), task=[0, 0, 1, 1])
    with pytest.raises(ValueError, match=match):
        fit_empirical_bayes(data, **kwargs)


def test_missing_targets_raise():
    data = TaskData(X=np.ones((4, 1)), task=[0, 0, 1, 1])
    with pytest.raises(ValueError, match="targets"):
        fit_empirical_bayes(data, prior="gaussian")


def test_nuts_init_values_reproduce_the_eb_mixture(clustered_fit):
    from bayesmtl.inference.empirical_bayes import nuts_init_values
    v = nuts_init_values(clustered_fit)
    mean = np.asarray(clustered_fit.params["mean"])
    np.testing.assert_allclose(v["cluster_mean_order"], mean[:, -1], rtol=1e-5)
    sd, L = np.asarray(v["cluster_scale"]), np.asarray(v["cluster_corr"])
    cov = sd[:, :, None] * (L @ np.swapaxes(L, -1, -2)) * sd[:, None, :]
    np.testing.assert_allclose(cov, np.asarray(clustered_fit.params["cov"]), rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(np.asarray(v["weights"]).sum(), 1.0, rtol=1e-5)


def test_progress_bar_writes_to_stderr_only_when_asked(clustered, capsys, monkeypatch):
    """A tqdm bar per EM start on stderr with ``progress_bar=True``; nothing with False (or with
    None under CI); the fit itself is the same either way."""
    kw = {"prior": "clustering", "n_clusters": 3, "n_iter": 4, "n_init": 2}
    with jax.enable_x64(True):
        shown = fit_empirical_bayes(clustered[0], progress_bar=True, **kw)
        err = capsys.readouterr().err
        assert "empirical Bayes EM, start 1/2" in err and "start 2/2" in err
        hidden = fit_empirical_bayes(clustered[0], progress_bar=False, **kw)
        assert capsys.readouterr().err == ""
        monkeypatch.setenv("CI", "true")
        fit_empirical_bayes(clustered[0], **kw)
        assert capsys.readouterr().err == ""
    np.testing.assert_array_equal(shown.log_evidence_trace, hidden.log_evidence_trace)
    with pytest.raises(ValueError, match="progress_bar"):
        fit_empirical_bayes(clustered[0], progress_bar="yes", **kw)


def test_kmeans_start_separates_well_separated_tasks_reproducibly():
    from bayesmtl.inference.empirical_bayes_init import _kmeans_labels

    rng = np.random.default_rng(3)
    centres = np.array([[-6.0, 0.0], [0.0, 6.0], [6.0, 0.0]])
    truth = np.repeat(np.arange(3), 5)
    points = centres[truth] + 0.3 * rng.normal(size=(15, 2))
    for seed in range(5):
        labels = _kmeans_labels(points, 3, np.random.default_rng(seed))
        assert adjusted_rand_index(truth, labels) == 1.0, seed
    np.testing.assert_array_equal(_kmeans_labels(points, 3, np.random.default_rng(7)),
                                  _kmeans_labels(points, 3, np.random.default_rng(7)))


def test_kmeans_start_with_fewer_distinct_tasks_than_clusters_is_quiet_and_valid():
    """Identical tasks leave clusters empty: no warnings, every label a valid cluster, and the
    empty clusters start at the overall mean."""
    import warnings

    from bayesmtl.inference.empirical_bayes_init import _initial_params, _kmeans_labels

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels = _kmeans_labels(np.ones((4, 2)), 3, np.random.default_rng(0))
        assert labels.shape == (4,) and set(labels.tolist()) <= {0, 1, 2}
        X = np.tile([[1.0], [-1.0]], (2, 1))
        y, task = np.array([1.0, -1.0, 1.0, -1.0]), np.array([0, 0, 1, 1])
        cfg = {"n_tasks": 2, "n_clusters": 3, "hidden": 0, "activation": "tanh",
               "prior": "clustering", "min_noise_var": 1e-6}
        params = _initial_params(jnp.asarray(X), jnp.asarray(y), jnp.asarray(task), None, cfg,
                                 jax.random.key(0), np.random.default_rng(0))
    assert np.all(np.isfinite(np.asarray(params["mean"])))
    assert np.asarray(params["mean"]).shape == (3, 2)


@pytest.mark.parametrize("kw", [
    {"prior": "gaussian"},
    {"prior": "task_mean", "noise": "task"},
    {"prior": "gating", "n_clusters": 2, "hidden": 1},
], ids=["gaussian", "task_mean", "gating-hidden"])
def test_nuts_init_values_of_the_other_priors_are_in_the_support_with_finite_log_density(kw):
    """Beyond the clustering prior: for the single Gaussian (non-centred ``A``), the task-dependent
    mean and the gated mixture with a hidden layer, every value is a latent site of
    `task_clustering_model`, lies in that site's support, and the model's log density there (with
    the non-centred ``A_raw`` the fit leaves to NUTS set to 0) is finite."""
    from bayesmtl.inference.empirical_bayes import nuts_init_values
    from bayesmtl.models.task_clustering import task_clustering_model
    from numpyro import handlers
    from numpyro.infer.util import log_density

    sim = {"n_clusters": kw.get("n_clusters", 1), "hidden": kw.get("hidden", 0)}
    data, _ = simulate(jax.random.key(2), prior=kw["prior"], n_tasks=8, n_per_task=6, **sim)
    values = nuts_init_values(fit_empirical_bayes(data, n_iter=5, n_init=1, **kw))
    params = dict(values)
    if kw["prior"] in ("gaussian", "task_mean"):
        assert "A" not in values
        p = values["cov_scale"].shape[-1]
        params["A_raw"] = jnp.zeros((data.n_tasks, p))
    tr = handlers.trace(handlers.substitute(task_clustering_model, data=params)).get_trace(
        data, y=data.y, **kw)
    latent = {n: s for n, s in tr.items() if s["type"] == "sample" and not s["is_observed"]}
    assert set(values) <= set(latent) and set(params) == set(latent), (set(values), set(latent))
    for name in values:
        inside = latent[name]["fn"].support(jnp.asarray(values[name]))
        assert bool(jnp.all(inside)), name
    logp, _ = log_density(task_clustering_model, (data,), {"y": data.y, **kw}, params)
    assert np.isfinite(float(logp))

"""fit / diagnose / predict / compare on the hierarchical family.

One simulated data set and one NUTS fit are shared by the module (compiled once)."""

import jax
import numpy as np
import pytest
from bayesmtl.data import TaskData
from bayesmtl.inference import (
    DiagnosticsError,
    DiagnosticsWarning,
    compare,
    diagnose,
    fit,
    predict,
)
from bayesmtl.inference.compare import stacked_log_predictive
from bayesmtl.inference.predict import log_predictive
from bayesmtl.models import hierarchical as H
from scipy import stats

MU = np.array([0.5, -1.0])
TAU = np.array([0.6, 0.4])
N_TASKS = 40


@pytest.fixture(scope="module")
def sim():
    return H.simulate(jax.random.key(11), N_TASKS, 8, 1, mu=MU, tau=TAU, sigma=0.5)


@pytest.fixture(scope="module")
def nuts(sim):
    data, _ = sim
    return fit(H.hierarchical, data, num_chains=2, num_warmup=400, num_samples=500, seed=1,
               progress_bar=False)


def test_datatree_has_groups_and_named_dims(nuts, sim):
    idata = nuts.idata
    for g in ["posterior", "sample_stats", "log_likelihood", "observed_data",
              "posterior_predictive"]:
        assert g in idata.children, g
    assert idata.posterior["w"].dims == ("chain", "draw", "task", "feature")
    assert list(idata.posterior["feature"].values) == ["intercept", "x0"]
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "obs")
    assert idata.posterior_predictive["y"].shape == (2, 500, sim[0].n)
    assert np.allclose(idata.observed_data["y"], sim[0].y)


def test_recovers_population_and_task_parameters(nuts, sim):
    _, truth = sim
    post = nuts.flat_samples()
    # Population mean: within 3 posterior sds.
    assert np.all(np.abs(post["mu"].mean(0) - MU) < 3 * post["mu"].std(0))
    # Scales: the truth inside the central 98 % interval.
    lo, hi = np.quantile(post["tau"], [0.01, 0.99], axis=0)
    assert np.all((lo < TAU) & (TAU < hi))
    # Task weights: 80 central 90 % intervals cover the truth at the promised rate,
    # within 3 binomial standard errors (sd = sqrt(.9 * .1 / 80) = 0.034).
    lo, hi = np.quantile(post["w"], [0.05, 0.95], axis=0)
    cover = np.mean((lo < truth["w"]) & (truth["w"] < hi))
    assert abs(cover - 0.9) < 3 * np.sqrt(0.09 / truth["w"].size), cover


def test_predict_known_and_new_tasks(nuts, sim):
    data, _ = sim
    new = TaskData.for_prediction([[0.0], [0.0]], task=[0, N_TASKS], n_tasks=N_TASKS + 1)
    out = predict(nuts, new, return_sites=("y", "w"), seed=3)
    post = nuts.flat_samples()
    assert out["y"].shape == (1000, 2) and out["w"].shape == (1000, N_TASKS + 1, 2)
    # Known task: its weights are the posterior draws, unchanged.
    assert np.allclose(out["w"][:, :N_TASKS], post["w"], atol=1e-5)
    # New task: w_new = mu + diag(tau) L z, so E[w_new] = E[mu] and
    # Var[w_new] = Var[mu] + E[tau^2]; check both within Monte Carlo error (1000 draws).
    w_new = out["w"][:, N_TASKS]
    sd = np.sqrt(post["mu"].var(0) + (post["tau"] ** 2).mean(0))
    # The new task's z is fresh for every draw, but mu's draws are autocorrelated: take the
    # effective size as 250 of the 1000 draws (bulk ESS of mu is above that here), allow 4 se.
    assert np.all(np.abs(w_new.mean(0) - post["mu"].mean(0)) < 4 * sd / np.sqrt(250))
    assert np.allclose(w_new.std(0), sd, rtol=0.15)
    # A new task's predictive spread is wider than a known task's.
    assert out["y"][:, 1].std() > out["y"][:, 0].std()


def test_predict_validates_new_data(nuts):
    with pytest.raises(ValueError, match="new_data: 2 features"):
        predict(nuts, TaskData.for_prediction(np.ones((1, 2)), [0], n_tasks=N_TASKS))
    with pytest.raises(ValueError, match="new_data: n_tasks=1"):
        predict(nuts, TaskData(X=np.ones((1, 1)), task=[0]))


@pytest.fixture(scope="module")
def pooled(sim):
    return fit(H.pooled, sim[0], num_chains=2, num_warmup=300, num_samples=500, seed=2,
               progress_bar=False)


@pytest.fixture(scope="module")
def heldout(sim):
    """New rows of the training tasks, drawn from the true weights (sigma 0.5)."""
    _, truth = sim
    rng = np.random.default_rng(5)
    task = np.repeat(np.arange(N_TASKS), 3)
    x = rng.normal(size=len(task))
    y = truth["w"][task, 0] + truth["w"][task, 1] * x + 0.5 * rng.normal(size=len(task))
    return TaskData(X=x[:, None], y=y, task=task)


def test_log_predictive_agrees_with_a_direct_computation(nuts, heldout):
    post = nuts.flat_samples()
    eta = post["w"][:, heldout.task, 0] + post["w"][:, heldout.task, 1] * heldout.X[:, 0]
    dens = stats.norm.pdf(heldout.y, eta, post["sigma"][:, None]).mean(0)
    assert np.allclose(log_predictive(nuts, heldout), np.log(dens), atol=1e-4)
    first = stats.norm.pdf(heldout.y, eta[:100], post["sigma"][:100, None]).mean(0)
    assert np.allclose(log_predictive(nuts, heldout, num_draws=100), np.log(first), atol=1e-4)
    # rows of a subset of the tasks (n_tasks smaller than in training) score the same
    part = TaskData(X=heldout.X[:6], y=heldout.y[:6], task=heldout.task[:6])
    assert part.n_tasks == 2
    assert np.allclose(log_predictive(nuts, part), np.log(dens[:6]), atol=1e-4)


def test_log_predictive_rejects_bad_rows(nuts, heldout):
    with pytest.raises(ValueError, match="new_data: has no y"):
        log_predictive(nuts, heldout.without_y())
    with pytest.raises(ValueError, match="new_data: 2 features"):
        log_predictive(nuts, TaskData(X=np.ones((1, 2)), y=[0.0], task=[0]))
    with pytest.raises(ValueError, match="unknown task"):
        log_predictive(nuts, TaskData.for_prediction([[0.0]], [N_TASKS], N_TASKS + 1).with_y([0.0]))
    with pytest.raises(ValueError, match="num_draws"):
        log_predictive(nuts, heldout, num_draws=0)


def test_stacked_predictive_is_the_mixture_with_compares_weights(nuts, pooled, heldout):
    fits = {"hierarchical": nuts, "pooled": pooled}
    lp = {k: log_predictive(v, heldout) for k, v in fits.items()}
    weights = compare(fits)["weight"]
    mix = sum(weights[k] * np.exp(lp[k]) for k in fits)
    assert np.allclose(stacked_log_predictive(fits, heldout), np.log(mix), atol=1e-6)
    # the weights follow the training rows' LOO: tasks differ (tau ~ sigma), so the hierarchy
    # carries the mixture, and the mixture predicts the new rows about as well as it does
    assert weights["hierarchical"] > 0.8
    assert lp["hierarchical"].sum() > lp["pooled"].sum()
    one = stacked_log_predictive(fits, {"hierarchical": heldout, "pooled": heldout},
                                 weights={"hierarchical": 1.0, "pooled": 0.0})
    assert np.allclose(one, lp["hierarchical"])
    for bad, match in [({"hierarchical": 1.0}, "weights: names"),
                       ({"hierarchical": 0.7, "pooled": 0.7}, "summing to one"),
                       ({"hierarchical": 1.5, "pooled": -0.5}, "non-negative")]:
        with pytest.raises(ValueError, match=match):
            stacked_log_predictive(fits, heldout, weights=bad)
    with pytest.raises(ValueError, match="new_data: names"):
        stacked_log_predictive(fits, {"pooled": heldout}, weights={"hierarchical": 1, "pooled": 0})
    with pytest.raises(ValueError, match="results"):
        stacked_log_predictive({"only": nuts}, heldout)


def test_compare_prefers_the_hierarchy_over_pooling(nuts, pooled, sim):
    table = compare({"hierarchical": nuts, "pooled": pooled})
    assert table.index[0] == "hierarchical"
    # The difference is many standard errors (tasks really differ: tau ~ 0.5 vs sigma 0.5).
    assert abs(table.loc["pooled", "elpd_diff"]) > 4 * table.loc["pooled", "dse"]
    with pytest.raises(ValueError, match="results"):
        compare({"only": nuts})


def test_svi_gives_the_same_datatree_form_and_agrees_with_nuts(nuts, sim):
    data, _ = sim
    svi = fit(H.hierarchical, data, method="svi", guide="mvn", num_chains=1, num_samples=1000,
              svi_steps=30000, learning_rate=0.01, seed=4, progress_bar=False)
    assert svi.idata.posterior["w"].dims == ("chain", "draw", "task", "feature")
    assert "log_likelihood" in svi.idata.children
    assert svi.svi.elbo.ndim == 1 and np.isfinite(svi.svi.pareto_k)
    # Task-weight posterior means agree with NUTS to a fraction of the posterior sd.
    a, b = nuts.flat_samples()["w"], svi.flat_samples()["w"]
    assert np.median(np.abs(a.mean(0) - b.mean(0)) / a.std(0)) < 0.25
    d = diagnose(svi, pareto_k_max=np.inf)
    assert d.method == "svi" and d.svi_pareto_k == pytest.approx(svi.svi.pareto_k)


def test_fit_rejects_bad_arguments(sim):
    data, _ = sim
    with pytest.raises(ValueError, match="method"):
        fit(H.hierarchical, data, method="gibbs")
    with pytest.raises(ValueError, match="num_chains"):
        fit(H.hierarchical, data, num_chains=0)
    with pytest.raises(ValueError, match="y is missing"):
        fit(H.hierarchical, data.without_y())
    with pytest.raises(ValueError, match="likelihood"):
        fit(H.hierarchical, data, model_kwargs={"likelihood": "t"})


@pytest.fixture(scope="module")
def funnel():
    """Many tasks with 2 rows each and a small between-task scale: the classic funnel."""
    data, _ = H.simulate(jax.random.key(5), 40, 2, 0, mu=np.array([0.0]), tau=np.array([0.1]),
                         sigma=1.0)
    return data


def test_gate_flags_the_centred_funnel(funnel):
    res = fit(H.hierarchical, funnel, model_kwargs={"centered": True}, num_chains=2,
              num_warmup=500, num_samples=1000, seed=0, progress_bar=False)
    with pytest.warns(DiagnosticsWarning, match="diagnostics gate failed"):
        d = diagnose(res)
    assert not d.passed and ("tau" in d.failures or "sampler" in d.failures)
    with pytest.raises(DiagnosticsError, match="tau|divergent"):
        diagnose(res, strict=True)


def test_gate_passes_the_noncentred_funnel(funnel):
    res = fit(H.hierarchical, funnel, num_chains=2, num_warmup=500, num_samples=1500, seed=0,
              target_accept=0.9, progress_bar=False)
    d = diagnose(res, strict=True)
    assert d.passed and d.divergences == 0 and d.min_ess_bulk >= 400 and d.max_rhat <= 1.01


def test_nuts_starts_a_hierarchy_over_many_features():
    """30 features + intercept: the LKJ factor's start must have a finite log density."""
    data, _ = H.simulate(jax.random.key(8), 3, 4, 30, mu=np.zeros(31), tau=np.full(31, 0.1),
                         sigma=1.0)
    res = fit(H.hierarchical, data, num_chains=1, num_warmup=5, num_samples=5, seed=0,
              progress_bar=False, posterior_predictive=False)
    assert np.all(np.isfinite(res.samples["mu"])) and np.all(np.isfinite(res.samples["L"]))
    # and the chain moves (a chain stuck at a singular start also has finite draws)
    assert np.ptp(res.samples["mu"], axis=(0, 1)).min() > 0


def test_start_keeps_a_51_dim_correlation_factor_well_conditioned():
    """50 features + intercept: at NUTS's start the LKJ factor's smallest diagonal entry (the sd of
    the last weight given the others, in units of its scale) stays of order 1; uniform(-1, 1) in
    unconstrained space gives ~1e-5, a numerically singular covariance in which every NUTS step
    diverges (the chain never leaves its start)."""
    from bayesmtl.inference.fit import start_strategy
    from numpyro import handlers
    from numpyro.infer import init_to_uniform

    data, _ = H.simulate(jax.random.key(8), 3, 4, 50, mu=np.zeros(51), tau=np.full(51, 0.1),
                         sigma=1.0)

    def smallest(strategy, seed):
        model = handlers.substitute(handlers.seed(H.hierarchical, seed), substitute_fn=strategy)
        return float(np.diag(np.asarray(handlers.trace(model).get_trace(data)["L"]["value"])).min())

    ours = [smallest(start_strategy, s) for s in range(5)]
    plain = [smallest(init_to_uniform(radius=1.0), s) for s in range(5)]
    assert min(ours) > 0.3 and max(plain) < 1e-2


def test_init_values_set_where_nuts_starts(sim):
    """Started far out (w = 20 where the data say about 0) with no warm-up and one leapfrog step
    per draw, the chain is still far out; started as usual it is not."""
    data, _ = sim
    kw = dict(num_chains=1, num_warmup=0, num_samples=3, max_tree_depth=1, progress_bar=False,
              posterior_predictive=False)
    far = fit(H.pooled, data, init_values={"w": np.array([20.0, 20.0]), "sigma": 1.0}, **kw)
    near = fit(H.pooled, data, **kw)
    assert np.abs(far.samples["w"]).min() > 10 and np.abs(near.samples["w"]).max() < 10
    with pytest.raises(ValueError, match=r"init_values: \['nope'\]"):
        fit(H.pooled, data, init_values={"nope": 1.0}, **kw)

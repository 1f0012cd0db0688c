import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bayesmtl.data import TaskData
from bayesmtl.models import hierarchical as H
from numpyro.infer import Predictive
from numpyro.infer.util import log_density

KEY = jax.random.key(0)


@pytest.mark.parametrize("name", ["pooled", "independent", "hierarchical"])
@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli"])
def test_prior_predictive_shapes_and_finite_log_density(name, likelihood):
    model = H.MODELS[name]
    data, truth = H.simulate(KEY, 3, [4, 6, 5], 2, model=name, likelihood=likelihood)
    assert data.n == 15 and data.y.shape == (15,)
    draws = Predictive(model, num_samples=7)(jax.random.key(1), data.without_y(),
                                             likelihood=likelihood)
    assert draws["y"].shape == (7, 15)
    w_shape = {"pooled": (7, 3), "independent": (7, 3, 3), "hierarchical": (7, 3, 3)}[name]
    assert draws["w"].shape == w_shape
    if likelihood == "bernoulli":
        assert set(np.unique(draws["y"])) <= {0, 1}
    params = {k: v for k, v in truth.items() if k not in ("y", "w") or name != "hierarchical"}
    params = {k: jnp.asarray(v) for k, v in params.items() if k != "y"}
    lp, _ = log_density(model, (data,), {"likelihood": likelihood}, params)
    assert np.isfinite(lp)


def test_centred_and_noncentred_define_the_same_prior():
    """Monte Carlo moments of w under both parametrisations agree within 4 standard errors."""
    data, _ = H.simulate(KEY, 2, 3, 1)
    n = 4000
    a = Predictive(H.hierarchical, num_samples=n)(jax.random.key(1), data.without_y())["w"]
    b = Predictive(H.hierarchical, num_samples=n)(jax.random.key(2), data.without_y(),
                                                  centered=True)["w"]
    a, b = np.asarray(a), np.asarray(b)
    # Compare medians and inter-quartile ranges (the prior has heavy-ish tails). A sample median's
    # standard error is at most sqrt(pi / 2) sd / sqrt(n) for these unimodal symmetric draws; the
    # difference of two independent medians has sqrt(2) times that; allow 4 of them.
    se = 4 * np.sqrt(2) * np.sqrt(np.pi / 2) * a.std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(np.median(a, 0) - np.median(b, 0)) < se)
    iqr = lambda x: np.subtract(*np.percentile(x, [75, 25], axis=0))
    assert np.allclose(iqr(a), iqr(b), rtol=0.1)


def test_simulate_at_given_true_values():
    mu = np.array([1.0, -2.0])
    data, truth = H.simulate(KEY, 200, 2, 1, mu=mu, tau=np.array([0.5, 0.1]), sigma=0.3)
    assert np.allclose(truth["mu"], mu) and float(truth["sigma"]) == pytest.approx(0.3)
    w = truth["w"]
    assert w.shape == (200, 2)
    # 200 tasks drawn around mu with scales tau: sample moments within 4 standard errors.
    assert np.all(np.abs(w.mean(0) - mu) < 4 * np.array([0.5, 0.1]) / np.sqrt(200))
    assert np.allclose(w.std(0), [0.5, 0.1], rtol=0.2)
    resid = data.y - np.sum(np.c_[np.ones(data.n), data.X] * w[data.task], axis=1)
    assert resid.std() == pytest.approx(0.3, rel=0.15)


def test_intercept_only_hierarchy_has_no_correlation_matrix():
    data, truth = H.simulate(KEY, 4, 3, 0)
    assert "L" not in truth and truth["w"].shape == (4, 1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(likelihood="poisson"), "likelihood"),
        (dict(noise="row"), "noise"),
        (dict(tau_scale=-1.0), "tau_scale"),
        (dict(lkj_concentration=0.0), "lkj_concentration"),
    ],
)
def test_bad_options_are_named(kwargs, match):
    data, _ = H.simulate(KEY, 2, 3, 1)
    with pytest.raises(ValueError, match=match):
        Predictive(H.hierarchical, num_samples=1)(KEY, data, **kwargs)


def test_bernoulli_rejects_wrong_label_set():
    data = TaskData(X=np.ones((3, 1)), y=[0.0, 2.0, 1.0], task=[0, 0, 0])
    with pytest.raises(ValueError, match="wrong label set"):
        log_density(H.pooled, (data,), {"likelihood": "bernoulli"}, {"w": jnp.zeros(2)})
    # Labels passed as `y` are checked too, not the (valid) ones stored in data.
    ok = data.with_y([0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="wrong label set"):
        log_density(H.pooled, (ok,), {"likelihood": "bernoulli", "y": jnp.array([0.0, 3.0, 1.0])},
                    {"w": jnp.zeros(2)})


def test_simulate_validates_sizes():
    with pytest.raises(ValueError, match="n_per_task"):
        H.simulate(KEY, 3, [1, 2], 1)
    with pytest.raises(ValueError, match="model: unknown"):
        H.simulate(KEY, 3, 2, 1, model="nope")

"""Sparse multitask model, its simulator and the multi-output data container."""

import jax
import numpy as np
import pytest
from bayesmtl.data.multioutput import MultiOutputData, load_grunfeld_sur
from bayesmtl.data.taskdata import TaskData
from bayesmtl.models.sparse_mtl import simulate, sparse_mtl, task_covariance
from numpyro.infer import Predictive
from numpyro.infer.util import log_density


@pytest.fixture(scope="module")
def sim():
    # the shapes of tests/inference/test_vem_sparse.py, so that a joint run compiles them once
    return simulate(jax.random.key(0), n=60, n_tasks=4, n_features=8, n_blocks=4, n_active=2,
                    rank=1, noise_scale=0.5)


# ---------------------------------------------------------------- data
def test_multioutput_rejects_nan_and_shape_mismatch():
    with pytest.raises(ValueError, match="Y: .*NaN"):
        MultiOutputData(X=np.ones((3, 2)), Y=np.array([[1.0], [np.nan], [0.0]]))
    with pytest.raises(ValueError, match="Y: 2 rows do not match"):
        MultiOutputData(X=np.ones((3, 2)), Y=np.ones((2, 2)))
    with pytest.raises(ValueError, match="n_tasks"):
        MultiOutputData(X=np.ones((3, 2)))
    with pytest.raises(ValueError, match="feature_blocks: block 1 is empty"):
        MultiOutputData(X=np.ones((3, 2)), Y=np.ones((3, 1)), feature_blocks=[0, 2])


def test_taskdata_round_trip(sim):
    data, _ = sim
    flat = data.to_taskdata()
    assert flat.n == data.n * data.n_tasks and flat.n_tasks == data.n_tasks
    back = MultiOutputData.from_taskdata(flat)
    np.testing.assert_array_equal(back.Y, data.Y)
    np.testing.assert_array_equal(back.X, data.X)
    # a flat data set whose tasks do not share inputs cannot be rebuilt
    with pytest.raises(ValueError, match="different numbers of rows"):
        MultiOutputData.from_taskdata(TaskData(X=np.ones((3, 1)), y=np.ones(3), task=[0, 0, 1]))


def test_panel_layout_puts_each_task_inputs_in_its_own_block():
    from bayesmtl.data import load_grunfeld
    from bayesmtl.data.multioutput import to_multioutput

    panel = load_grunfeld()  # TaskData: 11 firms x 20 years, each firm with its own inputs
    m = to_multioutput(panel)
    assert (m.n, m.n_tasks, m.n_features) == (20, 11, 22)
    first = panel.task == 0
    np.testing.assert_array_equal(m.X[:, m.feature_blocks == 0], panel.X[first])
    np.testing.assert_array_equal(m.Y[:, 0], panel.y[first])
    assert m.feature_names[2] == f"{panel.task_names[1]}:value"
    # the shared layout refuses inputs that differ between tasks; the panel one refuses ragged tasks
    with pytest.raises(ValueError, match="share identical input rows"):
        to_multioutput(panel, layout="shared")
    with pytest.raises(ValueError, match="balanced panel"):
        to_multioutput(TaskData(X=np.ones((3, 1)), y=np.ones(3), task=[0, 0, 1]), layout="panel")
    with pytest.raises(ValueError, match="layout"):
        to_multioutput(panel, layout="wide")


def test_grunfeld_is_standardised_with_one_block_per_firm():
    d = load_grunfeld_sur()
    assert (d.n, d.n_tasks, d.n_features) == (20, 11, 22)
    np.testing.assert_allclose(d.Y.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(d.X.std(0), 1, rtol=1e-12)
    assert d.feature_names[2] == "US Steel:value" and d.feature_blocks[2] == 1
    with pytest.raises(ValueError, match="firms: unknown"):
        load_grunfeld_sur(firms=["Acme"])


# ---------------------------------------------------------------- model
def test_simulate_has_known_sparse_support_and_low_rank_task_covariance(sim):
    _, truth = sim
    col_norm = np.linalg.norm(truth["W"], axis=0)
    np.testing.assert_array_equal(col_norm > 0, truth["active"][truth["blocks"]])
    np.testing.assert_allclose(truth["task_cov"], truth["V"] @ truth["V"].T + truth["tau"] * np.eye(4))
    assert np.linalg.matrix_rank(truth["task_cov"] - truth["tau"] * np.eye(4)) == 1
    np.testing.assert_allclose(task_covariance(truth["V"], truth["tau"]), truth["task_cov"], rtol=1e-6)


# the Gaussian likelihood with a full (LKJ) noise covariance is run by NUTS and SVI in
# tests/inference/test_vem_sparse.py (posterior-predictive shapes checked there); compiling its
# prior predictive here as well would double the cost
@pytest.mark.parametrize("likelihood,noise", [("bernoulli", "diag")])
def test_prior_predictive_shapes_and_finite_log_density(sim, likelihood, noise):
    data, _ = sim
    kw = {"rank": 1, "likelihood": likelihood, "noise": noise}
    draws = Predictive(sparse_mtl, num_samples=2)(jax.random.key(1), data.without_y(), **kw)
    assert draws["y"].shape == (2, data.n, data.n_tasks)
    assert draws["W"].shape == (2, data.n_tasks, data.n_features)
    if likelihood == "bernoulli":
        assert set(np.unique(draws["y"])) <= {0.0, 1.0}
    params = {k: v[0] for k, v in draws.items() if k not in ("y", "W", "Sigma")}
    y = draws["y"][0]
    lp, _ = log_density(sparse_mtl, (data,), {**kw, "y": y}, params)
    assert np.isfinite(lp)


def test_bad_configuration_raises(sim):
    data, _ = sim
    run = lambda **kw: Predictive(sparse_mtl, num_samples=1)(jax.random.key(0), data, **kw)
    with pytest.raises(ValueError, match="rank: must be < n_tasks"):
        run(rank=4)
    with pytest.raises(ValueError, match="blocks: block 1 is empty"):
        run(blocks=[0, 0, 2, 2, 2, 2, 3, 3])
    with pytest.raises(ValueError, match="chi: must be positive"):
        run(prior="gig", prior_params={"omega": 1.0, "chi": 0.0, "phi": 1.0})
    with pytest.raises(ValueError, match="phi: must be positive"):
        run(prior="nig", prior_params={"chi": 1.0, "phi": -2.0})
    with pytest.raises(ValueError, match="noise"):
        run(noise="spherical")
    with pytest.raises(ValueError, match="Bernoulli"):
        run(likelihood="bernoulli")
    with pytest.raises(ValueError, match="rank"):
        simulate(jax.random.key(0), n_tasks=3, rank=3)

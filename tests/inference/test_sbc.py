"""Simulation-based calibration: uniform ranks for the right posterior, rejection of a wrong one,
and the same ranks whether the simulations run in-process or on two Dask worker processes."""

import functools

import numpy as np
import pytest
from bayesmtl.inference import sbc
from bayesmtl.inference.sbc import (
    _chi2_uniform,
    _collect,
    _simulation_ranks,
    rank_statistics,
)
from bayesmtl.models import hierarchical as H

SIM = functools.partial(H.simulate, n_tasks=3, n_per_task=4, n_features=0)
SETTINGS = dict(num_warmup=150, num_samples=200, thin=5, bins=5, progress_bar=False)


def test_rank_statistics_counts_draws_below_truth():
    draws = {"a": np.arange(10.0)[:, None] * np.ones((1, 2))}
    r = rank_statistics(draws, {"a": np.array([3.5, -1.0])}, thin=2, num_ranks=5)
    assert r["a"].tolist() == [2, 0]  # kept draws 0, 2, 4, 6, 8


def fake_sbc(num_simulations=40, seed=0):
    """SBC results built directly (no NUTS): per simulation, true values and 100 posterior draws.

    ``L`` is a 2x2 Cholesky factor whose first row is pinned at (1, 0), as LKJ's is, and whose
    second row is drawn, with the truth, from one distribution (calibrated); ``tau``'s truth
    always lies above its draws (miscalibrated: its rank is always the largest); ``one`` is pinned.
    """
    rng = np.random.default_rng(seed)
    per_sim = []
    for _ in range(num_simulations):
        draw = rng.normal(size=(101, 2))  # row 0: the truth; rows 1..100: the posterior draws
        L = np.zeros((101, 2, 2))
        L[:, 0, 0] = 1.0
        L[:, 1, :] = draw
        tau = rng.normal(size=101)
        tau[0] = 10.0 + abs(tau[0])
        one = np.ones(101)
        truth = {"L": L[0], "tau": tau[0], "one": one[0]}
        draws = {"L": L[1:], "tau": tau[1:], "one": one[1:]}
        per_sim.append(_simulation_ranks(draws, truth, thin=5, num_ranks=20))
    return _collect(per_sim, max_rank=20, bins=5, alpha=0.01, seeds=list(range(num_simulations)))


def test_pinned_elements_are_left_out_of_the_test_the_plot_and_named_in_the_summary():
    res = fake_sbc()
    assert res.fixed["L"].tolist() == [[True, True], [False, False]]
    free = res.ranks["L"][:, 1, :]
    assert res.p_values["L"] == pytest.approx(_chi2_uniform(free, 20, 5))
    assert "one" not in res.p_values  # every element pinned: nothing to test
    assert res.summary()["fixed_elements"] == {"L": ["L[0,0]", "L[0,1]"], "one": ["one"]}
    fig = res.plot()
    panels = {ax.get_title().split(" ")[0]: ax for ax in fig.axes}
    assert set(panels) == {"L", "tau"}
    curves = {ln.get_label() for ln in panels["L"].lines if not ln.get_label().startswith("_")}
    assert curves == {"L[1,0]", "L[1,1]"}
    assert "2 fixed element(s) left out" in panels["L"].get_title()


def test_a_free_element_with_constant_ranks_is_kept_and_rejected():
    """tau's truth lies above every draw: its rank is always 20, constant but not pinned."""
    res = fake_sbc()
    assert (res.ranks["tau"] == 20).all() and not res.fixed["tau"]
    assert res.p_values["tau"] < 1e-6 and not res.uniform


@pytest.fixture(scope="module")
def calibrated():
    return sbc(H.hierarchical, simulate=SIM, num_simulations=40, seed=0, **SETTINGS)


def test_ranks_are_uniform_for_the_right_posterior(calibrated):
    assert set(calibrated.p_values) >= {"mu", "tau", "sigma", "w"}
    assert calibrated.ranks["w"].shape == (40, 3, 1)
    assert calibrated.max_rank == 40
    # Family-wise 1 % level with a Bonferroni correction over the variables.
    assert calibrated.uniform, calibrated.p_values


def test_a_wrong_posterior_is_rejected():
    """Fit with a prior 10x narrower than the one that simulated the data: ranks pile up."""
    res = sbc(H.hierarchical, simulate=SIM, num_simulations=40, seed=0,
              model_kwargs={"mu_scale": 0.25}, **SETTINGS)
    assert not res.uniform
    assert res.p_values["mu"] < 1e-4


def test_ecdf_pit_plot(calibrated, tmp_path):
    calibrated.plot(tmp_path / "sbc.png")
    assert (tmp_path / "sbc.png").stat().st_size > 5000


def test_two_dask_workers_give_the_same_ranks_as_in_process():
    kw = dict(simulate=SIM, num_simulations=4, seed=7, **SETTINGS)
    local = sbc(H.hierarchical, **kw)
    remote = sbc(H.hierarchical, workers=2, **kw)
    for name in local.ranks:
        assert np.array_equal(local.ranks[name], remote.ranks[name]), name


def test_sbc_validates_arguments():
    with pytest.raises(ValueError, match="thin"):
        sbc(H.hierarchical, simulate=SIM, num_simulations=2, num_samples=10, thin=5, bins=5)
    with pytest.raises(ValueError, match="workers"):
        sbc(H.hierarchical, simulate=SIM, num_simulations=2, workers=0, **SETTINGS)

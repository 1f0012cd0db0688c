"""Simulation-based calibration: uniform ranks for the right posterior, rejection of a wrong one,
and the same ranks whether the simulations run in-process or on two Dask worker processes."""

import functools

import numpy as np
import pytest
from bayesmtl.inference import sbc
from bayesmtl.inference.sbc import rank_statistics
from bayesmtl.models import hierarchical as H

SIM = functools.partial(H.simulate, n_tasks=3, n_per_task=4, n_features=0)
SETTINGS = dict(num_warmup=150, num_samples=200, thin=5, bins=5, progress_bar=False)


def test_rank_statistics_counts_draws_below_truth():
    draws = {"a": np.arange(10.0)[:, None] * np.ones((1, 2))}
    r = rank_statistics(draws, {"a": np.array([3.5, -1.0])}, thin=2, num_ranks=5)
    assert r["a"].tolist() == [2, 0]  # kept draws 0, 2, 4, 6, 8


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

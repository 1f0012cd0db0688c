"""Gate and evidence-vs-LOO plots: the drawn values are the right ones; real PNGs are written."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from bayesmtl.inference.task_clustering_plots import (
    evidence_loo_table,
    gate_curves,
    gate_probabilities,
    plot_evidence_vs_loo,
    plot_gates,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def gating():
    rng = np.random.default_rng(0)
    F = np.column_stack([rng.normal(size=20), rng.integers(0, 2, 20)])   # continuous, binary
    U = np.array([[0.5, 0.0, -0.5], [-2.0, 0.0, 2.0], [0.3, -0.3, 0.0]])  # intercept row first
    return U, F


def _assert_real_png(path, min_bytes=8000):
    raw = path.read_bytes()
    assert raw[:8] == PNG_MAGIC and len(raw) > min_bytes
    img = mpimg.imread(path)[..., :3]
    assert img.std() > 0.05                       # not a blank canvas
    # several distinct colours: the clusters' colours are drawn, not just black on white
    assert len(np.unique((img.reshape(-1, 3) * 8).round(), axis=0)) >= 6


def test_gate_probabilities_are_the_softmax_of_the_linear_gates(gating):
    U, F = gating
    q = gate_probabilities(U, F)
    logits = U[0] + F @ U[1:]
    expected = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(q, expected, rtol=1e-12)
    np.testing.assert_allclose(q.sum(1), 1.0)


def test_gate_curve_holds_the_other_features_at_their_mean(gating):
    U, F = gating
    grid, curve = gate_curves(U, F, feature=0, num=7)
    assert grid[0] == F[:, 0].min() and grid[-1] == F[:, 0].max()
    at_mean = np.column_stack([grid, np.full(7, F[:, 1].mean())])
    np.testing.assert_allclose(curve, gate_probabilities(U, at_mean), rtol=1e-12)
    # cluster 2's gate rises with the feature (U[1, 2] = 2 is the largest slope)
    assert np.all(np.diff(curve[:, 2]) > 0)


def test_gate_plot_draws_the_fitted_curves_and_memberships(gating):
    U, F = gating
    r = np.random.default_rng(1).dirichlet(np.ones(3), size=20)
    fig = plot_gates(U, F, feature=0, feature_name="schavg", responsibilities=r)
    ax = fig.axes[0]
    _, curve = gate_curves(U, F, feature=0)
    lines = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]
    assert len(lines) == 3
    for a, ln in enumerate(lines):
        np.testing.assert_allclose(ln.get_ydata(), curve[:, a])
    crosses = [ln for ln in ax.get_lines() if ln.get_marker() == "x"]
    np.testing.assert_allclose(np.column_stack([c.get_ydata() for c in crosses]), r)
    assert ax.get_xlabel() == "schavg"


def test_gate_plot_writes_a_real_png(tmp_path, gating):
    U, F = gating
    path = tmp_path / "gates.png"
    plot_gates(U, F, path, feature=1, jitter=0.05)
    _assert_real_png(path)


@pytest.mark.parametrize("kwargs, match", [
    ({"gates": np.zeros((2, 3))}, "gates"),              # needs 3 rows: intercept + 2 features
    ({"responsibilities": np.ones((19, 3)) / 3}, "responsibilities"),
    ({"feature": 2}, "feature"),
    ({"task_features": np.full((20, 2), np.nan)}, "NaN"),
])
def test_gate_plot_bad_inputs_raise_clear_errors(gating, kwargs, match):
    U, F = gating
    args = {"gates": U, "task_features": F}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        plot_gates(**args)


@pytest.fixture
def comparison():
    # the shape of bayesmtl.inference.compare's output: best first
    return pd.DataFrame({"elpd": [-100.0, -103.0, -110.0], "se": [5.0, 5.0, 6.0],
                         "dse": [0.0, 1.5, 3.0]}, index=["gaussian", "gating", "clustering"])


def test_evidence_loo_table_ranks_and_differences(comparison):
    ev = {"clustering": -205.0, "gating": -200.0, "gaussian": -212.0}
    t = evidence_loo_table(ev, comparison)
    assert list(t.index) == ["clustering", "gating", "gaussian"]
    assert t["rank_evidence"].tolist() == [2, 1, 3]
    assert t["rank_loo"].tolist() == [3, 2, 1]
    np.testing.assert_allclose(t["d_log_evidence"], [-5.0, 0.0, -12.0])
    np.testing.assert_allclose(t["d_elpd_loo"], [-10.0, -3.0, 0.0])


def test_evidence_loo_table_needs_the_same_models(comparison):
    with pytest.raises(ValueError, match="comparison"):
        evidence_loo_table({"gaussian": -1.0, "gating": -2.0}, comparison)


def test_evidence_vs_loo_plot_draws_both_criteria_and_writes_a_png(tmp_path, comparison):
    t = evidence_loo_table({"clustering": -205.0, "gating": -200.0, "gaussian": -212.0},
                           comparison)
    fig = plot_evidence_vs_loo(t)
    widths = [[p.get_width() for p in ax.patches] for ax in fig.axes[:2]]
    np.testing.assert_allclose(widths[0], t["d_log_evidence"])
    np.testing.assert_allclose(widths[1], t["d_elpd_loo"])
    path = tmp_path / "evidence_vs_loo.png"
    plot_evidence_vs_loo(t, path)
    _assert_real_png(path, min_bytes=5000)


def test_evidence_loo_table_from_fits_keeps_full_precision():
    # near-constant pointwise log likelihoods: PSIS-LOO's elpd is their sum (~ -5006.15), which
    # a two-significant-digit rounding (ArviZ 1.x's default) would turn into -5000
    from arviz_base import from_dict

    rng = np.random.default_rng(2)
    ll_i = -100.123 - rng.uniform(0, 0.01, size=50)

    def tree(shift):
        ll = ll_i + shift + 1e-3 * rng.normal(size=(2, 100, 50))
        return from_dict({"posterior": {"a": rng.normal(size=(2, 100))},
                          "log_likelihood": {"y": ll}}, dims={"y": ["obs"]})

    t = evidence_loo_table({"a": -1.0, "b": -2.0}, {"a": tree(0.0), "b": tree(-0.1)})
    np.testing.assert_allclose(t["elpd_loo"], [ll_i.sum(), ll_i.sum() - 5.0], atol=0.01)
    assert t["rank_loo"].tolist() == [1, 2]

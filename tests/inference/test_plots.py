"""Fit plots (inference/plots.py): the trace legend names the colours, the posterior predictive
check is titled by the target and says which curve is which."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from arviz_base import from_dict
from bayesmtl.inference import plots
from bayesmtl.inference.plots import plot_ppc, plot_trace, save_fit_plots

FEATURES = ["intercept", "standLRT", "female"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def fake_fit(attrs=None, seed=0):
    """A small DataTree shaped like a hierarchical fit: 2 chains, 3 features, 40 observations."""
    rng = np.random.default_rng(seed)
    return from_dict(
        {
            "posterior": {"mu": rng.normal(size=(2, 60, 3)), "sigma": rng.gamma(2, size=(2, 60)),
                          "tau": rng.gamma(2, size=(2, 60, 3))},
            "posterior_predictive": {"y": rng.normal(size=(2, 60, 40))},
            "observed_data": {"y": rng.normal(size=40)},
        },
        dims={"mu": ["feature"], "tau": ["feature"], "y": ["obs"]},
        coords={"feature": FEATURES},
        attrs=attrs or {},
    )


def test_trace_legend_names_each_feature_colour_and_each_chain():
    pc = plot_trace(fake_fit())
    fig = pc.viz["figure"].item()
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == FEATURES + ["sigma", "chain 0", "chain 1"]
    colours = {t.get_text(): h.get_color()
               for t, h in zip(legend.get_texts(), legend.legend_handles)}
    for var in ("mu", "tau"):  # a feature has one colour in every variable, the legend's
        for f in FEATURES:
            line = pc.viz["trace"][var].sel(feature=f).isel(chain=0).item()
            assert line.get_color() == colours[f], (var, f)
    assert len({colours[f] for f in FEATURES + ["sigma"]}) == 4


def test_ppc_is_titled_by_the_target_with_a_legend_and_a_density_axis():
    pc = plot_ppc(fake_fit(), target_name="normexam")
    ax = pc.viz["plot"]["y"].item()
    assert pc.viz["title"]["y"].item().get_text().startswith("normexam")
    assert ax.get_xlabel() == "normexam" and ax.get_ylabel() == "density"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["observed", "posterior predictive (50 draws)"]


def test_ppc_target_name_falls_back_to_the_datatree_then_the_variable():
    recorded = fake_fit({"observed_data": {"target_name": "log_radon"}})
    title = plot_ppc(recorded).viz["title"]["y"].item().get_text()
    assert title.startswith("log_radon")
    assert plot_ppc(fake_fit()).viz["title"]["y"].item().get_text().startswith("y:")


def test_save_fit_plots_passes_the_target_name_to_the_ppc(tmp_path, monkeypatch):
    seen = []
    real = plots.plot_ppc

    def spy(idata, path, *, target_name=None):
        seen.append(target_name)
        return real(idata, path, target_name=target_name)

    monkeypatch.setattr(plots, "plot_ppc", spy)
    written = save_fit_plots(fake_fit(), tmp_path, target_name="normexam")
    assert seen == ["normexam"] and "ppc.png" in written and "trace.png" in written
    assert (tmp_path / "ppc.png").read_bytes()[:4] == b"\x89PNG"

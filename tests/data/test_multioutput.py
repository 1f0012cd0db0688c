"""`load_grunfeld_sur` against the raw statsmodels frame, laid out by hand (year x firm pivot)."""

import numpy as np
import pytest
from bayesmtl.data import load_grunfeld, to_multioutput
from bayesmtl.data.multioutput import load_grunfeld_sur


def _pivot(firms):
    import statsmodels.api as sm

    df = sm.datasets.grunfeld.load_pandas().data
    wide = df.pivot_table(index="year", columns="firm", values=["invest", "value", "capital"])
    Y = wide["invest"][firms].to_numpy(float)
    X = np.column_stack([wide[v][f].to_numpy(float) for f in firms for v in ("value", "capital")])
    return X, Y


@pytest.mark.parametrize("firms", [None, ["IBM", "General Motors", "Chrysler"]])
def test_grunfeld_sur_holds_the_raw_panel_year_by_firm(firms):
    d = load_grunfeld_sur(firms=firms, standardize=False)
    names = list(d.task_names)
    if firms is None:  # statsmodels' order of the firms, not alphabetical
        assert names[:3] == ["General Motors", "US Steel", "General Electric"] and len(names) == 11
    else:
        assert names == firms
    X, Y = _pivot(names)
    np.testing.assert_array_equal(d.X, X)
    np.testing.assert_array_equal(d.Y, Y)
    assert d.feature_names[:2] == (f"{names[0]}:value", f"{names[0]}:capital")
    np.testing.assert_array_equal(d.feature_blocks, np.repeat(np.arange(len(names)), 2))


def test_grunfeld_sur_standardises_the_raw_columns_and_matches_the_panel_converter():
    raw, z = load_grunfeld_sur(standardize=False), load_grunfeld_sur()
    np.testing.assert_allclose(z.X, (raw.X - raw.X.mean(0)) / raw.X.std(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(z.Y, (raw.Y - raw.Y.mean(0)) / raw.Y.std(0), rtol=0, atol=1e-12)
    panel = to_multioutput(load_grunfeld(log=False), layout="panel")  # firms alphabetical there
    same = load_grunfeld_sur(firms=list(panel.task_names), standardize=False)
    np.testing.assert_array_equal(same.X, panel.X)
    np.testing.assert_array_equal(same.Y, panel.Y)
    assert same.feature_names == panel.feature_names

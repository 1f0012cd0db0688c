"""ILEA loader: both file layouts, the Bakker & Heskes encoding, clear errors."""

import numpy as np
import pytest
from bayesmtl.data.ilea import SCHOOL_FEATURES, STUDENT_FEATURES, load_ilea
from scipy.io import savemat

# year, school, score, %FSM, %VR1, female, VR code, ethnic, school gender, denomination
RECORDS = [
    (1, 1, 21, 16, 12, 0, 2, 1, 1, 1),
    (2, 1, 35, 18, 14, 1, 3, 11, 1, 1),
    (3, 1, 7, 20, 10, 1, 1, 5, 1, 1),
    (1, 7, 40, 30, 25, 1, 2, 2, 3, 3),
    (1, 7, 12, 30, 25, 1, 1, 2, 3, 3),
    (2, 12, 50, 5, 40, 0, 3, 9, 2, 2),
    (3, 12, 66, 7, 42, 0, 2, 10, 2, 2),
]


def _write_raw(path, records=RECORDS):
    lines = [f"{r[0]:1d}{r[1]:3d}{r[2]:2d}{r[3]:2d}{r[4]:2d}{r[5]:1d}{r[6]:1d}{r[7]:2d}"
             f"{r[8]:1d}{r[9]:1d}" for r in records]
    path.write_text("\n".join(lines) + "\n")
    return path


def _write_mat(path, records=RECORDS):
    schools = sorted({r[1] for r in records})
    Xc = np.empty((1, len(schools)), dtype=object)
    Yc = np.empty((1, len(schools)), dtype=object)
    for k, s in enumerate(schools):
        rows = [r for r in records if r[1] == s]
        X = np.zeros((len(rows), 28))
        for i, r in enumerate(rows):
            X[i, r[0] - 1] = 1
            X[i, 3], X[i, 4] = r[3], r[4]
            X[i, 5 + r[5]] = 1
            X[i, 6 + r[6]] = 1
            X[i, 9 + r[7]] = 1
            X[i, 20 + r[8]] = 1
            X[i, 23 + r[9]] = 1
            X[i, 27] = 1
        Xc[0, k] = X
        Yc[0, k] = np.array([[r[2]] for r in rows], float)
    savemat(path, {"X": Xc, "Y": Yc})
    return path


def test_raw_layout_encoding(tmp_path):
    d = load_ilea(_write_raw(tmp_path / "ILEA567.DAT"), standardize=False)
    assert (d.n, d.n_tasks, d.n_features) == (7, 3, 16)
    assert d.feature_names == STUDENT_FEATURES and d.task_feature_names == SCHOOL_FEATURES
    np.testing.assert_array_equal(d.task, [0, 0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(d.y, [21, 35, 7, 40, 12, 50, 66])
    # second student: 1986, female, VR2 (code 3 -> band 2), ethnic group 11
    np.testing.assert_array_equal(d.X[1], [0, 1, 0, 1, 2] + [0] * 10 + [1])
    np.testing.assert_array_equal(d.X[2, :5], [0, 0, 1, 1, 3])       # VR3 (code 1)
    np.testing.assert_allclose(d.task_features, [[18, 12, 0, 1, 0, 0],
                                                 [30, 25, 1, 0, 0, 1],
                                                 [6, 41, 1, 0, 1, 0]])
    assert d.task_names == ("school_1", "school_7", "school_12")


def test_matlab_layout_gives_the_same_data_as_raw(tmp_path):
    raw = load_ilea(_write_raw(tmp_path / "ILEA567.DAT"))
    mat = load_ilea(_write_mat(tmp_path / "school.mat"))
    np.testing.assert_allclose(mat.X, raw.X)
    np.testing.assert_allclose(mat.y, raw.y)
    np.testing.assert_allclose(mat.task_features, raw.task_features)
    np.testing.assert_array_equal(mat.task, raw.task)


def test_standardized_columns_are_z_scores(tmp_path):
    d = load_ilea(_write_raw(tmp_path / "ILEA567.DAT"))
    np.testing.assert_allclose(d.y.mean(), 0, atol=1e-6)
    np.testing.assert_allclose(d.y.std(), 1, rtol=1e-6)
    varying = d.X.std(0) > 0
    np.testing.assert_allclose(d.X[:, varying].std(0), 1, rtol=1e-5)
    np.testing.assert_allclose(d.task_features.mean(0), 0, atol=1e-6)


def test_missing_path_says_where_the_data_come_from(tmp_path, monkeypatch):
    monkeypatch.delenv("BAYESMTL_ILEA", raising=False)
    with pytest.raises(FileNotFoundError, match=r"Goldstein.*BAYESMTL_ILEA"):
        load_ilea()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_ilea(tmp_path / "nope.DAT")


def test_environment_variable_supplies_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv("BAYESMTL_ILEA", str(_write_raw(tmp_path / "ILEA567.DAT")))
    assert load_ilea().n_tasks == 3


def test_malformed_record_names_line_and_columns(tmp_path):
    bad = list(RECORDS)
    bad[2] = (3, 1, 7, 20, 10, 1, 4, 5, 1, 1)        # VR code 4 does not exist
    with pytest.raises(ValueError, match=r"line 3, columns 12-12 \(vr\)"):
        load_ilea(_write_raw(tmp_path / "bad.DAT", bad))


def test_matlab_file_with_wrong_width_is_rejected(tmp_path):
    Xc = np.empty((1, 1), dtype=object)
    Yc = np.empty((1, 1), dtype=object)
    Xc[0, 0], Yc[0, 0] = np.zeros((2, 27)), np.zeros((2, 1))
    savemat(tmp_path / "s.mat", {"X": Xc, "Y": Yc})
    with pytest.raises(ValueError, match=r"cell 0: expected X of shape \(n_i, 28\)"):
        load_ilea(tmp_path / "s.mat")

import jax
import numpy as np
import pandas as pd
import pytest
from bayesmtl.data import (
    Standardizer,
    TaskData,
    from_csv,
    from_dataframe,
    load_exam,
    load_grunfeld,
    load_linnerud,
    load_radon,
    train_test_split,
)


def _ok(**over):
    kw = dict(X=np.ones((4, 2)), y=np.array([0.0, 1.0, 1.0, 0.0]), task=[0, 0, 1, 1])
    kw.update(over)
    return TaskData(**kw)


def test_sizes_and_coords():
    d = _ok(feature_names=["a", "b"], task_names=["s1", "s2"])
    assert (d.n, d.n_features, d.n_tasks) == (4, 2, 2)
    assert d.task_sizes.tolist() == [2, 2]
    assert d.coords()["feature"] == ["a", "b"]
    assert d.coords()["task"] == ["s1", "s2"]


@pytest.mark.parametrize(
    "over, field, problem",
    [
        (dict(X=np.array([[1.0, np.nan]] * 4)), "X", "NaN"),
        (dict(X=np.array([[1.0, np.inf]] * 4)), "X", "inf"),
        (dict(y=np.array([0.0, np.nan, 1.0, 0.0])), "y", "NaN"),
        (dict(y=np.zeros(3)), "y", "length 3"),
        (dict(task=[0, 0, 1]), "task", "length 3"),
        (dict(task=[0, 0, 1, -1]), "task", "negative"),
        (dict(task=[0, 0, 2, 2], n_tasks=3), "task", "empty task"),
        (dict(task=[0, 0, 1, 5], n_tasks=3), "task", "unknown task"),
        (dict(task=[0.5, 0, 1, 1]), "task", "integer"),
        (dict(X=np.array([["a", "b"]] * 4)), "X", "numeric"),
        (dict(X=np.ones((4, 2, 1))), "X", "2-D"),
        (dict(task_features=np.ones((3, 1))), "task_features", "one per task"),
        (dict(feature_names=["a"]), "feature_names", "1 names"),
        (dict(task_names=["s", "s"]), "task_names", "unique"),
    ],
)
def test_bad_input_names_field_and_problem(over, field, problem):
    with pytest.raises(ValueError) as e:
        _ok(**over)
    assert str(e.value).startswith(field) and problem in str(e.value)


def test_wrong_label_set_for_classification():
    with pytest.raises(ValueError, match=r"y: .*\{0, 1\}.*wrong label set"):
        _ok(y=np.array([0.0, 1.0, 2.0, 0.0])).check_binary()
    _ok().check_binary()  # 0/1 labels pass


def test_is_a_pytree_with_static_sizes():
    d = _ok(task_features=np.ones((2, 3)))
    leaves, tree = jax.tree_util.tree_flatten(d)
    assert len(leaves) == 4  # X, task, y, task_features
    back = jax.tree_util.tree_unflatten(tree, leaves)
    assert back.n_tasks == 2 and np.array_equal(back.X, d.X)
    # Inside jit the sizes stay static.
    assert jax.jit(lambda t: t.X.sum() * t.n_tasks)(d) == 16.0


def test_split_is_stratified_seeded_and_disjoint():
    rng = np.random.default_rng(0)
    task = np.repeat(np.arange(5), [4, 8, 12, 1, 20])
    d = TaskData(X=rng.normal(size=(task.size, 1)), y=np.arange(task.size, dtype=float),
                 task=task)
    tr, te = train_test_split(d, test_fraction=0.25, seed=3)
    assert tr.n + te.n == d.n
    assert not set(tr.y) & set(te.y)
    assert te.task_sizes.tolist() == [1, 2, 3, 0, 5]  # round(0.25 m), at most m - 1
    assert (tr.task_sizes >= 1).all()
    tr2, _ = train_test_split(d, test_fraction=0.25, seed=3)
    assert np.array_equal(tr.y, tr2.y)
    with pytest.raises(ValueError, match="test_fraction"):
        train_test_split(d, test_fraction=1.5)


def test_standardizer_remembers_training_parameters():
    d = TaskData(X=[[1.0, 5.0], [3.0, 5.0]], y=[10.0, 20.0], task=[0, 1])
    s = Standardizer.fit(d)
    z = s.transform(d)
    assert np.allclose(z.X[:, 0], [-1, 1]) and np.allclose(z.X[:, 1], 0)  # constant column
    assert np.allclose(s.inverse_y(z.y), d.y)
    new = TaskData(X=[[5.0, 5.0]], y=[0.0], task=[0])
    assert np.allclose(s.transform(new).X[0, 0], 3.0)  # training mean and scale, not new ones


def test_from_dataframe_encodes_categoricals_and_task_features(tmp_path):
    df = pd.DataFrame({
        "school": ["b", "a", "a", "b"],
        "x": [1.0, 2.0, 3.0, 4.0],
        "sex": ["F", "M", "F", "M"],
        "size": [10, 20, 20, 10],
        "y": [0.1, 0.2, 0.3, 0.4],
    })
    d = from_dataframe(df, task_col="school", target="y", features=["x", "sex"],
                       task_feature_cols=["size"])
    assert d.task_names == ("a", "b") and d.task.tolist() == [1, 0, 0, 1]
    assert d.feature_names == ("x", "sex[M]")
    assert d.X[:, 1].tolist() == [0, 1, 0, 1]
    assert d.task_features[:, 0].tolist() == [20, 10]
    with pytest.raises(ValueError, match="task_feature_cols: not constant"):
        from_dataframe(df, task_col="school", target="y", task_feature_cols=["x"])
    with pytest.raises(ValueError, match="target: column 'nope'"):
        from_dataframe(df, task_col="school", target="nope")
    p = tmp_path / "d.csv"
    df.to_csv(p, index=False)
    assert from_csv(p, task_col="school", target="y", features=["x"]).n == 4
    with pytest.raises(ValueError, match="path: no such file"):
        from_csv(tmp_path / "missing.csv", task_col="school")


@pytest.mark.parametrize(
    "features, task_features, message",
    [
        (["x", "y"], None, "features: 'y' is the target column"),
        (["school", "x"], None, "features: 'school' is the task column"),
        (["x"], ["y"], "task_feature_cols: 'y' is the target column"),
        (["x"], ["school"], "task_feature_cols: 'school' is the task column"),
    ],
)
def test_from_dataframe_refuses_the_target_or_task_as_an_input(features, task_features, message):
    """A target among the inputs would be fitted as w[y] = 1; the task index as a number means
    nothing. Both are named, not fitted."""
    df = pd.DataFrame({"school": [0, 0, 1, 1], "x": [1.0, 2.0, 3.0, 4.0],
                       "y": [0.1, 0.2, 0.3, 0.4]})
    with pytest.raises(ValueError, match=message):
        from_dataframe(df, task_col="school", target="y", features=features,
                       task_feature_cols=task_features)


def test_exam_loader():
    d = load_exam()
    assert (d.n, d.n_tasks, d.n_features) == (4059, 65, 2)
    assert d.task_features.shape == (65, 5)
    # normexam is normalised over students; standLRT is standardised.
    assert abs(d.y.mean()) < 0.01 and abs(d.X[:, 0].std() - 1) < 0.01
    assert set(np.unique(d.X[:, 1])) == {0.0, 1.0}
    with pytest.raises(ValueError, match="features"):
        load_exam(features=["nope"])


def test_radon_and_grunfeld_loaders():
    r = load_radon()
    assert (r.n, r.n_tasks) == (919, 85) and r.task_features.shape == (85, 1)
    g = load_grunfeld()
    assert (g.n, g.n_tasks) == (220, 11) and (g.task_sizes == 20).all()


def test_linnerud_is_shared_input_multioutput():
    from bayesmtl.data import to_multioutput

    sk = pytest.importorskip("sklearn.datasets").load_linnerud

    d = load_linnerud()
    assert (d.n, d.n_tasks, d.n_features) == (60, 3, 3)
    assert d.task_names == ("Weight", "Waist", "Pulse")
    m = to_multioutput(d)
    assert m.X.shape == (20, 3) and m.Y.shape == (20, 3)
    # standardised columns, and the same men in every task (raw values match scikit-learn's)
    np.testing.assert_allclose(m.Y.std(0, ddof=1), 1.0)
    np.testing.assert_allclose(m.X.mean(0), 0, atol=1e-12)
    raw = load_linnerud(standardize=False)
    ref = sk()
    np.testing.assert_array_equal(to_multioutput(raw).Y, ref.target)
    np.testing.assert_array_equal(to_multioutput(raw).X, ref.data)

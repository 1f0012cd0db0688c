"""`TaskData` from a pandas DataFrame or a CSV file with a task column."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from bayesmtl.data.taskdata import TaskData

__all__ = ["from_csv", "from_dataframe"]


def _numeric_block(df: pd.DataFrame, cols: Sequence[str], what: str):
    """Numeric columns as they are; categorical ones one-hot encoded (first level dropped)."""
    blocks, names = [], []
    for c in cols:
        s = df[c]
        if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
            blocks.append(s.to_numpy(dtype=float)[:, None])
            names.append(str(c))
        else:
            levels = sorted(s.dropna().astype(str).unique())
            if len(levels) < 2:
                raise ValueError(f"{what}: column {c!r} is categorical with a single level")
            for lev in levels[1:]:
                blocks.append((s.astype(str) == lev).to_numpy(dtype=float)[:, None])
                names.append(f"{c}[{lev}]")
    return np.hstack(blocks) if blocks else np.zeros((len(df), 0)), names


def from_dataframe(
    df: pd.DataFrame,
    *,
    task_col: str,
    target: str | None = None,
    features: Sequence[str] | None = None,
    task_feature_cols: Sequence[str] | None = None,
) -> TaskData:
    """Build `TaskData` from a long-format DataFrame.

    Parameters
    ----------
    df : pandas.DataFrame
    task_col : str
        Column naming each row's task; tasks are numbered in sorted order of its values.
    target : str, optional
        Target column (``None`` for inputs only).
    features : sequence of str, optional
        Input columns (default: every column except the task, target and task-feature columns).
        Categorical columns are one-hot encoded, first level dropped. Neither the task column nor
        the target may be among them.
    task_feature_cols : sequence of str, optional
        Task-level columns; each must be constant within a task (and be neither the task column
        nor the target).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"school": ["a", "a", "b"], "x": [1.0, 2.0, 3.0], "y": [0.1, 0.2, 0.3]})
    >>> from_dataframe(df, task_col="school", target="y").task_names
    ('a', 'b')
    """
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"df: expected a pandas DataFrame, got {type(df).__name__}")
    cols = list(df.columns)
    for name, c in [("task_col", task_col), ("target", target)]:
        if c is not None and c not in cols:
            raise ValueError(f"{name}: column {c!r} not in the data (columns: {cols})")
    tf_cols = list(task_feature_cols or [])
    if features is None:
        features = [c for c in cols if c not in {task_col, target, *tf_cols}]
    for name, given in [("features", list(features)), ("task_feature_cols", tf_cols)]:
        for c, role in [(target, "target"), (task_col, "task")]:
            if c is not None and c in given:  # y among the inputs fits w[y] = 1
                raise ValueError(f"{name}: {c!r} is the {role} column")
    missing = [c for c in list(features) + tf_cols if c not in cols]
    if missing:
        raise ValueError(f"features: column(s) {missing} not in the data (columns: {cols})")
    if df[task_col].isna().any():
        raise ValueError(f"task_col: {int(df[task_col].isna().sum())} row(s) have no task")
    codes, names = pd.factorize(df[task_col], sort=True)
    X, fnames = _numeric_block(df, features, "features")
    y = None
    if target is not None:
        if not pd.api.types.is_numeric_dtype(df[target]):
            raise ValueError(f"target: column {target!r} is not numeric")
        y = df[target].to_numpy(dtype=float)
    tf, tfnames = None, None
    if tf_cols:
        block, tfnames = _numeric_block(df, tf_cols, "task_feature_cols")
        tf = np.zeros((len(names), block.shape[1]))
        for k in range(len(names)):
            rows = block[codes == k]
            if not np.allclose(rows, rows[0], equal_nan=True):
                raise ValueError(
                    f"task_feature_cols: not constant within task {names[k]!r}"
                )
            tf[k] = rows[0]
    return TaskData(
        X=X, y=y, task=codes, n_tasks=len(names), task_features=tf, feature_names=fnames,
        task_names=[str(n) for n in names], task_feature_names=tfnames,
        target_name=target or "y",
    )


def from_csv(path: str | Path, **kwargs) -> TaskData:
    """`from_dataframe` on a CSV file (same keyword arguments).

    Examples
    --------
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "d.csv")
    >>> _ = open(p, "w").write("task,x,y\\n0,1.0,2.0\\n1,0.5,1.0\\n")
    >>> from_csv(p, task_col="task", target="y").n_tasks
    2
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path: no such file {str(path)!r}")
    return from_dataframe(pd.read_csv(path), **kwargs)

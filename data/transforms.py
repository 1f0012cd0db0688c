"""Splits and scaling of `TaskData`: seeded per-task train/test splits and a remembering scaler."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from bayesmtl.data.taskdata import TaskData

__all__ = ["Standardizer", "train_test_split"]


def train_test_split(
    data: TaskData, *, test_fraction: float = 0.25, seed: int = 0
) -> tuple[TaskData, TaskData]:
    """Split rows within each task (stratified by task), seeded.

    Each task keeps at least one training row; a task with ``m`` rows sends
    ``round(test_fraction * m)`` of them (at most ``m - 1``) to the test set. Both parts keep
    ``n_tasks``, so task indices mean the same thing in each.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesmtl.data import TaskData
    >>> d = TaskData(X=np.arange(8.0), y=np.arange(8.0), task=[0] * 4 + [1] * 4)
    >>> tr, te = train_test_split(d, test_fraction=0.25, seed=0)
    >>> tr.n, te.n, te.n_tasks
    (6, 2, 2)
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: must be in (0, 1), got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    test = np.zeros(data.n, dtype=bool)
    for k in range(data.n_tasks):
        rows = np.flatnonzero(data.task == k)
        m = rows.size
        n_test = min(m - 1, int(round(test_fraction * m)))
        if n_test > 0:
            test[rng.choice(rows, size=n_test, replace=False)] = True
    if not test.any():
        raise ValueError("test_fraction: too small for these task sizes; the test set is empty")
    return data.subset(~test), data.subset(test)


@dataclass(frozen=True)
class Standardizer:
    """Z-scores ``X`` (and optionally ``y``) with parameters learned from training data.

    Constant columns are centred but not scaled (their standard deviation is taken as 1).

    Examples
    --------
    >>> import numpy as np
    >>> from bayesmtl.data import TaskData
    >>> d = TaskData(X=[[1.0], [3.0]], y=[10.0, 20.0], task=[0, 0])
    >>> s = Standardizer.fit(d)
    >>> s.transform(d).X.ravel().tolist(), s.inverse_y(np.array([0.0])).tolist()
    ([-1.0, 1.0], [15.0])
    """

    x_mean: np.ndarray
    x_scale: np.ndarray
    y_mean: float = 0.0
    y_scale: float = 1.0

    @classmethod
    def fit(cls, data: TaskData, *, target: bool = True) -> Standardizer:
        xm = data.X.mean(axis=0)
        xs = data.X.std(axis=0)
        xs = np.where(xs > 0, xs, 1.0)
        ym, ys = 0.0, 1.0
        if target:
            if data.y is None:
                raise ValueError("data: y is missing; use target=False to scale X only")
            ym, ys = float(data.y.mean()), float(data.y.std()) or 1.0
        return cls(xm, xs, ym, ys)

    def transform(self, data: TaskData) -> TaskData:
        if data.n_features != self.x_mean.size:
            raise ValueError(
                f"data: {data.n_features} features, the scaler was fitted on {self.x_mean.size}"
            )
        X = (data.X - self.x_mean) / self.x_scale
        y = None if data.y is None else (data.y - self.y_mean) / self.y_scale
        return replace(data, X=X, y=y, allow_empty_tasks=True)

    def inverse_y(self, y: np.ndarray) -> np.ndarray:
        """Targets back on the original scale."""
        return np.asarray(y) * self.y_scale + self.y_mean

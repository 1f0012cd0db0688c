"""`TaskData`: the one container for multi-task data.

Multi-task data are flat arrays with a task index (no padding for ragged tasks):

* ``X``  ``(n, d)`` float inputs,
* ``y``  ``(n,)`` targets, or ``None`` for prior-predictive simulation,
* ``task`` ``(n,)`` int in ``[0, n_tasks)``,
* ``task_features`` ``(n_tasks, f)`` optional task-level covariates.

Every field is validated on construction; a bad value raises a ``ValueError`` that names the
field and the problem. `TaskData` is a JAX pytree (arrays are leaves, sizes and names are static),
so it can be passed to jitted code and to NumPyro models run with ``jit_model_args=True``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import jax
import numpy as np

__all__ = ["TaskData"]


def _as_float_2d(name: str, value) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64 if arr.dtype == np.float64 else np.float32)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (rows, columns), got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        kind = "NaN" if np.isnan(arr[r, c]) else "inf"
        raise ValueError(
            f"{name}: {int(bad.sum())} non-finite value(s) ({kind} first at row {r}, column {c})"
        )
    return arr


@dataclass(frozen=True, eq=False)
class TaskData:
    """Flat multi-task data with a task index.

    Parameters
    ----------
    X : array_like, shape (n, d)
        Inputs. A 1-D array is read as a single feature.
    task : array_like of int, shape (n,)
        Task of each row, in ``[0, n_tasks)``.
    y : array_like, shape (n,), optional
        Targets; ``None`` for prior-predictive draws.
    n_tasks : int, optional
        Number of tasks; defaults to ``task.max() + 1``. Every task must have at least one row
        unless ``allow_empty_tasks=True`` (used for held-out rows of a subset of tasks).
    task_features : array_like, shape (n_tasks, f), optional
        Task-level covariates (e.g. school characteristics).
    feature_names, task_names : sequence of str, optional
    target_name : str
    allow_empty_tasks : bool
        Permit tasks with no rows (prediction sets, splits).

    Examples
    --------
    >>> import numpy as np
    >>> d = TaskData(X=np.ones((4, 2)), y=np.zeros(4), task=[0, 0, 1, 1])
    >>> d.n_tasks, d.n_features, d.task_sizes.tolist()
    (2, 2, [2, 2])
    """

    X: np.ndarray
    task: np.ndarray
    y: np.ndarray | None = None
    n_tasks: int | None = None
    task_features: np.ndarray | None = None
    feature_names: tuple[str, ...] | None = None
    task_names: tuple[str, ...] | None = None
    task_feature_names: tuple[str, ...] | None = None
    target_name: str = "y"
    allow_empty_tasks: bool = field(default=False, repr=False)

    def __post_init__(self):
        X = _as_float_2d("X", self.X)
        n, d = X.shape
        if n == 0:
            raise ValueError("X: no rows")
        task = np.asarray(self.task)
        if task.ndim != 1:
            raise ValueError(f"task: expected a 1-D array, got shape {task.shape}")
        if task.shape[0] != n:
            raise ValueError(f"task: length {task.shape[0]} does not match X's {n} rows")
        if not np.issubdtype(task.dtype, np.integer):
            if np.issubdtype(task.dtype, np.floating) and np.all(np.isfinite(task)) and np.all(
                task == np.round(task)
            ):
                task = task.astype(np.int64)
            else:
                raise ValueError(f"task: expected integer task indices, got dtype {task.dtype}")
        task = task.astype(np.int32)
        if task.min() < 0:
            raise ValueError(f"task: negative task index {int(task.min())}")
        n_tasks = int(task.max()) + 1 if self.n_tasks is None else int(self.n_tasks)
        if n_tasks < 1:
            raise ValueError(f"n_tasks: must be >= 1, got {n_tasks}")
        if task.max() >= n_tasks:
            raise ValueError(
                f"task: index {int(task.max())} out of range for n_tasks={n_tasks} "
                f"(unknown task)"
            )
        sizes = np.bincount(task, minlength=n_tasks)
        if not self.allow_empty_tasks and (sizes == 0).any():
            empty = np.flatnonzero(sizes == 0)
            raise ValueError(
                f"task: {len(empty)} task(s) have no rows (empty task), e.g. task {int(empty[0])}"
            )
        y = self.y
        if y is not None:
            y = np.asarray(y)
            if y.ndim == 2 and y.shape[1] == 1:
                y = y[:, 0]
            if y.ndim != 1:
                raise ValueError(f"y: expected a 1-D array, got shape {y.shape}")
            if y.shape[0] != n:
                raise ValueError(f"y: length {y.shape[0]} does not match X's {n} rows")
            y = _as_float_2d("y", y)[:, 0]
        tf = self.task_features
        if tf is not None:
            tf = _as_float_2d("task_features", tf)
            if tf.shape[0] != n_tasks:
                raise ValueError(
                    f"task_features: {tf.shape[0]} rows, expected one per task ({n_tasks})"
                )
        fn = self._names("feature_names", self.feature_names, d)
        tn = self._names("task_names", self.task_names, n_tasks)
        tfn = None
        if tf is not None:
            tfn = self._names("task_feature_names", self.task_feature_names, tf.shape[1])
        set_ = object.__setattr__
        set_(self, "X", X)
        set_(self, "task", task)
        set_(self, "y", y)
        set_(self, "n_tasks", n_tasks)
        set_(self, "task_features", tf)
        set_(self, "feature_names", fn)
        set_(self, "task_names", tn)
        set_(self, "task_feature_names", tfn)

    @staticmethod
    def _names(name: str, value: Sequence[str] | None, size: int) -> tuple[str, ...] | None:
        if value is None:
            return None
        value = tuple(str(v) for v in value)
        if len(value) != size:
            raise ValueError(f"{name}: {len(value)} names given for {size} entries")
        if len(set(value)) != len(value):
            raise ValueError(f"{name}: names are not unique")
        return value

    # ------------------------------------------------------------------ sizes
    @property
    def n(self) -> int:
        """Number of rows."""
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def task_sizes(self) -> np.ndarray:
        """Rows per task, shape ``(n_tasks,)``."""
        return np.bincount(self.task, minlength=self.n_tasks)

    def coords(self) -> dict[str, list]:
        """ArviZ coordinates for the named dimensions ``task``, ``feature``, ``obs``."""
        out = {
            "task": list(self.task_names) if self.task_names else list(range(self.n_tasks)),
            "feature": list(self.feature_names)
            if self.feature_names
            else [f"x{j}" for j in range(self.n_features)],
            "obs": list(range(self.n)),
        }
        if self.task_features is not None:
            out["task_feature"] = list(self.task_feature_names) if self.task_feature_names else [
                f"f{j}" for j in range(self.task_features.shape[1])
            ]
        return out

    # -------------------------------------------------------------- helpers
    def check_binary(self, name: str = "y") -> None:
        """Raise unless ``y`` holds only the labels 0 and 1 (for a classification model)."""
        if self.y is None:
            return
        labels = np.unique(self.y)
        if not np.all(np.isin(labels, [0.0, 1.0])):
            shown = ", ".join(f"{v:g}" for v in labels[:6])
            raise ValueError(
                f"{name}: a Bernoulli model needs labels in {{0, 1}}, got {{{shown}"
                f"{', ...' if labels.size > 6 else ''}}} (wrong label set)"
            )

    def require_task_features(self, who: str) -> np.ndarray:
        if self.task_features is None:
            raise ValueError(f"task_features: {who} needs task features, but data has none")
        return self.task_features

    def subset(self, rows) -> TaskData:
        """Rows ``rows`` (boolean mask or indices), keeping every task (possibly empty)."""
        rows = np.asarray(rows)
        return replace(
            self,
            X=self.X[rows],
            task=self.task[rows],
            y=None if self.y is None else self.y[rows],
            allow_empty_tasks=True,
        )

    @classmethod
    def for_prediction(cls, X, task, n_tasks: int, **names) -> TaskData:
        """Rows to predict: tasks may be empty, and indices past the training tasks are new tasks.

        Examples
        --------
        >>> TaskData.for_prediction([[0.5], [0.5]], task=[0, 4], n_tasks=5).n_tasks
        5
        """
        return cls(X=X, task=task, n_tasks=n_tasks, allow_empty_tasks=True, **names)

    def without_y(self) -> TaskData:
        return replace(self, y=None)

    def with_y(self, y) -> TaskData:
        return replace(self, y=np.asarray(y))

    def __repr__(self) -> str:
        return (
            f"TaskData(n={self.n}, n_features={self.n_features}, n_tasks={self.n_tasks}, "
            f"y={'yes' if self.y is not None else 'no'}, task_features="
            f"{None if self.task_features is None else self.task_features.shape[1]})"
        )


def _flatten(d: TaskData):
    children = (d.X, d.task, d.y, d.task_features)
    aux = (
        d.n_tasks,
        d.feature_names,
        d.task_names,
        d.task_feature_names,
        d.target_name,
    )
    return children, aux


def _unflatten(aux, children):
    # Rebuild without validation: leaves may be tracers inside jit.
    obj = object.__new__(TaskData)
    X, task, y, tf = children
    n_tasks, fn, tn, tfn, target = aux
    for k, v in dict(
        X=X,
        task=task,
        y=y,
        n_tasks=n_tasks,
        task_features=tf,
        feature_names=fn,
        task_names=tn,
        task_feature_names=tfn,
        target_name=target,
        allow_empty_tasks=True,
    ).items():
        object.__setattr__(obj, k, v)
    return obj


jax.tree_util.register_pytree_node(TaskData, _flatten, _unflatten)

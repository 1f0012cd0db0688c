"""`MultiOutputData`: shared-input multi-output data (every task observed at every input row).

``X (N, D)`` inputs shared by all tasks and ``Y (N, P)`` one column per task, as in multi-output
regression and seemingly unrelated regressions (SUR) with a common design. Converts to and from the
flat `bayesmtl.data.TaskData` layout (rows replicated per task, task-major).

Loaders
-------
`load_grunfeld_sur`: the Grunfeld investment panel (statsmodels) as a multi-output problem: P = 11 firms'
investment at N = 20 years. Classic SUR gives firm p its own regressors (its market value and capital
stock). Here inputs must be shared, so ``X`` holds *every* firm's (value, capital) of that year
(D = 22 columns) in Q = 11 feature blocks, one per firm. SUR is the special case where firm p's
investment loads only on block p; the sparse block prior can discover this, and the cross-firm noise
covariance ``Sigma`` is what SUR exploits. Linnerud (`bayesmtl.data.load_linnerud`, scikit-learn's copy)
is shared-input already: ``to_multioutput(load_linnerud())``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import jax
import numpy as np
from bayesmtl.data.datasets import load_grunfeld
from bayesmtl.data.taskdata import TaskData, _as_float_2d

__all__ = ["LAYOUTS", "MultiOutputData", "load_grunfeld_sur", "to_multioutput"]

LAYOUTS = ("auto", "shared", "panel")


@dataclass(frozen=True, eq=False)
class MultiOutputData:
    """Inputs shared by all tasks, one output column per task.

    Parameters
    ----------
    X : array_like, shape (N, D)
        Inputs; a 1-D array is one feature.
    Y : array_like, shape (N, P), optional
        Outputs, one column per task; ``None`` for prior-predictive draws (then give ``n_tasks``).
    n_tasks : int, optional
        Number of tasks P; required when ``Y`` is None.
    feature_names, task_names : sequence of str, optional
    feature_blocks : array_like of int, shape (D,), optional
        Block (group) of each feature, in ``[0, Q)``, every block non-empty.

    Examples
    --------
    >>> import numpy as np
    >>> d = MultiOutputData(X=np.ones((5, 3)), Y=np.zeros((5, 2)))
    >>> d.n, d.n_features, d.n_tasks
    (5, 3, 2)
    >>> d.to_taskdata().n
    10
    """

    X: np.ndarray
    Y: np.ndarray | None = None
    n_tasks: int | None = None
    feature_names: tuple[str, ...] | None = None
    task_names: tuple[str, ...] | None = None
    feature_blocks: np.ndarray | None = None

    def __post_init__(self):
        X = _as_float_2d("X", self.X)
        n, d = X.shape
        if n == 0:
            raise ValueError("X: no rows")
        Y = self.Y
        if Y is not None:
            Y = _as_float_2d("Y", Y)
            if Y.shape[0] != n:
                raise ValueError(f"Y: {Y.shape[0]} rows do not match X's {n} rows (shape mismatch)")
            if self.n_tasks is not None and int(self.n_tasks) != Y.shape[1]:
                raise ValueError(f"n_tasks: {self.n_tasks} given but Y has {Y.shape[1]} columns")
            p = Y.shape[1]
        elif self.n_tasks is None:
            raise ValueError("n_tasks: required when Y is None")
        else:
            p = int(self.n_tasks)
        if p < 1:
            raise ValueError(f"n_tasks: must be >= 1, got {p}")
        blocks = self.feature_blocks
        if blocks is not None:
            blocks = check_blocks(blocks, d)
        set_ = object.__setattr__
        set_(self, "X", X)
        set_(self, "Y", Y)
        set_(self, "n_tasks", p)
        set_(self, "feature_names", TaskData._names("feature_names", self.feature_names, d))
        set_(self, "task_names", TaskData._names("task_names", self.task_names, p))
        set_(self, "feature_blocks", blocks)

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def y(self) -> np.ndarray | None:
        """Alias of ``Y`` (the observed-data name used by `TaskData` and the generic `fit`)."""
        return self.Y

    def coords(self) -> dict[str, list]:
        """ArviZ coordinates for ``task``, ``feature`` and ``obs``."""
        return {
            "task": list(self.task_names) if self.task_names else list(range(self.n_tasks)),
            "feature": list(self.feature_names) if self.feature_names
            else [f"x{j}" for j in range(self.n_features)],
            "obs": list(range(self.n)),
        }

    def subset(self, rows) -> MultiOutputData:
        """Rows ``rows`` (mask or indices) of X and Y."""
        rows = np.asarray(rows)
        return replace(self, X=self.X[rows], Y=None if self.Y is None else self.Y[rows])

    def without_y(self) -> MultiOutputData:
        return replace(self, Y=None)

    def with_y(self, Y) -> MultiOutputData:
        return replace(self, Y=np.asarray(Y))

    def to_taskdata(self) -> TaskData:
        """Flat `TaskData`: X replicated once per task, task-major (row ``p * N + n``)."""
        P, N = self.n_tasks, self.n
        return TaskData(
            X=np.tile(self.X, (P, 1)),
            task=np.repeat(np.arange(P), N),
            y=None if self.Y is None else self.Y.T.reshape(-1),
            n_tasks=P,
            feature_names=self.feature_names,
            task_names=self.task_names,
        )

    @classmethod
    def from_taskdata(cls, data: TaskData, *, feature_blocks=None) -> MultiOutputData:
        """Rebuild from a flat `TaskData` whose tasks share identical input rows (in the same order).

        Raises ``ValueError`` when tasks have different sizes or different inputs.
        """
        sizes = data.task_sizes
        if not np.all(sizes == sizes[0]) or sizes[0] == 0:
            raise ValueError(
                f"data: tasks have different numbers of rows {sizes.tolist()[:6]}; shared-input "
                "multi-output data need every task at every input"
            )
        order = np.argsort(data.task, kind="stable")
        X = data.X[order].reshape(data.n_tasks, sizes[0], -1)
        if not np.allclose(X, X[:1]):
            raise ValueError("data: tasks do not share identical input rows X (in the same order)")
        Y = None if data.y is None else data.y[order].reshape(data.n_tasks, -1).T
        return cls(X=X[0], Y=Y, n_tasks=data.n_tasks, feature_names=data.feature_names,
                   task_names=data.task_names, feature_blocks=feature_blocks)

    @classmethod
    def from_panel(cls, data: TaskData) -> MultiOutputData:
        """SUR layout of a balanced panel whose tasks have their own inputs.

        Row ``n`` of every task is taken to be the same occasion (a year, say). ``X`` puts all tasks'
        inputs side by side (``D = P * d`` columns, one feature block per task, named
        ``"<task>:<feature>"``); classic seemingly unrelated regressions are the special case where
        task p loads only on block p.

        Raises ``ValueError`` when tasks have different numbers of rows.

        Examples
        --------
        >>> import numpy as np
        >>> from bayesmtl.data import TaskData
        >>> td = TaskData(X=np.arange(8.0)[:, None], y=np.zeros(8), task=[0, 0, 0, 0, 1, 1, 1, 1])
        >>> m = MultiOutputData.from_panel(td)
        >>> m.X.tolist(), m.feature_blocks.tolist()
        ([[0.0, 4.0], [1.0, 5.0], [2.0, 6.0], [3.0, 7.0]], [0, 1])
        """
        sizes = data.task_sizes
        if not np.all(sizes == sizes[0]) or sizes[0] == 0:
            raise ValueError(
                f"data: tasks have different numbers of rows {sizes.tolist()[:6]}; the SUR layout "
                "needs a balanced panel (every task observed on the same occasions)"
            )
        P, n = data.n_tasks, int(sizes[0])
        order = np.argsort(data.task, kind="stable")
        Xt = data.X[order].reshape(P, n, -1)  # (P, n, d)
        d = Xt.shape[2]
        X = Xt.transpose(1, 0, 2).reshape(n, P * d)
        Y = None if data.y is None else data.y[order].reshape(P, n).T
        tn = list(data.task_names) if data.task_names else [str(p) for p in range(P)]
        fn = list(data.feature_names) if data.feature_names else [f"x{j}" for j in range(d)]
        return cls(X=X, Y=Y, n_tasks=P, task_names=tn,
                   feature_names=[f"{t}:{f}" for t in tn for f in fn],
                   feature_blocks=np.repeat(np.arange(P), d))

    def __repr__(self) -> str:
        q = None if self.feature_blocks is None else int(self.feature_blocks.max()) + 1
        return (f"MultiOutputData(n={self.n}, n_features={self.n_features}, n_tasks={self.n_tasks}, "
                f"Y={'yes' if self.Y is not None else 'no'}, blocks={q})")


def check_blocks(blocks, n_features: int, name: str = "feature_blocks") -> np.ndarray:
    """Validate a block index per feature: ints in ``[0, Q)``, length D, no empty block."""
    b = np.asarray(blocks)
    if b.ndim != 1 or b.shape[0] != n_features:
        raise ValueError(f"{name}: expected one block index per feature ({n_features}), "
                         f"got shape {b.shape}")
    if not np.issubdtype(b.dtype, np.integer):
        if np.issubdtype(b.dtype, np.floating) and np.all(b == np.round(b)):
            b = b.astype(np.int64)
        else:
            raise ValueError(f"{name}: expected integer block indices, got dtype {b.dtype}")
    if b.min() < 0:
        raise ValueError(f"{name}: negative block index {int(b.min())}")
    counts = np.bincount(b)
    if (counts == 0).any():
        raise ValueError(f"{name}: block {int(np.flatnonzero(counts == 0)[0])} is empty "
                         f"(blocks must be numbered 0..Q-1, each with >= 1 feature)")
    return b.astype(np.int32)


def load_grunfeld_sur(*, firms: Sequence[str] | None = None, standardize: bool = True
                  ) -> MultiOutputData:
    """The Grunfeld investment panel as shared-input multi-output data.

    Parameters
    ----------
    firms : sequence of str, optional
        Firms to keep (default all 11).
    standardize : bool
        z-score every input column and every output column (recommended: the scales differ by 100x).

    Returns
    -------
    MultiOutputData
        ``Y (20, P)`` gross investment per firm, ``X (20, 2P)`` every firm's market value and capital
        stock, ``feature_blocks`` pairing each firm's two columns; features named ``"<firm>:value"``.
        Firms come in the order given (default: statsmodels', General Motors first); otherwise this
        is `MultiOutputData.from_panel` of ``load_grunfeld(log=False)``.

    Examples
    --------
    >>> d = load_grunfeld_sur()
    >>> d.n, d.n_tasks, d.n_features
    (20, 11, 22)
    """
    panel = load_grunfeld(log=False)  # firms sorted by name; keep statsmodels' order by default
    names = list(panel.task_names)
    first_rows = np.sort(np.unique(panel.task, return_index=True)[1])
    all_firms = [names[panel.task[i]] for i in first_rows]
    firms = all_firms if firms is None else [str(f) for f in firms]
    unknown = [f for f in firms if f not in all_firms]
    if unknown:
        raise ValueError(f"firms: unknown firm(s) {unknown}; available {all_firms}")
    rows = [np.flatnonzero(panel.task == names.index(f)) for f in firms]
    chosen = TaskData(X=panel.X[np.concatenate(rows)], y=panel.y[np.concatenate(rows)],
                      task=np.repeat(np.arange(len(firms)), [r.size for r in rows]),
                      feature_names=panel.feature_names, task_names=firms)
    data = MultiOutputData.from_panel(chosen)  # year rows, each firm's (value, capital) a block
    if standardize:
        X, Y = data.X, np.ascontiguousarray(data.Y)  # Y is a transposed view; C order as before
        data = replace(data, X=(X - X.mean(0)) / X.std(0), Y=(Y - Y.mean(0)) / Y.std(0))
    return data


def to_multioutput(data, *, layout: str = "auto") -> MultiOutputData:
    """Multi-output form of a data set for the sparse multitask model.

    Parameters
    ----------
    data : MultiOutputData or TaskData
    layout : {"auto", "shared", "panel"}
        ``"shared"``: the tasks share identical input rows (`MultiOutputData.from_taskdata`);
        ``"panel"``: a balanced panel with task-specific inputs, laid out as SUR
        (`MultiOutputData.from_panel`); ``"auto"``: shared when the inputs are identical, else panel.

    Examples
    --------
    >>> from bayesmtl.data import load_grunfeld
    >>> to_multioutput(load_grunfeld()).X.shape  # 20 years, 11 firms x (value, capital)
    (20, 22)
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout: must be one of {LAYOUTS}, got {layout!r}")
    if isinstance(data, MultiOutputData):
        return data
    if isinstance(data, TaskData):
        if layout == "panel":
            return MultiOutputData.from_panel(data)
        try:
            return MultiOutputData.from_taskdata(data)
        except ValueError as err:
            if layout == "shared" or "different numbers of rows" in str(err):
                raise
            return MultiOutputData.from_panel(data)
    raise ValueError(f"data: expected MultiOutputData or TaskData, got {type(data).__name__}")


def _flatten(d: MultiOutputData):
    return (d.X, d.Y), (d.n_tasks, d.feature_names, d.task_names,
                        None if d.feature_blocks is None else tuple(d.feature_blocks.tolist()))


def _unflatten(aux, children):
    obj = object.__new__(MultiOutputData)
    n_tasks, fn, tn, blocks = aux
    for k, v in {"X": children[0], "Y": children[1], "n_tasks": n_tasks, "feature_names": fn,
                     "task_names": tn,
                     "feature_blocks": None if blocks is None else np.asarray(blocks)}.items():
        object.__setattr__(obj, k, v)
    return obj


jax.tree_util.register_pytree_node(MultiOutputData, _flatten, _unflatten)

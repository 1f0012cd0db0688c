"""Clustering agreement for the task-clustering family: the adjusted Rand index."""

from __future__ import annotations

import numpy as np

__all__ = ["adjusted_rand_index"]


def adjusted_rand_index(labels_true, labels_pred) -> float:
    """Adjusted Rand index (Hubert & Arabie 1985) between two labelings of the same items.

    1 for identical partitions (up to renaming), about 0 for independent ones.

    Examples
    --------
    >>> adjusted_rand_index([0, 0, 1, 1], [1, 1, 0, 0])
    1.0
    """
    a = np.asarray(labels_true).ravel()
    b = np.asarray(labels_pred).ravel()
    if a.shape != b.shape:
        raise ValueError(f"labels_pred: length {b.size} does not match labels_true's {a.size}")
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1))
    np.add.at(table, (ia, ib), 1)
    comb2 = lambda v: v * (v - 1) / 2
    index = comb2(table).sum()
    rows, cols = comb2(table.sum(1)).sum(), comb2(table.sum(0)).sum()
    expected = rows * cols / comb2(a.size) if a.size > 1 else 0.0
    maximum = (rows + cols) / 2
    if maximum == expected:
        return 1.0
    return float((index - expected) / (maximum - expected))

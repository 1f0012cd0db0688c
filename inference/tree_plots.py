"""Pictures of a task hierarchy, saved as PNG: a dendrogram and a task-similarity heatmap.

* `plot_dendrogram`: the tree with leaves (task names) at time 0 on the left and merge times on the
  x axis, each internal node labelled with its clade's posterior probability when given.
* `plot_similarity`: a task-by-task similarity matrix (e.g. the posterior ``E[C]``) with rows and
  columns in the tree's leaf order, so clades show as blocks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from bayesmtl.inference.plots import _mpl
from bayesmtl.models.tree import as_tree, clades, node_times

__all__ = ["leaf_order", "plot_dendrogram", "plot_similarity"]


def leaf_order(tree) -> list[int]:
    """Leaves in depth-first order from the root (the order in which a dendrogram draws them).

    Examples
    --------
    >>> from bayesmtl.models.tree import tree_from_merges
    >>> leaf_order(tree_from_merges([[0, 2], [1, 3]], [0.5, 1.0]))
    [1, 0, 2]
    """
    tree = as_tree(tree)
    m = np.asarray(tree.merges)
    k = m.shape[0] + 1
    out: list[int] = []
    stack = [2 * k - 2]
    while stack:
        j = stack.pop()
        if j < k:
            out.append(int(j))
        else:
            a, b = m[j - k]
            stack.extend([b, a])
    return out


def _names(names, k):
    names = [str(i) for i in range(k)] if names is None else [str(n) for n in names]
    if len(names) != k:
        raise ValueError(f"names: {len(names)} names for {k} tasks")
    return names


def _save(fig, path):
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def plot_dendrogram(
    tree,
    path: str | Path | None = None,
    *,
    names=None,
    clade_probabilities: dict | None = None,
    title: str | None = None,
    ax=None,
):
    """Draw ``tree`` as a dendrogram (times on x, tasks on y); label nodes with probabilities.

    Parameters
    ----------
    tree : Tree
    path : str or Path, optional
        PNG written here when given.
    names : sequence of str, optional
        Task names (leaf labels).
    clade_probabilities : dict, optional
        ``frozenset -> probability`` (e.g. `TreePosterior.clade_probabilities`); each internal node
        below the root shows its clade's probability (0 when never sampled).
    title : str, optional
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> from bayesmtl.models.tree import tree_from_merges
    >>> fig = plot_dendrogram(tree_from_merges([[0, 1], [2, 3]], [0.5, 1.5]), names="abc")
    """
    plt = _mpl()
    tree = as_tree(tree)
    m = np.asarray(tree.merges)
    k = m.shape[0] + 1
    names = _names(names, k)
    tn = np.asarray(node_times(tree), dtype=float)
    y = np.zeros(2 * k - 1)
    y[leaf_order(tree)] = np.arange(k)
    for i, (a, b) in enumerate(m):
        y[k + i] = 0.5 * (y[a] + y[b])
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.5, max(2.5, 0.28 * k + 1)))
    else:
        fig = ax.figure
    sets = clades(tree, trivial=True)
    for i, (a, b) in enumerate(m):
        j = k + i
        ax.plot([tn[a], tn[j], tn[j], tn[b]], [y[a], y[a], y[b], y[b]], color="0.25", lw=1.2)
        if clade_probabilities is not None and i < k - 2:
            p = clade_probabilities.get(sets[i], 0.0)
            ax.annotate(
                f"{p:.2f}",
                (tn[j], y[j]),
                xytext=(3, 2),
                textcoords="offset points",
                fontsize=7,
                color="C3" if p < 0.5 else "C0",
            )
    ax.set_yticks(np.arange(k))
    ax.set_yticklabels([names[j] for j in leaf_order(tree)], fontsize=8)
    ax.set_ylim(-0.7, k - 0.3)
    ax.set_xlabel("merge time (towards the root)")
    ax.spines[["top", "right", "left"]].set_visible(False)
    ax.tick_params(axis="y", length=0)
    ax.set_title(
        title or "Task hierarchy" + (" (clade probabilities)" if clade_probabilities else "")
    )
    return _save(fig, path)


def plot_similarity(
    similarity,
    path: str | Path | None = None,
    *,
    tree=None,
    names=None,
    title: str | None = None,
    correlation: bool = True,
    ax=None,
):
    """Heatmap of a task similarity matrix, rows and columns in ``tree``'s leaf order.

    Parameters
    ----------
    similarity : array_like, shape (K, K)
        E.g. the posterior ``E[C]`` (`TreePosterior.similarity`).
    path : str or Path, optional
    tree : Tree, optional
        Orders the tasks; natural order when omitted.
    names : sequence of str, optional
    title : str, optional
    correlation : bool
        Show ``C_kl / sqrt(C_kk C_ll)`` (scale-free) instead of ``C``.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> fig = plot_similarity(np.eye(3) + 0.5)
    """
    plt = _mpl()
    s = np.asarray(similarity, dtype=float)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"similarity: expected a square matrix, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("similarity: contains NaN or inf")
    k = s.shape[0]
    names = _names(names, k)
    order = list(range(k)) if tree is None else leaf_order(tree)
    if len(order) != k:
        raise ValueError(f"tree: has {len(order)} leaves, similarity has {k} tasks")
    if correlation:
        d = np.sqrt(np.clip(np.diag(s), 1e-300, None))
        s = s / d[:, None] / d[None, :]
    s = s[np.ix_(order, order)]
    if ax is None:
        size = max(3.5, 0.25 * k + 2)
        fig, ax = plt.subplots(figsize=(size + 1, size))
    else:
        fig = ax.figure
    im = ax.imshow(s, cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="correlation" if correlation else "E[C]")
    ticks = np.arange(k)
    fs = 8 if k <= 30 else 5
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xticklabels([names[j] for j in order], rotation=90, fontsize=fs)
    ax.set_yticklabels([names[j] for j in order], fontsize=fs)
    ax.set_title(title or "Posterior task similarity")
    return _save(fig, path)

"""Pictures of a task hierarchy, saved as PNG: a dendrogram and a task-similarity heatmap.

* `plot_dendrogram`: the tree with leaves (task names) at time 0 on the left and merge times on the
  x axis, each internal node labelled with its clade's posterior probability when given.
* `plot_similarity`: a task-by-task similarity matrix (e.g. the posterior ``E[C]``) with rows and
  columns in the tree's leaf order, so clades show as blocks.

Both read in `leaf_order`, top to bottom: the heatmap's rows line up with the dendrogram's leaves
when the two are drawn side by side. With many tasks the labels are thinned rather than shrunk
below a legible size, and the figure says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from bayesmtl.inference.plots import _mpl
from bayesmtl.models.tree import as_tree, clades, node_times

__all__ = ["leaf_order", "plot_dendrogram", "plot_similarity"]


def leaf_order(tree) -> list[int]:
    """Leaves in depth-first order from the root: the order, top to bottom, in which
    `plot_dendrogram` draws them and `plot_similarity` lays out its rows and columns.

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


# Above this many leaves, node labels shrink and only well-supported clades are labelled.
_MANY_LEAVES = 20
# At most about this many task labels on each axis of the heatmap; beyond it every step-th.
_MAX_LABELS = 40


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _save(fig, path):
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def _label_clades(ax, tree, tn, y, clade_probabilities, min_probability):
    """Write each non-root clade's probability at its node, and a line under the title saying so.

    Labels below ``min_probability`` are skipped; where two would overlap, the more probable one
    is kept (the note counts those left out).
    """
    m = np.asarray(tree.merges)
    k = m.shape[0] + 1
    sets = clades(tree, trivial=True)
    # Smaller labels when the nodes crowd: 7 pt up to 20 leaves, down to 6 pt from 28.
    fs = 7.0 if k <= _MANY_LEAVES else max(6.0, 7.0 * np.sqrt(_MANY_LEAVES / k))
    labels = []
    for i in range(k - 2):  # the root's clade (every task) has probability 1
        p = float(clade_probabilities.get(sets[i], 0.0))
        if p >= min_probability:
            ann = ax.annotate(f"{p:.2f}", (tn[k + i], y[k + i]), xytext=(3, 2),
                              textcoords="offset points", fontsize=fs, va="bottom",
                              color="C3" if p < 0.5 else "C0", gid="clade_probability",
                              bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none",
                                    "alpha": 0.7})
            labels.append((p, ann))
    ax.autoscale_view()  # settle the limits before measuring the labels
    kept, hidden = [], 0
    for _, ann in sorted(labels, key=lambda pa: -pa[0]):
        box = ann.get_window_extent()
        if any(box.overlaps(other) for other in kept):
            ann.remove()
            hidden += 1
        else:
            kept.append(box)
    note = "numbers at nodes: posterior clade probability"
    if min_probability > 0:
        note += f", shown where ≥ {min_probability:g}"
    if min_probability < 0.5:
        note += " (blue ≥ 0.5, red < 0.5)"
    if hidden:
        note += f"; {hidden} hidden where labels overlapped"
    ax.annotate(note, (0.5, 1.0), xycoords="axes fraction", xytext=(0, 3),
                textcoords="offset points", ha="center", va="bottom", fontsize=8, color="0.3",
                gid="clade_probability_note")


def plot_dendrogram(
    tree,
    path: str | Path | None = None,
    *,
    names=None,
    clade_probabilities: dict | None = None,
    min_probability: float | None = None,
    title: str | None = None,
    ax=None,
):
    """Draw ``tree`` as a dendrogram (times on x, tasks on y); label nodes with probabilities.

    Leaves run top to bottom in `leaf_order`. The figure grows with the number of leaves; with
    more than 20 leaves the node labels are smaller and, by default, only clades with probability
    at least 0.5 are labelled; of two labels that would overlap, the more probable is kept. A line
    under the title says what the numbers are and what was left out.

    Parameters
    ----------
    tree : Tree
    path : str or Path, optional
        PNG written here when given.
    names : sequence of str, optional
        Task names (leaf labels).
    clade_probabilities : dict, optional
        ``frozenset -> probability`` (e.g. `TreePosterior.clade_probabilities`); each internal node
        below the root shows its clade's probability (0 when never sampled): blue when at least
        0.5, red below.
    min_probability : float, optional
        Label only clades with at least this probability. Default: 0 (every node) up to 20
        leaves, 0.5 above, where every label would not fit.
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
    many = k > _MANY_LEAVES
    if min_probability is None:
        min_probability = 0.5 if many else 0.0
    elif not 0.0 <= min_probability <= 1.0:
        raise ValueError(f"min_probability: expected a number in [0, 1], got {min_probability!r}")
    tn = np.asarray(node_times(tree), dtype=float)
    order = leaf_order(tree)
    y = np.zeros(2 * k - 1)
    y[order] = np.arange(k)
    for i, (a, b) in enumerate(m):
        y[k + i] = 0.5 * (y[a] + y[b])
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.5 + (0.02 * k if many else 0.0), max(2.5, 0.28 * k + 1)))
    else:
        fig = ax.figure
    for i, (a, b) in enumerate(m):
        j = k + i
        ax.plot([tn[a], tn[j], tn[j], tn[b]], [y[a], y[a], y[b], y[b]], color="0.25", lw=1.2)
    ax.set_yticks(np.arange(k))
    ax.set_yticklabels([names[j] for j in order], fontsize=8)
    ax.set_ylim(k - 0.3, -0.7)  # leaf_order top to bottom, as the similarity heatmap's rows
    ax.set_xlabel("merge time (towards the root)")
    ax.spines[["top", "right", "left"]].set_visible(False)
    ax.tick_params(axis="y", length=0)
    has_probs = clade_probabilities is not None and k > 2
    ax.set_title(title or "Task hierarchy", pad=16 if has_probs else 6)
    if has_probs:
        _label_clades(ax, tree, tn, y, clade_probabilities, min_probability)
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

    Rows run top to bottom, and columns left to right, in `leaf_order` (the dendrogram's
    top-to-bottom order). Up to 40 tasks every row is labelled; beyond, every 2nd, 3rd, ... task
    is, and the x label says so.

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
        size = min(11.0, max(3.5, 0.25 * k + 2))
        fig, ax = plt.subplots(figsize=(size + 1, size))
    else:
        fig = ax.figure
    im = ax.imshow(s, cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="correlation" if correlation else "E[C]")
    # Every task up to 40, else every step-th: a legible font rather than one label per row.
    step = int(np.ceil(k / _MAX_LABELS))
    ticks = np.arange(0, k, step)
    fs = 8 if k <= 30 else 7
    labels = [names[order[i]] for i in ticks]
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xticklabels(labels, rotation=90, fontsize=fs)
    ax.set_yticklabels(labels, fontsize=fs)
    if step > 1:
        ax.set_xlabel(f"{k} tasks in tree order; every {_ordinal(step)} labelled", fontsize=8)
    ax.set_title(title or "Posterior task similarity")
    return _save(fig, path)

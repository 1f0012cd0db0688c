"""Dendrogram and task-similarity heatmap (inference/tree_plots.py)."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from bayesmtl.inference.tree_plots import leaf_order, plot_dendrogram, plot_similarity
from bayesmtl.models.coalescent import tree_covariance
from bayesmtl.models.tree import clades, tree_from_merges

TREE = tree_from_merges([[0, 3], [1, 4], [2, 6], [5, 7]], [0.1, 0.2, 0.3, 1.0])  # ((0,3),(1,4,2))


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def random_tree(k, seed=0):
    """A coalescent-like tree: many merges close to the leaves, where node labels crowd."""
    rng = np.random.default_rng(seed)
    active, merges, times, t = list(range(k)), [], [], 0.0
    while len(active) > 1:
        n = len(active)
        t += rng.exponential(2.0 / (n * (n - 1)))
        i, j = sorted(rng.choice(n, 2, replace=False))
        merges.append([active[i], active[j]])
        times.append(t)
        active = [x for x in active if x not in merges[-1]] + [k + len(merges) - 1]
    return tree_from_merges(merges, times)


def clade_labels(fig):
    return [t for t in fig.axes[0].texts if t.get_gid() == "clade_probability"]


def top_to_bottom(ax):
    """Y tick labels in the order they appear on the page, top first."""
    ticks = ax.yaxis.get_major_ticks()
    pos = [ax.transData.transform((0, t.get_loc()))[1] for t in ticks]
    labels = [t.label1.get_text() for t in ticks]
    return [lab for _, lab in sorted(zip(pos, labels), key=lambda pl: -pl[0])]


def test_leaf_order_keeps_clades_contiguous():
    order = leaf_order(TREE)
    assert sorted(order) == [0, 1, 2, 3, 4]
    pos = {leaf: i for i, leaf in enumerate(order)}
    assert abs(pos[0] - pos[3]) == 1
    assert max(pos[1], pos[2], pos[4]) - min(pos[1], pos[2], pos[4]) == 2


def test_dendrogram_writes_a_png_with_probabilities(tmp_path):
    probs = {frozenset({0, 3}): 0.97, frozenset({1, 4}): 0.6, frozenset({1, 2, 4}): 0.88}
    path = tmp_path / "tree.png"
    fig = plot_dendrogram(TREE, path, names=list("abcde"), clade_probabilities=probs)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    labels = {t.get_text() for t in fig.axes[0].texts}
    assert {"0.97", "0.60", "0.88"} <= labels  # one label per non-root internal node
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [
        "abcde"[j] for j in leaf_order(TREE)
    ]


def test_similarity_heatmap_is_in_tree_order(tmp_path):
    c = np.asarray(tree_covariance(TREE, 1.0))
    path = tmp_path / "sim.png"
    fig = plot_similarity(c, path, tree=TREE, names=list("abcde"))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    shown = fig.axes[0].images[0].get_array()
    order = leaf_order(TREE)
    d = np.sqrt(np.diag(c))
    np.testing.assert_allclose(shown, (c / d[:, None] / d[None, :])[np.ix_(order, order)])


def test_dendrogram_says_what_its_numbers_are():
    probs = {frozenset({0, 3}): 0.97, frozenset({1, 4}): 0.3, frozenset({1, 2, 4}): 0.88}
    fig = plot_dendrogram(TREE, clade_probabilities=probs, title="MCC tree")
    notes = [t.get_text() for t in fig.axes[0].texts if t.get_gid() == "clade_probability_note"]
    assert len(notes) == 1 and "posterior clade probability" in notes[0]
    assert "red < 0.5" in notes[0]  # the 0.30 is drawn in red, and the note says what red means
    plain = plot_dendrogram(TREE)  # no probabilities, no note
    assert not [t for t in plain.axes[0].texts if t.get_gid() == "clade_probability_note"]


def test_many_leaves_label_only_supported_clades_in_smaller_type_without_overlap():
    k = 60
    tree = random_tree(k)
    probs = {c: p for c, p in zip(clades(tree), np.random.default_rng(1).uniform(size=k))}
    small = plot_dendrogram(TREE, clade_probabilities={c: 0.9 for c in clades(TREE)})
    fig = plot_dendrogram(tree, clade_probabilities=probs)
    labels = clade_labels(fig)
    assert labels and all(float(t.get_text()) >= 0.5 for t in labels)
    assert labels[0].get_fontsize() < clade_labels(small)[0].get_fontsize()
    assert fig.get_size_inches()[1] > 2 * small.get_size_inches()[1]
    boxes = [t.get_window_extent() for t in labels]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    note = [t.get_text() for t in fig.axes[0].texts if t.get_gid() == "clade_probability_note"]
    assert "shown where ≥ 0.5" in note[0]
    # every clade at or above 0.5 is labelled, or counted as hidden in the note
    n_hidden = int(note[0].split("; ")[1].split()[0]) if "hidden" in note[0] else 0
    assert len(labels) + n_hidden == sum(p >= 0.5 for c, p in probs.items() if len(c) < k)


def test_heatmap_rows_read_in_the_dendrograms_top_to_bottom_order():
    names = list("abcde")
    tree_ax = plot_dendrogram(TREE, names=names).axes[0]
    heat_ax = plot_similarity(np.asarray(tree_covariance(TREE, 1.0)), tree=TREE,
                              names=names).axes[0]
    assert top_to_bottom(tree_ax) == top_to_bottom(heat_ax)
    assert [t.get_text() for t in heat_ax.get_xticklabels()] == top_to_bottom(heat_ax)


def test_many_tasks_heatmap_labels_every_kth_task_in_a_legible_font():
    k = 65
    tree = random_tree(k, seed=2)
    names = [f"task {i}" for i in range(k)]
    fig = plot_similarity(np.asarray(tree_covariance(tree, 1.0)), tree=tree, names=names)
    ax = fig.axes[0]
    shown = top_to_bottom(ax)
    assert shown == [names[j] for j in leaf_order(tree)][::2]  # every 2nd, in tree order
    assert [t.get_text() for t in ax.get_xticklabels()] == shown
    assert min(t.get_fontsize() for t in ax.get_yticklabels()) >= 7
    assert "every 2nd" in ax.get_xlabel()
    assert top_to_bottom(plot_dendrogram(tree, names=names).axes[0])[::2] == shown


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="square"):
        plot_similarity(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="names"):
        plot_dendrogram(TREE, names=["a"])
    with pytest.raises(ValueError, match="min_probability"):
        plot_dendrogram(TREE, clade_probabilities={}, min_probability=1.5)

"""Dendrogram and task-similarity heatmap (inference/tree_plots.py)."""

import numpy as np
import pytest
from bayesmtl.inference.tree_plots import leaf_order, plot_dendrogram, plot_similarity
from bayesmtl.models.coalescent import tree_covariance
from bayesmtl.models.tree import tree_from_merges

TREE = tree_from_merges([[0, 3], [1, 4], [2, 6], [5, 7]], [0.1, 0.2, 0.3, 1.0])  # ((0,3),(1,4,2))


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


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="square"):
        plot_similarity(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="names"):
        plot_dendrogram(TREE, names=["a"])

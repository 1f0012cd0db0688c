"""Binary trees over tasks as arrays: the encoding shared by the coalescent prior and its inference.

A binary tree over ``K`` leaves is a `Tree` of two arrays:

* ``merges`` ``(K-1, 2)`` int: the two children of internal node ``K + i`` (the ``i``-th merge);
* ``times``  ``(K-1,)`` float: the time of the ``i``-th merge.

Leaves are nodes ``0..K-1`` at time 0; internal nodes are ``K..2K-2`` in merge order, so a parent
always has a larger index than its children and the root is node ``2K-2``. Time runs *backwards*
(towards the root) and is positive here: ``0 < t_1 < ... < t_{K-1}``. The order of the merges is part
of the value: a ``Tree`` is a *ranked history*, of which there are ``K!(K-1)!/2^(K-1)``.

Besides the JAX-friendly arrays, Metropolis-Hastings moves work on the *parent form*: a parent index
per node and the node times (`to_parent_form` / `from_parent_form`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "Tree",
    "as_tree",
    "clades",
    "from_parent_form",
    "leaf_membership",
    "node_times",
    "pack",
    "parents",
    "ranked_histories",
    "to_newick",
    "to_parent_form",
    "tree_from_merges",
    "unpack",
]


class Tree(NamedTuple):
    """A ranked binary tree: ``merges (K-1, 2)`` children of node ``K+i``, ``times (K-1,)``."""

    merges: jax.Array
    times: jax.Array

    @property
    def n_leaves(self) -> int:
        return int(self.merges.shape[-2]) + 1


def pack(tree: Tree) -> jax.Array:
    """``Tree`` -> ``(K-1, 3)`` float array ``[left, right, time]`` (the coalescent's value)."""
    t = jnp.asarray(tree.times)
    return jnp.concatenate([jnp.asarray(tree.merges).astype(t.dtype), t[..., None]], -1)


def unpack(value) -> Tree:
    """``(K-1, 3)`` packed array -> `Tree`."""
    value = jnp.asarray(value)
    return Tree(jnp.round(value[..., :2]).astype(jnp.int32), value[..., 2])


def as_tree(tree) -> Tree:
    """Accept a `Tree` (numpy or JAX fields) or a packed array."""
    if isinstance(tree, Tree):
        return Tree(jnp.asarray(tree.merges), jnp.asarray(tree.times))
    return unpack(tree)


def tree_from_merges(merges, times) -> Tree:
    """Build a validated `Tree` from merge pairs and increasing merge times.

    Raises ``ValueError`` naming the problem (a child used twice or before it exists, times not
    increasing or not positive, NaN).

    Examples
    --------
    >>> t = tree_from_merges([[0, 1], [2, 3]], [0.5, 1.5])
    >>> t.n_leaves
    3
    """
    m = np.asarray(merges)
    t = np.asarray(times, dtype=float)
    if m.ndim != 2 or m.shape[1] != 2:
        raise ValueError(f"merges: expected shape (K-1, 2), got {m.shape}")
    k = m.shape[0] + 1
    if k < 2:
        raise ValueError("merges: a tree needs at least 2 leaves (one merge)")
    if t.shape != (k - 1,):
        raise ValueError(f"times: expected shape ({k - 1},), got {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError("times: contains NaN or inf")
    if np.any(np.diff(t) < 0) or t[0] <= 0:
        raise ValueError("times: merge times must be positive and non-decreasing")
    seen = np.zeros(2 * k - 1, int)
    for i, (a, b) in enumerate(m):
        for c in (a, b):
            if not 0 <= c < k + i:
                raise ValueError(f"merges: row {i} uses node {c}, which does not exist yet")
            if seen[c]:
                raise ValueError(f"merges: node {c} is merged twice")
            seen[c] = 1
    return Tree(jnp.asarray(np.sort(m, axis=1), jnp.int32), jnp.asarray(t))


def node_times(tree) -> jax.Array:
    """Times of all ``2K-1`` nodes (leaves 0)."""
    tree = as_tree(tree)
    return jnp.concatenate([jnp.zeros(tree.n_leaves, tree.times.dtype), tree.times])


def parents(tree) -> jax.Array:
    """Parent index of every node, ``-1`` for the root."""
    tree = as_tree(tree)
    k = tree.n_leaves
    par = jnp.full(2 * k - 1, -1, jnp.int32)
    internal = k + jnp.arange(k - 1, dtype=jnp.int32)
    return par.at[tree.merges.reshape(-1)].set(jnp.repeat(internal, 2))


def leaf_membership(tree) -> jax.Array:
    """Boolean ``(2K-1, K)``: row ``j`` marks the leaves below node ``j``."""
    tree = as_tree(tree)
    k = tree.n_leaves
    b = jnp.zeros((2 * k - 1, k), bool).at[jnp.arange(k), jnp.arange(k)].set(True)

    def step(b, i):
        return b.at[k + i].set(b[tree.merges[i, 0]] | b[tree.merges[i, 1]]), None

    return jax.lax.scan(step, b, jnp.arange(k - 1))[0]


def clades(tree, *, trivial: bool = False) -> list[frozenset]:
    """Leaf sets of the internal nodes (the root's full set only with ``trivial=True``)."""
    tree = as_tree(tree)
    m = np.asarray(tree.merges)
    k = m.shape[0] + 1
    sets: list[frozenset] = [frozenset([i]) for i in range(k)]
    for a, b in m:
        sets.append(sets[a] | sets[b])
    return sets[k:] if trivial else sets[k:-1]


def to_newick(tree, names=None, *, digits: int = 6) -> str:
    """Newick string with branch lengths, e.g. ``((a:0.5,b:0.5):1,c:1.5);``."""
    tree = as_tree(tree)
    m = np.asarray(tree.merges)
    k = m.shape[0] + 1
    tn = np.asarray(node_times(tree))
    names = [str(i) for i in range(k)] if names is None else [str(n) for n in names]
    if len(names) != k:
        raise ValueError(f"names: {len(names)} names for {k} leaves")
    text = list(names)
    for i, (a, b) in enumerate(m):
        t = tn[k + i]
        text.append(f"({text[a]}:{t - tn[a]:.{digits}g},{text[b]}:{t - tn[b]:.{digits}g})")
    return text[-1] + ";"


def ranked_histories(n: int) -> np.ndarray:
    """Every ranked history over ``n`` leaves: ``(n!(n-1)!/2^(n-1), n-1, 2)`` merge arrays."""
    if n < 2 or n > 7:
        raise ValueError(f"n: enumeration is for 2 <= n <= 7, got {n}")
    out: list = []

    def rec(active, nxt, acc):
        if len(active) == 1:
            out.append(list(acc))
            return
        for i in range(len(active)):
            for j in range(i + 1, len(active)):
                rest = [a for q, a in enumerate(active) if q not in (i, j)] + [nxt]
                rec(rest, nxt + 1, acc + [(active[i], active[j])])

    rec(list(range(n)), n, [])
    return np.asarray(out, dtype=np.int32)


def to_parent_form(tree) -> tuple[np.ndarray, np.ndarray]:
    """``Tree`` -> (parent index of every node, ``-1`` at the root; times of all ``2K-1`` nodes).

    Examples
    --------
    >>> from bayesmtl.models.tree import to_parent_form, tree_from_merges
    >>> par, t = to_parent_form(tree_from_merges([[0, 1], [2, 3]], [0.5, 1.5]))
    >>> par.tolist(), t.tolist()
    ([3, 3, 4, 4, -1], [0.0, 0.0, 0.0, 0.5, 1.5])
    """
    tree = as_tree(tree)
    m = np.asarray(tree.merges)
    k = m.shape[0] + 1
    par = np.full(2 * k - 1, -1, np.int64)
    par[m.reshape(-1)] = np.repeat(np.arange(k, 2 * k - 1), 2)
    return par, np.concatenate([np.zeros(k), np.asarray(tree.times, dtype=float)])


def from_parent_form(par, t) -> Tree:
    """Parent form -> ranked `Tree` (internal nodes relabelled in order of their times).

    ``par`` is the parent of every node (``-1`` at the root), ``t`` the node times (leaves 0,
    every parent older than its children). Vectorised: O(K log K).

    Examples
    --------
    >>> tr = from_parent_form([4, 4, 3, -1, 3], [0, 0, 0, 1.5, 0.5])
    >>> tr.merges.tolist(), tr.times.tolist()
    ([[0, 1], [2, 3]], [0.5, 1.5])
    """
    par = np.asarray(par)
    t = np.asarray(t, dtype=float)
    k = (par.shape[0] + 1) // 2
    order = k + np.argsort(t[k:], kind="stable")
    label = np.arange(2 * k - 1)
    label[order] = np.arange(k, 2 * k - 1)
    child = np.flatnonzero(par >= 0)
    row = label[par[child]] - k
    lab = label[child]
    idx = np.lexsort((lab, row))
    merges = lab[idx].reshape(k - 1, 2).astype(np.int32)
    return Tree(merges, t[order])

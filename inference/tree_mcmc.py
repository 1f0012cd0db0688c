"""Metropolis-Hastings over coalescent trees (topology and merge times), plus clade summaries.

State: a parent array over the ``2K-1`` nodes and node times (leaves at 0). Two moves, each
symmetric or with its Hastings ratio:

* **node time**: an internal node's time is redrawn uniformly between its older child and its parent
  (the interval does not depend on the current value: symmetric); the root's time takes a
  log-scale random walk (Hastings ratio ``t'/t``) above its older child. Moving times past other
  nodes re-ranks the history.
* **narrow exchange**: pick one of the ``2K-4`` nodes whose parent ``p`` is not the root; swap it with
  ``p``'s sibling ``u`` when ``t_u < t_p``. Times are unchanged and the move is its own reverse with
  the same proposal probability ``1/(2K-4)``.

The target is ``Kingman(tree) * exp(log_likelihood(tree))``; with the Brownian part marginalised by
messages, ``log_likelihood = lambda t: brownian_log_likelihood(t, W, cov=Lambda)``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from bayesmtl.models.coalescent import Tree, as_tree, clades

__all__ = ["TreeChain", "clade_probabilities", "tree_mcmc"]


class TreeChain(NamedTuple):
    """``trees``: list of `Tree` draws; ``accept``: acceptance rate per move type."""

    trees: list
    accept: dict


def _kingman_lp(t, k):
    ts = np.sort(t[k:])
    m = k - np.arange(k - 1)
    return -np.sum(m * (m - 1) / 2.0 * np.diff(np.concatenate([[0.0], ts])))


def _to_tree(par, t, k) -> Tree:
    order = k + np.argsort(t[k:], kind="stable")  # internal nodes by time
    label = np.arange(2 * k - 1)
    label[order] = k + np.arange(k - 1)
    merges = np.zeros((k - 1, 2), np.int32)
    for node in order:
        ch = np.flatnonzero(par == node)
        merges[label[node] - k] = np.sort(label[ch])
    return Tree(merges, np.sort(t[k:]))


def _from_tree(tree, k):
    tree = as_tree(tree)
    m, times = np.asarray(tree.merges), np.asarray(tree.times, dtype=float)
    par = np.full(2 * k - 1, -1)
    for i, (a, b) in enumerate(m):
        par[a] = par[b] = k + i
    return par, np.concatenate([np.zeros(k), times])


def tree_mcmc(
    seed: int,
    n_leaves: int,
    *,
    n_steps: int,
    log_likelihood: Callable | None = None,
    init=None,
    thin: int = 1,
    root_step: float = 1.0,
) -> TreeChain:
    """Run Metropolis-Hastings over ranked trees with times.

    Parameters
    ----------
    seed : int
        Seed of the numpy generator.
    n_leaves : int
        ``K >= 3`` (with 2 leaves only the root time moves).
    n_steps : int
        Iterations; each does one time move and one exchange move.
    log_likelihood : callable, optional
        ``Tree -> float``; omitted: sample the Kingman prior.
    init : Tree, optional
        Starting tree; a caterpillar with unit spacing when omitted.
    thin : int
    root_step : float
        Half-width of the root's log-scale random walk.

    Examples
    --------
    >>> chain = tree_mcmc(0, 4, n_steps=200)
    >>> len(chain.trees), sorted(chain.accept)
    (200, ['exchange', 'time'])
    """
    k = int(n_leaves)
    if k < 3:
        raise ValueError(f"n_leaves: tree MCMC needs at least 3 leaves, got {n_leaves}")
    if not (isinstance(n_steps, int) and n_steps >= 1):
        raise ValueError(f"n_steps: expected a positive int, got {n_steps!r}")
    rng = np.random.default_rng(seed)
    loglik = (lambda tr: 0.0) if log_likelihood is None else log_likelihood
    if init is None:
        merges = [[0, 1]] + [[i + 1, k + i - 1] for i in range(1, k - 1)]
        init = Tree(np.asarray(merges), np.arange(1.0, k))
    par, t = _from_tree(init, k)
    cur = _kingman_lp(t, k) + float(loglik(_to_tree(par, t, k)))
    if not np.isfinite(cur):
        raise ValueError("init: the starting tree has zero density")
    acc = Counter()
    trees = []
    for step in range(n_steps):
        # -- node-time move
        j = rng.integers(k, 2 * k - 1)
        lo = t[par == j].max()
        t2 = t.copy()
        log_hastings = 0.0
        if par[j] < 0:
            t2[j] = lo + (t[j] - lo) * np.exp(rng.uniform(-root_step, root_step))
            log_hastings = np.log((t2[j] - lo) / (t[j] - lo))
        else:
            t2[j] = rng.uniform(lo, t[par[j]])
        new = _kingman_lp(t2, k) + float(loglik(_to_tree(par, t2, k)))
        if np.log(rng.uniform()) < new - cur + log_hastings:
            t, cur = t2, new
            acc["time"] += 1
        # -- narrow exchange
        root = int(np.flatnonzero(par < 0)[0])
        j = rng.choice(np.flatnonzero((par >= 0) & (np.arange(2 * k - 1) != root)))
        p = par[j]
        if p != root and p >= 0:
            g = par[p]
            u = next(c for c in np.flatnonzero(par == g) if c != p)
            if t[u] < t[p]:
                par2 = par.copy()
                par2[j], par2[u] = g, p
                new = _kingman_lp(t, k) + float(loglik(_to_tree(par2, t, k)))
                if np.log(rng.uniform()) < new - cur:
                    par, cur = par2, new
                    acc["exchange"] += 1
        if step % thin == 0:
            trees.append(_to_tree(par, t, k))
    return TreeChain(trees, {"time": acc["time"] / n_steps, "exchange": acc["exchange"] / n_steps})


def clade_probabilities(trees, *, min_probability: float = 0.0) -> dict:
    """Frequency of every non-trivial clade (frozenset of leaves) across ``trees``.

    Examples
    --------
    >>> from bayesmtl.models.coalescent import tree_from_merges
    >>> t = tree_from_merges([[0, 1], [2, 3]], [0.5, 1.5])
    >>> clade_probabilities([t, t])
    {frozenset({0, 1}): 1.0}
    """
    if len(trees) == 0:
        raise ValueError("trees: no trees given")
    counts = Counter()
    for tr in trees:
        counts.update(clades(tr))
    n = len(trees)
    return {c: v / n for c, v in counts.items() if v / n >= min_probability}

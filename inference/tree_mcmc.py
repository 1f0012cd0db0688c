"""Metropolis-Hastings over coalescent trees (topology and merge times), plus tree summaries.

The state is the *parent form* of a ranked tree (`bayesmtl.models.tree.to_parent_form`): a parent
index per node and the node times (leaves at 0). `tree_mh_step` applies three moves, each symmetric
or with its Hastings ratio:

* **node time**: an internal node's time is redrawn uniformly between its older child and its parent
  (the interval does not depend on the current value: symmetric); the root's time takes a
  log-scale random walk (Hastings ratio ``(t' - lo) / (t - lo)``) above its older child. The
  optional ``"root"`` move applies that walk to the root alone (the time move reaches the root only
  once in ``K - 1`` tries, and the root's time is what mixes slowest). Moving times
  past other nodes re-ranks the history.
* **narrow exchange**: pick one of the ``2K-2`` non-root nodes ``j``; if its parent ``p`` is not the
  root, swap ``j`` with ``p``'s sibling ``u`` when ``t_u < t_p``. Times are unchanged and the move
  is its own reverse with the same proposal probability.
* **time-preserving prune and regraft**: pick a non-root ``j`` whose parent ``p`` is not the root,
  prune ``j`` with ``p`` and regraft it, keeping ``t_p``, onto a uniformly chosen lineage of the
  pruned tree alive at time ``t_p``. Forward and reverse moves see the same pruned tree, hence the
  same number of lineages: symmetric. This move changes the topology globally.

The target is ``Kingman(tree) * exp(log_likelihood(tree))``; with the Brownian part marginalised by
messages, ``log_likelihood = lambda t: brownian_log_likelihood(t, W, cov=Lambda)``.

Summaries of tree draws: `clade_probabilities`, `asdsf` (average standard deviation of split
frequencies between chains) and `mcc_tree` (maximum clade credibility).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from bayesmtl.models.tree import Tree, as_tree, clades, from_parent_form, to_parent_form

__all__ = [
    "TreeChain",
    "TreeState",
    "asdsf",
    "clade_probabilities",
    "kingman_times_log_prob",
    "mcc_tree",
    "tree_mcmc",
    "tree_mh_init",
    "tree_mh_step",
]

MOVES = ("time", "exchange", "spr", "root")
DEFAULT_MOVES = ("time", "exchange", "spr")


class TreeChain(NamedTuple):
    """``trees``: list of `Tree` draws; ``accept``: acceptance rate per move type."""

    trees: list
    accept: dict


class TreeState(NamedTuple):
    """Parent form ``par``, node times ``t`` and the current log target (Kingman + likelihood)."""

    par: np.ndarray
    t: np.ndarray
    log_target: float

    @property
    def tree(self) -> Tree:
        return from_parent_form(self.par, self.t)


def kingman_times_log_prob(times, k) -> float:
    """Kingman log density ``-sum_i C(m_i, 2) delta_i`` of sorted merge times ``(K-1,)``: the
    NumPy twin of `~bayesmtl.models.coalescent.kingman_log_prob` for the samplers' inner loops."""
    m = k - np.arange(k - 1)
    return -float(np.sum(m * (m - 1) / 2.0 * np.diff(np.asarray(times, float), prepend=0.0)))


def _kingman_lp(t, k):
    return kingman_times_log_prob(np.sort(t[k:]), k)


def _score(par, t, k, loglik):
    return _kingman_lp(t, k) + float(loglik(from_parent_form(par, t)))


def tree_mh_init(tree, log_likelihood: Callable | None = None) -> TreeState:
    """Start (or re-score, after the likelihood changed) a `TreeState` at ``tree``.

    Examples
    --------
    >>> from bayesmtl.models.tree import tree_from_merges
    >>> s = tree_mh_init(tree_from_merges([[0, 1], [2, 3]], [0.5, 1.5]))
    >>> float(s.log_target)  # Kingman: -3 * 0.5 - 1 * 1.0
    -2.5
    """
    par, t = to_parent_form(tree)
    k = (par.shape[0] + 1) // 2
    lp = _score(par, t, k, (lambda tr: 0.0) if log_likelihood is None else log_likelihood)
    if not np.isfinite(lp):
        raise ValueError("tree: the starting tree has zero density")
    return TreeState(par, t, lp)


def tree_mh_step(
    rng: np.random.Generator,
    state: TreeState,
    log_likelihood: Callable | None = None,
    *,
    root_step: float = 1.0,
    moves: Sequence[str] = DEFAULT_MOVES,
) -> tuple[TreeState, dict]:
    """One Metropolis-Hastings step of each move in ``moves`` (see the module docstring).

    Parameters
    ----------
    rng : numpy.random.Generator
    state : TreeState
        Its ``log_target`` must be for the current ``log_likelihood`` (see `tree_mh_init`).
    log_likelihood : callable, optional
        ``Tree -> float``; omitted: the Kingman prior alone.
    root_step : float
        Half-width of the root's log-scale random walk.
    moves : sequence of {"time", "exchange", "spr", "root"}

    Returns
    -------
    state : TreeState
    accepted : dict
        ``move -> bool``.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesmtl.models.tree import tree_from_merges
    >>> from bayesmtl.inference.tree_mcmc import tree_mh_init
    >>> s = tree_mh_init(tree_from_merges([[0, 1], [2, 3], [4, 5]], [0.5, 1.0, 1.5]))
    >>> s, acc = tree_mh_step(np.random.default_rng(0), s)
    >>> sorted(acc)
    ['exchange', 'spr', 'time']
    """
    loglik = (lambda tr: 0.0) if log_likelihood is None else log_likelihood
    par, t, cur = state
    k = (par.shape[0] + 1) // 2
    nodes = np.arange(2 * k - 1)
    acc = {}
    for move in moves:
        par2, t2, log_hastings = _propose(rng, move, par, t, k, nodes, root_step)
        if par2 is None:
            acc[move] = False
            continue
        new = _score(par2, t2, k, loglik)
        ok = bool(np.log(rng.uniform()) < new - cur + log_hastings)
        if ok:
            par, t, cur = par2, t2, new
        acc[move] = ok
    return TreeState(par, t, cur), acc


def _propose(rng, move, par, t, k, nodes, root_step):
    if move in ("time", "root"):
        j = 2 * k - 2 if move == "root" else rng.integers(k, 2 * k - 1)
        lo = t[par == j].max()
        t2 = t.copy()
        if par[j] < 0:
            t2[j] = lo + (t[j] - lo) * np.exp(rng.uniform(-root_step, root_step))
            return par, t2, np.log((t2[j] - lo) / (t[j] - lo))
        t2[j] = rng.uniform(lo, t[par[j]])
        return par, t2, 0.0
    j = rng.choice(np.flatnonzero(par >= 0))
    p = par[j]
    g = par[p]
    if g < 0:  # the parent is the root: nothing to exchange or regraft
        return None, None, 0.0
    if move == "exchange":
        u = next(c for c in np.flatnonzero(par == g) if c != p)
        if t[u] >= t[p]:
            return None, None, 0.0
        par2 = par.copy()
        par2[j], par2[u] = g, p
        return par2, t, 0.0
    if move == "spr":
        s = next(c for c in np.flatnonzero(par == p) if c != j)
        par2 = par.copy()
        par2[s] = g  # prune p with j
        up = np.where(par2 >= 0, t[np.maximum(par2, 0)], np.inf)
        alive = (t < t[p]) & (up > t[p]) & (nodes != j) & (nodes != p) & (par2 >= 0)
        u = rng.choice(np.flatnonzero(alive))
        par2[p], par2[u] = par2[u], p
        return par2, t, 0.0
    raise ValueError(f"moves: unknown move {move!r}; expected some of {MOVES}")


def _caterpillar(k: int) -> Tree:
    merges = [[0, 1]] + [[i + 1, k + i - 1] for i in range(1, k - 1)]
    return Tree(np.asarray(merges), np.arange(1.0, k))


def tree_mcmc(
    seed: int,
    n_leaves: int,
    *,
    n_steps: int,
    log_likelihood: Callable | None = None,
    init=None,
    thin: int = 1,
    root_step: float = 1.0,
    moves: Sequence[str] = DEFAULT_MOVES,
) -> TreeChain:
    """Run Metropolis-Hastings over ranked trees with times.

    Parameters
    ----------
    seed : int
        Seed of the numpy generator.
    n_leaves : int
        ``K >= 3`` (with 2 leaves only the root time moves).
    n_steps : int
        Iterations; each does one step of every move in ``moves``.
    log_likelihood : callable, optional
        ``Tree -> float``; omitted: sample the Kingman prior.
    init : Tree, optional
        Starting tree; a caterpillar with unit spacing when omitted.
    thin : int
    root_step : float
        Half-width of the root's log-scale random walk.
    moves : sequence of {"time", "exchange", "spr", "root"}

    Examples
    --------
    >>> chain = tree_mcmc(0, 4, n_steps=200)
    >>> len(chain.trees), sorted(chain.accept)
    (200, ['exchange', 'spr', 'time'])
    """
    k = int(n_leaves)
    if k < 3:
        raise ValueError(f"n_leaves: tree MCMC needs at least 3 leaves, got {n_leaves}")
    for name, v in (("n_steps", n_steps), ("thin", thin)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    bad = [m for m in moves if m not in MOVES]
    if bad or not moves:
        raise ValueError(f"moves: expected some of {MOVES}, got {list(moves)}")
    rng = np.random.default_rng(seed)
    state = tree_mh_init(_caterpillar(k) if init is None else init, log_likelihood)
    acc = Counter()
    trees = []
    for step in range(n_steps):
        state, ok = tree_mh_step(rng, state, log_likelihood, root_step=root_step, moves=moves)
        acc.update(m for m, v in ok.items() if v)
        if step % thin == 0:
            trees.append(state.tree)
    return TreeChain(trees, {m: acc[m] / n_steps for m in moves})


def clade_probabilities(trees, *, min_probability: float = 0.0, weights=None) -> dict:
    """Frequency (or weighted frequency) of every non-trivial clade across ``trees``.

    Examples
    --------
    >>> from bayesmtl.models.tree import tree_from_merges
    >>> t = tree_from_merges([[0, 1], [2, 3]], [0.5, 1.5])
    >>> clade_probabilities([t, t])
    {frozenset({0, 1}): 1.0}
    """
    if len(trees) == 0:
        raise ValueError("trees: no trees given")
    w = np.full(len(trees), 1.0 / len(trees)) if weights is None else np.asarray(weights, float)
    if w.shape != (len(trees),) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights: expected one finite non-negative weight per tree")
    w = w / w.sum()
    probs: Counter = Counter()
    for tr, wi in zip(trees, w, strict=True):
        for c in clades(tr):
            probs[c] += wi
    return {c: float(v) for c, v in probs.items() if v >= min_probability}


def asdsf(chains: Sequence[Sequence], *, min_frequency: float = 0.1) -> float:
    """Average standard deviation of split (clade) frequencies between chains.

    For every clade whose frequency reaches ``min_frequency`` in at least one chain, the sample
    standard deviation (``ddof=1``) of its frequencies across chains; their mean. Values below
    about 0.05 indicate that the chains agree on the tree (MrBayes' convention); 0 for identical
    split frequencies.

    Examples
    --------
    >>> from bayesmtl.models.tree import tree_from_merges
    >>> a = tree_from_merges([[0, 1], [2, 3]], [0.5, 1.5])
    >>> b = tree_from_merges([[1, 2], [0, 3]], [0.5, 1.5])
    >>> round(asdsf([[a, a], [b, b]]), 4)   # two clades, frequencies (1, 0): sd 0.7071
    0.7071
    """
    if len(chains) < 2:
        raise ValueError(f"chains: need at least 2 chains, got {len(chains)}")
    freqs = [clade_probabilities(c) for c in chains]
    keys = {c for f in freqs for c, v in f.items() if v >= min_frequency}
    if not keys:
        return 0.0
    table = np.array([[f.get(c, 0.0) for f in freqs] for c in keys])
    return float(table.std(axis=1, ddof=1).mean())


def mcc_tree(trees, *, probabilities: dict | None = None) -> Tree:
    """Maximum clade credibility tree of ``trees`` with mean clade heights.

    The sampled topology maximising the sum of the log posterior probabilities of its clades;
    each internal node gets the mean height of its clade over the draws that contain it (raised,
    where needed, just above its children so that the times stay ordered).

    Examples
    --------
    >>> from bayesmtl.models.tree import tree_from_merges
    >>> a = tree_from_merges([[0, 1], [2, 3]], [0.5, 1.5])
    >>> b = tree_from_merges([[0, 1], [2, 3]], [1.0, 2.5])
    >>> mcc_tree([a, b]).times.tolist()
    [0.75, 2.0]
    """
    if len(trees) == 0:
        raise ValueError("trees: no trees given")
    probs = clade_probabilities(trees) if probabilities is None else probabilities
    scores = [sum(np.log(probs.get(c, 1e-300)) for c in clades(tr)) for tr in trees]
    best = as_tree(trees[int(np.argmax(scores))])
    k = best.n_leaves
    target = clades(best, trivial=True)
    heights: dict = {c: [] for c in target}
    for tr in trees:
        tr = as_tree(tr)
        for c, h in zip(clades(tr, trivial=True), np.asarray(tr.times, float), strict=True):
            if c in heights:
                heights[c].append(h)
    par, t = to_parent_form(best)
    for i, c in enumerate(target):  # merge order: children before parents
        node = k + i
        kids = t[par == node].max()
        t[node] = max(float(np.mean(heights[c])), kids + 1e-9 * (1 + kids))
    return from_parent_form(par, t)

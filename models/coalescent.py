"""Kingman's coalescent over tasks and Brownian diffusion down a tree (Teh, Daume & Roy 2007).

Tree encoding
-------------
A binary tree over ``K`` leaves is a `Tree` of two arrays:

* ``merges`` ``(K-1, 2)`` int: the two children of internal node ``K + i`` (the ``i``-th merge);
* ``times``  ``(K-1,)`` float: the time of the ``i``-th merge.

Leaves are nodes ``0..K-1`` at time 0; internal nodes are ``K..2K-2`` in merge order, so a parent
always has a larger index than its children and the root is node ``2K-2``. Time runs *backwards*
(towards the root) and is positive here: ``0 < t_1 < ... < t_{K-1}``. (Teh et al. and Daume write the
same times as negative numbers.) The order of the merges is part of the value: a ``Tree`` is a *ranked
history*, of which there are ``K!(K-1)!/2^(K-1)``.

`KingmanCoalescent` is a NumPyro distribution whose value is the packed ``(K-1, 3)`` float array
``[left, right, time]`` (see `pack` / `unpack`), so it works with every NumPyro handler.

Brownian diffusion
------------------
A node value ``x_root ~ N(loc, root_var * Lambda)`` and ``x_child ~ N(x_parent, (t_parent - t_child)
Lambda)`` down every edge. The leaves then follow the matrix normal ``MN(1 loc', C, Lambda)`` with

    C_kl = root_var + (t_root - t_LCA(k, l)),

the length of the path shared by leaves ``k`` and ``l`` below the root, plus the root variance
(`tree_covariance`). `brownian_log_likelihood` evaluates the same density in O(K D^2) by upward
message passing; `brownian_log_likelihood_dense` uses ``C`` (O(K^3)).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import Distribution, constraints

__all__ = [
    "BrownianTree",
    "KingmanCoalescent",
    "Messages",
    "Tree",
    "as_tree",
    "brownian_log_likelihood",
    "brownian_log_likelihood_dense",
    "clades",
    "kingman_log_prob",
    "leaf_membership",
    "node_times",
    "pack",
    "parents",
    "ranked_histories",
    "to_newick",
    "tree_covariance",
    "tree_from_merges",
    "unpack",
    "upward_messages",
]


# --------------------------------------------------------------------------- tree arrays
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


# --------------------------------------------------------------------------- Kingman prior
def kingman_log_prob(tree) -> jax.Array:
    """Log density of a ranked history with merge times under Kingman's coalescent.

    ``sum_i -C(m_i, 2) (t_i - t_{i-1})`` with ``m_i = K - i + 1`` lineages before merge ``i``
    (``t_0 = 0``): every pair merges at rate 1. Invalid histories (a child used twice or before it
    exists, decreasing times) get ``-inf``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> t = tree_from_merges([[0, 1], [2, 3]], [0.5, 1.5])
    >>> float(kingman_log_prob(t))   # -3*0.5 - 1*1.0
    -2.5
    """
    tree = as_tree(tree)
    merges, times = tree.merges, tree.times
    k = merges.shape[-2] + 1
    m = k - jnp.arange(k - 1)
    c = m * (m - 1) / 2.0
    deltas = jnp.diff(times, prepend=jnp.zeros_like(times[..., :1]), axis=-1)
    lp = -jnp.sum(c * deltas, axis=-1)
    return jnp.where(_valid(merges, deltas), lp, -jnp.inf)


def _valid(merges, deltas):
    k = merges.shape[-2] + 1
    node = k + jnp.arange(k - 1)
    ok_order = jnp.all(merges < node[:, None], axis=(-2, -1)) & jnp.all(merges >= 0, axis=(-2, -1))
    ok_pair = jnp.all(merges[..., 0] != merges[..., 1], axis=-1)

    def counts(mg):
        return jnp.zeros(2 * k - 1, jnp.int32).at[mg.reshape(-1)].add(1)

    c = counts(merges) if merges.ndim == 2 else jax.vmap(counts)(merges.reshape(-1, k - 1, 2))
    c = c.reshape(merges.shape[:-2] + (2 * k - 1,))
    ok_once = jnp.all(c[..., : 2 * k - 2] == 1, axis=-1)
    return ok_order & ok_pair & ok_once & jnp.all(deltas >= 0, axis=-1)


class _RankedHistory(constraints.Constraint):
    event_dim = 2

    def __call__(self, x):
        merges = jnp.round(x[..., :2]).astype(jnp.int32)
        deltas = jnp.diff(x[..., 2], prepend=jnp.zeros_like(x[..., :1, 2]), axis=-1)
        return _valid(merges, deltas)

    def feasible_like(self, prototype):
        k = prototype.shape[-2] + 1
        left = jnp.concatenate([jnp.array([0]), k + jnp.arange(k - 2)])
        right = jnp.arange(1, k)
        x = jnp.stack([left, right, jnp.arange(1, k)], -1).astype(prototype.dtype)
        return jnp.broadcast_to(x, prototype.shape)


class KingmanCoalescent(Distribution):
    """Kingman's coalescent over ``n_leaves`` leaves: a distribution over ranked trees with times.

    The value is the packed ``(n_leaves - 1, 3)`` array ``[left child, right child, merge time]``
    (`unpack` turns it into a `Tree`). With ``m`` lineages the next merge comes after an
    ``Exponential(C(m, 2))`` wait and joins a uniformly chosen pair, so the density of a ranked
    history is ``prod_i exp(-C(m_i, 2) delta_i)``.

    Parameters
    ----------
    n_leaves : int
        Number of leaves (tasks), at least 2.

    Examples
    --------
    >>> import jax
    >>> d = KingmanCoalescent(5)
    >>> v = d.sample(jax.random.PRNGKey(0))
    >>> v.shape, bool(jnp.isfinite(d.log_prob(v)))
    ((4, 3), True)
    """

    arg_constraints: dict = {}  # noqa: RUF012  (NumPyro's convention)
    pytree_aux_fields = ("n_leaves",)

    def __init__(self, n_leaves: int, *, validate_args=None):
        if not isinstance(n_leaves, (int, np.integer)) or isinstance(n_leaves, bool):
            raise ValueError(f"n_leaves: expected an int, got {n_leaves!r}")
        if n_leaves < 2:
            raise ValueError(f"n_leaves: a tree needs at least 2 leaves (tasks), got {n_leaves}")
        self.n_leaves = int(n_leaves)
        super().__init__(
            batch_shape=(), event_shape=(self.n_leaves - 1, 3), validate_args=validate_args
        )

    @constraints.dependent_property(is_discrete=True, event_dim=2)
    def support(self):
        return _RankedHistory()

    def sample(self, key, sample_shape=()):
        n = int(np.prod(sample_shape)) if sample_shape else 1
        keys = jax.random.split(key, n)
        out = jax.vmap(lambda k: pack(_sample_tree(k, self.n_leaves)))(keys)
        return out.reshape(tuple(sample_shape) + self.event_shape)

    def sample_tree(self, key) -> Tree:
        """One draw as a `Tree`."""
        return _sample_tree(key, self.n_leaves)

    def log_prob(self, value):
        return kingman_log_prob(value)

    @property
    def mean_height(self) -> float:
        """``E[t_root] = 2 (1 - 1/n)``."""
        return 2.0 * (1.0 - 1.0 / self.n_leaves)


def _sample_tree(key, k: int) -> Tree:
    def step(carry, inp):
        active, t = carry
        i, key = inp
        m = k - i
        k1, k2, k3 = jax.random.split(key, 3)
        t = t + jax.random.exponential(k1) / (m * (m - 1) / 2.0)
        a = jax.random.randint(k2, (), 0, m)
        b = jax.random.randint(k3, (), 0, m - 1)
        b = jnp.where(b >= a, b + 1, b)
        lo, hi = jnp.minimum(a, b), jnp.maximum(a, b)
        pair = jnp.sort(jnp.stack([active[a], active[b]]))
        active = active.at[lo].set((k + i).astype(jnp.int32))
        active = active.at[hi].set(active[m - 1])
        return (active, t), (pair, t)

    keys = jax.random.split(key, k - 1)
    init = (jnp.arange(k, dtype=jnp.int32), jnp.zeros((), jnp.result_type(float)))
    _, (merges, times) = jax.lax.scan(step, init, (jnp.arange(k - 1), keys))
    return Tree(merges.astype(jnp.int32), times)


# --------------------------------------------------------------------------- Brownian diffusion
def tree_covariance(tree, root_var: float = 1.0) -> jax.Array:
    """Leaf covariance ``C`` of Brownian motion down the tree, shape ``(K, K)``.

    ``C_kl = root_var + t_root - t_LCA(k, l)``: the length of the path that leaves ``k`` and ``l``
    share below the root, plus the root's variance. ``C_kk = root_var + t_root``. Leaf values
    follow ``MN(1 loc', C, Lambda)``.

    Examples
    --------
    >>> t = tree_from_merges([[0, 1], [2, 3]], [0.5, 1.5])
    >>> tree_covariance(t, 1.0).tolist()
    [[2.5, 2.0, 1.0], [2.0, 2.5, 1.0], [1.0, 1.0, 2.5]]
    """
    tree = as_tree(tree)
    tn = node_times(tree)
    par = parents(tree)
    edge = jnp.where(par >= 0, tn[jnp.maximum(par, 0)] - tn, 0.0)
    b = leaf_membership(tree).astype(tn.dtype)
    return root_var + (b * edge[:, None]).T @ b


class Messages(NamedTuple):
    """Upward Brownian messages: per node mean ``(2K-1, D)`` and variance ``(2K-1,)``; per merge
    the child difference ``m_l - m_r`` ``(K-1, D)`` and its variance factor ``a_l + a_r``."""

    mean: jax.Array
    var: jax.Array
    diff: jax.Array
    spread: jax.Array


def upward_messages(tree, x) -> Messages:
    """Belief propagation from the leaves ``x`` ``(K, D)`` to the root (Teh et al. 2007).

    Leaf: mean ``x_k``, variance 0. Merging ``l`` and ``r`` at ``t_i``: ``a_b = v_b + t_i - t_b``,
    ``v = (1/a_l + 1/a_r)^-1``, ``mean = v (m_l/a_l + m_r/a_r)``; the local evidence is
    ``N(m_l; m_r, (a_l + a_r) Lambda)``. Variances are multiples of ``Lambda``, which is not needed.
    """
    tree = as_tree(tree)
    k, d = x.shape
    tn = node_times(tree)
    mean = jnp.zeros((2 * k - 1, d), x.dtype).at[:k].set(x)
    var = jnp.zeros(2 * k - 1, x.dtype)

    def step(carry, i):
        mean, var = carry
        l, r = tree.merges[i, 0], tree.merges[i, 1]
        t = tn[k + i]
        al = var[l] + t - tn[l]
        ar = var[r] + t - tn[r]
        v = al * ar / (al + ar)
        mu = (mean[l] * ar + mean[r] * al) / (al + ar)
        return (mean.at[k + i].set(mu), var.at[k + i].set(v)), (mean[l] - mean[r], al + ar)

    (mean, var), (diff, spread) = jax.lax.scan(step, (mean, var), jnp.arange(k - 1))
    return Messages(mean, var, diff, spread)


def _chol_solve_quad(chol, a):
    z = jax.scipy.linalg.solve_triangular(chol, a.T, lower=True)
    return jnp.sum(z * z, axis=0)


def brownian_log_likelihood(tree, x, *, loc=0.0, cov=None, root_var: float = 1.0) -> jax.Array:
    """Log density of leaf values ``x`` ``(K, D)`` under Brownian diffusion down ``tree``.

    Product of the local evidences ``N(m_l; m_r, (a_l + a_r) Lambda)`` and the root term
    ``N(m_root; loc, (v_root + root_var) Lambda)``; O(K D^2). Equals
    `brownian_log_likelihood_dense`.

    Parameters
    ----------
    tree : Tree or packed array
    x : array, shape (K, D)
    loc : array, shape (D,) or scalar
        Mean of the root.
    cov : array, shape (D, D), optional
        ``Lambda``; identity when omitted.
    root_var : float
        Variance factor of the root around ``loc``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> t = tree_from_merges([[0, 1]], [1.0])
    >>> ll = brownian_log_likelihood(t, jnp.zeros((2, 1)), root_var=1.0)
    """
    x = jnp.asarray(x)
    k, d = x.shape
    msg = upward_messages(tree, x)
    root_diff = msg.mean[-1] - loc
    root_s = msg.var[-1] + root_var
    if cov is None:
        quad = jnp.sum(msg.diff**2, -1)
        root_quad = jnp.sum(root_diff**2)
        logdet = 0.0
    else:
        chol = jnp.linalg.cholesky(cov)
        quad = _chol_solve_quad(chol, msg.diff)
        root_quad = _chol_solve_quad(chol, root_diff[None])[0]
        logdet = 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
    terms = -0.5 * d * jnp.log(2 * jnp.pi * msg.spread) - 0.5 * quad / msg.spread
    root = -0.5 * d * jnp.log(2 * jnp.pi * root_s) - 0.5 * root_quad / root_s
    return jnp.sum(terms) + root - 0.5 * k * logdet


def brownian_log_likelihood_dense(tree, x, *, loc=0.0, cov=None, root_var: float = 1.0):
    """The same density as `brownian_log_likelihood` through ``MN(1 loc', C, Lambda)`` (O(K^3))."""
    x = jnp.asarray(x)
    k, d = x.shape
    c = tree_covariance(tree, root_var)
    cov = jnp.eye(d, dtype=x.dtype) if cov is None else jnp.asarray(cov)
    lc = jnp.linalg.cholesky(c)
    ll = jnp.linalg.cholesky(cov)
    e = x - loc
    z = jax.scipy.linalg.solve_triangular(lc, e, lower=True)
    z = jax.scipy.linalg.solve_triangular(ll, z.T, lower=True)
    logdet = d * 2 * jnp.sum(jnp.log(jnp.diag(lc))) + k * 2 * jnp.sum(jnp.log(jnp.diag(ll)))
    return -0.5 * (k * d * jnp.log(2 * jnp.pi) + logdet + jnp.sum(z * z))


class BrownianTree(Distribution):
    """Leaf values ``(K, D)`` of Brownian diffusion down a fixed tree; log density by messages.

    Parameters
    ----------
    tree : Tree or packed array
    loc : array, shape (D,)
        Root mean.
    cov : array, shape (D, D)
        Diffusion covariance ``Lambda`` (per unit time).
    root_var : float
        Root variance factor.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> t = tree_from_merges([[0, 1], [2, 3]], [0.5, 1.5])
    >>> d = BrownianTree(t, jnp.zeros(2), jnp.eye(2))
    >>> d.sample(jax.random.PRNGKey(0)).shape
    (3, 2)
    """

    arg_constraints = {
        "loc": constraints.real_vector,
        "cov": constraints.positive_definite,
    }
    support = constraints.independent(constraints.real, 2)
    pytree_data_fields = ("tree", "loc", "cov", "root_var")

    def __init__(self, tree, loc, cov, root_var=1.0, *, validate_args=None):
        self.tree = as_tree(tree)
        self.loc = jnp.asarray(loc)
        self.cov = jnp.asarray(cov)
        self.root_var = root_var
        k = self.tree.merges.shape[0] + 1
        super().__init__(
            batch_shape=(), event_shape=(k, self.cov.shape[-1]), validate_args=validate_args
        )

    def sample(self, key, sample_shape=()):
        n = int(np.prod(sample_shape)) if sample_shape else 1
        out = jax.vmap(self._sample_one)(jax.random.split(key, n))
        return out.reshape(tuple(sample_shape) + self.event_shape)

    def _sample_one(self, key):
        k, d = self.event_shape
        tn = node_times(self.tree)
        par = parents(self.tree)
        edge = jnp.where(par >= 0, tn[jnp.maximum(par, 0)] - tn, self.root_var)
        eps = jax.random.normal(key, (2 * k - 1, d)) @ jnp.linalg.cholesky(self.cov).T
        incr = eps * jnp.sqrt(edge)[:, None]

        def step(vals, j):  # parents have larger indices: walk down from the root
            base = jnp.where(par[j] >= 0, vals[jnp.maximum(par[j], 0)], self.loc)
            return vals.at[j].set(base + incr[j]), None

        vals, _ = jax.lax.scan(step, jnp.zeros((2 * k - 1, d)), jnp.arange(2 * k - 2, -1, -1))
        return vals[:k]

    def log_prob(self, value):
        return brownian_log_likelihood(
            self.tree, value, loc=self.loc, cov=self.cov, root_var=self.root_var
        )

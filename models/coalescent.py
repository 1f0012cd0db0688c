"""Kingman's coalescent over tasks and Brownian diffusion down a tree (Teh, Daume & Roy 2007).

Tree encoding
-------------
Trees are the arrays of `bayesmtl.models.tree` (re-exported here): ``merges (K-1, 2)`` children of
internal node ``K+i``, ``times (K-1,)`` positive merge times growing towards the root (Teh et al. and
Daume write the same times as negative numbers), leaves ``0..K-1`` at time 0.

`KingmanCoalescent` is a NumPyro distribution whose value is the packed ``(K-1, 3)`` float array
``[left, right, time]`` (see `pack` / `unpack`), so it works with every NumPyro handler.

Brownian diffusion
------------------
A node value ``x_root ~ N(loc, root_var * Lambda)`` and ``x_child ~ N(x_parent, (t_parent - t_child)
Lambda)`` down every edge. The leaves then follow the matrix normal ``MN(1 loc', C, Lambda)`` with

    C_kl = root_var + (t_root - t_LCA(k, l)),

the length of the path shared by leaves ``k`` and ``l`` below the root, plus the root variance
(`tree_covariance`); ``leaf_var > 0`` (not in the paper) lengthens every leaf's branch, adding
``leaf_var`` to the diagonal. `brownian_log_likelihood` evaluates the same density in O(K D^2) by upward
message passing; `brownian_log_likelihood_dense` uses ``C`` (O(K^3)).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from bayesmtl.models.tree import (
    Tree,
    as_tree,
    clades,
    from_parent_form,
    leaf_membership,
    node_times,
    pack,
    parents,
    ranked_histories,
    to_newick,
    to_parent_form,
    tree_from_merges,
    unpack,
)
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
    "from_parent_form",
    "kingman_log_prob",
    "leaf_membership",
    "node_times",
    "pack",
    "parents",
    "ranked_histories",
    "to_newick",
    "to_parent_form",
    "tree_covariance",
    "tree_from_merges",
    "unpack",
    "upward_messages",
]


# --------------------------------------------------------------------------- Kingman prior
def kingman_log_prob(tree) -> jax.Array:
    """Log density of a ranked history with merge times under Kingman's coalescent.

    ``sum_i -C(m_i, 2) (t_i - t_{i-1})`` with ``m_i = K - i + 1`` lineages before merge ``i``
    (``t_0 = 0``): every pair merges at rate 1. Invalid histories (a child used twice or before it
    exists, decreasing times) get ``-inf``.

    Examples
    --------
    >>> from bayesmtl.models.tree import tree_from_merges
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
    >>> import jax, jax.numpy as jnp
    >>> d = KingmanCoalescent(5)
    >>> v = d.sample(jax.random.PRNGKey(0))
    >>> v.shape, bool(jnp.isfinite(d.log_prob(v)))
    ((4, 3), True)
    """

    arg_constraints: dict = {}  # noqa: RUF012  (NumPyro's convention)
    pytree_aux_fields = ("n_leaves",)

    def __init__(self, n_leaves: int, *, validate_args=None):
        if not isinstance(n_leaves, (int, np.integer)) or isinstance(n_leaves, bool):
            raise ValueError(f"n_leaves: expected an int, got {n_leaves!r}")  # noqa: TRY004
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
def tree_covariance(tree, root_var: float = 1.0, leaf_var=0.0) -> jax.Array:
    """Leaf covariance ``C`` of Brownian motion down the tree, shape ``(K, K)``.

    ``C_kl = root_var + t_root - t_LCA(k, l)``: the length of the path that leaves ``k`` and ``l``
    share below the root, plus the root's variance. ``C_kk = root_var + t_root + leaf_var``: a
    ``leaf_var > 0`` lengthens every leaf's branch by that much (independent task-level variation
    below the tree). Leaf values follow ``MN(1 loc', C, Lambda)``.

    Examples
    --------
    >>> from bayesmtl.models.tree import tree_from_merges
    >>> t = tree_from_merges([[0, 1], [2, 3]], [0.5, 1.5])
    >>> tree_covariance(t, 1.0).tolist()
    [[2.5, 2.0, 1.0], [2.0, 2.5, 1.0], [1.0, 1.0, 2.5]]
    """
    tree = as_tree(tree)
    tn = node_times(tree)
    par = parents(tree)
    edge = jnp.where(par >= 0, tn[jnp.maximum(par, 0)] - tn, 0.0)
    b = leaf_membership(tree).astype(tn.dtype)
    return root_var + (b * edge[:, None]).T @ b + leaf_var * jnp.eye(tree.n_leaves, dtype=tn.dtype)


class Messages(NamedTuple):
    """Upward Brownian messages: per node mean ``(2K-1, D)`` and variance ``(2K-1,)``; per merge
    the child difference ``m_l - m_r`` ``(K-1, D)`` and its variance factor ``a_l + a_r``."""

    mean: jax.Array
    var: jax.Array
    diff: jax.Array
    spread: jax.Array


def upward_messages(tree, x, leaf_var=0.0) -> Messages:
    """Belief propagation from the leaves ``x`` ``(K, D)`` to the root (Teh et al. 2007).

    Leaf: mean ``x_k``, variance ``leaf_var`` (0 in the paper's model). Merging ``l`` and ``r`` at ``t_i``: ``a_b = v_b + t_i - t_b``,
    ``v = (1/a_l + 1/a_r)^-1``, ``mean = v (m_l/a_l + m_r/a_r)``; the local evidence is
    ``N(m_l; m_r, (a_l + a_r) Lambda)``. Variances are multiples of ``Lambda``, which is not needed.
    """
    tree = as_tree(tree)
    k, d = x.shape
    tn = node_times(tree)
    mean = jnp.zeros((2 * k - 1, d), x.dtype).at[:k].set(x)
    var = jnp.zeros(2 * k - 1, x.dtype).at[:k].set(leaf_var)

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


def brownian_log_likelihood(
    tree, x, *, loc=0.0, cov=None, root_var: float = 1.0, leaf_var=0.0
) -> jax.Array:
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
    leaf_var : float
        Extra length of every leaf's branch (see `tree_covariance`).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from bayesmtl.models.tree import tree_from_merges
    >>> t = tree_from_merges([[0, 1]], [1.0])
    >>> ll = brownian_log_likelihood(t, jnp.zeros((2, 1)), root_var=1.0)
    """
    x = jnp.asarray(x)
    k, d = x.shape
    msg = upward_messages(tree, x, leaf_var)
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


def brownian_log_likelihood_dense(
    tree, x, *, loc=0.0, cov=None, root_var: float = 1.0, leaf_var=0.0
):
    """The same density as `brownian_log_likelihood` through ``MN(1 loc', C, Lambda)`` (O(K^3))."""
    x = jnp.asarray(x)
    k, d = x.shape
    c = tree_covariance(tree, root_var, leaf_var)
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
    leaf_var : float
        Extra length of every leaf's branch (0 in the paper's model).

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from bayesmtl.models.tree import tree_from_merges
    >>> t = tree_from_merges([[0, 1], [2, 3]], [0.5, 1.5])
    >>> d = BrownianTree(t, jnp.zeros(2), jnp.eye(2))
    >>> d.sample(jax.random.PRNGKey(0)).shape
    (3, 2)
    """

    arg_constraints = {  # noqa: RUF012  (NumPyro's convention)
        "loc": constraints.real_vector,
        "cov": constraints.positive_definite,
    }
    support = constraints.independent(constraints.real, 2)
    pytree_data_fields = ("tree", "loc", "cov", "root_var", "leaf_var")

    def __init__(self, tree, loc, cov, root_var=1.0, leaf_var=0.0, *, validate_args=None):
        self.tree = as_tree(tree)
        self.loc = jnp.asarray(loc)
        self.cov = jnp.asarray(cov)
        self.root_var = root_var
        self.leaf_var = leaf_var
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
        edge = edge.at[:k].add(self.leaf_var)
        eps = jax.random.normal(key, (2 * k - 1, d)) @ jnp.linalg.cholesky(self.cov).T
        incr = eps * jnp.sqrt(edge)[:, None]

        def step(vals, j):  # parents have larger indices: walk down from the root
            base = jnp.where(par[j] >= 0, vals[jnp.maximum(par[j], 0)], self.loc)
            return vals.at[j].set(base + incr[j]), None

        vals, _ = jax.lax.scan(step, jnp.zeros((2 * k - 1, d)), jnp.arange(2 * k - 2, -1, -1))
        return vals[:k]

    def log_prob(self, value):
        return brownian_log_likelihood(
            self.tree, value, loc=self.loc, cov=self.cov, root_var=self.root_var,
            leaf_var=self.leaf_var,
        )

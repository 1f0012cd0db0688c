"""Greedy agglomerative coalescent inference for Brownian diffusion (Teh, Daume & Roy 2007).

Given leaf vectors ``x`` ``(K, D)`` (task weights) and a diffusion covariance ``Lambda``, build a ranked
tree bottom-up. Every candidate pair ``(l, r)`` has the upward messages of its subtrees (mean ``m``,
variance ``v`` in units of ``Lambda``, time ``t``); merging them ``delta`` after the previous merge
scores

    -c delta + log N(m_l; m_r, (A + 2 delta) Lambda),   A = v_l + v_r + 2 t_prev - t_l - t_r,

the log Kingman prior of the wait plus the local evidence. Setting the derivative to zero gives the
closed-form optimal duration (`optimal_duration`)

    delta* = (sqrt(D^2 + 4 c q) - D) / (4 c) - A / 2,    q = |m_l - m_r|^2_Lambda,

clipped at ``min_duration`` (times here are positive and grow towards the root; Teh et al. write them
negative).

* **Greedy-MaxProb**: ``c = C(m, 2)`` for ``m`` current lineages; merge the pair with the largest score
  at its optimal duration. Pair distances are cached; the scores are recomputed for all live pairs
  each step (vectorised), O(K^3) flops with a small constant.
* **Greedy-Rate1**: every pair coalesces at rate 1 independently (``c = 1``, counted from the later
  of its two subtrees' times), so a pair's proposed time never changes once computed; merge the pair
  with the earliest proposed time (clipped to the last merge time). O(K^2) pair evaluations; the
  earliest pair is found by an argmin over the live block of a cached matrix.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from bayesmtl.models.coalescent import Tree
from scipy.linalg import solve_triangular

__all__ = ["GREEDY_METHODS", "greedy_coalescent", "optimal_duration"]

GREEDY_METHODS = ("maxprob", "rate1")


def optimal_duration(q, a, *, rate, dim, min_duration: float = 0.0):
    """Closed-form maximiser of ``-rate * delta + log N(d; 0, (a + 2 delta) Lambda)`` over ``delta``.

    Parameters
    ----------
    q : array_like
        Squared Mahalanobis distance ``|m_l - m_r|^2_Lambda`` of the two messages.
    a : array_like
        ``v_l + v_r + 2 t_prev - t_l - t_r`` (the variance factor at ``delta = 0``).
    rate : float
        ``C(m, 2)`` for Greedy-MaxProb, 1 for Greedy-Rate1.
    dim : int
        Dimension ``D``.
    min_duration : float
        Lower clip (0 gives the constrained optimum on ``delta >= 0``; the objective is concave
        in ``delta``).

    Examples
    --------
    >>> round(float(optimal_duration(4.0, 0.0, rate=1.0, dim=1)), 6)   # (sqrt(17) - 1) / 4
    0.780776
    """
    q = np.asarray(q, dtype=float)
    a = np.asarray(a, dtype=float)
    d = (np.sqrt(dim * dim + 4.0 * rate * q) - dim) / (4.0 * rate) - 0.5 * a
    return np.maximum(d, min_duration)


def _local_score(q, s, rate, delta, dim):
    s = np.maximum(s, 1e-300)
    return -rate * delta - 0.5 * dim * np.log(2 * np.pi * s) - 0.5 * np.where(q > 0, q / s, 0.0)


def _validate(x, cov, method, min_duration):
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"x: expected a 2-D array (tasks, features), got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"x: a tree needs at least 2 tasks, got {x.shape[0]}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"x: {int((~np.isfinite(x)).sum())} non-finite task weight(s) (NaN/inf)")
    if method not in GREEDY_METHODS:
        raise ValueError(f"method: expected one of {GREEDY_METHODS}, got {method!r}")
    if not (np.isfinite(min_duration) and min_duration >= 0):
        raise ValueError(f"min_duration: expected a finite value >= 0, got {min_duration}")
    if cov is not None:
        cov = np.asarray(cov, dtype=float)
        d = x.shape[1]
        if cov.shape != (d, d):
            raise ValueError(f"cov: expected shape ({d}, {d}), got {cov.shape}")
        if not np.all(np.isfinite(cov)):
            raise ValueError("cov: contains NaN or inf")
        try:
            chol = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            raise ValueError("cov: not positive definite") from None
        x = solve_triangular(chol, x.T, lower=True).T
    return x


def greedy_coalescent(x, *, cov=None, method: str = "maxprob", min_duration: float = 0.0) -> Tree:
    """Greedy agglomerative coalescent tree over the rows of ``x``.

    Parameters
    ----------
    x : array_like, shape (K, D)
        Leaf vectors (e.g. task weights); ``K >= 2``, finite.
    cov : array_like, shape (D, D), optional
        Diffusion covariance ``Lambda`` (identity when omitted); ``x`` is whitened by it.
    method : {"maxprob", "rate1"}
        Greedy-MaxProb or Greedy-Rate1 (see the module docstring).
    min_duration : float
        Smallest allowed wait between consecutive merges (keeps the Brownian density bounded
        when leaves coincide).

    Returns
    -------
    Tree
        Merges in order with their times (float64 numpy-backed arrays).

    Examples
    --------
    >>> import numpy as np
    >>> t = greedy_coalescent(np.array([[0.0], [0.1], [5.0]]))
    >>> t.merges.tolist()
    [[0, 1], [2, 3]]
    """
    x = _validate(x, cov, method, min_duration)
    k, dim = x.shape
    mean = x.copy()
    var = np.zeros(k)
    tim = np.zeros(k)
    node = np.arange(k)
    sq = np.einsum("ij,ij->i", mean, mean)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * mean @ mean.T, 0.0)
    if method == "rate1":
        first = optimal_duration(dist, 0.0, rate=1.0, dim=dim, min_duration=min_duration)
        np.fill_diagonal(first, np.inf)
        due = first  # proposed merge time of every pair
    merges = np.zeros((k - 1, 2), np.int64)
    times = np.zeros(k - 1)
    t_prev = 0.0
    for i in range(k - 1):
        m = k - i
        if method == "maxprob":
            c = m * (m - 1) / 2.0
            q = dist[:m, :m]
            a = var[:m, None] + var[None, :m] + 2 * t_prev - tim[:m, None] - tim[None, :m]
            delta = optimal_duration(q, a, rate=c, dim=dim, min_duration=min_duration)
            score = _local_score(q, a + 2 * delta, c, delta, dim)
            np.fill_diagonal(score, -np.inf)
            p, r = np.unravel_index(np.argmax(score), score.shape)
            t_new = t_prev + delta[p, r]
        else:
            blk = due[:m, :m]
            p, r = np.unravel_index(np.argmin(blk), blk.shape)
            t_new = max(blk[p, r], t_prev + min_duration)
        al = var[p] + t_new - tim[p]
        ar = var[r] + t_new - tim[r]
        new_mean = (mean[p] * ar + mean[r] * al) / (al + ar)
        new_var = al * ar / (al + ar)
        merges[i] = sorted((node[p], node[r]))
        times[i] = t_new
        t_prev = t_new
        lo, hi, last = min(p, r), max(p, r), m - 1
        if hi != last:  # move the last live slot into the freed one
            mean[hi], var[hi], tim[hi], node[hi] = mean[last], var[last], tim[last], node[last]
            dist[hi, :] = dist[last, :]
            dist[:, hi] = dist[:, last]
            if method == "rate1":
                due[hi, :] = due[last, :]
                due[:, hi] = due[:, last]
        mean[lo], var[lo], tim[lo], node[lo] = new_mean, new_var, t_new, k + i
        live = m - 1
        row = np.sum((mean[:live] - new_mean) ** 2, axis=1)
        row[lo] = 0.0
        dist[lo, :live] = row
        dist[:live, lo] = row
        if method == "rate1":
            a = var[lo] + var[:live] + t_new - tim[:live]  # pair starts at t_new
            prop = t_new + optimal_duration(row, a, rate=1.0, dim=dim, min_duration=min_duration)
            prop[lo] = np.inf
            due[lo, :live] = prop
            due[:live, lo] = prop
    return Tree(jnp.asarray(merges, jnp.int32), jnp.asarray(times))

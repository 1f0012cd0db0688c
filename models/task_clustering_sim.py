"""Simulation for the Bakker & Heskes task-clustering family.

Re-exported by ``bayesmtl.models.task_clustering``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from bayesmtl.data.taskdata import TaskData

__all__ = ["simulate"]


def simulate(key, *, prior: str = "clustering", n_tasks: int = 30, n_per_task: int = 20,
             n_features: int = 2, n_clusters: int = 3, hidden: int = 0,
             activation: str = "tanh", n_task_features: int = 2, separation: float = 4.0,
             within_scale: float = 0.3, noise_scale: float = 0.5, noise: str = "shared",
             gate_scale: float = 4.0, intercept: bool = True) -> tuple[TaskData, dict]:
    """Draw tasks ``y = A_i' h(x) + noise`` with ``A_i`` from one of the four priors.

    Cluster means are well separated on the bias coordinate (the last one): ``m_a[-1] =
    separation * (a - (C - 1) / 2)``, increasing in ``a`` (so the true labels follow the models'
    ordering constraint); other coordinates are standard normal; within-cluster covariance
    ``within_scale**2 I``.  For ``"gating"`` the labels come from ``softmax(U' f_i)`` with
    ``U ~ N(0, gate_scale**2)``, so the task features are informative; for ``"clustering"``
    they are drawn but unrelated to the labels.

    Parameters
    ----------
    key : jax.Array
        PRNG key.
    prior : {"gaussian", "task_mean", "clustering", "gating"}
    n_tasks, n_per_task, n_features, n_clusters, hidden, n_task_features : int
        Sizes; ``hidden=0`` is the linear case.
    separation, within_scale, noise_scale, gate_scale : float
    noise : {"shared", "task"}
    intercept : bool
        Whether ``M``/``U`` act on ``[1, f_i]`` (as in the models' default).

    Returns
    -------
    data : TaskData
        With ``task_features`` (``(n_tasks, n_task_features)``) when ``n_task_features > 0``.
    truth : dict
        ``A``, ``labels``, ``cluster_mean``, ``cov``, ``weights``/``gates``/``mean``/``mean_map``,
        ``W`` (``None`` if linear), ``noise_scale`` (``(n_tasks,)``).

    Examples
    --------
    >>> import jax
    >>> data, truth = simulate(jax.random.key(0), n_tasks=6, n_per_task=5)
    >>> data.n, truth["A"].shape
    (30, (6, 3))
    """
    from bayesmtl.models.task_clustering import PRIORS, hidden_features, task_design

    if prior not in PRIORS:
        raise ValueError(f"prior: expected one of {PRIORS}, got {prior!r}")
    for name, v in (("n_tasks", n_tasks), ("n_per_task", n_per_task), ("n_features", n_features),
                    ("n_clusters", n_clusters)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name}: must be an integer >= 1, got {v!r}")
    if prior in ("task_mean", "gating") and n_task_features < 1:
        raise ValueError(f"n_task_features: prior={prior!r} needs >= 1, got {n_task_features}")
    if noise not in ("shared", "task"):
        raise ValueError(f"noise: expected 'shared' or 'task', got {noise!r}")
    T, d = int(n_tasks), int(n_features)
    C = int(n_clusters) if prior in ("clustering", "gating") else 1
    ks = jax.random.split(key, 10)
    X = jax.random.normal(ks[0], (T * n_per_task, d))
    task = np.repeat(np.arange(T), n_per_task)
    W = None
    if hidden > 0:
        W = jax.random.normal(ks[1], (d + 1, hidden)) / np.sqrt(d + 1)
    Hx = hidden_features(X, W, activation=activation)
    p = Hx.shape[1]
    F = jax.random.normal(ks[2], (T, n_task_features)) if n_task_features > 0 else None
    truth: dict = {"W": W}
    z = jax.random.normal(ks[3], (T, p))
    if prior in ("clustering", "gating"):
        means = jax.random.normal(ks[4], (C, p))
        means = means.at[:, -1].set(separation * (jnp.arange(C) - (C - 1) / 2))
        if prior == "clustering":
            q = jax.random.dirichlet(ks[5], jnp.full(C, 10.0))
            logits = jnp.broadcast_to(jnp.log(q), (T, C))
            truth["weights"] = q
        else:
            Ft = task_design(F, intercept=intercept)
            U = gate_scale * jax.random.normal(ks[5], (Ft.shape[1], C))
            logits = jax.nn.log_softmax(Ft @ U, axis=-1)
            truth["gates"] = U
        labels = jax.random.categorical(ks[6], logits, axis=-1)
        A = means[labels] + within_scale * z
        truth.update(cluster_mean=means, labels=np.asarray(labels))
    elif prior == "gaussian":
        m = jax.random.normal(ks[4], (p,))
        A = m + within_scale * z
        truth.update(mean=m, labels=np.zeros(T, int))
    else:
        Ft = task_design(F, intercept=intercept)
        M = jax.random.normal(ks[4], (p, Ft.shape[1]))
        A = Ft @ M.T + within_scale * z
        truth.update(mean_map=M, labels=np.zeros(T, int))
    truth["cov"] = within_scale**2 * jnp.eye(p)
    sig = jnp.full(T, noise_scale)
    if noise == "task":
        sig = noise_scale * jnp.exp(0.3 * jax.random.normal(ks[7], (T,)))
    truth.update(A=A, noise_scale=sig)
    mu = jnp.sum(Hx * A[task], axis=-1)
    y = mu + sig[task] * jax.random.normal(ks[8], mu.shape)
    data = TaskData(X=np.asarray(X), y=np.asarray(y), task=task, n_tasks=T,
                    task_features=None if F is None else np.asarray(F))
    return data, truth

"""Latent task hierarchies (Daume III 2009): task weights or log scales diffuse down a coalescent tree.

Both models are conditioned on a given tree (``tree=``, a `~bayesmtl.models.coalescent.Tree` or the
packed array a `KingmanCoalescent` draws); the tree itself is handled by the inference routine that
owns it (the EMs and tree samplers of `bayesmtl.inference`). Given the tree the Brownian part is Gaussian:
leaf values follow ``MN(1 loc', C, Lambda)`` with ``C_kl = root_var + t_root - t_LCA(k, l)``
(`~bayesmtl.models.coalescent.tree_covariance`), used here in non-centred form
``loc + chol(C) Z chol(Lambda)'`` with ``Z`` standard normal over the ``task`` and ``feature`` plates.

* `mean_sharing`: ``Lambda ~ IW(s2 I, D+1)``, ``mu0 | Lambda ~ N(0, Lambda)`` (the NIW with
  ``kappa0 = 1``), root ``~ N(mu0, root_var Lambda)``, node means diffuse down the tree, task weights
  ``w_k`` are the leaves. Optionally (``leaf_var``, not in the paper) every leaf's branch is
  lengthened, fixed or learnt, so that tasks also vary independently below the tree.
* `covariance_sharing`: ``R`` is the correlation matrix of ``Sigma ~ IW(I, D+1)`` (Barnard, McCulloch
  & Meng's marginally uniform prior: every ``r_ij ~ U(-1, 1)``), ``Lambda ~ IW(s2 I, D+1)``, log
  standard deviations ``S`` diffuse down the tree from a root ``N(0, root_var Lambda)``, and
  ``w_k ~ N(0, diag(exp S_k) R diag(exp S_k))``.

Likelihood: ``y ~ N(x'w_task, noise^2)`` (``likelihood="gaussian"``; ``noise ~ HalfNormal(1)`` unless
``noise_scale`` fixes it) or ``y ~ Bernoulli(sigmoid(x'w_task))`` (``"bernoulli"``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from bayesmtl.data import TaskData
from bayesmtl.models.coalescent import (
    BrownianTree,
    KingmanCoalescent,
    Tree,
    as_tree,
    node_times,
    tree_covariance,
)
from numpyro import handlers

__all__ = [
    "LIKELIHOODS",
    "check_leaf_var",
    "covariance_sharing",
    "leaf_evidence",
    "leaf_var_prior_scale",
    "mean_sharing",
    "mean_sharing_log_evidence",
    "simulate",
]

LIKELIHOODS = ("gaussian", "bernoulli")


def leaf_var_prior_scale(n_tasks: int) -> float:
    """Scale of the ``HalfCauchy`` prior of a learnt ``leaf_var``: ``1 / C(K, 2)``, the mean of the
    Kingman coalescent's first (shortest) wait.

    A priori the leaf branches are then extended by about as much as the shortest branches of the
    tree, so the tree keeps its structure unless the data ask otherwise; the Cauchy tail lets
    ``leaf_var`` grow far past the tree height when tasks show no tree (the flat hierarchy). A
    scale of order 1 instead puts most prior mass on trees that explain nothing, and on data with
    clear clades the posterior then prefers the flat explanation (measured on one data set of
    `benchmarks/bench_latent_hierarchy.py`: held-out gain over the flat model +0.013 nats/row with
    ``HalfCauchy(1)``, +0.121 with this scale, +0.150 with no leaf variance).
    """
    return 2.0 / (n_tasks * (n_tasks - 1))


def check_leaf_var(leaf_var) -> None:
    """``leaf_var`` must be ``None`` (learnt) or a finite number >= 0; else a ``ValueError``."""
    ok = leaf_var is None or (
        not isinstance(leaf_var, bool) and np.ndim(leaf_var) == 0 and np.isfinite(leaf_var)
        and leaf_var >= 0
    )  # fmt: skip
    if not ok:
        raise ValueError(f"leaf_var: expected None or a finite number >= 0, got {leaf_var!r}")


def _check(data: TaskData, tree, likelihood, s2, root_var, noise_scale, y, leaf_var=0.0) -> Tree:
    if not isinstance(data, TaskData):
        raise ValueError(f"data: expected a TaskData, got {type(data).__name__}")  # noqa: TRY004
    if data.n_tasks < 2:
        raise ValueError(f"data: a latent hierarchy needs at least 2 tasks, got {data.n_tasks}")
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood: expected one of {LIKELIHOODS}, got {likelihood!r}")
    for name, v in (("s2", s2), ("root_var", root_var), ("noise_scale", noise_scale)):
        if v is None and name == "noise_scale" or isinstance(v, jax.core.Tracer):
            continue  # traced under jit_model_args: checked on the first, concrete call
        if not (np.ndim(v) == 0 and np.isfinite(v) and v > 0):
            raise ValueError(f"{name}: expected a positive finite number, got {v!r}")
    if not isinstance(leaf_var, jax.core.Tracer):
        check_leaf_var(leaf_var)
    if tree is None:
        raise ValueError("tree: the model is conditioned on a tree; pass tree=")
    tree = as_tree(tree)
    if tree.merges.shape != (data.n_tasks - 1, 2):
        raise ValueError(
            f"tree: has {tree.merges.shape[0] + 1} leaves, data has {data.n_tasks} tasks"
        )
    if y is not None and np.shape(y) != (data.n,):
        raise ValueError(f"y: expected shape ({data.n},), got {np.shape(y)}")
    labels = data.y if y is None else y
    if likelihood == "bernoulli" and labels is not None and not isinstance(labels, jax.core.Tracer):
        data.with_y(labels).check_binary()
    return tree


def _tree_gaussian(name, tree, loc, lam_chol, k, d, root_var, centered=False, leaf_var=0.0):
    """Leaves of Brownian diffusion: non-centred ``loc + chol(C) Z chol(Lambda)'`` or centred
    (a `BrownianTree` site whose density is evaluated by upward messages)."""
    if centered:
        lam = lam_chol @ lam_chol.T
        return numpyro.sample(name, BrownianTree(tree, loc, lam, root_var, leaf_var))
    with numpyro.plate("task", k, dim=-2), numpyro.plate("feature", d, dim=-1):
        z = numpyro.sample(f"{name}_z", dist.Normal(0.0, 1.0))
    lc = jnp.linalg.cholesky(tree_covariance(tree, root_var, leaf_var))
    return numpyro.deterministic(name, loc + lc @ z @ lam_chol.T)


def _likelihood(data, w, likelihood, noise_scale, y):
    eta = jnp.sum(jnp.asarray(data.X) * w[jnp.asarray(data.task)], axis=-1)
    y = data.y if y is None else y
    if likelihood == "gaussian":
        noise = (
            numpyro.sample("noise", dist.HalfNormal(1.0)) if noise_scale is None else noise_scale
        )
        obs_dist = dist.Normal(eta, noise)
    else:
        obs_dist = dist.Bernoulli(logits=eta)
    with numpyro.plate("obs", data.n):
        numpyro.sample("y", obs_dist, obs=y)


def _iw(d, scale):
    return dist.InverseWishart(d + 1.0, scale_matrix=scale * jnp.eye(d))


def mean_sharing(
    data: TaskData,
    *,
    tree,
    likelihood: str = "gaussian",
    s2: float = 1.0,
    root_var: float = 1.0,
    noise_scale: float | None = None,
    centered: bool = False,
    leaf_var: float | None = 0.0,
    y=None,
):
    """Daume's mean-sharing model: task weights are the leaves of a Brownian tree.

    Parameters
    ----------
    data : TaskData
    tree : Tree or packed (K-1, 3) array
        The task hierarchy (``K = data.n_tasks`` leaves).
    likelihood : {"gaussian", "bernoulli"}
    s2 : float
        Scale of the ``IW(s2 I, D+1)`` prior on the diffusion covariance ``Lambda``.
    root_var : float
        Variance factor of the root around ``mu0``.
    noise_scale : float, optional
        Fixed observation noise sd (Gaussian only); sampled (``HalfNormal(1)``) when omitted.
    centered : bool
        Sample ``w`` directly (density by messages) instead of the non-centred ``w_z``; better
        for NUTS when every task has plenty of data.
    leaf_var : float or None
        Extra length of every leaf's branch, in units of tree time: task weights then vary around
        their leaf's node mean with covariance ``leaf_var * Lambda``, independently across tasks.
        ``0`` (the default) is the paper's model, in which tasks *are* the leaves. ``None`` learns
        it under a ``HalfCauchy(leaf_var_prior_scale(K))`` prior (site ``leaf_var``; the scale is
        the mean first coalescence wait ``1 / C(K, 2)``): an extension that nests the flat
        hierarchy (tree height small against ``leaf_var``), so the tree need not force structure on
        tasks that have none.
    y : array, optional
        Overrides ``data.y``.

    Examples
    --------
    >>> import jax
    >>> from numpyro.infer import Predictive
    >>> from bayesmtl.models.latent_hierarchy import simulate
    >>> data, truth = simulate(jax.random.PRNGKey(0), n_tasks=4, n_per_task=5, n_features=2)
    >>> pred = Predictive(mean_sharing, num_samples=2)(jax.random.PRNGKey(1), data.without_y(),
    ...                                               tree=truth["tree"])
    >>> pred["w"].shape
    (2, 4, 2)
    """
    tree = _check(data, tree, likelihood, s2, root_var, noise_scale, y, leaf_var)
    k, d = data.n_tasks, data.n_features
    lam = numpyro.sample("Lambda", _iw(d, s2))
    lam_chol = jnp.linalg.cholesky(lam)
    mu0 = numpyro.sample("mu0", dist.MultivariateNormal(jnp.zeros(d), scale_tril=lam_chol))
    if leaf_var is None:
        leaf_var = numpyro.sample("leaf_var", dist.HalfCauchy(leaf_var_prior_scale(k)))
    w = _tree_gaussian("w", tree, mu0, lam_chol, k, d, root_var, centered, leaf_var)
    _likelihood(data, w, likelihood, noise_scale, y)


def covariance_sharing(
    data: TaskData,
    *,
    tree,
    likelihood: str = "gaussian",
    s2: float = 1.0,
    root_var: float = 1.0,
    noise_scale: float | None = None,
    centered: bool = False,
    y=None,
):
    """Daume's covariance-sharing model: log standard deviations diffuse down the tree.

    ``w_k ~ N(0, diag(exp S_k) R diag(exp S_k))`` with ``R`` the correlation of an ``IW(I, D+1)``
    draw, ``S`` the leaves of Brownian diffusion with covariance ``Lambda ~ IW(s2 I, D+1)``.
    Parameters as in `mean_sharing`.

    Examples
    --------
    >>> import jax
    >>> from numpyro.infer import Predictive
    >>> from bayesmtl.models.latent_hierarchy import simulate
    >>> data, truth = simulate(jax.random.PRNGKey(0), n_tasks=4, n_per_task=5, n_features=2,
    ...                        model="covariance")
    >>> out = Predictive(covariance_sharing, num_samples=2)(jax.random.PRNGKey(1),
    ...                                                     data.without_y(), tree=truth["tree"])
    >>> out["log_scale"].shape, out["R"].shape
    ((2, 4, 2), (2, 2, 2))
    """
    tree = _check(data, tree, likelihood, s2, root_var, noise_scale, y)
    k, d = data.n_tasks, data.n_features
    sigma = numpyro.sample("Sigma_R", _iw(d, 1.0))
    sd = jnp.sqrt(jnp.diagonal(sigma))
    r = numpyro.deterministic("R", sigma / sd[:, None] / sd[None, :])
    lam = numpyro.sample("Lambda", _iw(d, s2))
    s = _tree_gaussian(
        "log_scale", tree, jnp.zeros(d), jnp.linalg.cholesky(lam), k, d, root_var, centered
    )
    with numpyro.plate("task", k, dim=-2), numpyro.plate("feature", d, dim=-1):
        z = numpyro.sample("w_z", dist.Normal(0.0, 1.0))
    r_chol = jnp.linalg.cholesky(r + 1e-6 * jnp.eye(d))
    w = numpyro.deterministic("w", jnp.exp(s) * (z @ r_chol.T))
    _likelihood(data, w, likelihood, noise_scale, y)


def simulate(
    key,
    n_tasks: int,
    n_per_task: int,
    n_features: int,
    *,
    model: str = "mean",
    likelihood: str = "gaussian",
    tree=None,
    s2: float = 1.0,
    root_var: float = 1.0,
    noise_scale: float = 0.5,
    leaf_var: float | None = 0.0,
    params: dict | None = None,
):
    """Draw a task family from a latent hierarchy: a tree, task weights, inputs and targets.

    Parameters
    ----------
    key : jax.random.PRNGKey
    n_tasks, n_per_task, n_features : int
    model : {"mean", "covariance"}
        `mean_sharing` or `covariance_sharing`.
    likelihood : {"gaussian", "bernoulli"}
    tree : Tree, optional
        The true hierarchy; a Kingman-coalescent draw when omitted.
    s2, root_var, noise_scale : float
        Hyperparameters (the noise is fixed at ``noise_scale``).
    leaf_var : float or None
        Mean sharing only: extra leaf-branch length (see `mean_sharing`; ``None`` draws it).
    params : dict, optional
        Values to fix instead of drawing from the prior (e.g. ``{"Lambda": ..., "mu0": ...}``).

    Returns
    -------
    data : TaskData
        ``X ~ N(0, I)`` (``n_tasks * n_per_task`` rows), ``y`` from the model.
    truth : dict
        ``tree`` plus every sampled and deterministic site (``w``, ``Lambda``, ...).

    Examples
    --------
    >>> import jax
    >>> data, truth = simulate(jax.random.PRNGKey(0), 6, 10, 3)
    >>> data.n_tasks, truth["w"].shape, truth["tree"].n_leaves
    (6, (6, 3), 6)
    """
    for name, v in (("n_tasks", n_tasks), ("n_per_task", n_per_task), ("n_features", n_features)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    if n_tasks < 2:
        raise ValueError(f"n_tasks: a latent hierarchy needs at least 2 tasks, got {n_tasks}")
    if model not in ("mean", "covariance"):
        raise ValueError(f"model: expected 'mean' or 'covariance', got {model!r}")
    k_tree, k_x, k_model = jax.random.split(key, 3)
    if tree is None:
        tree = KingmanCoalescent(int(n_tasks)).sample_tree(k_tree)
    tree = as_tree(tree)
    x = jax.random.normal(k_x, (n_tasks * n_per_task, n_features))
    task = np.repeat(np.arange(n_tasks), n_per_task)
    data = TaskData(X=np.asarray(x), task=task, n_tasks=n_tasks)
    fn = mean_sharing if model == "mean" else covariance_sharing
    kw = {
        "tree": tree,
        "likelihood": likelihood,
        "s2": s2,
        "root_var": root_var,
        "noise_scale": noise_scale if likelihood == "gaussian" else None,
    }
    if model == "mean":
        kw["leaf_var"] = leaf_var
    elif leaf_var != 0.0:
        raise ValueError("leaf_var: only the mean-sharing model has a leaf variance")
    conditioned = handlers.condition(fn, data=params or {})
    tr = handlers.trace(handlers.seed(conditioned, k_model)).get_trace(data, **kw)
    truth = {
        name: site["value"]
        for name, site in tr.items()
        if site["type"] in ("sample", "deterministic") and name != "y"
    }
    truth["tree"] = tree
    if likelihood == "gaussian":
        truth["noise"] = noise_scale
    return data.with_y(np.asarray(tr["y"]["value"])), truth


def leaf_evidence(xtx, xty, yty, n_rows, noise):
    """Gaussian-likelihood factors of each task's weights in canonical form.

    ``prod_n N(y_n; x_n'w_k, noise^2) = exp(-w'J_k w / 2 + h_k'w + g_k)`` with ``J_k = X_k'X_k /
    noise^2``, ``h_k = X_k'y_k / noise^2``, ``g_k = -y_k'y_k / (2 noise^2) - n_k log(2 pi noise^2)/2``.
    Inputs are per-task sums ``(K, D, D)``, ``(K, D)``, ``(K,)``, ``(K,)``.
    """
    v = noise**2
    return xtx / v, xty / v, -0.5 * yty / v - 0.5 * n_rows * jnp.log(2 * jnp.pi * v)


def mean_sharing_log_evidence(
    tree, leaf_j, leaf_h, leaf_g, cov, root_var: float = 1.0, leaf_var=0.0
):
    """``log p(y | tree, Lambda, noise)`` of `mean_sharing` with the weights and ``mu0`` integrated.

    Upward messages in canonical form ``(J, h, g)`` (rank-deficient ``J`` allowed, e.g. tasks with
    fewer rows than features): an edge of length ``tau`` (``S = tau Lambda``) maps a node's factor to
    its parent's by ``A = I + J S``, ``J' = A^-1 J``, ``h' = A^-1 h``,
    ``g' = g + h'S A^-1 h / 2 - log|A| / 2``; siblings add. The root's edge has
    ``S = (root_var + 1) Lambda`` (``root ~ N(mu0, root_var Lambda)``, ``mu0 ~ N(0, Lambda)``) and
    ends at 0, where the message is ``exp(g)``. O(K D^3); equals the dense Gaussian
    ``N(vec y; 0, B ((C + 11') (x) Lambda) B' + noise^2 I)``. A ``leaf_var`` lengthens every
    leaf's edge (``C + leaf_var I``).

    Parameters
    ----------
    tree : Tree
    leaf_j, leaf_h, leaf_g : arrays ``(K, D, D)``, ``(K, D)``, ``(K,)``
        Leaf factors (`leaf_evidence`).
    cov : array ``(D, D)``
        ``Lambda``.
    root_var, leaf_var : float

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from bayesmtl.models.latent_hierarchy import leaf_evidence
    >>> from bayesmtl.models.tree import tree_from_merges
    >>> t = tree_from_merges([[0, 1]], [1.0])
    >>> j, h, g = leaf_evidence(jnp.ones((2, 1, 1)), jnp.zeros((2, 1)), jnp.zeros(2),
    ...                         jnp.ones(2), 1.0)
    >>> float(mean_sharing_log_evidence(t, j, h, g, jnp.eye(1))) < 0
    True
    """
    tree = as_tree(tree)
    k, d = leaf_h.shape
    tn = node_times(tree).at[:k].set(-leaf_var)  # leaves' edges lengthened by leaf_var
    eye = jnp.eye(d, dtype=leaf_h.dtype)

    def edge(jm, hm, gm, s):
        a = eye + jm @ s
        jp = jnp.linalg.solve(a, jm)
        hp = jnp.linalg.solve(a, hm)
        return jp, hp, gm + 0.5 * hm @ s @ hp - 0.5 * jnp.linalg.slogdet(a)[1]

    big_j = jnp.zeros((2 * k - 1, d, d), leaf_j.dtype).at[:k].set(leaf_j)
    big_h = jnp.zeros((2 * k - 1, d), leaf_h.dtype).at[:k].set(leaf_h)
    big_g = jnp.zeros(2 * k - 1, leaf_g.dtype).at[:k].set(leaf_g)

    def step(carry, i):
        bj, bh, bg = carry
        t = tn[k + i]
        out_j, out_h, out_g = 0.0, 0.0, 0.0
        for c in (tree.merges[i, 0], tree.merges[i, 1]):
            jp, hp, gp = edge(bj[c], bh[c], bg[c], (t - tn[c]) * cov)
            out_j, out_h, out_g = out_j + jp, out_h + hp, out_g + gp
        return (bj.at[k + i].set(out_j), bh.at[k + i].set(out_h), bg.at[k + i].set(out_g)), None

    (bj, bh, bg), _ = jax.lax.scan(step, (big_j, big_h, big_g), jnp.arange(k - 1))
    return edge(bj[-1], bh[-1], bg[-1], (root_var + 1.0) * cov)[2]

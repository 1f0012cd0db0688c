"""Bakker & Heskes (2003): task clustering and gating for Bayesian multitask learning.

Every task ``i`` shares a representation ``h(x) = [g(W [x, 1]), 1]`` (``g = tanh`` with ``hidden``
units, or, with ``hidden=0``, the linear case ``h(x) = [x, 1]`` without ``W``) and has its own
output weights ``A_i`` (length ``p``): ``y = A_i' h(x) + noise``.  Four priors on ``A_i``:

``"gaussian"``    ``A_i ~ N(m, Sigma)``;
``"task_mean"``   ``A_i ~ N(M f_i, Sigma)`` with task features ``f_i``;
``"clustering"``  ``A_i ~ sum_a q_a N(m_a, Sigma_a)`` with ``C`` clusters;
``"gating"``      ``A_i ~ sum_a q_ia N(m_a, Sigma_a)``, ``q_ia = softmax_a(U_a' f_i)``.

With ``intercept=True`` (default) a column of ones is prepended to the task features, so ``M``
and ``U`` carry an intercept; clustering is gating with ``f_i = 1`` (``intercept=False`` and a
column of ones).  Cluster labels are marginalised (NumPyro's ``MixtureSameFamily``, a log-sum-exp
over components).  Label switching: by default the cluster means are ordered on one coordinate
(``order_by``, the last = the bias weight); with ``ordered=False`` use `relabel_samples` after
sampling.  `membership_probabilities` turns posterior draws into ``P(z_i = a | data)``.

Any hyperparameter passed as an array is held fixed instead of sampled (that is how the closed-form
posterior of `bayesmtl.inference.empirical_bayes` is checked against NUTS).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from bayesmtl.data.taskdata import TaskData
from bayesmtl.models.task_clustering_sim import simulate
from jax.scipy.special import gammaln
from numpyro.distributions import constraints

__all__ = [
    "PRIORS",
    "SortedNormal",
    "clustering_model",
    "gating_model",
    "gaussian_prior_model",
    "hidden_features",
    "membership_probabilities",
    "relabel_samples",
    "simulate",
    "task_clustering_model",
    "task_design",
    "task_mean_model",
    "validate_config",
]

PRIORS = ("gaussian", "task_mean", "clustering", "gating")
_ACTIVATIONS = {"tanh": jnp.tanh, "identity": lambda z: z}


class SortedNormal(dist.Distribution):
    """The order statistics of ``size`` iid ``N(loc, scale)`` draws (a proper prior on an
    increasing vector): density ``size! prod_k N(y_k | loc, scale)`` on ``y_1 < ... < y_size``.

    Examples
    --------
    >>> import jax
    >>> y = SortedNormal(0.0, 1.0, 3).sample(jax.random.key(0))
    >>> bool((y[1:] > y[:-1]).all())
    True
    """

    support = constraints.ordered_vector
    reparametrized_params = ("loc", "scale")

    def __init__(self, loc=0.0, scale=1.0, size: int = 2, *, validate_args=None):
        self.loc, self.scale, self.size = loc, scale, int(size)
        super().__init__(batch_shape=(), event_shape=(self.size,), validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        z = jax.random.normal(key, tuple(sample_shape) + (self.size,))
        return jnp.sort(self.loc + self.scale * z, axis=-1)

    def log_prob(self, value):
        base = dist.Normal(self.loc, self.scale).log_prob(value).sum(-1)
        return base + gammaln(self.size + 1.0)


def validate_config(data: TaskData, *, prior: str, n_clusters: int, hidden: int = 0,
                    noise: str = "shared", activation: str = "tanh",
                    task_features=None) -> None:
    """Eager checks shared by the NumPyro models and the empirical-Bayes fit.

    Raises ``ValueError`` naming the argument: unknown ``prior``/``noise``/``activation``,
    ``n_clusters < 1`` (or ``!= 1`` for a single-Gaussian prior), negative ``hidden``, task features
    missing for ``"task_mean"``/``"gating"`` or with a row count other than ``data.n_tasks``.
    """
    if prior not in PRIORS:
        raise ValueError(f"prior: expected one of {PRIORS}, got {prior!r}")
    if isinstance(n_clusters, bool) or int(n_clusters) != n_clusters or n_clusters < 1:
        raise ValueError(f"n_clusters: must be an integer >= 1, got {n_clusters!r}")
    if prior in ("gaussian", "task_mean") and n_clusters != 1:
        raise ValueError(f"n_clusters: prior={prior!r} has one component, got {n_clusters}")
    if isinstance(hidden, bool) or int(hidden) != hidden or hidden < 0:
        raise ValueError(f"hidden: must be an integer >= 0 (0 = linear), got {hidden!r}")
    if noise not in ("shared", "task"):
        raise ValueError(f"noise: expected 'shared' or 'task', got {noise!r}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation: expected one of {tuple(_ACTIVATIONS)}, got {activation!r}")
    tf = data.task_features if task_features is None else task_features
    if prior in ("task_mean", "gating"):
        if tf is None:
            raise ValueError(
                f"task_features: prior={prior!r} needs task features (data.task_features), "
                "but none were given")
        shape = np.shape(tf)   # shape only: under jit (jit_model_args) tf is a tracer
        if len(shape) != 2 or shape[0] != data.n_tasks:
            raise ValueError(
                f"task_features: expected shape (n_tasks={data.n_tasks}, f), got {shape}")


def task_design(task_features, *, intercept: bool = True) -> jnp.ndarray:
    """Task-level design ``f_i`` (``(n_tasks, f')``), with a leading column of ones if asked."""
    F = jnp.asarray(task_features)
    if intercept:
        F = jnp.concatenate([jnp.ones((F.shape[0], 1), F.dtype), F], axis=1)
    return F


def hidden_features(X, W=None, *, activation: str = "tanh") -> jnp.ndarray:
    """Shared representation ``h(x) = [g(W'[x, 1]), 1]`` for every row, shape ``(n, p)``.

    ``W`` has shape ``(d + 1, hidden)`` (last row: hidden biases); ``W=None`` is the linear case
    ``h(x) = [x, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> hidden_features(np.zeros((3, 2))).shape
    (3, 3)
    """
    X = jnp.asarray(X)
    ones = jnp.ones((X.shape[0], 1), X.dtype)
    if W is None:
        Z = X
    else:
        Z = _ACTIVATIONS[activation](jnp.concatenate([X, ones], axis=1) @ W)
    return jnp.concatenate([Z, ones], axis=1)


def _scale_tril(name: str, p: int, prior_scale: float):
    tau = numpyro.sample(f"{name}_scale", dist.HalfNormal(prior_scale).expand([p]).to_event(1))
    corr = numpyro.sample(f"{name}_corr", dist.LKJCholesky(p, 2.0))
    return tau[..., :, None] * corr


def task_clustering_model(data: TaskData, *, prior: str = "gaussian", n_clusters: int = 1,
                          hidden: int = 0, activation: str = "tanh", noise: str = "shared",
                          intercept: bool = True, ordered: bool = True, order_by: int = -1,
                          W=None, mean=None, cov=None, weights=None, gates=None,
                          mean_map=None, noise_scale=None, prior_scale: float = 1.0,
                          w_scale: float = 1.0, concentration: float = 1.0, y=None) -> None:
    """NumPyro model ``y = A_i' h(x) + noise`` with one of the four priors on ``A_i``.

    Parameters
    ----------
    data : TaskData
        Inputs, task index, optional targets and task features.
    prior : {"gaussian", "task_mean", "clustering", "gating"}
    n_clusters : int
        ``C`` (1 for the single-component priors).
    hidden : int
        Tanh units ``H``; 0 is the linear case ``h(x) = [x, 1]``.
    noise : {"shared", "task"}
        One noise scale, or one per task.
    intercept : bool
        Prepend a column of ones to the task features (``"task_mean"``, ``"gating"``).
    ordered, order_by : bool, int
        Order the cluster means on coordinate ``order_by`` (label-switching constraint).
    W, mean, cov, weights, gates, mean_map, noise_scale : array, optional
        Fixed values; sampled when ``None``. ``mean`` is ``(p,)`` or ``(C, p)``, ``cov``
        ``(p, p)`` or ``(C, p, p)``, ``weights`` ``(C,)``, ``gates`` ``U`` ``(f', C)``,
        ``mean_map`` ``M`` ``(p, f')``, ``noise_scale`` scalar or ``(n_tasks,)``.
    prior_scale, w_scale, concentration : float
        Scales of the weakly informative priors; Dirichlet concentration of ``q``.
    y : array, optional
        Overrides ``data.y``.

    Sites: ``W``, ``mean``/``cluster_mean``, ``cov`` factors, ``weights``/``gates``,
    ``mean_map``, ``A`` (``(n_tasks, p)``), ``noise_scale``, ``y``.

    Examples
    --------
    >>> import jax
    >>> from numpyro.infer import Predictive
    >>> from bayesmtl.models.task_clustering import simulate
    >>> data, _ = simulate(jax.random.key(0), prior="clustering", n_tasks=4, n_per_task=3)
    >>> draws = Predictive(task_clustering_model, num_samples=2)(
    ...     jax.random.key(1), data.without_y(), prior="clustering", n_clusters=3)
    >>> draws["y"].shape
    (2, 12)
    """
    validate_config(data, prior=prior, n_clusters=n_clusters, hidden=hidden, noise=noise,
                    activation=activation)
    X = jnp.asarray(data.X)
    n, d = X.shape
    T, C = data.n_tasks, int(n_clusters)
    obs = data.y if y is None else y
    if hidden > 0 and W is None:
        W = numpyro.sample("W", dist.Normal(0.0, w_scale / np.sqrt(d + 1))
                           .expand([d + 1, hidden]).to_event(2))
    Hx = hidden_features(X, W if hidden > 0 else None, activation=activation)
    p = Hx.shape[1]
    mixture = prior in ("clustering", "gating")

    if not mixture:
        if prior == "gaussian":
            loc = numpyro.sample("mean", dist.Normal(0.0, prior_scale).expand([p]).to_event(1)) \
                if mean is None else jnp.asarray(mean)
            loc = jnp.broadcast_to(loc, (T, p))
        else:
            F = task_design(data.task_features, intercept=intercept)
            M = numpyro.sample("mean_map", dist.Normal(0.0, prior_scale)
                               .expand([p, F.shape[1]]).to_event(2)) \
                if mean_map is None else jnp.asarray(mean_map)
            loc = F @ M.T
        L = _scale_tril("cov", p, prior_scale) if cov is None else jnp.linalg.cholesky(
            jnp.asarray(cov))
        with numpyro.plate("task", T):
            z = numpyro.sample("A_raw", dist.Normal(0.0, 1.0).expand([p]).to_event(1))
        A = numpyro.deterministic("A", loc + z @ L.T)
    else:
        k = order_by % p
        use_order = mean is None and ordered and C > 1
        with numpyro.plate("cluster", C):
            if mean is None:
                if use_order:
                    rest = numpyro.sample("cluster_mean_rest", dist.Normal(0.0, prior_scale)
                                          .expand([p - 1]).to_event(1))
                else:
                    loc = numpyro.sample("cluster_mean", dist.Normal(0.0, prior_scale)
                                         .expand([p]).to_event(1))
            if cov is None:
                tau = numpyro.sample("cluster_scale", dist.HalfNormal(prior_scale)
                                     .expand([p]).to_event(1))
                corr = numpyro.sample("cluster_corr", dist.LKJCholesky(p, 2.0))
                L = numpyro.deterministic("cluster_scale_tril", tau[..., :, None] * corr)
        if use_order:
            # ordered coordinate: a proper prior on the sorted values (label-switching constraint)
            first = numpyro.sample("cluster_mean_order", SortedNormal(0.0, prior_scale, C))
            loc = numpyro.deterministic("cluster_mean", _insert_column(rest, first, k))
        elif mean is not None:
            loc = jnp.broadcast_to(jnp.asarray(mean), (C, p))
        if cov is not None:
            L = jnp.broadcast_to(jnp.linalg.cholesky(jnp.asarray(cov)), (C, p, p))
        if prior == "clustering":
            q = numpyro.sample("weights", dist.Dirichlet(jnp.full(C, concentration))) \
                if weights is None else jnp.asarray(weights)
            logits = jnp.broadcast_to(jnp.log(q), (T, C))
        else:
            F = task_design(data.task_features, intercept=intercept)
            U = numpyro.sample("gates", dist.Normal(0.0, prior_scale)
                               .expand([F.shape[1], C]).to_event(2)) \
                if gates is None else jnp.asarray(gates)
            logits = jax.nn.log_softmax(F @ U, axis=-1)
        comp = dist.MultivariateNormal(loc, scale_tril=L).expand([T, C])
        with numpyro.plate("task", T):
            A = numpyro.sample("A", dist.MixtureSameFamily(
                dist.Categorical(logits=logits), comp))

    if noise_scale is None:
        if noise == "shared":
            sigma = numpyro.sample("noise_scale", dist.HalfNormal(1.0))
        else:
            with numpyro.plate("task", T):
                sigma = numpyro.sample("noise_scale", dist.HalfNormal(1.0))
    else:
        sigma = jnp.asarray(noise_scale)
    sig_n = jnp.broadcast_to(sigma, (T,))[data.task]
    mu = jnp.sum(Hx * A[data.task], axis=-1)
    with numpyro.plate("obs", n):
        numpyro.sample("y", dist.Normal(mu, sig_n), obs=obs)


def _insert_column(rest, first, k):
    """Put ``first`` (``(C,)``) as column ``k`` of ``rest`` (``(C, p-1)``)."""
    return jnp.concatenate([rest[:, :k], first[:, None], rest[:, k:]], axis=1)


def gaussian_prior_model(data: TaskData, **kwargs) -> None:
    """Prior (1), ``A_i ~ N(m, Sigma)``: `task_clustering_model` with ``prior="gaussian"``."""
    task_clustering_model(data, prior="gaussian", **kwargs)


def task_mean_model(data: TaskData, **kwargs) -> None:
    """Prior (2), ``A_i ~ N(M f_i, Sigma)``: `task_clustering_model` with ``prior="task_mean"``."""
    task_clustering_model(data, prior="task_mean", **kwargs)


def clustering_model(data: TaskData, *, n_clusters: int = 2, **kwargs) -> None:
    """Prior (3), ``sum_a q_a N(m_a, Sigma_a)``: `task_clustering_model`, ``prior="clustering"``."""
    task_clustering_model(data, prior="clustering", n_clusters=n_clusters, **kwargs)


def gating_model(data: TaskData, *, n_clusters: int = 2, **kwargs) -> None:
    """Prior (4), ``q_ia = softmax_a(U_a' f_i)``: `task_clustering_model`, ``prior="gating"``."""
    task_clustering_model(data, prior="gating", n_clusters=n_clusters, **kwargs)


# axis of the cluster dimension, counted from the end, for each cluster-indexed site
_CLUSTER_AXIS = {"cluster_mean": -2, "cluster_mean_rest": -2, "cluster_mean_order": -1,
                 "cluster_scale": -2, "cluster_corr": -3, "cluster_scale_tril": -3,
                 "weights": -1, "gates": -1}


def relabel_samples(samples: dict, *, order_by: int = -1) -> dict:
    """Relabel clusters in every draw so that ``cluster_mean[..., order_by]`` increases.

    Use after sampling a mixture model run with ``ordered=False`` (or to align chains); every
    cluster-indexed site is permuted consistently.  With the ordering constraint it is the identity.

    Examples
    --------
    >>> import numpy as np
    >>> s = {"cluster_mean": np.array([[[2.0], [1.0]]]), "weights": np.array([[0.25, 0.75]])}
    >>> relabel_samples(s)["weights"].tolist()
    [[0.75, 0.25]]
    """
    if "cluster_mean" not in samples:
        raise ValueError("samples: relabelling needs the 'cluster_mean' site")
    perm = jnp.argsort(jnp.asarray(samples["cluster_mean"])[..., order_by], axis=-1)
    out = dict(samples)
    for key, axis in _CLUSTER_AXIS.items():
        if key not in samples:
            continue
        v = jnp.asarray(samples[key])
        ax = v.ndim + axis
        idx = perm.reshape(perm.shape + (1,) * (v.ndim - ax - 1))
        out[key] = jnp.take_along_axis(v, idx, axis=ax)
    return out


def membership_probabilities(samples: dict, data: TaskData, *, prior: str = "clustering",
                             intercept: bool = True, mean=None, cov=None, weights=None,
                             gates=None, per_draw: bool = False) -> jnp.ndarray:
    """Posterior cluster-membership probabilities ``P(z_i = a | data)``, shape ``(n_tasks, C)``.

    For each draw, ``P(z_i = a | A_i, theta) ∝ q_ia N(A_i | m_a, Sigma_a)`` (Rao-Blackwellised over
    the marginalised label); the result averages these over draws, so rows sum to one.  Leading
    (chain, draw) dimensions of ``samples`` are flattened; relabel first if the model was run
    without the ordering constraint.  Fixed hyperparameters (``mean``, ``cov``, ``weights``,
    ``gates``) replace missing sites.

    Examples
    --------
    >>> import numpy as np
    >>> s = {"A": np.zeros((5, 3, 2)), "cluster_mean": np.zeros((5, 2, 2)),
    ...      "cluster_scale_tril": np.broadcast_to(np.eye(2), (5, 2, 2, 2)),
    ...      "weights": np.full((5, 2), 0.5)}
    >>> from bayesmtl.data import TaskData
    >>> d = TaskData(X=np.zeros((3, 1)), task=[0, 1, 2])
    >>> membership_probabilities(s, d).sum(axis=1).tolist()
    [1.0, 1.0, 1.0]
    """
    if prior not in ("clustering", "gating"):
        raise ValueError(f"prior: membership needs 'clustering' or 'gating', got {prior!r}")
    A = jnp.asarray(samples["A"])
    T, p = A.shape[-2:]
    A = A.reshape((-1, T, p))
    S = A.shape[0]

    def site(name, fixed, shape_tail, transform=None):
        if name in samples:
            return jnp.asarray(samples[name]).reshape((S,) + jnp.shape(samples[name])[-len(
                shape_tail):])
        if fixed is None:
            raise ValueError(f"samples: no {name!r} site and no fixed value given")
        v = jnp.asarray(fixed if transform is None else transform(jnp.asarray(fixed)))
        return jnp.broadcast_to(v, (S,) + v.shape)

    loc = site("cluster_mean", mean, (0, 0))
    C = loc.shape[-2]
    loc = jnp.broadcast_to(loc, (S, C, p))
    L = site("cluster_scale_tril", cov, (0, 0, 0), jnp.linalg.cholesky)
    L = jnp.broadcast_to(L, (S, C, p, p))
    if prior == "clustering":
        q = site("weights", weights, (0,))
        logits = jnp.broadcast_to(jnp.log(q)[:, None, :], (S, T, C))
    else:
        F = task_design(data.task_features, intercept=intercept)
        U = site("gates", gates, (0, 0))
        logits = jax.nn.log_softmax(jnp.einsum("tf,sfc->stc", F, U), axis=-1)
    comp = dist.MultivariateNormal(loc[:, None], scale_tril=L[:, None])
    logp = logits + comp.log_prob(A[:, :, None, :])
    probs = jax.nn.softmax(logp, axis=-1)
    return probs if per_draw else probs.mean(axis=0)

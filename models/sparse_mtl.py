"""Sparse Bayesian multitask learning (Archambeau, Guo & Zoeter 2011) as a NumPyro model.

For P tasks sharing inputs x_n in R^D::

    y_n = W x_n + mu + eps_n,   eps_n ~ N(0, Sigma)      (Sigma full with an LKJ prior, or diagonal)
    W = [W_1 ... W_Q]           (columns of W in Q feature blocks)
    W_i | V, tau, gamma_i ~ MN(0, V V' + tau I_P, gamma_i^-1 I_{D_i}),   V in R^{P x K}, K < P
    gamma_i ~ mixing prior      (GIG(omega, chi, phi) or a named special case, see `mixing_prior`)

``gamma_i`` is the *precision* of block i: a large value switches the block off for every task at once.
``V V' + tau I`` is the low-rank-plus-diagonal task covariance. The weights are non-centred:
``W_i = chol(V V' + tau I) W_raw_i / sqrt(gamma_i)``. With ``likelihood="bernoulli"`` each task has a
Bernoulli-logit output instead (no noise covariance).

Data: `bayesmtl.data.multioutput.MultiOutputData` (or a `TaskData` whose tasks share inputs, converted
with `MultiOutputData.from_taskdata`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from bayesmtl.data.multioutput import MultiOutputData, check_blocks
from bayesmtl.data.taskdata import TaskData
from bayesmtl.models.gig import MIXING_PRIORS, mixing_prior

__all__ = ["as_multioutput", "coords", "resolve_blocks", "simulate", "sparse_mtl", "task_covariance"]

NOISE = ("full", "diag")
LIKELIHOODS = ("gaussian", "bernoulli")


def as_multioutput(data) -> MultiOutputData:
    """Accept `MultiOutputData`, or a `TaskData` whose tasks share their input rows."""
    if isinstance(data, MultiOutputData):
        return data
    if isinstance(data, TaskData):
        return MultiOutputData.from_taskdata(data)
    raise ValueError(f"data: expected MultiOutputData or TaskData, got {type(data).__name__}")


def resolve_blocks(data: MultiOutputData, blocks=None) -> np.ndarray:
    """Block index per feature: ``blocks``, else ``data.feature_blocks``, else one block per feature."""
    if blocks is None:
        blocks = data.feature_blocks
    if blocks is None:
        return np.arange(data.n_features, dtype=np.int32)
    return check_blocks(blocks, data.n_features, "blocks")


def check_config(n_tasks: int, *, rank: int, prior: str, noise: str, likelihood: str) -> None:
    """Eager validation of the model's keyword configuration."""
    if not isinstance(rank, (int, np.integer)) or rank < 1:
        raise ValueError(f"rank: must be a positive integer, got {rank!r}")
    if rank >= n_tasks:
        raise ValueError(f"rank: must be < n_tasks ({n_tasks}) for a low-rank task covariance, "
                         f"got {rank}")
    if prior not in MIXING_PRIORS:
        raise ValueError(f"prior: unknown mixing prior {prior!r}; choose one of {MIXING_PRIORS}")
    if noise not in NOISE:
        raise ValueError(f"noise: must be one of {NOISE}, got {noise!r}")
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"likelihood: must be one of {LIKELIHOODS}, got {likelihood!r}")


def task_covariance(V, tau):
    """``V V' + tau I``, the task (row) covariance of every block."""
    V = jnp.asarray(V)
    return V @ jnp.swapaxes(V, -1, -2) + jnp.asarray(tau)[..., None, None] * jnp.eye(V.shape[-2])


def sparse_mtl(
    data,
    *,
    blocks=None,
    rank: int = 1,
    prior: str = "laplace",
    prior_params: dict | None = None,
    tau: float | None = None,
    noise: str = "full",
    likelihood: str = "gaussian",
    lkj_eta: float = 2.0,
    noise_scale: float = 1.0,
    mu_scale: float = 5.0,
    y=None,
):
    """Sparse multitask regression / classification with block GIG scale mixtures.

    Parameters
    ----------
    data : MultiOutputData or TaskData
        Shared inputs ``X (N, D)`` and outputs ``Y (N, P)`` (``None`` for prior predictive).
    blocks : array_like of int, shape (D,), optional
        Block of each feature (default ``data.feature_blocks``, else one block per feature).
    rank : int
        K, the rank of the task covariance factor V; ``1 <= K < P``.
    prior : {"laplace", "student_t", "nig", "gig", "ard"}
        Mixing prior on the block precisions (see `bayesmtl.models.gig.mixing_prior`). ``"ard"`` makes
        ``gamma`` a ``numpyro.param`` (a type-II point estimate under SVI; held at 1 under NUTS).
    prior_params : dict, optional
        Parameters of the mixing prior (e.g. ``{"rate": 2.0}`` for Laplace).
    tau : float, optional
        Diagonal of the task covariance; HalfNormal(1) when ``None``.
    noise : {"full", "diag"}
        Full noise covariance (LKJ(``lkj_eta``) correlation, HalfNormal(``noise_scale``) scales) or
        independent noise per task.
    likelihood : {"gaussian", "bernoulli"}
    y : array_like, shape (N, P), optional
        Overrides ``data.Y``.

    Examples
    --------
    >>> import jax
    >>> from numpyro.infer import Predictive
    >>> from bayesmtl.models.sparse_mtl import simulate
    >>> data, truth = simulate(jax.random.key(0), n=20, n_tasks=4, n_features=6, n_blocks=3)
    >>> Predictive(sparse_mtl, num_samples=2)(jax.random.key(1), data.without_y(), rank=1)["y"].shape
    (2, 20, 4)
    """
    data = as_multioutput(data)
    P, D, N = data.n_tasks, data.n_features, data.n
    check_config(P, rank=rank, prior=prior, noise=noise, likelihood=likelihood)
    b = resolve_blocks(data, blocks)
    Q = int(b.max()) + 1
    gamma_prior = mixing_prior(prior, **(prior_params or {}))
    Y = data.Y if y is None else y
    if (likelihood == "bernoulli" and Y is not None and not isinstance(Y, jax.core.Tracer)
            and not np.all(np.isin(np.asarray(Y), [0.0, 1.0]))):
        raise ValueError("y: a Bernoulli likelihood needs labels in {0, 1}")
    X = jnp.asarray(data.X)

    # the "task" plate is always dim -1 (autoguides need one dim per plate name); the rank and
    # feature axes of V and W_raw are event dimensions named for ArviZ
    with numpyro.plate("task", P, dim=-1):
        V = numpyro.sample("V", dist.Normal(0.0, 1.0).expand([rank]).to_event(1),
                           infer={"event_dims": ["rank"]})
    tau_ = numpyro.sample("tau", dist.HalfNormal(1.0)) if tau is None else jnp.asarray(tau)
    with numpyro.plate("block", Q):
        if gamma_prior is None:
            gamma = numpyro.param("gamma", jnp.ones(Q), constraint=dist.constraints.positive)
        else:
            gamma = numpyro.sample("gamma", gamma_prior)
    with numpyro.plate("task", P, dim=-1):
        W_raw = numpyro.sample("W_raw", dist.Normal(0.0, 1.0).expand([D]).to_event(1),
                               infer={"event_dims": ["feature"]})
    L_task = jnp.linalg.cholesky(task_covariance(V, tau_))
    W = numpyro.deterministic("W", (L_task @ W_raw) * jax.lax.rsqrt(gamma)[jnp.asarray(b)])
    with numpyro.plate("task", P):
        mu = numpyro.sample("mu", dist.Normal(0.0, mu_scale))
    f = X @ W.T + mu
    obs = None if Y is None else jnp.asarray(Y)
    if likelihood == "bernoulli":
        with numpyro.plate("obs", N, dim=-2), numpyro.plate("task", P, dim=-1):
            numpyro.sample("y", dist.Bernoulli(logits=f), obs=obs)
        return
    with numpyro.plate("task", P):
        sigma = numpyro.sample("sigma", dist.HalfNormal(noise_scale))
    if noise == "diag":
        with numpyro.plate("obs", N, dim=-2), numpyro.plate("task", P, dim=-1):
            numpyro.sample("y", dist.Normal(f, sigma), obs=obs)
        return
    L_corr = numpyro.sample("L_corr", dist.LKJCholesky(P, lkj_eta))
    scale_tril = sigma[..., :, None] * L_corr
    numpyro.deterministic("Sigma", scale_tril @ jnp.swapaxes(scale_tril, -1, -2))
    with numpyro.plate("obs", N):
        numpyro.sample("y", dist.MultivariateNormal(f, scale_tril=scale_tril), obs=obs)


def coords(data, **_) -> dict[str, list]:
    """ArviZ coordinates of `sparse_mtl` fitted to ``data``: ``task``, ``task_`` (the second axis of
    Sigma), ``feature``, ``obs``."""
    c = as_multioutput(data).coords()
    c["task_"] = list(c["task"])
    return c


sparse_mtl.coords = coords  # type: ignore[attr-defined]
# deterministic sites whose dims ArviZ cannot infer from plates
sparse_mtl.extra_dims = {  # type: ignore[attr-defined]
    "W": ["task", "feature"], "Sigma": ["task", "task_"], "L_corr": ["task", "task_"]}


@functools.partial(jax.jit, static_argnums=1)
def _lkj_cholesky_sample(key, dim: int):
    # jitted: one compilation per size rather than hundreds of eager per-op ones
    return dist.LKJCholesky(dim, 2.0).sample(key)


def simulate(
    key,
    *,
    n: int = 100,
    n_tasks: int = 8,
    n_features: int = 20,
    n_blocks: int = 5,
    n_active: int = 2,
    rank: int = 2,
    tau: float = 0.1,
    block_scale: float = 1.0,
    noise: str = "full",
    noise_scale: float = 0.5,
    likelihood: str = "gaussian",
) -> tuple[MultiOutputData, dict]:
    """Data with a known sparse block support and a known low-rank task covariance.

    Features are split into ``n_blocks`` contiguous blocks; ``n_active`` of them (chosen at random)
    have ``W_i = chol(V V' + tau I) Z_i * block_scale`` (``Z_i`` standard normal, so gamma_i =
    block_scale^-2); the others are exactly zero. ``V`` is standard normal / sqrt(rank).

    Returns
    -------
    data : MultiOutputData
        ``X`` standard normal, ``Y`` the outputs, ``feature_blocks`` set.
    truth : dict
        ``W, V, tau, task_cov, active (Q,) bool, gamma, mu, Sigma (None for bernoulli), blocks``.

    Examples
    --------
    >>> import jax
    >>> data, truth = simulate(jax.random.key(0), n=30, n_tasks=5, n_features=10, n_blocks=5)
    >>> data.Y.shape, int(truth["active"].sum())
    ((30, 5), 2)
    """
    check_config(n_tasks, rank=rank, prior="gig", noise=noise, likelihood=likelihood)
    if not 1 <= n_blocks <= n_features:
        raise ValueError(f"n_blocks: must be in [1, n_features={n_features}], got {n_blocks}")
    if not 0 <= n_active <= n_blocks:
        raise ValueError(f"n_active: must be in [0, n_blocks={n_blocks}], got {n_active}")
    for name, v in (("tau", tau), ("block_scale", block_scale), ("noise_scale", noise_scale)):
        if not v > 0:
            raise ValueError(f"{name}: must be positive, got {v}")
    P, D, Q = n_tasks, n_features, n_blocks
    blocks = np.minimum(np.arange(D) * Q // D, Q - 1).astype(np.int32)
    kx, kv, ka, kw, kmu, ks, kc, ke = jax.random.split(key, 8)
    X = np.asarray(jax.random.normal(kx, (n, D)))
    V = np.asarray(jax.random.normal(kv, (P, rank))) / np.sqrt(rank)
    C = V @ V.T + tau * np.eye(P)
    active = np.zeros(Q, bool)
    active[np.asarray(jax.random.permutation(ka, Q))[:n_active]] = True
    W = np.linalg.cholesky(C) @ np.asarray(jax.random.normal(kw, (P, D))) * block_scale
    W = W * active[blocks]
    mu = np.asarray(jax.random.normal(kmu, (P,))) * 0.5
    F = X @ W.T + mu
    Sigma = None
    if likelihood == "bernoulli":
        Y = np.asarray(jax.random.bernoulli(ke, jax.nn.sigmoid(F))).astype(float)
    else:
        sd = noise_scale * np.exp(0.2 * np.asarray(jax.random.normal(ks, (P,))))
        if noise == "full":
            L = np.asarray(_lkj_cholesky_sample(kc, P))
            Sigma = (sd[:, None] * L) @ (sd[:, None] * L).T
        else:
            Sigma = np.diag(sd**2)
        eps = np.asarray(jax.random.normal(ke, (n, P))) @ np.linalg.cholesky(Sigma).T
        Y = F + eps
    gamma = np.where(active, block_scale**-2, np.inf)
    data = MultiOutputData(X=X, Y=Y, feature_blocks=blocks)
    truth = {"W": W, "V": V, "tau": tau, "task_cov": C, "active": active, "gamma": gamma, "mu": mu,
             "Sigma": Sigma, "blocks": blocks}
    return data, truth

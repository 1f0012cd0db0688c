"""Empirical Bayes for Bakker & Heskes (2003): task weights integrated out, EM over clusters.

For task ``i`` with hidden activations ``H_i`` (``n_i x p``), a prior component ``N(m, Sigma)`` and
noise variance ``s2``, the evidence is ``y_i ~ N(H_i m, H_i Sigma H_i' + s2 I)``; it is computed
from per-task sufficient statistics (segment sums, no loop over tasks) as

    Q_i = H_i'H_i / s2 + Sigma^-1,   R_i = H_i'y_i / s2 + Sigma^-1 m,
    log p(y_i) = -n_i/2 log(2 pi s2) - 1/2 log|Sigma| - 1/2 log|Q_i| + 1/2 R_i'Q_i^-1 R_i
                 - y_i'y_i / (2 s2) - 1/2 m'Sigma^-1 m,

with posterior ``A_i ~ N(Q_i^-1 R_i, Q_i^-1)``.  `fit_empirical_bayes` maximises the marginal
likelihood by (generalised) EM: the latent variables are the labels ``z_i`` and the weights
``A_i``; the M-step for the means, covariances, mixing weights and noise is closed form, the gates
``U`` and the shared ``W`` take a few Adam steps that are kept only if they raise the objective,
so the objective (log evidence plus the small ``ridge``/``gate_l2`` penalties) never decreases.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from bayesmtl.data.taskdata import TaskData
from bayesmtl.inference.empirical_bayes_init import _initial_params, nuts_init_values
from bayesmtl.inference.runtime import quiet
from bayesmtl.models.task_clustering import hidden_features, task_design, validate_config
from tqdm.auto import tqdm

__all__ = [
    "EBResult",
    "component_evidence",
    "fit_empirical_bayes",
    "log_evidence",
    "nuts_init_values",
    "predict",
    "predictive_log_density",
    "task_statistics",
]

_LOG2PI = float(np.log(2 * np.pi))


class EBResult(NamedTuple):
    """Output of `fit_empirical_bayes`.

    ``params``: ``W`` (``None`` if linear), ``mean`` (``(C, p)``; ``(1, p)`` for ``"task_mean"``),
    ``mean_map`` (``(p, f')`` or ``None``), ``cov`` (``(C, p, p)``), ``log_weights`` (``(C,)``),
    ``gates`` (``(f', C)`` or ``None``), ``noise_var`` (``(n_tasks,)``).  ``post_mean``
    ``(n_tasks, C, p)`` and ``post_cov`` ``(n_tasks, C, p, p)`` are ``Q^-1 R`` and ``Q^-1`` per
    component; ``responsibilities`` ``(n_tasks, C)``; traces have one entry per EM iteration
    (plus the start). ``converged``: the best start stopped because its objective settled (gain
    below ``tol``), not at ``n_iter``.
    """

    params: dict
    post_mean: jnp.ndarray
    post_cov: jnp.ndarray
    responsibilities: jnp.ndarray
    log_evidence: float
    log_evidence_trace: np.ndarray
    objective_trace: np.ndarray
    config: dict
    converged: bool = False

    @property
    def weights_mean(self) -> jnp.ndarray:
        """Posterior mean of ``A_i`` (mixture over components), ``(n_tasks, p)``."""
        return np.einsum("tc,tcp->tp", np.asarray(self.responsibilities),
                         np.asarray(self.post_mean))

    @property
    def labels(self) -> np.ndarray:
        """Most probable cluster of each task."""
        return np.argmax(np.asarray(self.responsibilities), axis=1)


def task_statistics(Hx, y, task, n_tasks: int):
    """Per-task ``H_i'H_i`` ``(T,p,p)``, ``H_i'y_i`` ``(T,p)``, ``y_i'y_i`` and ``n_i``.

    Segment sums over the rows: no loop over tasks.
    """
    seg = lambda v: jax.ops.segment_sum(v, task, num_segments=n_tasks)
    S = seg(Hx[:, :, None] * Hx[:, None, :])
    return S, seg(Hx * y[:, None]), seg(y * y), seg(jnp.ones_like(y))


def component_evidence(stats, loc, L, s2):
    """Closed-form evidence and posterior of every task under every component.

    Parameters
    ----------
    stats : tuple
        From `task_statistics`.
    loc : array, ``(T or 1, C, p)``
        Prior means (per task for the task-dependent mean).
    L : array, ``(C, p, p)``
        Cholesky factors of the prior covariances.
    s2 : array, ``(T,)``
        Noise variances.

    Returns
    -------
    logL ``(T, C)``, post_mean ``(T, C, p)``, post_cov ``(T, C, p, p)``.
    """
    S, b, yy, n = stats
    p = L.shape[-1]
    eye = jnp.eye(p, dtype=L.dtype)
    Sinv = jax.vmap(lambda l: jax.scipy.linalg.cho_solve((l, True), eye))(L)
    sinv_m = jnp.einsum("cpq,tcq->tcp", Sinv, loc)
    Q = S[:, None] / s2[:, None, None, None] + Sinv[None]
    R = b[:, None] / s2[:, None, None] + sinv_m
    LQ = jnp.linalg.cholesky(Q)
    mu = jax.scipy.linalg.cho_solve((LQ, True), R[..., None])[..., 0]
    V = jax.scipy.linalg.cho_solve((LQ, True), jnp.broadcast_to(eye, Q.shape))
    logdet_q = 2 * jnp.sum(jnp.log(jnp.diagonal(LQ, axis1=-2, axis2=-1)), -1)
    logdet_s = 2 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)), -1)
    logL = (-0.5 * n * (_LOG2PI + jnp.log(s2)))[:, None] - 0.5 * logdet_s[None] \
        - 0.5 * logdet_q + 0.5 * jnp.sum(R * mu, -1) - (0.5 * yy / s2)[:, None] \
        - 0.5 * jnp.sum(loc * sinv_m, -1)
    return logL, mu, V


def _prior_parts(params, F, cfg):
    """Component means ``(T|1, C, p)``, Cholesky factors and log mixing weights ``(T, C)``."""
    loc = params["mean"][None]
    if cfg["prior"] == "task_mean":
        loc = (F @ params["mean_map"].T)[:, None, :]
    if cfg["prior"] == "gating":
        logq = jax.nn.log_softmax(F @ params["gates"], axis=-1)
    else:
        logq = params["log_weights"][None]
    return loc, jnp.linalg.cholesky(params["cov"]), logq


def _evaluate(params, X, y, task, F, cfg):
    Hx = hidden_features(X, params["W"], activation=cfg["activation"])
    stats = task_statistics(Hx, y, task, cfg["n_tasks"])
    loc, L, logq = _prior_parts(params, F, cfg)
    logL, mu, V = component_evidence(stats, loc, L, params["noise_var"])
    joint = logq + logL
    return jnp.sum(jax.nn.logsumexp(joint, axis=1)), joint, mu, V, stats, loc


def _penalty(params, cfg):
    eye = jnp.eye(params["cov"].shape[-1])
    pen = -0.5 * cfg["ridge"] * jnp.sum(jnp.trace(jnp.linalg.solve(params["cov"], eye), axis1=-2,
                                                  axis2=-1))
    if cfg["prior"] == "gating":
        pen -= 0.5 * cfg["gate_l2"] * jnp.sum(params["gates"] ** 2)
    return pen


def log_evidence(data: TaskData, params: dict, *, prior: str, activation: str = "tanh",
                 intercept: bool = True, task_features=None):
    """Total log evidence ``sum_i log sum_a q_ia p(y_i | a)`` and the ``(T, C)`` joint terms.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesmtl.data import TaskData
    >>> d = TaskData(X=np.zeros((2, 1)), y=np.zeros(2), task=[0, 1])
    >>> pr = dict(W=None, mean=np.zeros((1, 2)), cov=np.eye(2)[None], log_weights=np.zeros(1),
    ...           noise_var=np.ones(2))
    >>> round(float(log_evidence(d, pr, prior="gaussian")[0]), 3)  # two N(0, 2) densities at 0
    -2.531
    """
    cfg = {"prior": prior, "activation": activation, "n_tasks": data.n_tasks}
    F = _design(data, prior, intercept, task_features)
    params = {k: (None if v is None else jnp.asarray(v)) for k, v in params.items()}
    return _make_evaluate(tuple(sorted(cfg.items())))(
        params, jnp.asarray(data.X), jnp.asarray(data.y), jnp.asarray(data.task), F)


@lru_cache(maxsize=32)
def _make_evaluate(cfg_items: tuple):
    """One compiled ``(total, joint)`` evaluation per configuration (eager dispatch is slower)."""
    cfg = dict(cfg_items)
    return jax.jit(lambda params, X, y, task, F: _evaluate(params, X, y, task, F, cfg)[:2])


def _design(data, prior, intercept, task_features):
    tf = data.task_features if task_features is None else task_features
    if prior in ("task_mean", "gating"):
        return task_design(tf, intercept=intercept)
    return jnp.ones((data.n_tasks, 1))


@lru_cache(maxsize=32)
def _make_step(cfg_items: tuple):
    """The compiled EM step for one configuration.

    ``step(params, ...) -> (new_params, log_evidence, objective, joint, post_mean, post_cov)``,
    where everything but ``new_params`` is evaluated at the input ``params``; calling it once more
    after the last iteration is the final evaluation, so a fit compiles a single function.
    """
    cfg = dict(cfg_items)
    opt_u = optax.adam(cfg["lr_gates"])
    opt_w = optax.adam(cfg["lr_w"])

    def objective(params, X, y, task, F):
        return _evaluate(params, X, y, task, F, cfg)[0] + _penalty(params, cfg)

    def step(params, X, y, task, F):
        ev, joint, mu, V, stats, _ = _evaluate(params, X, y, task, F, cfg)
        S, b, yy, n = stats
        r = jax.nn.softmax(joint, axis=1)                                  # E-step
        T, _, p = mu.shape
        new = dict(params)
        Na = r.sum(0)
        if cfg["prior"] == "clustering":
            new["log_weights"] = jnp.log(jnp.maximum(Na / T, 1e-12))
        elif cfg["prior"] == "gating":
            def gate_obj(U):
                return -(jnp.sum(r * jax.nn.log_softmax(F @ U, axis=-1))
                         - 0.5 * cfg["gate_l2"] * jnp.sum(U**2))

            def body(carry, _):
                U, st = carry
                g = jax.grad(gate_obj)(U)
                upd, st = opt_u.update(g, st)
                return (optax.apply_updates(U, upd), st), None

            U0 = params["gates"]
            (U1, _), _ = jax.lax.scan(body, (U0, opt_u.init(U0)), None, cfg["gate_steps"])
            new["gates"] = jnp.where(gate_obj(U1) < gate_obj(U0), U1, U0)
        second = V + mu[..., :, None] * mu[..., None, :]                   # E[A A'] per (i, a)
        if cfg["prior"] == "task_mean":
            mu0 = mu[:, 0]
            M = jnp.linalg.solve(F.T @ F, F.T @ mu0).T
            new["mean_map"] = M
            dev = mu0 - F @ M.T
            scatter = V[:, 0].sum(0) + dev.T @ dev
            new["cov"] = ((scatter + cfg["ridge"] * jnp.eye(p)) / T)[None]
        else:
            Nsafe = jnp.maximum(Na, 1e-10)
            m = jnp.einsum("tc,tcp->cp", r, mu) / Nsafe[:, None]
            scatter = jnp.einsum("tc,tcpq->cpq", r, second) - Nsafe[:, None, None] * (
                m[:, :, None] * m[:, None, :])
            cov = (scatter + cfg["ridge"] * jnp.eye(p)) / Nsafe[:, None, None]
            cov = 0.5 * (cov + jnp.swapaxes(cov, -1, -2))
            alive = Na > 1e-6
            new["mean"] = jnp.where(alive[:, None], m, params["mean"])
            new["cov"] = jnp.where(alive[:, None, None], cov, params["cov"])
        resid = yy[:, None] - 2 * jnp.einsum("tp,tcp->tc", b, mu) + jnp.einsum(
            "tpq,tcpq->tc", S, second)                                     # E||y_i - H_i A_i||^2
        resid = jnp.sum(r * resid, axis=1)
        if cfg["noise"] == "shared":
            s2 = jnp.full(T, jnp.sum(resid) / jnp.sum(n))
        else:
            s2 = jnp.where(n > 0, resid / jnp.maximum(n, 1.0), params["noise_var"])
        new["noise_var"] = jnp.maximum(s2, cfg["min_noise_var"])
        if cfg["hidden"] > 0:                                              # generalised M-step
            f = lambda W: -objective(dict(new, W=W), X, y, task, F)

            def wbody(carry, _):
                W, st = carry
                val, g = jax.value_and_grad(f)(W)
                upd, st = opt_w.update(g, st)
                return (optax.apply_updates(W, upd), st), (val, W)

            # w_steps updates; one more pass only to score the last iterate (values come with the
            # gradients, so the graph holds the objective once: a smaller, faster compile)
            W0 = new["W"]
            _, (vals, Ws) = jax.lax.scan(wbody, (W0, opt_w.init(W0)), None, cfg["w_steps"] + 1)
            new["W"] = jnp.where(vals[-1] < vals[0], Ws[-1], W0)
        return new, ev, ev + _penalty(params, cfg), joint, mu, V

    return jax.jit(step)


def fit_empirical_bayes(data: TaskData, *, prior: str = "clustering", n_clusters: int = 1,
                        hidden: int = 0, activation: str = "tanh", noise: str = "shared",
                        intercept: bool = True, task_features=None, n_iter: int = 200,
                        tol: float = 1e-6, n_init: int = 3, ridge: float = 1e-3,
                        gate_l2: float = 1e-2, gate_steps: int = 50, lr_gates: float = 0.05,
                        w_steps: int = 20, lr_w: float = 0.01, min_noise_var: float = 1e-6,
                        key=None, init: dict | None = None,
                        progress_bar: bool | None = None) -> EBResult:
    """Fit a Bakker & Heskes prior by empirical Bayes (the paper's route).

    ``A_i`` are integrated out in closed form; ``W`` (for ``hidden > 0``), the prior's means,
    covariances, mixing weights / gates and the noise maximise the marginal likelihood by EM.

    Parameters
    ----------
    data : TaskData
        With targets.
    prior : {"gaussian", "task_mean", "clustering", "gating"}
    n_clusters : int
        ``C`` for ``"clustering"``/``"gating"`` (1 otherwise).
    hidden, activation, noise, intercept
        As in `bayesmtl.models.task_clustering.task_clustering_model`.
    task_features : array, optional
        Overrides ``data.task_features`` (``(n_tasks, f)``).
    n_iter, tol : int, float
        EM iterations; stop when the objective gains less than ``tol * |objective|``.
    n_init : int
        k-means initialisations (for ``C > 1``); the best final objective wins.
    ridge, gate_l2 : float
        Penalties ``-ridge/2 tr(Sigma_a^-1)`` and ``-gate_l2/2 |U|^2`` (keep covariances and
        gates finite); 0 gives plain maximum marginal likelihood.
    gate_steps, lr_gates, w_steps, lr_w : int, float
        Adam steps and rates per EM iteration for ``U`` and ``W``.
    key : jax.Array, optional
        PRNG key for ``W``'s initialisation and k-means (default ``jax.random.key(0)``).
    init : dict, optional
        Starting ``params`` (as in `EBResult.params`); skips k-means.
    progress_bar : bool, optional
        Show the EM iterations of each start with the current log evidence (a tqdm bar on stderr,
        cleared when done). ``None``: shown unless `bayesmtl.inference.runtime.quiet` (the ``CI``
        environment variable).

    Returns
    -------
    EBResult

    Examples
    --------
    >>> import jax
    >>> from bayesmtl.models.task_clustering import simulate
    >>> data, truth = simulate(jax.random.key(0), n_tasks=12, n_per_task=10)
    >>> res = fit_empirical_bayes(data, prior="clustering", n_clusters=3, n_iter=50)
    >>> res.responsibilities.shape
    (12, 3)
    """
    validate_config(data, prior=prior, n_clusters=n_clusters, hidden=hidden, noise=noise,
                    activation=activation, task_features=task_features)
    if data.y is None:
        raise ValueError("data: empirical Bayes needs targets (data.y is None)")
    for name, v in (("n_iter", n_iter), ("n_init", n_init)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name}: must be an integer >= 1, got {v!r}")
    for name, v in (("ridge", ridge), ("gate_l2", gate_l2), ("tol", tol)):
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"{name}: must be finite and >= 0, got {v!r}")
    if progress_bar is not None and not isinstance(progress_bar, bool):
        raise ValueError(f"progress_bar: must be True, False or None, got {progress_bar!r}")
    show = (not quiet()) if progress_bar is None else progress_bar
    key = jax.random.key(0) if key is None else key
    cfg = {"prior": prior, "n_clusters": int(n_clusters), "hidden": int(hidden),
           "activation": activation, "noise": noise, "n_tasks": data.n_tasks,
           "ridge": float(ridge), "gate_l2": float(gate_l2), "gate_steps": int(gate_steps),
           "lr_gates": float(lr_gates), "w_steps": int(w_steps), "lr_w": float(lr_w),
           "min_noise_var": float(min_noise_var)}
    step = _make_step(tuple(sorted(cfg.items())))
    X, y, task = jnp.asarray(data.X), jnp.asarray(data.y), jnp.asarray(data.task)
    F = _design(data, prior, intercept, task_features).astype(X.dtype)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel()[-1])
    best = None
    starts = [init] if init is not None else range(n_init if n_clusters > 1 else 1)
    for i, s in enumerate(starts):
        if isinstance(s, dict):
            params = jax.tree.map(lambda v: jnp.asarray(v, X.dtype), s)
            params = {k: params.get(k) for k in ("W", "mean", "mean_map", "cov", "log_weights",
                                                  "gates", "noise_var")}
            keep = {"W": hidden > 0, "mean_map": prior == "task_mean", "gates": prior == "gating"}
            params = {k: (v if keep.get(k, True) else None) for k, v in params.items()}
        else:
            params = _initial_params(X, y, task, F, cfg, jax.random.fold_in(key, s), rng)
        evs, objs, settled = [], [], False
        desc = "empirical Bayes EM" + (f", start {i + 1}/{len(starts)}" if len(starts) > 1 else "")
        with tqdm(total=int(n_iter), desc=desc, disable=not show, leave=False) as bar:
            for _ in range(int(n_iter)):
                params, ev, obj, *_ = step(params, X, y, task, F)
                evs.append(float(ev))
                objs.append(float(obj))
                bar.update(1)
                bar.set_postfix(log_evidence=f"{evs[-1]:.6g}", refresh=False)
                if len(objs) > 1 and objs[-1] - objs[-2] < tol * abs(objs[-1]):
                    settled = objs[-1] >= objs[-2]  # a drop also stops, but is no convergence
                    break
        _, total, final_obj, joint, mu, V = step(params, X, y, task, F)  # at the final params
        final_obj = float(final_obj)
        evs.append(float(total))
        objs.append(final_obj)
        if best is None or final_obj > best[0]:
            best = (final_obj, params, joint, mu, V, evs, objs, settled)
    _, params, joint, mu, V, evs, objs, settled = best
    if prior in ("clustering", "gating"):  # label order: increasing mean of the bias weight
        perm = jnp.argsort(params["mean"][:, -1])
        params = dict(params, mean=params["mean"][perm], cov=params["cov"][perm],
                      log_weights=params["log_weights"][perm])
        if prior == "gating":
            params["gates"] = params["gates"][:, perm]
        joint, mu, V = joint[:, perm], mu[:, perm], V[:, perm]
    config = {"prior": prior, "n_clusters": int(n_clusters), "hidden": int(hidden),
                  "activation": activation, "noise": noise, "intercept": intercept}
    return EBResult(params=params, post_mean=mu, post_cov=V,
                    responsibilities=jax.nn.softmax(joint, axis=1), log_evidence=evs[-1],
                    log_evidence_trace=np.array(evs), objective_trace=np.array(objs),
                    config=config, converged=settled)


def predict(result: EBResult, data: TaskData) -> jnp.ndarray:
    """Posterior-mean predictions ``h(x)' E[A_task | data]`` for the rows of ``data``.

    Examples
    --------
    >>> import jax
    >>> from bayesmtl.models.task_clustering import simulate
    >>> from bayesmtl.inference.empirical_bayes import fit_empirical_bayes
    >>> data, _ = simulate(jax.random.key(0), n_tasks=6, n_per_task=8)
    >>> predict(fit_empirical_bayes(data, n_clusters=2, n_iter=5), data).shape
    (48,)
    """
    Hx = hidden_features(jnp.asarray(data.X), result.params["W"],
                         activation=result.config["activation"])
    return jnp.sum(Hx * result.weights_mean[jnp.asarray(data.task)], axis=1)


def predictive_log_density(result: EBResult, data: TaskData) -> jnp.ndarray:
    """Pointwise log posterior predictive ``log sum_a r_ia N(y | h'mu_ia, h'V_ia h + s2_i)``.

    Examples
    --------
    >>> import jax
    >>> from bayesmtl.models.task_clustering import simulate
    >>> from bayesmtl.inference.empirical_bayes import fit_empirical_bayes
    >>> data, _ = simulate(jax.random.key(0), n_tasks=6, n_per_task=8)
    >>> predictive_log_density(fit_empirical_bayes(data, n_clusters=2, n_iter=5), data).shape
    (48,)
    """
    if data.y is None:
        raise ValueError("data: predictive_log_density needs targets (data.y is None)")
    Hx = hidden_features(jnp.asarray(data.X), result.params["W"],
                         activation=result.config["activation"])
    t = jnp.asarray(data.task)
    mean = jnp.einsum("np,ncp->nc", Hx, result.post_mean[t])
    var = jnp.einsum("np,ncpq,nq->nc", Hx, result.post_cov[t], Hx) \
        + result.params["noise_var"][t][:, None]
    y = jnp.asarray(data.y)[:, None]
    logn = -0.5 * (_LOG2PI + jnp.log(var) + (y - mean) ** 2 / var)
    return jax.nn.logsumexp(jnp.log(result.responsibilities[t]) + logn, axis=1)

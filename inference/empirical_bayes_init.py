"""Starting points for the Bakker & Heskes fits: k-means initialisation of the empirical-Bayes EM
and NUTS start values taken from an empirical-Bayes result (helpers of ``empirical_bayes``)."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
from bayesmtl.models.task_clustering import hidden_features
from scipy.cluster.vq import kmeans2

__all__ = ["nuts_init_values"]


def _kmeans_labels(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means labels (k-means++ seeding, 50 Lloyd steps) of the per-task weight estimates.

    A cluster left empty (fewer distinct tasks than clusters) keeps its seed; the caller starts it
    at the overall mean, so scipy's warnings about it (and about the degenerate k-means++
    probabilities of identical points) are silenced.
    """
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.filterwarnings("ignore", message="One of the clusters is empty")
        return kmeans2(points, k, iter=50, minit="++", seed=rng)[1]


def _initial_params(X, y, task, F, cfg, key, rng):
    d, T, C, H = X.shape[1], cfg["n_tasks"], cfg["n_clusters"], cfg["hidden"]
    W = None
    if H > 0:
        W = jax.random.normal(key, (d + 1, H), X.dtype) / np.sqrt(d + 1)
    # numpy from here on: a handful of small one-off operations, which eager JAX would compile
    Hx = np.asarray(hidden_features(X, W, activation=cfg["activation"]))
    yn, tn = np.asarray(y), np.asarray(task)
    p = Hx.shape[1]
    S = np.zeros((T, p, p))
    np.add.at(S, tn, Hx[:, :, None] * Hx[:, None, :])
    b = np.zeros((T, p))
    np.add.at(b, tn, Hx * yn[:, None])
    yy = np.bincount(tn, yn * yn, minlength=T)
    mu0 = np.linalg.solve(S + np.eye(p), b[..., None])[..., 0]                  # per-task ridge
    res = float(np.sum(yy - 2 * np.sum(b * mu0, 1) + np.einsum("tp,tpq,tq->t", mu0, S, mu0)))
    s2 = max(res / yn.size, 1e-2 * float(np.var(yn)), cfg["min_noise_var"])
    params = {"W": W, "mean_map": None, "gates": None, "noise_var": jnp.full(T, s2, X.dtype),
                  "log_weights": jnp.full(C, -np.log(C), X.dtype)}
    eye = np.eye(p)
    if cfg["prior"] == "task_mean":
        Fn = np.asarray(F)
        M = np.linalg.lstsq(Fn, mu0, rcond=None)[0].T
        dev = mu0 - Fn @ M.T
        params.update(mean_map=jnp.asarray(M, X.dtype), mean=jnp.zeros((1, p), X.dtype),
                      cov=jnp.asarray(np.cov(dev.T) + 0.1 * eye, X.dtype)[None])
        return params
    labels = _kmeans_labels(mu0, C, rng) if C > 1 else np.zeros(T, int)
    means = np.array([mu0[labels == a].mean(0) if (labels == a).any() else mu0.mean(0)
                      for a in range(C)])
    spread = np.cov(mu0.T) / C**2 + 0.05 * eye if T > 1 else eye
    params.update(mean=jnp.asarray(means, X.dtype),
                  cov=jnp.asarray(np.broadcast_to(spread, (C, p, p)), X.dtype))
    if cfg["prior"] == "gating":
        params["gates"] = jnp.zeros((F.shape[1], C), X.dtype)
    return params


def nuts_init_values(result, *, dtype=None) -> dict:
    """Starting values for NUTS on `task_clustering_model` from an empirical-Bayes fit.

    Mixture posteriors are multimodal; a chain started at random can settle in a mode that merges
    clusters.  Starting every chain at the EB solution (``NUTS(model,
    init_strategy=init_to_value(values=nuts_init_values(res)))``) avoids that; the ordering
    constraint (default, on the bias coordinate) matches the EB label order.  Sites the fit does
    not determine (the non-centred ``A_raw``) are left to NUTS's default initialisation.

    Examples
    --------
    >>> import jax
    >>> from bayesmtl.inference.empirical_bayes import fit_empirical_bayes
    >>> from bayesmtl.models.task_clustering import simulate
    >>> data, _ = simulate(jax.random.key(0), n_tasks=8, n_per_task=6)
    >>> sorted(nuts_init_values(fit_empirical_bayes(data, n_clusters=2, n_iter=5)))[:3]
    ['A', 'cluster_corr', 'cluster_mean_order']
    """
    pr, cfg = result.params, result.config
    cov = np.asarray(pr["cov"])
    sd = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
    corr = np.linalg.cholesky(cov / sd[..., :, None] / sd[..., None, :])
    mean = np.asarray(pr["mean"])
    s2 = np.asarray(pr["noise_var"])
    out = {"A": result.weights_mean,
           "noise_scale": np.sqrt(s2[0]) if cfg["noise"] == "shared" else np.sqrt(s2)}
    if pr["W"] is not None:
        out["W"] = pr["W"]
    if cfg["prior"] in ("clustering", "gating"):
        out.update(cluster_scale=sd, cluster_corr=corr)
        if cfg["n_clusters"] > 1:
            out.update(cluster_mean_order=mean[:, -1], cluster_mean_rest=mean[:, :-1])
        else:
            out["cluster_mean"] = mean
        if cfg["prior"] == "clustering":
            out["weights"] = np.exp(np.asarray(pr["log_weights"]))
        else:
            out["gates"] = pr["gates"]
    else:  # non-centred A: its standardised draws start at random (no multimodality there)
        del out["A"]
        out.update(cov_scale=sd[0], cov_corr=corr[0])
        if cfg["prior"] == "gaussian":
            out["mean"] = mean[0]
        else:
            out["mean_map"] = pr["mean_map"]
    dtype = jnp.result_type(float) if dtype is None else dtype  # the default float (x64 aware)
    return {k: jnp.asarray(v, dtype) for k, v in out.items()}

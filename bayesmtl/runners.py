"""The papers' own inference routes behind ``bayesmtl fit --method ...``, and per-family extras.

Each runner fits, then writes ``summary.json`` entries and PNGs into the output folder; the CLI
wraps the folder in an atomic write.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

__all__ = ["RUNNERS", "add_memberships", "run_method"]


def add_memberships(result, kwargs: dict) -> np.ndarray | None:
    """Store posterior cluster-membership probabilities in the DataTree (group ``membership``).

    Clusters are relabelled per draw first (by the ordering coordinate), so the probabilities mean
    the same thing in every chain. Returns the ``(task, cluster)`` array, or ``None`` for priors
    without clusters.
    """
    import xarray as xr

    from bayesmtl.models.task_clustering import membership_probabilities

    prior = kwargs.get("prior")
    if prior not in ("clustering", "gating"):
        return None
    probs = np.asarray(membership_probabilities(result.flat_samples(), result.data, prior=prior))
    coords = {"task": result.idata.posterior["task"].values if "task" in result.idata.posterior
              else np.arange(probs.shape[0]), "cluster": np.arange(probs.shape[1])}
    ds = xr.Dataset({"probability": (("task", "cluster"), probs)}, coords=coords)
    result.idata["membership"] = xr.DataTree(ds)
    return probs


def _run_eb(spec, data, kwargs: dict, args, out_dir: Path) -> dict:
    """Bakker & Heskes empirical Bayes: closed-form task evidence, EM over clusters."""
    from bayesmtl.inference.empirical_bayes import fit_empirical_bayes
    from bayesmtl.inference.plots import plot_evidence_trace, plot_membership

    kw = {k: v for k, v in kwargs.items()
          if k in ("prior", "n_clusters", "hidden", "noise", "intercept", "activation")}
    t0 = time.perf_counter()
    res = fit_empirical_bayes(data, key=jax.random.key(args.seed), **kw)
    runtime = time.perf_counter() - t0
    resp = np.asarray(res.responsibilities)
    np.savez(out_dir / "eb.npz", responsibilities=resp,
             weights_mean=np.asarray(res.weights_mean),
             log_evidence_trace=np.asarray(res.log_evidence_trace))
    plot_evidence_trace(res.log_evidence_trace, out_dir / "evidence.png")
    if resp.shape[1] > 1:
        plot_membership(resp, out_dir / "membership.png", task_names=data.task_names)
    return {
        "method": "eb",
        "runtime_s": runtime,
        "log_evidence": float(res.log_evidence),
        "em_iterations": int(len(res.log_evidence_trace) - 1),
        "labels": res.labels.tolist(),
        "cluster_sizes": np.bincount(res.labels, minlength=resp.shape[1]).tolist(),
        "converged": bool(res.converged),
        # the EM's own gate: its objective settled before the iteration limit
        "gate": "pass" if res.converged else "fail",
        "failures": {} if res.converged else {"em": [
            f"log evidence still changing after {len(res.log_evidence_trace) - 1} iterations"]},
    }


def _leaf_var(value):
    """``--leaf-var``: ``"learn"`` -> ``None`` (learnt), else the fixed number."""
    return None if value == "learn" else float(value)


def _lh_data(data, kwargs):
    """The latent-hierarchy routes model the task weights directly: add the intercept column."""
    from bayesmtl.data import TaskData

    X = np.column_stack([np.ones(data.n), data.X])
    names = ("intercept", *(data.feature_names or [f"x{j}" for j in range(data.n_features)]))
    return TaskData(X=X, y=data.y, task=data.task, n_tasks=data.n_tasks, feature_names=names,
                    task_names=data.task_names)


def _covariance(spec) -> bool:
    from bayesmtl.models.latent_hierarchy import covariance_sharing

    return spec.model is covariance_sharing


def _run_em(spec, data, kwargs: dict, args, out_dir: Path) -> dict:
    """Daume III 2009: greedy-coalescent EM for the mean- or covariance-sharing latent hierarchy."""
    from bayesmtl.inference.plots import plot_evidence_trace
    from bayesmtl.inference.tree_plots import plot_dendrogram, plot_similarity
    from bayesmtl.models.coalescent import tree_covariance

    likelihood = kwargs.get("likelihood", "gaussian")
    if kwargs.get("leaf_var", 0.0) != 0.0:
        raise ValueError("--leaf-var: the EM fits the paper's model (no leaf variance); "
                         "use --method mcmc")
    t0 = time.perf_counter()
    if _covariance(spec):
        from bayesmtl.inference.latent_hierarchy_cov import covariance_sharing_em

        res = covariance_sharing_em(_lh_data(data, kwargs), likelihood=likelihood)
        np.savez(out_dir / "em.npz", log_scale=res.S, R=res.R, Lambda=res.Lambda, w=res.W)
    else:
        from bayesmtl.inference.latent_hierarchy_em import latent_hierarchy_em

        res = latent_hierarchy_em(_lh_data(data, kwargs), likelihood=likelihood)
    runtime = time.perf_counter() - t0
    names = list(data.task_names) if data.task_names else None
    plot_dendrogram(res.tree, out_dir / "tree.png", names=names, title="greedy-EM tree")
    plot_similarity(np.asarray(tree_covariance(res.tree)), out_dir / "similarity.png",
                    tree=res.tree, names=names)
    plot_evidence_trace(res.objective, out_dir / "objective.png", ylabel="EM objective")
    # the EM's own gate: it stopped because the objective settled, not at max_iter
    failures = {} if res.converged else {
        "em": [f"objective still changing after {res.n_iter} iterations (the limit)"]}
    return {"method": "em", "runtime_s": runtime, **res.summary(names=names),
            "gate": "pass" if res.converged else "fail", "failures": failures}


def _tree_chains(requested: int) -> int:
    """Chains for the posterior over trees: at least 2, since its convergence check (the ASDSF,
    average standard deviation of split frequencies) compares the chains' clade frequencies. A
    request for fewer is raised to 2 with a note on stderr."""
    if requested < 2:
        print(f"bayesmtl fit: note: --method mcmc runs 2 chains, not --chains {requested}: its "
              "convergence check (the ASDSF) compares the trees of at least two chains",
              file=sys.stderr)
        return 2
    return requested


def _run_tree_mcmc(spec, data, kwargs: dict, args, out_dir: Path) -> dict:
    """Daume III 2009: the full posterior over trees and parameters (Gibbs + tree MH; NUTS for the
    covariance-sharing parameters)."""
    from bayesmtl.inference.tree_plots import plot_dendrogram, plot_similarity

    if _covariance(spec):
        from bayesmtl.inference.latent_hierarchy_cov_mcmc import (
            covariance_tree_posterior as sampler,
        )
    else:
        from bayesmtl.inference.tree_posterior import tree_posterior as sampler

    settings = {"num_chains": _tree_chains(args.chains), "num_warmup": args.warmup,
                "num_samples": args.samples}
    if os.environ.get("BAYESMTL_FAST"):
        settings.update(num_warmup=min(args.warmup, 100), num_samples=min(args.samples, 100))
    extra = {}
    if "leaf_var" in kwargs:  # mean sharing only (the registry's options)
        extra["leaf_var"] = _leaf_var(kwargs["leaf_var"])
    t0 = time.perf_counter()
    post = sampler(_lh_data(data, kwargs), likelihood=kwargs.get("likelihood", "gaussian"),
                   seed=args.seed, **settings, **extra)
    runtime = time.perf_counter() - t0
    names = list(data.task_names) if data.task_names else None
    summary = post.summary(names=names)
    mcc = post.mcc_tree()
    plot_dendrogram(mcc, out_dir / "tree.png", names=names,
                    clade_probabilities=post.clade_probabilities(), title="MCC tree")
    plot_similarity(post.similarity(correlation=True), out_dir / "similarity.png", tree=mcc,
                    names=names)
    post.idata.to_netcdf(out_dir / "posterior.nc", engine="h5netcdf")
    # the gate: chains agree on the trees (ASDSF < 0.05) and on the continuous parameters
    failures = {}
    if summary.get("asdsf") is not None and summary["asdsf"] >= 0.05:
        failures["trees"] = [f"ASDSF {summary['asdsf']:.3f} >= 0.05 (chains disagree on clades)"]
    if summary.get("max_rhat") is not None:
        for name, r in post.rhat().items():
            if r > 1.01:
                failures.setdefault(name, []).append(f"R-hat {r:.3f} > 1.01")
    # "_result": the draws, for `bayesmtl compare` (popped before summary.json is written)
    return {"method": "mcmc", "runtime_s": runtime, **settings, **summary,
            "gate": "fail" if failures else "pass", "failures": failures, "_result": post}


def _run_vem(spec, data, kwargs: dict, args, out_dir: Path) -> dict:
    """Archambeau et al. 2011: mean-field variational EM with type-II ML of the GIG prior."""
    from bayesmtl.inference.sparse_plots import plot_block_shrinkage, plot_task_covariance
    from bayesmtl.inference.vem_sparse import active_blocks, fit_vem_sparse

    kw = {k: v for k, v in kwargs.items() if k in ("prior", "rank", "noise", "blocks", "likelihood")}
    t0 = time.perf_counter()
    max_iter = 200 if os.environ.get("BAYESMTL_FAST") else 2000
    res = fit_vem_sparse(data, max_iter=max_iter, **kw)
    runtime = time.perf_counter() - t0
    plot_block_shrinkage(res, out_dir / "blocks.png")
    plot_task_covariance(res, None, out_dir / "task_covariance.png")
    from bayesmtl.inference.plots import plot_evidence_trace

    plot_evidence_trace(res.elbo, out_dir / "elbo.png", ylabel="ELBO")
    np.savez(out_dir / "vem.npz", gamma_mean=res.gamma_mean, task_cov=res.task_cov,
             elbo=res.elbo)
    return {"method": "vem", "runtime_s": runtime, "elbo": float(res.elbo[-1]),
            "vem_iterations": len(res.elbo), "converged": bool(res.converged),
            "gamma_mean": np.asarray(res.gamma_mean).tolist(),
            "active_blocks": np.flatnonzero(active_blocks(res.gamma_mean)).tolist(),
            "gate": "pass" if res.converged else "fail",
            "failures": {} if res.converged else {"vem": [
                f"ELBO still changing after {len(res.elbo)} iterations (the limit)"]}}


RUNNERS = {"eb": _run_eb, "em": _run_em, "mcmc": _run_tree_mcmc, "vem": _run_vem}


def run_method(method: str, spec, data, kwargs: dict, args, out_dir: Path) -> dict:
    """Run a paper's own route ``method`` for ``spec``; returns the summary entries."""
    if method not in RUNNERS:
        raise ValueError(f"--method: {method!r} has no runner; choose from {sorted(RUNNERS)}")
    return RUNNERS[method](spec, data, kwargs, args, out_dir)

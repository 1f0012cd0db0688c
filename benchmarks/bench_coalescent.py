"""Coalescent machinery at scale, and latent-hierarchy recovery (Teh et al. 2007; Daume III 2009).

Run: ``python benchmarks/bench_coalescent.py [--quick]``. Prints

1. greedy agglomerative inference (Greedy-Rate1, Greedy-MaxProb) on K = 1000 tasks, D = 10;
2. Brownian log-likelihood evaluations per second by messages (O(K D^2)) and by the dense
   matrix normal (O(K^3)), K = 1000, D = 10;
3. recovery: clades of a Kingman tree over K = 32 tasks recovered by the greedy tree on the true
   weights and by the EM from data (clade recall), with the EM's final objective gain.

PAPERS.md lists no published figures for these settings, so the columns are ours only.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpy as np
from bayesmtl.inference.coalescent_greedy import greedy_coalescent
from bayesmtl.inference.latent_hierarchy_em import latent_hierarchy_em
from bayesmtl.models.coalescent import (
    KingmanCoalescent,
    brownian_log_likelihood,
    brownian_log_likelihood_dense,
    clades,
)
from bayesmtl.models.latent_hierarchy import simulate


def greedy_scale(k: int, d: int) -> None:
    x = np.random.default_rng(0).normal(size=(k, d))
    for method in ("rate1", "maxprob"):
        t0 = time.perf_counter()
        greedy_coalescent(x, method=method)
        print(f"greedy {method:8s} K={k} D={d}: {time.perf_counter() - t0:7.2f} s")


def likelihood_rate(k: int, d: int, reps: int) -> None:
    tree = KingmanCoalescent(k).sample_tree(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (k, d))
    cov = jnp.eye(d) + 0.1
    for name, fn in (
        ("messages", brownian_log_likelihood),
        ("dense C", brownian_log_likelihood_dense),
    ):
        f = jax.jit(lambda t, x, c, fn=fn: fn(t, x, cov=c))
        f(tree, x, cov).block_until_ready()
        n = reps if name == "messages" else max(reps // 20, 2)
        t0 = time.perf_counter()
        for _ in range(n):
            f(tree, x, cov).block_until_ready()
        dt = (time.perf_counter() - t0) / n
        print(f"log-likelihood by {name:8s} K={k} D={d}: {1 / dt:9.1f} evaluations/s")


def recovery(k: int, d: int, n_per_task: int, seeds: int) -> None:
    for seed in range(seeds):
        key = jax.random.PRNGKey(seed)
        data, truth = simulate(
            key, k, n_per_task, d, noise_scale=0.5, params={"Lambda": np.eye(d), "mu0": np.zeros(d)}
        )
        true_clades = set(clades(truth["tree"]))
        big = {c for c in true_clades if len(c) >= 2}
        greedy = set(clades(greedy_coalescent(np.asarray(truth["w"]))))
        t0 = time.perf_counter()
        res = latent_hierarchy_em(data, max_iter=30)
        dt = time.perf_counter() - t0
        em = set(clades(res.tree))
        r_greedy, r_em = len(big & greedy) / len(big), len(big & em) / len(big)
        print(
            f"recovery K={k} D={d} n/task={n_per_task} seed={seed}: clade recall greedy(true w)"
            f" {r_greedy:.2f}, EM(data) {r_em:.2f}; EM {res.n_iter} iters in "
            f"{dt:.1f} s, objective {res.objective[0]:.1f} -> {res.objective[-1]:.1f}"
        )


def main(quick: bool) -> None:
    greedy_scale(200 if quick else 1000, 10)
    likelihood_rate(200 if quick else 1000, 10, 50 if quick else 200)
    recovery(16 if quick else 32, 5, 30, 1 if quick else 3)


if __name__ == "__main__":
    main("--quick" in sys.argv)

"""Sparse Bayesian MTL against its peers on held-out data: synthetic D = 50, Grunfeld-SUR, Linnerud.

    python benchmarks/bench_sparse_heldout.py [--seeds 2] [--samples 300] [--skip-synthetic]

Peers, all measured in the same run: the foundation's hierarchical model
(`bayesmtl.models.hierarchical.hierarchical`, NUTS through `bayesmtl.inference.fit` on the `TaskData`
form of the multi-output data, predictions from the posterior-mean weights), per-task ridge
(lambda = 1) and, on the real data, predicting the training mean.

1. Synthetic, the issue's size: P = 20 tasks, D = 50 features in Q = 10 blocks (3 active), rank-2
   task covariance, full noise covariance, N = 200 training rows shared by all tasks, 200 test rows.
2. Grunfeld-SUR (train 1935-49, test 1950-54): VEM on all firms' inputs against the hierarchical
   model on each firm's own (value, capital), the classic SUR design.
3. Linnerud (scikit-learn's copy; 20 men, 3 exercise inputs, 3 physiological outputs, standardised):
   leave-one-man-out MSE, and the structure VEM recovers (E[gamma] per exercise, task correlation,
   noise correlation).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from bayesmtl.data import load_linnerud, to_multioutput
from bayesmtl.data.multioutput import MultiOutputData, load_grunfeld_sur
from bayesmtl.data.taskdata import TaskData
from bayesmtl.inference.vem_sparse import active_blocks, fit_vem_sparse
from bench_sparse_mtl import f1, ridge_predict, synthetic  # also configures JAX (1 host device)


def hierarchical_predict(train_td, test_X_per_task, num_samples, seed=0):
    """Posterior-mean predictions of the hierarchical model fitted by NUTS on a `TaskData`."""
    from bayesmtl.inference import fit
    from bayesmtl.models.hierarchical import hierarchical

    t = time.perf_counter()
    res = fit(hierarchical, train_td, method="nuts", num_chains=1, num_warmup=num_samples,
              num_samples=num_samples, seed=seed, progress_bar=False, posterior_predictive=False)
    dt = time.perf_counter() - t
    w = res.flat_samples()["w"].mean(0)  # (P, 1 + D): intercept first
    div = int(res.idata.sample_stats["diverging"].sum())
    pred = np.stack([w[p, 0] + Xp @ w[p, 1:] for p, Xp in enumerate(test_X_per_task)], 1)
    return pred, dt, div


def own_block_taskdata(d):
    """Grunfeld-SUR in classic SUR form: firm p's rows carry only its own (value, capital)."""
    b = d.feature_blocks
    X = np.concatenate([d.X[:, b == p] for p in range(d.n_tasks)])
    return TaskData(X=X, y=d.Y.T.reshape(-1), task=np.repeat(np.arange(d.n_tasks), d.n),
                    n_tasks=d.n_tasks)


def mse(pred, Y):
    return float(np.mean((pred - Y) ** 2))


def bench_synthetic(seeds, num_samples):
    print(f"Synthetic P=20 D=50 Q=10 (3 active), rank 2, N=200 train / 200 test; hierarchical: NUTS "
          f"{num_samples}+{num_samples}, 1 chain, 1+D = 51 weights per task:", flush=True)
    rows = []
    for seed in range(seeds):
        train, test, truth = synthetic(seed)
        t = time.perf_counter()
        res = fit_vem_sparse(train, rank=2, prior="laplace", max_iter=500)
        t_vem = time.perf_counter() - t
        pred_h, t_h, div = hierarchical_predict(train.to_taskdata(), [test.X] * train.n_tasks,
                                                num_samples, seed)
        rows.append({
            "vem": mse(test.X @ res.W_mean.T + res.mu, test.Y),
            "hierarchical": mse(pred_h, test.Y),
            "ridge": mse(ridge_predict(train.X, train.Y, test.X), test.Y),
            "noise_floor": float(np.trace(truth["Sigma"]) / train.n_tasks),
            "f1": f1(active_blocks(res.gamma_mean), truth["active"])})
        print(f"  seed {seed}: " + ", ".join(f"{k}={v:.3f}" for k, v in rows[-1].items())
              + f"  (VEM {t_vem:.1f} s; hierarchical {t_h:.0f} s, {div} divergences)", flush=True)
    print("  mean: " + ", ".join(f"{k}={np.mean([r[k] for r in rows]):.3f}" for k in rows[0]))


def bench_grunfeld(num_samples):
    d = load_grunfeld_sur()
    tr, te = d.subset(np.arange(15)), d.subset(np.arange(15, 20))
    res = fit_vem_sparse(tr, rank=2, prior="laplace", noise="diag", max_iter=500)
    b = d.feature_blocks
    pred_h, dt, div = hierarchical_predict(own_block_taskdata(tr),
                                           [te.X[:, b == p] for p in range(d.n_tasks)],
                                           num_samples)
    print(f"Grunfeld-SUR held-out MSE (train 1935-49, test 1950-54): VEM (diag Sigma) "
          f"{mse(te.X @ res.W_mean.T + res.mu, te.Y):.3f}, hierarchical on each firm's own "
          f"(value, capital) {mse(pred_h, te.Y):.3f} ({dt:.0f} s, {div} divergences), ridge "
          f"lambda=1 {mse(ridge_predict(tr.X, tr.Y, te.X), te.Y):.3f}, training mean "
          f"{mse(tr.Y.mean(0), te.Y):.3f}", flush=True)


def _corr(c):
    s = np.sqrt(np.diag(c))
    return c / np.outer(s, s)


def bench_linnerud(num_samples):
    raw = to_multioutput(load_linnerud(standardize=False))
    n = raw.n
    preds = {k: np.zeros_like(raw.Y) for k in
             ("VEM rank 1, diag Sigma", "VEM rank 1, full Sigma", "hierarchical (NUTS)",
              "ridge lambda=1", "training mean")}
    t_h = 0.0
    for i in range(n):
        keep = np.setdiff1d(np.arange(n), [i])
        # standardise with the 19 training men only (the held-out man must not shape the scale)
        mx, sx = raw.X[keep].mean(0), raw.X[keep].std(0, ddof=1)
        my, sy = raw.Y[keep].mean(0), raw.Y[keep].std(0, ddof=1)
        tr = MultiOutputData(X=(raw.X[keep] - mx) / sx, Y=(raw.Y[keep] - my) / sy)
        x = (raw.X[i : i + 1] - mx) / sx
        for noise in ("diag", "full"):
            r = fit_vem_sparse(tr, rank=1, prior="laplace", noise=noise, max_iter=1000)
            preds[f"VEM rank 1, {noise} Sigma"][i] = (x @ r.W_mean.T + r.mu)[0]
        ph, dt, _ = hierarchical_predict(tr.to_taskdata(), [x] * raw.n_tasks, num_samples, seed=i)
        preds["hierarchical (NUTS)"][i], t_h = ph[0], t_h + dt
        preds["ridge lambda=1"][i] = ridge_predict(tr.X, tr.Y, x)[0]
        preds["training mean"][i] = tr.Y.mean(0)
        for v in preds.values():  # back to raw units
            v[i] = v[i] * sy + my
    print(f"Linnerud, leave-one-man-out MSE / variance of each output, standardised within each "
          f"fold on the 19 training men (hierarchical: "
          f"{t_h:.0f} s for 20 refits):")
    for k, p in preds.items():
        per = np.mean((p - raw.Y) ** 2, 0) / raw.Y.var(0, ddof=1)
        print(f"  {k:24s} {np.mean(per):.3f}  (" + ", ".join(
            f"{t} {v:.3f}" for t, v in zip(raw.task_names, per)) + ")")
    d = to_multioutput(load_linnerud())
    r = fit_vem_sparse(d, rank=1, prior="laplace", noise="full", max_iter=1000)
    print("  VEM on all 20 men (rank 1, full Sigma): E[gamma] per exercise "
          + ", ".join(f"{f} {g:.3g}" for f, g in zip(d.feature_names, r.gamma_mean))
          + f"; active {[d.feature_names[j] for j in np.flatnonzero(active_blocks(r.gamma_mean))]}")
    np.set_printoptions(precision=2, suppress=True)
    print(f"  task correlation (V V' + tau I) {d.task_names}:\n{_corr(r.task_cov)}")
    print(f"  noise correlation (Sigma):\n{_corr(r.Sigma)}")
    print(f"  W (tasks x exercises):\n{r.W_mean}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--skip-synthetic", action="store_true")
    a = ap.parse_args()
    bench_linnerud(a.samples)
    bench_grunfeld(a.samples)
    if not a.skip_synthetic:
        bench_synthetic(a.seeds, a.samples)


if __name__ == "__main__":
    main()

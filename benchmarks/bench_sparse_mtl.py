"""Sparse Bayesian MTL (Archambeau, Guo & Zoeter 2011): recovery, held-out error and speed.

    python benchmarks/bench_sparse_mtl.py [--seeds 5] [--nuts-samples 200] [--skip-nuts]
    python benchmarks/bench_sparse_mtl.py --classification [--seeds 5]

1. Synthetic P = 20 tasks, D = 50 features in Q = 10 blocks (3 active), rank-2 task covariance,
   N = 200 training rows, full noise covariance: F1 of the active blocks (VEM, E[gamma] rule),
   relative Frobenius error of the trace-normalised task covariance (beside the oracle floor: the
   same error for the empirical covariance of the *true* active weight columns), held-out MSE against
   per-task ridge, VEM iterations per second.
2. NUTS on the same problem (diagonal noise, one chain): min / median ESS per second over W and gamma.
3. Grunfeld (statsmodels) as shared-input SUR: last 5 years held out, MSE of VEM against ridge, and
   which firm blocks stay active.
4. ``--classification`` (only this section): Bernoulli-logit outputs, P = 20, D = 50, Q = 10
   (3 active), rank 2, N = 400 training / 2000 test rows: F1 of the active blocks (Laplace and ARD
   priors), held-out accuracy of VEM against per-task L2 logistic regression and the Bayes rule
   (true f), VEM iterations per second, ELBO monotone.
The held-out comparison with the foundation's hierarchical model, and Linnerud, are in
`bench_sparse_heldout.py`.
The paper reports no figure for these configurations (its data sets are unnamed in our notes).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax
import numpy as np
import statsmodels.api as sm
from bayesmtl.inference.runtime import configure

configure(host_devices=1)

from bayesmtl.data.multioutput import load_grunfeld_sur
from bayesmtl.inference.vem_sparse import active_blocks, fit_vem_sparse
from bayesmtl.models.sparse_mtl import simulate, sparse_mtl

P, D, Q, N, N_TEST = 20, 50, 10, 200, 200


def f1(pred, true):
    tp = np.sum(pred & true)
    return 2 * tp / max(np.sum(pred) + np.sum(true), 1)


def ridge_predict(Xtr, Ytr, Xte, lam=1.0):
    mx, my = Xtr.mean(0), Ytr.mean(0)
    B = np.linalg.solve((Xtr - mx).T @ (Xtr - mx) + lam * np.eye(Xtr.shape[1]), (Xtr - mx).T @ (Ytr - my))
    return (Xte - mx) @ B + my


def normalised_error(A, B):
    A, B = A / np.trace(A), B / np.trace(B)
    return np.linalg.norm(A - B) / np.linalg.norm(B)


def synthetic(seed):
    data, truth = simulate(jax.random.key(seed), n=N + N_TEST, n_tasks=P, n_features=D, n_blocks=Q,
                           n_active=3, rank=2)
    return data.subset(np.arange(N)), data.subset(np.arange(N, N + N_TEST)), truth


def bench_vem(seeds):
    rows = []
    for seed in range(seeds):
        train, test, truth = synthetic(seed)
        fit_vem_sparse(train, rank=2, max_iter=2)  # compile
        t = time.perf_counter()
        res = fit_vem_sparse(train, rank=2, prior="laplace", max_iter=500)
        dt = time.perf_counter() - t
        pred = test.X @ res.W_mean.T + res.mu
        mse = np.mean((pred - test.Y) ** 2)
        mse_ridge = np.mean((ridge_predict(train.X, train.Y, test.X) - test.Y) ** 2)
        cols = truth["W"][:, truth["active"][truth["blocks"]]]
        rows.append({
            "f1": f1(active_blocks(res.gamma_mean), truth["active"]),
            "cov_err": normalised_error(res.task_cov, truth["task_cov"]),
            "oracle": normalised_error(cols @ cols.T / cols.shape[1], truth["task_cov"]),
            "sigma_err": np.linalg.norm(res.Sigma - truth["Sigma"]) / np.linalg.norm(truth["Sigma"]),
            "mse": mse, "mse_ridge": mse_ridge, "its": len(res.elbo) / dt, "n_iter": len(res.elbo),
            "monotone": bool(np.all(np.diff(res.elbo) >= -1e-10 * np.abs(res.elbo[1:]))),
        })
        print(f"  seed {seed}: " + ", ".join(f"{k}={v:.3g}" for k, v in rows[-1].items()), flush=True)
    print("VEM, P=20 D=50 Q=10 (3 active), N=200, mean over seeds:")
    for k in rows[0]:
        print(f"  {k:10s} {np.mean([r[k] for r in rows]):.4g}")
    return rows


def bench_nuts(num_samples):
    from numpyro.diagnostics import effective_sample_size
    from numpyro.infer import MCMC, NUTS

    train, _, truth = synthetic(0)
    mcmc = MCMC(NUTS(sparse_mtl, max_tree_depth=8), num_warmup=num_samples,
                num_samples=num_samples, progress_bar=False)
    t = time.perf_counter()
    mcmc.run(jax.random.key(0), train, rank=2, prior="laplace", noise="diag")
    dt = time.perf_counter() - t
    s = mcmc.get_samples(group_by_chain=True)
    ess = np.concatenate([np.ravel(effective_sample_size(np.asarray(s[k]))) for k in ("W", "gamma")])
    g = np.median(np.asarray(s["gamma"][0]), 0)
    print(f"NUTS ({num_samples}+{num_samples}, 1 chain, diag noise): {dt:.1f} s incl. compile; "
          f"ESS/s min {ess.min() / dt:.3g}, median {np.median(ess) / dt:.3g}; "
          f"F1 {f1(active_blocks(g), truth['active']):.2f}")


def bench_grunfeld():
    d = load_grunfeld_sur()
    tr, te = d.subset(np.arange(15)), d.subset(np.arange(15, 20))
    print("Grunfeld (train 1935-49, test 1950-54, standardised), held-out MSE "
          f"(predicting the mean: {np.mean(te.Y ** 2):.3f}):")
    for lam in (1.0, 5.0):
        mse_r = np.mean((ridge_predict(tr.X, tr.Y, te.X, lam=lam) - te.Y) ** 2)
        print(f"  ridge lambda={lam:g}: {mse_r:.3f}")
    for noise in ("diag", "full"):
        res = fit_vem_sparse(tr, rank=2, prior="laplace", noise=noise, max_iter=500)
        mse = np.mean((te.X @ res.W_mean.T + res.mu - te.Y) ** 2)
        act = active_blocks(res.gamma_mean)
        corr = res.Sigma / np.sqrt(np.outer(np.diag(res.Sigma), np.diag(res.Sigma)))
        off = np.abs(corr[~np.eye(d.n_tasks, dtype=bool)])
        print(f"  VEM laplace rank 2, {noise} Sigma: {mse:.3f}; {int(act.sum())}/11 firm blocks "
              f"active; |noise corr| off-diagonal median {np.median(off):.2f}")


CN, CN_TEST = 400, 2000


def logistic_l2(X, y, lam=1.0):
    """Per-task logistic regression, L2 penalty ``lam`` on the weights (intercept free): statsmodels' penalised GLM."""
    Xa = sm.add_constant(X, has_constant="add")
    alpha = np.r_[0.0, np.full(X.shape[1], lam / len(y))]  # statsmodels scales the penalty by 1/n
    fam = sm.families.Binomial()
    return sm.GLM(y, Xa, family=fam).fit_regularized(alpha=alpha, L1_wt=0.0).params


def bench_classification(seeds):
    print(f"Bernoulli-logit VEM, P={P} D={D} Q={Q} (3 active), rank 2, N={CN} train / {CN_TEST} test:")
    rows = []
    for seed in range(seeds):
        data, truth = simulate(jax.random.key(seed), n=CN + CN_TEST, n_tasks=P, n_features=D,
                               n_blocks=Q, n_active=3, rank=2, likelihood="bernoulli")
        train, test = data.subset(np.arange(CN)), data.subset(np.arange(CN, CN + CN_TEST))
        right_l2 = np.stack([test.X @ w[1:] + w[0] > 0 for w in
                             (logistic_l2(train.X, train.Y[:, p]) for p in range(P))], 1) == test.Y
        row = {"acc_l2": right_l2.mean(),
               "acc_bayes": np.mean((test.X @ truth["W"].T + truth["mu"] > 0) == test.Y)}
        for prior in ("laplace", "ard"):
            fit_vem_sparse(train, rank=2, prior=prior, likelihood="bernoulli", max_iter=2)  # compile
            t = time.perf_counter()
            res = fit_vem_sparse(train, rank=2, prior=prior, likelihood="bernoulli", max_iter=1000)
            dt = time.perf_counter() - t
            g, act = res.gamma_mean, truth["active"]
            right = (test.X @ res.W_mean.T + res.mu > 0) == test.Y
            row.update({
                f"f1_{prior}": f1(active_blocks(g), act),
                f"sep_{prior}": g[~act].min() / g[act].max(),  # min switched-off / max active
                f"acc_{prior}": right.mean(),
                # paired z of the accuracy difference against L2 logistic on the same test labels
                f"z_{prior}": (right.mean() - right_l2.mean())
                / (np.sqrt(np.sum(right != right_l2)) / right.size),
                f"its_{prior}": len(res.elbo) / dt, f"n_iter_{prior}": len(res.elbo),
                f"monotone_{prior}": bool(np.all(np.diff(res.elbo) >= -1e-10 * np.abs(res.elbo[1:]))),
            })
        rows.append(row)
        print(f"  seed {seed}: " + ", ".join(f"{k}={v:.3g}" for k, v in row.items()), flush=True)
    print("  mean: " + ", ".join(f"{k}={np.mean([r[k] for r in rows]):.4g}" for k in rows[0]))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--nuts-samples", type=int, default=200)
    ap.add_argument("--skip-nuts", action="store_true")
    ap.add_argument("--classification", action="store_true",
                    help="run only the Bernoulli-logit section (4)")
    a = ap.parse_args()
    if a.classification:
        bench_classification(a.seeds)
        return
    bench_vem(a.seeds)
    bench_grunfeld()
    if not a.skip_nuts:
        bench_nuts(a.nuts_samples)


if __name__ == "__main__":
    main()

"""Latent task hierarchies (Daume III 2009): recovery, held-out prediction vs the flat model, mixing.

Run: ``python benchmarks/bench_latent_hierarchy.py [--quick] [section ...]`` (sections: recovery,
heldout, heldout-rich, heldout-flat, real, mixing; all by default). Prints

1. recovery: tasks simulated from known trees with well-separated clades: the posterior probability
   of each true clade (`tree_posterior`, 4 chains from random trees), ASDSF and R-hat, and whether
   the greedy-EM tree contains the true clades;
2. held-out log predictive density per row, tree posterior (the paper's model, ``leaf_var=0``, and
   with the leaf variance learnt, ``leaf_var=None``) vs the flat hierarchical model
   (`bayesmtl.models.hierarchical.hierarchical` by `bayesmtl.inference.fit`, NUTS), on data whose
   truth is a tree of 4 tight, well-separated clades, a tree drawn from the model's own Kingman prior,
   and on data whose truth is flat (3 seeds each; 6 for the flat truth), with the model that
   PSIS-LOO on the training rows prefers (tree or flat) and the stacked mixture of the two
   (`stacked_log_predictive`, stacking weights by the same LOO) beside it,
   with 4 training rows per task (``heldout``: where borrowing strength matters) and with 12
   (``heldout-rich``); ``heldout-flat``: the flat truth alone on 12 seeds, the paper's model;
3. real data: Exam schools (65 tasks) and radon counties (85 tasks), regression, and Exam as a
   classification task (``normexam > 0``), held-out rows by `bayesmtl.data.train_test_split`, with
   and without the learnt leaf variance;
4. tree MCMC at K = 50 tasks: ASDSF, R-hat, ESS of the tree height, acceptance, seconds per sweep.

PAPERS.md lists no published figures for these settings, so the columns are ours only; the flat
model is the peer, run in the same process on the same splits.
"""

from __future__ import annotations

import os
import sys
import time
import warnings

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import arviz as az
import jax
import numpy as np
from bayesmtl.data import TaskData, load_exam, load_radon, train_test_split
from bayesmtl.inference.compare import compare as loo_compare
from bayesmtl.inference.compare import stacked_log_predictive
from bayesmtl.inference.fit import fit
from bayesmtl.inference.latent_hierarchy_em import latent_hierarchy_em
from bayesmtl.inference.predict import log_predictive
from bayesmtl.inference.tree_posterior import tree_posterior
from bayesmtl.models import hierarchical as flat
from bayesmtl.models.latent_hierarchy import simulate
from bayesmtl.models.tree import clades, tree_from_merges

QUICK = "--quick" in sys.argv
CHAINS = 2 if QUICK else 4
WARM, DRAWS = (150, 250) if QUICK else (400, 800)


def _with_intercept(d: TaskData) -> TaskData:
    return TaskData(X=np.column_stack([np.ones(d.n), d.X]), y=d.y, task=d.task,
                    n_tasks=d.n_tasks, allow_empty_tasks=True)  # fmt: skip


def compare(train, test, *, likelihood="gaussian", intercept=False, seed=0, label="",
            leaf_vars=(0.0,)):  # fmt: skip
    """Held-out lppd of the tree posterior (one per ``leaf_vars`` entry) minus the flat model's."""
    tr, te = (_with_intercept(train), _with_intercept(test)) if intercept else (train, test)
    lp_trees, runs = [], []
    for lv in leaf_vars:
        t0 = time.perf_counter()
        post = tree_posterior(tr, likelihood=likelihood, num_chains=2, num_warmup=WARM,
                              num_samples=DRAWS // 2, seed=seed, leaf_var=lv)  # fmt: skip
        runs.append((post, time.perf_counter() - t0))
        lp_trees.append(post.log_predictive(te))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fit(flat.hierarchical, train, num_chains=2, num_warmup=WARM, num_samples=DRAWS // 2,
                  seed=seed, progress_bar=False, posterior_predictive=False,
                  model_kwargs={"intercept": intercept, "likelihood": likelihood})  # fmt: skip
    t_flat = time.perf_counter() - t0
    lp_flat = log_predictive(res, test)
    out = []
    for lv, lp_tree, (post, t_tree) in zip(leaf_vars, lp_trees, runs):
        diff = lp_tree - lp_flat
        tag = "learnt" if lv is None else f"{lv:g}"
        # PSIS-LOO on the training rows, tree vs flat: what a user without test rows would see
        table = loo_compare({"tree": post, "flat": res})
        loo_diff = table.loc["tree", "elpd"] - table.loc["flat", "elpd"]
        picked = float(diff.mean()) if loo_diff > 0 else 0.0
        # the stacked mixture of the two predictives, weights by the same LOO (Yao et al. 2018)
        stacked = stacked_log_predictive({"tree": post, "flat": res}, {"tree": te, "flat": test},
                                         weights=table["weight"]) - lp_flat  # fmt: skip
        print(
            f"{label:30s} leaf_var {tag:6s} lppd/row tree {lp_tree.mean():7.3f}  flat "
            f"{lp_flat.mean():7.3f}  diff {diff.mean():+.3f} +- "
            f"{diff.std(ddof=1) / np.sqrt(len(diff)):.3f}  (ASDSF {post.asdsf():.3f}, R-hat "
            f"{post.max_rhat:.3f}; {t_tree:.0f} s vs {t_flat:.0f} s)"
            + (f"; leaf_var median {np.median(post.samples['leaf_var']):.3g}" if lv is None else "")
            + f"; LOO elpd tree - flat {loo_diff:+.1f} (dse {table['dse'].max():.1f}); stacked "
            f"(tree weight {table.loc['tree', 'weight']:.2f}) - flat {stacked.mean():+.3f} +- "
            f"{stacked.std(ddof=1) / np.sqrt(len(stacked)):.3f}"
        )
        out.append((float(diff.mean()), picked, float(stacked.mean())))
    return out


def recovery():
    print("== 1. recovery of well-separated clades")
    rng = np.random.default_rng(0)
    centres = np.array([[2.0, 0.0], [-1.0, 2.0]])
    w = centres[np.arange(6) % 2] + 0.15 * rng.normal(size=(6, 2))
    task = np.repeat(np.arange(6), 15)
    x = rng.normal(size=(90, 2))
    data = TaskData(X=x, y=np.sum(x * w[task], 1) + 0.3 * rng.normal(size=90), task=task)
    two = [frozenset({0, 2, 4}), frozenset({1, 3, 5})]
    tree8 = tree_from_merges([[0, 1], [4, 5], [2, 3], [6, 7], [8, 10], [9, 11], [12, 13]],
                             [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 3.0])  # fmt: skip
    data8, _ = simulate(jax.random.PRNGKey(0), 8, 25, 2, tree=tree8, noise_scale=0.4,
                        params={"Lambda": np.eye(2), "mu0": np.zeros(2)})  # fmt: skip
    for name, d, truth in (("6 tasks, 2 clades of 3", data, two),
                           ("8 tasks, simulated tree", data8, clades(tree8))):  # fmt: skip
        post = tree_posterior(d, num_chains=CHAINS, num_warmup=WARM, num_samples=DRAWS, seed=1)
        p = post.clade_probabilities()
        em = set(clades(latent_hierarchy_em(d, max_iter=30).tree))
        probs = ", ".join(f"{sorted(c)}: {p.get(c, 0):.2f}" for c in truth)
        print(f"{name}: posterior {probs}")
        print(
            f"   ASDSF {post.asdsf():.3f}, max R-hat {post.max_rhat:.3f}, "
            f"EM tree has {len(set(truth) & em)}/{len(truth)} true clades, {post.runtime_s:.0f} s"
        )


def _clades_data(seed, n_rows, radius=2.0, spread=0.15):
    """4 clades of 4 tasks: centres at (+-radius, +-radius), tasks within ``spread`` of theirs."""
    rng = np.random.default_rng(seed)
    centres = radius * np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    w = centres[np.arange(16) // 4] + spread * rng.normal(size=(16, 2))
    task = np.repeat(np.arange(16), n_rows)
    x = rng.normal(size=(16 * n_rows, 2))
    return TaskData(X=x, y=np.sum(x * w[task], 1) + rng.normal(size=16 * n_rows), task=task)


def heldout_simulated(train_rows=4, test_rows=40, seeds=3, flat_seeds=6, only=None,
                      leaf_vars=(0.0, None)):  # fmt: skip
    """Truth = a tree of 4 tight, well-separated clades of 4 tasks; a tree drawn from the model's
    own prior (Kingman, Lambda = I); and truth = flat (one Gaussian over tasks, sd 2 per weight).

    Noise sd 1 and 4 training rows per task, so that one task's own rows pin its weights down
    poorly (OLS sd ~0.5 per weight) while its clade-mates lie within ~0.15: the setting in which a
    hierarchy over tasks can borrow strength that a single flat Gaussian over tasks cannot (its task
    covariance is dominated by the spread between clades). 40 held-out rows per task keep the
    Monte Carlo error of the lppd difference well below the effect. ``only``: the truths to run
    (default all); ``leaf_vars``: 0 is the paper's model, ``None`` the learnt leaf variance."""
    print(
        f"== 2. held-out lppd per row ({train_rows} training, {test_rows} test rows per task): tree "
        "posterior minus flat hierarchical (positive: tree better)"
    )
    n_rows, frac = train_rows + test_rows, test_rows / (train_rows + test_rows)
    truths = {
        "4 separated clades": lambda seed: _clades_data(seed, n_rows),
        "Kingman prior draw": lambda seed: simulate(
            jax.random.PRNGKey(seed), 16, n_rows, 2, noise_scale=1.0,
            params={"Lambda": np.eye(2), "mu0": np.zeros(2)})[0],
        "flat": lambda seed: flat.simulate(
            jax.random.key(seed), 16, n_rows, 2, intercept=False, sigma=1.0, mu=np.zeros(2),
            tau=2.0 * np.ones(2))[0],
    }  # fmt: skip
    truths = {k: v for k, v in truths.items() if only is None or k in only}
    out = {k: [] for k in truths}
    for name, make in truths.items():
        for seed in range(1 if QUICK else (flat_seeds if name == "flat" else seeds)):
            train, test = train_test_split(make(seed), test_fraction=frac, seed=seed)
            out[name].append(compare(train, test, seed=seed, label=f"{name}, seed {seed}",
                                     leaf_vars=leaf_vars))  # fmt: skip
    for k, v in out.items():
        v = np.asarray(v)  # (seed, leaf_var, [tree, the LOO-picked model, the stack] - flat)
        for j, lv in enumerate(leaf_vars):
            tag = "learnt" if lv is None else f"{lv:g}"
            print(
                f"   truth = {k}, leaf_var {tag}: differences "
                f"{', '.join(f'{x:+.3f}' for x in v[:, j, 0])}, mean {v[:, j, 0].mean():+.3f}; "
                f"the model PSIS-LOO prefers: {', '.join(f'{x:+.3f}' for x in v[:, j, 1])}; "
                f"stacked: {', '.join(f'{x:+.3f}' for x in v[:, j, 2])}, mean "
                f"{v[:, j, 2].mean():+.3f} +- {v[:, j, 2].std(ddof=1) / np.sqrt(len(v)):.3f}"
            )


def real_data():
    print("== 3. real data, held-out 25 % of rows per task")
    exam = load_exam()
    tr, te = train_test_split(exam, test_fraction=0.25, seed=0)
    both = (0.0, None)  # the paper's model and the learnt leaf variance
    compare(tr, te, intercept=True, label="Exam, 65 schools (regression)", leaf_vars=both)
    radon = load_radon()
    tr, te = train_test_split(radon, test_fraction=0.25, seed=0)
    compare(tr, te, intercept=True, label="radon, 85 counties (regression)", leaf_vars=both)
    binary = exam.with_y((exam.y > 0).astype(float))
    tr, te = train_test_split(binary, test_fraction=0.25, seed=0)
    compare(
        tr,
        te,
        likelihood="bernoulli",
        intercept=True,
        label="Exam normexam > 0 (Bernoulli)",
        leaf_vars=both,
    )


def mixing(k=50, d=3):
    print(f"== 4. tree MCMC at K = {k}, D = {d} (Kingman tree, 20 rows per task)")
    data, truth = simulate(jax.random.PRNGKey(7), k, 20, d, noise_scale=0.5,
                           params={"Lambda": np.eye(d), "mu0": np.zeros(d)})  # fmt: skip
    n_warm, n_draw = (200, 300) if QUICK else (500, 1000)
    post = tree_posterior(data, num_chains=2, num_warmup=n_warm, num_samples=n_draw, seed=3)
    sweeps = 2 * (n_warm + n_draw)
    ess_h = float(az.ess(post.idata.posterior.to_dataset()["tree_height"]))
    p = post.clade_probabilities()
    true = clades(truth["tree"])
    found = np.mean([p.get(c, 0) >= 0.5 for c in true])
    em = set(clades(latent_hierarchy_em(data, max_iter=30).tree))
    print(
        f"ASDSF {post.asdsf():.3f}, max R-hat {post.max_rhat:.3f}, ESS(tree height) "
        f"{ess_h:.0f} of {2 * n_draw}, acceptance {post.accept}"
    )
    print(
        f"{post.runtime_s / sweeps * 1e3:.1f} ms per sweep ({post.extra['tree_steps']} tree steps),"
        f" {post.runtime_s:.0f} s; true clades with posterior >= 0.5: {found:.2f}, "
        f"in the EM tree: {len(set(true) & em) / len(true):.2f}"
    )


SECTIONS = {
    "recovery": recovery,
    "heldout": heldout_simulated,
    "heldout-rich": lambda: heldout_simulated(train_rows=12),
    # the flat truth alone, on 12 seeds, the paper's model: is the stacked predictive no worse?
    "heldout-flat": lambda: heldout_simulated(flat_seeds=12, only=("flat",), leaf_vars=(0.0,)),
    "real": real_data,
    "mixing": mixing,
}

if __name__ == "__main__":
    chosen = [a for a in sys.argv[1:] if not a.startswith("--")] or list(SECTIONS)
    for name in chosen:
        SECTIONS[name]()

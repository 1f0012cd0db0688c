"""The paper-route runners behind ``bayesmtl fit --method em|mcmc``: their gates give reasons."""

import argparse

import numpy as np
from bayesmtl.data import TaskData
from bayesmtl.registry import get_model
from bayesmtl.runners import run_method


def _tasks(seed=0, k=6, n=12):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(k, 1))
    task = np.repeat(np.arange(k), n)
    x = rng.normal(size=(k * n, 1))
    return TaskData(X=x, y=x[:, 0] * w[task, 0] + 0.3 * rng.normal(size=k * n), task=task,
                    task_names=[f"t{i}" for i in range(k)])


def test_tree_mcmc_gate_fails_exactly_when_it_names_a_reason(tmp_path):
    args = argparse.Namespace(chains=2, warmup=30, samples=30, seed=0)
    s = run_method("mcmc", get_model("latent-hierarchy"), _tasks(), {}, args, tmp_path)
    post = s.pop("_result")
    assert s["gate"] == ("fail" if s["failures"] else "pass")
    # every variable over the R-hat bound is named, with its R-hat, and nothing else
    over = {k for k, r in post.rhat().items() if r > 1.01}
    assert {k for k in s["failures"] if k != "trees"} == over
    assert ("trees" in s["failures"]) == (s["asdsf"] >= 0.05)
    # 60 sweeps are too few to pass: the gate must fail and say why
    assert s["gate"] == "fail" and s["failures"]
    assert all(c["names"] == [f"t{i}" for i in c["tasks"]] for c in s["clade_probabilities"])

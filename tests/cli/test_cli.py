"""CLI round trips, in-process (BAYESMTL_FAST shrinks sampling; set by tests/conftest.py)."""

import json
import re

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from bayesmtl.cli import main


def run(*argv):
    return main([str(a) for a in argv])


def test_list(capsys):
    assert run("list") == 0
    out = capsys.readouterr().out
    for word in ["hierarchical", "exam", "radon", "grunfeld", "nuts", "svi"]:
        assert word in out


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    csv = d / "tasks.csv"
    assert run("simulate", "--model", "hierarchical", "--tasks", 6, "--per-task", 15,
               "--features", 1, "--seed", 3, "--out", csv) == 0
    return csv


def test_simulate_writes_csv_and_truth(simulated):
    df = pd.read_csv(simulated)
    assert list(df.columns) == ["task", "x0", "y"] and len(df) == 90
    truth = json.loads(simulated.with_suffix(".truth.json").read_text())
    assert np.asarray(truth["w"]).shape == (6, 2)


def test_simulate_refuses_to_overwrite(simulated, capsys):
    before = simulated.read_text()
    assert run("simulate", "--model", "pooled", "--out", simulated) == 2
    assert "already exists" in capsys.readouterr().err
    assert simulated.read_text() == before


def test_fit_csv_round_trip(simulated, tmp_path):
    out = tmp_path / "fit"
    assert run("fit", "--model", "hierarchical", "--data", simulated, "--task-col", "task",
               "--target", "y", "--features", "x0", "--chains", 2, "--out", out) == 0
    names = {p.name for p in out.iterdir()}
    assert {"posterior.nc", "summary.json", "summary.md", "trace.png", "rank.png",
            "forest.png", "ppc.png"} <= names
    s = json.loads((out / "summary.json").read_text())
    for key in ["max_rhat", "min_ess_bulk", "min_ess_tail", "divergences", "elpd_loo",
                "runtime_s", "gate"]:
        assert key in s
    assert 0.99 < s["max_rhat"] < 1.2 and s["min_ess_bulk"] > 20 and s["runtime_s"] > 0
    assert s["gate"] in ("pass", "fail") and np.isfinite(s["elpd_loo"])
    # The true population mean lies inside the posterior's range.
    truth = json.loads(simulated.with_suffix(".truth.json").read_text())
    post = xr.open_datatree(out / "posterior.nc", engine="h5netcdf")["posterior"]
    mu = post["mu"].values.reshape(-1, 2)
    assert np.all((mu.min(0) < truth["mu"]) & (truth["mu"] < mu.max(0)))
    # A second run into the same folder needs --force; with it, the folder is replaced.
    assert run("fit", "--model", "pooled", "--data", simulated, "--task-col", "task",
               "--target", "y", "--out", out) == 2
    assert run("fit", "--model", "pooled", "--data", simulated, "--task-col", "task",
               "--target", "y", "--chains", 1, "--out", out, "--force") == 0
    assert json.loads((out / "summary.json").read_text())["model"] == "pooled"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_fit_svi_on_a_synthetic_spec(tmp_path):
    out = tmp_path / "svi"
    assert run("fit", "--model", "pooled", "--data", "synthetic:pooled?tasks=3&per_task=10",
               "--method", "svi", "--out", out) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["method"] == "svi" and s["svi_pareto_k"] is not None


def test_compare_writes_table(tmp_path, capsys):
    """NUTS fits and the latent hierarchy's tree MCMC side by side (the check, on the user's own
    rows, of a tree of tasks against the flat hierarchy)."""
    out = tmp_path / "cmp"
    assert run("compare", "--models", "pooled,hierarchical,latent-hierarchy", "--data",
               "synthetic:hierarchical?tasks=5&per_task=10&seed=2", "--chains", 1,
               "--out", out) == 0
    table = pd.read_csv(out / "compare.csv", index_col=0)
    assert set(table.index) == {"pooled", "hierarchical", "latent-hierarchy"}
    assert table["weight"].sum() == pytest.approx(1.0) and np.isfinite(table["elpd"]).all()
    assert (out / "compare.png").exists() and (out / "pooled" / "summary.json").exists()
    tree = json.loads((out / "latent-hierarchy" / "summary.json").read_text())
    assert tree["method"] == "mcmc" and "_result" not in tree
    assert tree["elpd_loo"] == pytest.approx(table.loc["latent-hierarchy", "elpd"])
    # each model's gate verdict under the table, as its summary.json has it
    gates = {line.split()[1]: line.split()[2]
             for line in capsys.readouterr().out.splitlines() if line.startswith("gate ")}
    assert gates == {n: json.loads((out / n / "summary.json").read_text())["gate"]
                     for n in table.index}


def test_compare_refuses_a_method_without_draws(tmp_path, capsys):
    """compare needs posterior draws: --method eb (or em, mcmc, vem) is a clear error, not a
    KeyError from deep inside (models whose own first method is vem are fitted by NUTS)."""
    spec = "synthetic:hierarchical?tasks=4&per_task=8&seed=2"
    assert run("compare", "--models", "pooled,clustering", "--method", "eb", "--data", spec,
               "--out", tmp_path / "bad") == 2
    assert "--method: compare needs posterior draws" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "--model", "nope", "--data", "exam", "--out", "x"], "--model: unknown model"),
        (["fit", "--model", "pooled", "--data", "nope", "--out", "x"], "--data: 'nope'"),
        (["fit", "--model", "pooled", "--data", "missing.csv", "--out", "x"], "no such file"),
        (["fit", "--model", "pooled", "--data", "synthetic:pooled?bogus=1", "--out", "x"],
         "unknown synthetic option"),
        (["compare", "--models", "pooled", "--data", "exam", "--out", "x"], "at least two"),
        (["fit", "--model", "latent-hierarchy-cov", "--leaf-var", "learn", "--method", "mcmc",
          "--data", "exam", "--out", "x"], "--leaf-var: not an option of model"),
        (["fit", "--model", "latent-hierarchy", "--leaf-var", "learn", "--method", "em",
          "--data", "exam", "--out", "x"], "--leaf-var: the EM fits the paper's model"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(argv, message, capsys, tmp_path,
                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_sbc_command(tmp_path):
    out = tmp_path / "sbc"
    assert run("sbc", "--model", "pooled", "--sims", 4, "--tasks", 2, "--per-task", 4,
               "--features", 1, "--thin", 3, "--out", out) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["num_simulations"] == 4 and (out / "ecdf_pit.png").exists()


def test_clustering_by_empirical_bayes_recovers_the_clusters(tmp_path):
    """--method eb on three well-separated simulated clusters: the labels match the truth."""
    import jax
    from bayesmtl.models.task_clustering import simulate
    from bayesmtl.models.task_clustering_metrics import adjusted_rand_index

    out = tmp_path / "eb"
    assert run("fit", "--model", "clustering", "--clusters", 3, "--method", "eb", "--data",
               "synthetic:clustering?tasks=12&per_task=15&features=2&seed=4", "--out", out) == 0
    s = json.loads((out / "summary.json").read_text())
    _, truth = simulate(jax.random.key(4), prior="clustering", n_tasks=12, n_per_task=15,
                        n_features=2, n_clusters=3)
    assert adjusted_rand_index(truth["labels"], s["labels"]) >= 0.9
    assert (out / "membership.png").exists() and (out / "evidence.png").exists()
    assert s["converged"] is True and s["gate"] == "pass"


def test_nuts_clustering_memberships_in_the_datatree_recover_the_clusters(tmp_path):
    """NUTS (started at the EB fit) on three simulated clusters: the posterior memberships stored
    in the DataTree put the tasks in their true clusters.

    Measured at this size (one chain, fast mode): ARI 1.0 for --seed 0 to 5 on data seed 2. One
    misplaced task would give 0.69 to 0.80, two at most 0.69, and merging two clusters (the failure
    seen on data seed 4) 0.44; the bar of 0.75 leaves that margin."""
    import jax
    from bayesmtl.models.task_clustering import simulate
    from bayesmtl.models.task_clustering_metrics import adjusted_rand_index

    out = tmp_path / "nuts"
    assert run("fit", "--model", "clustering", "--clusters", 3, "--data",
               "synthetic:clustering?tasks=12&per_task=15&features=2&seed=2", "--chains", 1,
               "--init", "eb", "--out", out) == 0
    tree = xr.open_datatree(out / "posterior.nc", engine="h5netcdf")
    p = tree["membership"]["probability"].values
    assert p.shape == (12, 3) and np.allclose(p.sum(axis=1), 1, atol=1e-5)
    _, truth = simulate(jax.random.key(2), prior="clustering", n_tasks=12, n_per_task=15,
                        n_features=2, n_clusters=3)
    assert adjusted_rand_index(truth["labels"], p.argmax(axis=1)) >= 0.75


def test_options_a_model_does_not_take_are_refused(tmp_path, capsys):
    assert run("fit", "--model", "hierarchical", "--clusters", 3, "--data", "exam",
               "--out", tmp_path / "x") == 2
    assert "--clusters: not an option of model 'hierarchical'" in capsys.readouterr().err
    assert run("sbc", "--model", "clustering", "--out", tmp_path / "y") == 2


def test_latent_hierarchy_em_and_mcmc_write_trees(tmp_path, capsys):
    data = "synthetic:latent-hierarchy?tasks=5&per_task=15&features=1&seed=2"
    em = tmp_path / "em"
    assert run("fit", "--model", "latent-hierarchy", "--method", "em", "--data", data,
               "--out", em) == 0
    s = json.loads((em / "summary.json").read_text())
    assert s["newick"].endswith(";") and s["newick"].count("(") == 4  # 5 leaves: 4 merges
    assert (em / "tree.png").exists() and (em / "similarity.png").exists()
    mc = tmp_path / "mcmc"
    assert run("fit", "--model", "latent-hierarchy", "--method", "mcmc", "--data", data,
               "--out", mc) == 0
    s = json.loads((mc / "summary.json").read_text())
    probs = [c["probability"] for c in s["clade_probabilities"]]
    assert probs and min(probs) >= 0.05 and max(probs) <= 1.0
    # Non-trivial clades only: between 2 tasks and all but one.
    assert all(2 <= len(c["tasks"]) <= 4 for c in s["clade_probabilities"])
    assert s["asdsf"] is not None and (mc / "posterior.nc").exists()
    assert np.isfinite(s["elpd_loo"]) and s["elpd_loo_se"] > 0  # to set beside the flat model
    # a failed gate is explained on the terminal, not only in summary.json
    out = capsys.readouterr().out
    assert ("gate failed: " in out) == (s["gate"] == "fail")
    for name in s["failures"]:
        assert f"{name}: " in out


def test_sparse_mtl_vem_finds_the_active_block(tmp_path):
    """Synthetic sparse data with one active block of four: VEM names it."""
    import jax

    from bayesmtl.registry import get_model

    spec = "synthetic:sparse-mtl?tasks=5&per_task=80&features=8&seed=3"
    out = tmp_path / "vem"
    assert run("fit", "--model", "sparse-mtl", "--rank", 2, "--method", "vem", "--data", spec,
               "--out", out) == 0
    s = json.loads((out / "summary.json").read_text())
    _, truth = get_model("sparse-mtl").simulate(jax.random.key(3), 5, 80, 8, rank=2)
    true_active = np.flatnonzero(np.asarray(truth["active"])).tolist()
    assert s["active_blocks"] == true_active
    assert np.all(np.diff(json.loads((out / "summary.json").read_text())["gamma_mean"]) != 0)
    assert (out / "blocks.png").exists() and (out / "task_covariance.png").exists()


def test_sparse_mtl_vem_classification(tmp_path):
    """--likelihood bernoulli reaches the Jaakkola-Jordan VEM: labels are checked, blocks ranked."""
    import jax

    from bayesmtl.registry import get_model

    spec = "synthetic:sparse-mtl?tasks=4&per_task=300&features=8&seed=2&likelihood=bernoulli"
    out = tmp_path / "vem-logit"
    assert run("fit", "--model", "sparse-mtl", "--likelihood", "bernoulli", "--prior", "ard",
               "--method", "vem", "--data", spec, "--out", out) == 0
    s = json.loads((out / "summary.json").read_text())
    _, truth = get_model("sparse-mtl").simulate(jax.random.key(2), 4, 300, 8,
                                                likelihood="bernoulli")
    active = np.flatnonzero(np.asarray(truth["active"])).tolist()
    assert int(np.argmin(s["gamma_mean"])) == active[0] and active[0] in s["active_blocks"]
    assert (out / "blocks.png").exists() and (out / "task_covariance.png").exists()
    # Gaussian data are not labels: the error names y.
    bad = "synthetic:sparse-mtl?tasks=4&per_task=30&features=8&seed=2"
    assert run("fit", "--model", "sparse-mtl", "--likelihood", "bernoulli", "--method", "vem",
               "--data", bad, "--out", tmp_path / "bad") != 0


def test_latent_hierarchy_cov_simulate_em_and_mcmc(tmp_path, capsys):
    """Covariance sharing end to end: listed, simulated to CSV (true tree in the truth JSON),
    fitted by greedy-tree EM and by the posterior over trees."""
    assert run("list") == 0
    assert "latent-hierarchy-cov" in capsys.readouterr().out
    csv = tmp_path / "cov.csv"
    assert run("simulate", "--model", "latent-hierarchy-cov", "--tasks", 5, "--per-task", 15,
               "--features", 1, "--seed", 2, "--out", csv) == 0
    truth = json.loads(csv.with_suffix(".truth.json").read_text())
    assert np.asarray(truth["tree"]).shape == (4, 3) and truth["newick"].endswith(";")
    assert np.asarray(truth["log_scale"]).shape == (5, 1)
    fit = ["fit", "--model", "latent-hierarchy-cov", "--data", csv, "--task-col", "task",
           "--target", "y", "--features", "x0"]
    em = tmp_path / "em"
    assert run(*fit, "--method", "em", "--out", em) == 0
    s = json.loads((em / "summary.json").read_text())
    assert {"newick", "clades", "objective", "n_iter", "converged"} <= set(s)
    assert s["newick"].count("(") == 4 and s["model"] == "latent-hierarchy-cov"
    assert all((em / f).exists() for f in ("tree.png", "similarity.png", "objective.png"))
    mc = tmp_path / "mcmc"
    assert run(*fit, "--method", "mcmc", "--warmup", 50, "--samples", 50, "--out", mc) == 0
    s = json.loads((mc / "summary.json").read_text())
    probs = [c["probability"] for c in s["clade_probabilities"]]
    assert probs and min(probs) >= 0.05 and max(probs) <= 1.0
    assert all(2 <= len(c["tasks"]) <= 4 for c in s["clade_probabilities"])
    assert s["asdsf"] is not None and s["newick"].endswith(";") and "nuts" in s["acceptance"]
    assert all((mc / f).exists() for f in ("tree.png", "similarity.png", "posterior.nc"))
    post = xr.open_datatree(mc / "posterior.nc", engine="h5netcdf")["posterior"]
    assert post["log_scale"].shape[-2:] == (5, 2)  # intercept + x0


class _StopSampler(Exception):
    pass


def _tree_mcmc_settings(monkeypatch, tmp_path, *flags) -> dict:
    """Run ``fit --method mcmc`` on the latent hierarchy with the tree sampler replaced by a stub
    that records its keyword arguments and stops the run; return them."""
    import importlib

    tp = importlib.import_module("bayesmtl.inference.tree_posterior")  # the module, not the
    # function of the same name that bayesmtl.inference re-exports
    seen = {}

    def stub(data, **kw):
        seen.update(kw)
        raise _StopSampler

    monkeypatch.setattr(tp, "tree_posterior", stub)
    with pytest.raises(_StopSampler):
        run("fit", "--model", "latent-hierarchy", "--method", "mcmc", *flags,
            "--data", "synthetic:latent-hierarchy?tasks=4&per_task=5&features=1&seed=2",
            "--out", tmp_path / "mcmc")
    return seen


@pytest.mark.parametrize("chains, used, noted", [(1, 2, True), (3, 3, False)])
def test_tree_mcmc_raises_one_chain_to_two_and_says_why(chains, used, noted, tmp_path, capsys,
                                                        monkeypatch):
    """--method mcmc needs two chains for its ASDSF check: --chains 1 runs 2, with a note on
    stderr; more chains are kept as asked, silently."""
    seen = _tree_mcmc_settings(monkeypatch, tmp_path, "--chains", chains)
    assert seen["num_chains"] == used
    err = capsys.readouterr().err
    assert (f"runs 2 chains, not --chains {chains}" in err and "ASDSF" in err) == noted, err


@pytest.mark.parametrize("flag, expected", [("learn", None), ("0.5", 0.5), (None, "absent")])
def test_tree_mcmc_passes_leaf_var(flag, expected, tmp_path, monkeypatch):
    """--leaf-var reaches the sampler: 'learn' as None (learnt), a number as itself; without the
    flag the sampler keeps its default (the paper's model)."""
    extra = [] if flag is None else ["--leaf-var", flag]
    seen = _tree_mcmc_settings(monkeypatch, tmp_path, *extra)
    assert seen.get("leaf_var", "absent") == expected


def test_bad_leaf_var_is_an_argparse_error(capsys):
    for bad in ("-1", "nan", "lots"):
        with pytest.raises(SystemExit) as e:
            run("fit", "--model", "latent-hierarchy", "--leaf-var", bad, "--data", "exam",
                "--out", "x")
        assert e.value.code == 2
        assert "--leaf-var: expected a number >= 0 or 'learn'" in capsys.readouterr().err


def test_simulate_latent_hierarchy_with_a_leaf_variance(tmp_path):
    out = tmp_path / "lh.csv"
    assert run("simulate", "--model", "latent-hierarchy", "--tasks", 4, "--per-task", 3,
               "--leaf-var", "learn", "--out", out) == 0
    truth = json.loads(out.with_suffix(".truth.json").read_text())
    assert truth["leaf_var"] > 0  # drawn from its HalfCauchy prior
    assert run("simulate", "--model", "latent-hierarchy", "--tasks", 4, "--per-task", 3,
               "--leaf-var", "0.5", "--out", out, "--force") == 0
    assert "leaf_var" not in json.loads(out.with_suffix(".truth.json").read_text())  # fixed


# --------------------------------------------------------------------------- --out and --force
# These run no fit: fit_and_write is replaced by a stub that records its calls, so each test
# checks that a bad --out (or --models) is refused before any fitting starts.
SPEC = "synthetic:pooled?tasks=3&per_task=4"


@pytest.fixture
def fits(monkeypatch):
    from bayesmtl import cli

    calls = []

    def stub(spec, data, args, out_dir, *, data_label):
        calls.append(spec.name)
        (out_dir / "summary.json").write_text("{}")
        return {"model": spec.name, "method": "nuts", "gate": "pass"}

    monkeypatch.setattr(cli, "fit_and_write", stub)
    return calls


def test_atomic_dir_marks_its_folders_and_force_replaces_only_those(tmp_path):
    from bayesmtl.cli import OUTPUT_MARKER, CLIError, atomic_dir

    out = tmp_path / "res"
    with atomic_dir(out, force=False) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (out / OUTPUT_MARKER).is_file() and (out / "a.txt").exists()
    with atomic_dir(out, force=True) as tmp:  # a bayesmtl output: replaced whole
        (tmp / "b.txt").write_text("2")
    assert (out / OUTPUT_MARKER).is_file() and (out / "b.txt").exists()
    assert not (out / "a.txt").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_dir(empty, force=True) as tmp:  # an empty folder holds nothing to lose
        (tmp / "c.txt").write_text("3")
    assert (empty / "c.txt").exists()
    user = tmp_path / "user"
    (user / "sub").mkdir(parents=True)
    (user / "sub" / "keep.txt").write_text("mine")
    (tmp_path / "notes.txt").write_text("mine")
    for path in (user, tmp_path / "notes.txt"):
        with (pytest.raises(CLIError, match=r"^--out: .*not a bayesmtl output"),
              atomic_dir(path, force=True)):
            pytest.fail("entered the block")
    assert (user / "sub" / "keep.txt").read_text() == "mine"
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_force_keeps_a_folder_that_bayesmtl_did_not_write(tmp_path, capsys, fits):
    sandbox = tmp_path / "sandbox"
    (sandbox / "sub").mkdir(parents=True)
    (sandbox / "sub" / "keep.txt").write_text("mine")
    assert run("fit", "--model", "pooled", "--data", SPEC, "--out", sandbox, "--force") == 2
    err = capsys.readouterr().err
    assert "--out:" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert fits == [] and (sandbox / "sub" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("out", [".", "..", "sub/.."])
@pytest.mark.parametrize("force", [[], ["--force"]])
def test_an_out_without_a_name_of_its_own_is_refused_up_front(out, force, tmp_path, capsys,
                                                               monkeypatch, fits):
    """--out . once ran the whole fit, then failed on "PosixPath('.') has an empty name" and left
    a hidden temp folder behind."""
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    monkeypatch.chdir(work)
    assert run("fit", "--model", "pooled", "--data", SPEC, "--out", out, *force) == 2
    assert f"--out: {out!r} names no folder of its own" in capsys.readouterr().err
    assert fits == [] and sorted(p.name for p in tmp_path.rglob("*")) == ["sub", "work"]


@pytest.mark.parametrize(
    "models, message",
    [
        ("pooled,pooled", "--models: 'pooled' is named more than once"),
        ("pooled, hierarchical ,hierarchical", "--models: 'hierarchical' is named more than once"),
        ("pooled,nope", "--models: unknown model 'nope'; choose from"),
    ],
)
def test_compare_checks_the_model_names_before_fitting(models, message, tmp_path, capsys, fits):
    """pooled,pooled once crashed with a FileExistsError traceback after the first fit."""
    assert run("compare", "--models", models, "--data", SPEC, "--out", tmp_path / "c") == 2
    assert message in capsys.readouterr().err
    assert fits == [] and not list(tmp_path.iterdir())


def test_simulate_checks_both_outputs_before_writing_either(tmp_path, capsys):
    """simulate --out other.csv once overwrote an existing other.truth.json without --force."""
    csv, truth = tmp_path / "other.csv", tmp_path / "other.truth.json"
    truth.write_text("mine")
    argv = ["simulate", "--model", "pooled", "--tasks", 2, "--per-task", 3, "--out", csv]
    assert run(*argv) == 2
    assert f"--out: {truth} already exists" in capsys.readouterr().err
    assert truth.read_text() == "mine" and not csv.exists()
    assert run(*argv, "--force") == 0
    assert "w" in json.loads(truth.read_text()) and len(pd.read_csv(csv)) == 6


@pytest.mark.parametrize("out", [".", "folder"])
def test_simulate_refuses_a_folder_as_out(out, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    assert run("simulate", "--model", "pooled", "--out", out, "--force") == 2
    assert f"--out: {out!r} is a folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "--chains", 0], "--chains: expected an integer >= 1, got 0"),
        (["fit", "--warmup", -1], "--warmup: expected an integer >= 0, got -1"),
        (["fit", "--samples", 0], "--samples: expected an integer >= 1, got 0"),
        (["fit", "--task-col", "tsk"], "--task-col: column 'tsk' not in the data"),
        (["fit", "--target", "yy"], "--target: column 'yy' not in the data"),
        (["fit", "--features", "x0,y"], "--features: 'y' is the target column"),
        (["fit", "--features", "x0,task"], "--features: 'task' is the task column"),
        (["fit", "--features", "x9"], "--features: column(s) ['x9'] not in the data"),
        (["fit", "--data", "synthetic:pooled?tasks=0"], "--data: tasks: must be >= 1, got 0"),
        (["fit", "--data", "synthetic:pooled?tasks=two"], "--data: tasks='two' is not an integer"),
        (["simulate", "--model", "clustering", "--clusters", 0],
         "--clusters: must be an integer >= 1, got 0"),
        (["simulate", "--model", "pooled", "--tasks", 0], "--tasks: must be >= 1, got 0"),
    ],
)
def test_errors_name_the_flag_the_user_typed(argv, message, simulated, tmp_path, capsys):
    """ValueErrors from inside name Python arguments (num_chains, task_col, ...); the CLI says
    --chains, --task-col, ... instead, and keeps the rest of the message."""
    command, *rest = argv
    if command == "fit":  # the simulated CSV, with one option changed
        opts = {"--data": simulated, "--task-col": "task", "--target": "y", "--features": "x0",
                **dict(zip(rest[::2], rest[1::2]))}
        argv = ["fit", "--model", "pooled", *[a for kv in opts.items() for a in kv]]
    assert run(*argv, "--out", tmp_path / "out.csv") == 2
    err = capsys.readouterr().err
    assert f"bayesmtl {command}: error: {message}" in err, err
    assert not list(tmp_path.iterdir())


# a compare table as arviz.compare writes it, for the tests that stub the fits
FAKE_TABLE = pd.DataFrame(
    {"rank": [0, 1, 2], "elpd_diff": [0.0, -2.1, -30.9], "dse": [0.0, 1.5, 6.6],
     "p_worse": [np.nan, 0.9, 1.0], "diag_diff": ["", "", ""], "diag_elpd": ["3 k̂ > 0.7", "", ""],
     "p": [13.6, 5.0, 4.3], "elpd": [-44.6, -46.7, -75.5], "se": [5.6, 5.0, 5.1],
     "weight": [0.8, 0.2, 0.0]},
    index=["hierarchical", "latent-hierarchy", "pooled"],
)


def test_compare_prints_each_gate_and_warns_of_high_pareto_k(tmp_path, capsys, monkeypatch):
    from bayesmtl import cli, inference

    summaries = {  # as fit_and_write returns them: NUTS fits and the tree MCMC
        "hierarchical": {"method": "nuts", "gate": "pass", "failures": {}, "n_high_pareto_k": 3},
        "pooled": {"method": "nuts", "gate": "fail", "failures": {"w": ["bulk ESS 100 < 400"]},
                   "n_high_pareto_k": 0},
        "latent-hierarchy": {"method": "mcmc", "gate": "pass", "failures": {}, "pareto_k_high": 0},
    }
    monkeypatch.setattr(cli, "fit_and_write",
                        lambda spec, *a, **k: {**summaries[spec.name], "_result": spec.name})
    monkeypatch.setattr(inference, "compare", lambda results: FAKE_TABLE)
    assert run("compare", "--models", "pooled,hierarchical,latent-hierarchy", "--data", SPEC,
               "--out", tmp_path / "cmp") == 0
    lines = capsys.readouterr().out.splitlines()
    gates = {line.split()[1]: line.split()[2] for line in lines if line.startswith("gate ")}
    assert gates == {"hierarchical": "pass", "latent-hierarchy": "pass", "pooled": "fail"}
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 1 and "hierarchical: 3 observation(s) with Pareto k > 0.7" in warnings[0]


def test_compare_plot_keeps_its_title_and_axis_label_inside_the_figure(tmp_path):
    """compare.png's title was cut off at the top and its x label fell off the bottom."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from bayesmtl.cli import save_compare_plot

    fig = save_compare_plot(FAKE_TABLE, tmp_path / "compare.png")  # closed: draw it again
    assert (tmp_path / "compare.png").stat().st_size > 0
    ax, renderer = fig.axes[0], FigureCanvasAgg(fig).get_renderer()
    assert "elpd" in ax.get_xlabel()
    for text in (ax.title, ax.xaxis.label, *ax.get_yticklabels()):
        box = text.get_window_extent(renderer)
        assert text.get_text() and fig.bbox.contains(box.x0, box.y0) \
            and fig.bbox.contains(box.x1, box.y1), text.get_text()


def _option_help(text: str) -> dict:
    """``--flag`` -> its help text, one line, from argparse's --help output."""
    out, flag = {}, None
    for line in text.splitlines():
        m = re.match(r"^  (--[a-z-]+)(.*)$", line)
        if m:
            flag = m.group(1)
            out[flag] = m.group(2)
        elif flag and line.startswith("      "):
            out[flag] += " " + line
        else:
            flag = None
    return {k: " ".join(v.split()) for k, v in out.items()}


@pytest.mark.parametrize("command", ["fit", "compare", "demo", "sbc", "simulate"])
def test_help_shows_defaults_and_every_method(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    opts = _option_help(text)
    defaults = {"fit": {"--chains": 2, "--warmup": 1000, "--samples": 1000, "--seed": 0},
                "compare": {"--chains": 2, "--warmup": 1000, "--samples": 1000, "--seed": 0},
                "demo": {"--chains": 2, "--seed": 0, "--out": "results/demo"},
                "sbc": {"--warmup": 500, "--samples": 500, "--seed": 0},
                "simulate": {"--seed": 0}}[command]
    for flag, value in defaults.items():
        assert f"(default: {value})" in opts[flag], (flag, opts[flag])
    for flag in ("--model", "--out"):  # required ones say what to give
        if flag in opts and flag not in defaults:
            assert len(opts[flag].split()) > 3, (flag, opts[flag])
    if "--method" in opts:
        said = opts["--method"].split("}", 1)[1]  # the help after the choices
        for name in ("nuts", "svi", "vem", "em", "mcmc", "eb"):
            assert re.search(rf"\b{name}\b", said), (name, said)
    if command == "compare":
        flat = " ".join(text.split())
        assert "tree MCMC" in flat and "--method applies to the NUTS/SVI models" in flat

"""The ``bayesmtl`` command line: list, simulate, fit, compare, sbc, demo.

Every command that writes takes ``--out``; output folders are built in a temporary sibling folder
and renamed into place at the end, and an existing output is replaced only with ``--force``, and
then only if it is empty or bayesmtl wrote it (its ``.bayesmtl-output`` marker file).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlparse

__all__ = ["build_parser", "main"]

FAST = bool(os.environ.get("BAYESMTL_FAST"))


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


# --------------------------------------------------------------------------- output handling
OUTPUT_MARKER = ".bayesmtl-output"  # in every folder atomic_dir writes: what --force may replace


def check_out_dir(out: str | Path, *, force: bool) -> None:
    """Refuse an ``--out`` folder that this run must not create or replace (before any fitting).

    A new path is fine; an existing one needs ``--force``, and even then only an empty folder or a
    folder that bayesmtl wrote (it holds `OUTPUT_MARKER`) is replaced, never the user's own files.
    """
    out = Path(out)
    if out.name in ("", ".", ".."):  # '.', '/', 'a/..': renaming into place would fail at the end
        raise CLIError(f"--out: {str(out)!r} names no folder of its own; give a new folder's "
                       "path, e.g. results/fit")
    if out.exists() or out.is_symlink():
        if not force:
            raise CLIError(f"--out: {out} already exists (use --force to replace it)")
        if out.is_symlink() or not out.is_dir():
            raise CLIError(f"--out: {out} is not a bayesmtl output folder, so --force does not "
                           "replace it; choose another --out")
        if not (out / OUTPUT_MARKER).is_file() and any(out.iterdir()):
            raise CLIError(f"--out: {out} is not empty and not a bayesmtl output folder (no "
                           f"{OUTPUT_MARKER} file), so --force does not replace it; choose another "
                           "--out or empty it yourself")


@contextlib.contextmanager
def atomic_dir(out: str | Path, *, force: bool):
    """Yield a temporary folder that becomes ``out`` when the block succeeds.

    The folder is marked with `OUTPUT_MARKER`; ``force`` replaces an existing ``out`` only if it
    is empty or so marked (see `check_out_dir`).
    """
    out = Path(out)
    check_out_dir(out, force=force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    old = None
    try:
        (tmp / OUTPUT_MARKER).write_text("Written by bayesmtl: `--force` may replace this folder.\n")
        yield tmp
        check_out_dir(out, force=force)  # again: something may have appeared there meanwhile
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out.exists():
            old.rename(out)  # put the previous output back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str, *, force: bool) -> None:
    path = Path(path)
    if path.exists() and not force:
        raise CLIError(f"--out: {path} already exists (use --force to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


# --------------------------------------------------------------------------- data specs
def load_data(spec: str, args) -> TaskData:  # noqa: F821
    """A data set name, ``synthetic:<model>?tasks=..&per_task=..&features=..&seed=..``, or a CSV."""
    import jax

    from bayesmtl.data import DATASETS, from_csv, load_dataset
    from bayesmtl.registry import get_model

    if spec in DATASETS:
        return load_dataset(spec)
    if spec.startswith("synthetic:"):
        u = urlparse(spec)
        q = dict(parse_qsl(u.query))
        name = u.path
        allowed = {"tasks", "per_task", "features", "seed", "likelihood"}
        bad = set(q) - allowed
        if bad:
            raise CLIError(f"--data: unknown synthetic option(s) {sorted(bad)}; use {sorted(allowed)}")
        try:
            spec_m = get_model(name)
        except ValueError as e:
            raise CLIError(f"--data: {e}") from None
        sizes = {}
        for k, default in {"tasks": 8, "per_task": 20, "features": 2, "seed": 0}.items():
            try:
                sizes[k] = int(q.get(k, default))
            except ValueError:
                raise CLIError(f"--data: {k}={q[k]!r} is not an integer") from None
        try:
            opts = spec_m.model_kwargs(likelihood=q.get("likelihood"))
            data, _ = spec_m.simulate(jax.random.key(sizes["seed"]), sizes["tasks"],
                                      sizes["per_task"], sizes["features"], **opts)
        except ValueError as e:  # "n_tasks: ..." is the spec's tasks=..., not a flag
            name, sep, rest = str(e).partition(":")
            name = {"n_tasks": "tasks", "n_per_task": "per_task", "n_features": "features"}.get(
                name, name)
            raise CLIError(f"--data: {name}{sep}{rest}") from None
        return data
    path = Path(spec)
    if path.suffix.lower() == ".csv" or path.exists():
        if not path.is_file():
            raise CLIError(f"--data: no such file {spec!r}")
        if not args.task_col or not args.target:
            raise CLIError("--data: a CSV needs --task-col and --target (and optionally --features)")
        feats = args.features.split(",") if args.features else None
        tfeats = args.task_features.split(",") if args.task_features else None
        return from_csv(path, task_col=args.task_col, target=args.target, features=feats,
                        task_feature_cols=tfeats)
    raise CLIError(
        f"--data: {spec!r} is not a data set ({', '.join(sorted(DATASETS))}), a synthetic:<model> "
        "spec, or an existing CSV file"
    )


def _leaf_var_arg(text: str):
    if text == "learn":
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or 'learn', got {text!r}")
    return value


def _model_kwargs(spec, args) -> dict:
    from bayesmtl.registry import OPTION_KEYWORDS

    return spec.model_kwargs(**{opt: getattr(args, opt, None) for opt in OPTION_KEYWORDS})


def _settings(args) -> dict:
    s = dict(num_chains=args.chains, num_warmup=args.warmup, num_samples=args.samples,
             seed=args.seed, method=args.method, target_accept=args.target_accept)
    if FAST:
        s.update(num_warmup=min(s["num_warmup"], 150), num_samples=min(s["num_samples"], 150))
    return s


# --------------------------------------------------------------------------- one fit, written out
def fit_and_write(spec, data, args, out_dir: Path, *, data_label: str) -> dict:
    """Fit one model and write posterior.nc, summary.json, summary.md and the PNG plots."""
    import warnings

    import arviz as az

    from bayesmtl.data import TaskData
    from bayesmtl.inference import DiagnosticsWarning, diagnose, fit
    from bayesmtl.inference.plots import save_fit_plots
    from bayesmtl.runners import add_memberships, run_method

    kw = _model_kwargs(spec, args)
    if spec.family == "sparse":
        from bayesmtl.data.multioutput import MultiOutputData, to_multioutput

        if not isinstance(data, MultiOutputData):
            data = to_multioutput(data)
    elif not isinstance(data, TaskData):  # shared-input data for a per-task model: flat rows
        data = data.to_taskdata()
    settings = _settings(args)
    if settings["method"] is None:
        settings["method"] = spec.methods[0]
    if settings["method"] not in spec.methods:
        raise CLIError(f"--method: {spec.name} supports {spec.methods}, not {settings['method']!r}")
    if settings["method"] not in ("nuts", "svi"):
        extra = run_method(settings["method"], spec, data, kw, args, out_dir)
        draws = extra.pop("_result", None)  # the tree MCMC's draws, for compare
        if getattr(args, "strict", False) and extra.get("gate") == "fail":
            raise CLIError(f"--strict: the {settings['method']} fit did not pass its gate "
                           "(not converged, or ASDSF / R-hat too high)")
        summary = {"model": spec.name, "data": data_label, "model_kwargs": kw, "seed": args.seed,
                   "n_obs": data.n, "n_tasks": data.n_tasks, "n_features": data.n_features,
                   **extra}
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2,
                                                         default=_json_default))
        md = [f"# {spec.name} on {data_label} ({settings['method']})", "", spec.description, "",
              "```", json.dumps({k: v for k, v in summary.items() if not isinstance(v, list)},
                                indent=2, default=_json_default), "```", ""]
        md += [f"![{p.name}]({p.name})" for p in sorted(out_dir.glob("*.png"))]
        (out_dir / "summary.md").write_text("\n".join(md) + "\n")
        return summary if draws is None else {**summary, "_result": draws}
    init_values = None
    if getattr(args, "init", "random") == "eb":
        if spec.family != "task_clustering" or settings["method"] != "nuts":
            raise CLIError("--init eb: only for NUTS fits of the Bakker & Heskes models")
        import jax

        from bayesmtl.inference.empirical_bayes import fit_empirical_bayes, nuts_init_values

        eb = fit_empirical_bayes(data, key=jax.random.key(args.seed), **{
            k: v for k, v in kw.items() if k in ("prior", "n_clusters", "hidden", "noise")})
        init_values = nuts_init_values(eb)
    res = fit(spec.model, data, model_kwargs=kw, init_values=init_values, **settings)
    memberships = add_memberships(res, kw) if spec.family == "task_clustering" else None
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always", DiagnosticsWarning)
        diag = diagnose(res, strict=False)
    if args.strict and not diag.passed:
        print(str(diag), file=sys.stderr)
        raise CLIError("--strict: the diagnostics gate failed (see above)")
    res.idata.to_netcdf(out_dir / "posterior.nc", engine="h5netcdf")
    summary = {
        "model": spec.name, "data": data_label, "model_kwargs": kw,
        **{k: v for k, v in settings.items()},
        "n_obs": data.n, "n_tasks": data.n_tasks, "n_features": data.n_features,
        **diag.as_dict(), "gate": "pass" if diag.passed else "fail",
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    glob = [v for v in res.idata.posterior.data_vars
            if "task" not in res.idata.posterior[v].dims and v not in ("L", "z")]
    table = az.summary(res.idata, var_names=glob or None, round_to=3)
    md = [f"# {spec.name} on {data_label}", "", f"{spec.description}", "",
          f"{data.n} rows, {data.n_tasks} tasks, {data.n_features} features; "
          f"{settings['method'].upper()} in {res.runtime_s:.1f} s.", "", "## Diagnostics", "",
          "```", str(diag), "```", "", "## Population-level posterior", "",
          "```", table.round(2).to_string(), "```", ""]
    plots = save_fit_plots(res.idata, out_dir, target_name=getattr(data, "target_name", None))
    if memberships is not None:
        from bayesmtl.inference.plots import plot_membership

        plot_membership(memberships, out_dir / "membership.png", task_names=data.task_names)
        plots.append("membership.png")
    md += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    (out_dir / "summary.md").write_text("\n".join(md))
    summary["_result"] = res
    return summary


# --------------------------------------------------------------------------- commands
def cmd_list(args) -> int:
    from bayesmtl.data.datasets import DESCRIPTIONS
    from bayesmtl.registry import MODELS

    print("models:")
    for name, s in MODELS.items():
        print(f"  {name:24s} {s.description}")
    print("datasets:")
    for name, d in DESCRIPTIONS.items():
        print(f"  {name:24s} {d}")
    print("  synthetic:<model>?tasks=K&per_task=N&features=D&seed=S")
    print("methods, by model:")
    for name, s in MODELS.items():
        print(f"  {name:24s} {', '.join(s.methods)}")
    return 0


def cmd_simulate(args) -> int:
    import jax
    import numpy as np
    import pandas as pd

    from bayesmtl.registry import get_model

    spec = get_model(args.model)
    kw = _model_kwargs(spec, args)
    out = Path(args.out)
    if out.name in ("", ".", "..") or out.is_dir():
        raise CLIError(f"--out: {args.out!r} is a folder; give the path of the CSV file to write, "
                       "e.g. tasks.csv")
    truth_path = out.with_suffix(".truth.json")
    for path in (out, truth_path):  # both, before writing either
        if path.exists() and not args.force:
            raise CLIError(f"--out: {path} already exists (use --force to replace {out} and "
                           f"{truth_path})")
    data, truth = spec.simulate(jax.random.key(args.seed), args.tasks, args.per_task,
                                args.features, **kw)
    df = pd.DataFrame(data.X, columns=[f"x{j}" for j in range(data.n_features)])
    df.insert(0, "task", data.task)
    if data.task_features is not None:
        for j in range(data.task_features.shape[1]):
            df[f"tf{j}"] = data.task_features[data.task, j]
    df["y"] = data.y
    truth_out = {k: np.asarray(v) for k, v in truth.items() if k != "y"}
    atomic_write_text(out, df.to_csv(index=False), force=True)  # both checked above
    atomic_write_text(truth_path, json.dumps(truth_out, default=_json_default), force=True)
    print(f"wrote {out} ({data.n} rows, {data.n_tasks} tasks) and {truth_path}")
    return 0


def cmd_fit(args) -> int:
    from bayesmtl.registry import get_model

    spec = get_model(args.model)
    check_out_dir(args.out, force=args.force)
    data = load_data(args.data, args)
    with atomic_dir(args.out, force=args.force) as tmp:
        s = fit_and_write(spec, data, args, tmp, data_label=args.data)
    keys = ["max_rhat", "min_ess_bulk", "divergences", "elpd_loo", "log_evidence",
            "objective", "asdsf", "runtime_s", "gate"]
    shown = [k for k in keys if s.get(k) is not None]  # an SVI fit has no R-hat: not "None"
    print(f"{spec.name} ({s['method']}): " + ", ".join(
        f"{k} {s[k]:.4g}" if isinstance(s[k], float) else f"{k} {s[k]}" for k in shown))
    if s.get("gate") == "fail" and s.get("failures"):  # why, where the user looks
        print("gate failed: " + "; ".join(f"{name}: {', '.join(why)}"
                                          for name, why in s["failures"].items()))
    print(f"wrote {args.out}")
    return 0


def _compare_into(names, data, args, tmp: Path, data_label: str) -> tuple[dict, object]:
    from bayesmtl.inference import compare
    from bayesmtl.registry import get_model

    specs = [get_model(n) for n in names]
    for spec in specs:
        if not {"nuts", "svi", "mcmc"} & set(spec.methods):
            raise CLIError(f"--models: {spec.name} has no posterior draws, so no PSIS-LOO to compare")
    if args.method not in (None, "nuts", "svi"):
        raise CLIError(f"--method: compare needs posterior draws (nuts or svi), not {args.method!r}")
    results, summaries = {}, {}
    for spec in specs:
        sub = tmp / spec.name
        sub.mkdir()
        # PSIS-LOO needs draws: NUTS unless --method svi (a model's own first method may be eb/vem);
        # the latent hierarchies' draws come from their tree MCMC
        if not {"nuts", "svi"} & set(spec.methods):
            method = "mcmc"
        else:
            method = args.method or ("nuts" if "nuts" in spec.methods else "svi")
        s = fit_and_write(spec, data, argparse.Namespace(**{**vars(args), "method": method}), sub,
                          data_label=data_label)
        results[spec.name] = s.pop("_result")
        summaries[spec.name] = s
    table = compare(results)
    table.to_csv(tmp / "compare.csv")
    save_compare_plot(table, tmp / "compare.png")
    return summaries, table


def save_compare_plot(table, path: Path):
    """`arviz.plot_compare` of a `compare` table, with its title and axis label inside the PNG;
    returns the (closed) figure."""
    import arviz as az

    from bayesmtl.inference.plots import _mpl

    plt = _mpl()
    pc = az.plot_compare(table)  # relative scale: each model's elpd minus the best one's
    fig = pc.viz["figure"].item()
    ax = fig.axes[0]
    ax.set_title("Model comparison by PSIS-LOO (higher is better)")
    ax.set_xlabel("elpd (PSIS-LOO) minus the best model's; bars: ±1 se of the difference")
    fig.set_size_inches(8, 1.5 + 0.45 * len(table))
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return fig


def verdict_lines(summaries: dict, order) -> list[str]:
    """One ``gate <model> pass|fail`` line per model (``order``: the table's ranking), and a
    warning for each model whose PSIS-LOO has high Pareto k."""
    width = max(len(n) for n in order)
    lines = []
    for name in order:
        s = summaries[name]
        why = ", ".join(s.get("failures") or {})
        lines.append(f"gate {name:{width}s}  {s.get('gate', '-')}"
                     + (f" ({why}; see {name}/summary.md)" if s.get("gate") == "fail" and why
                        else ""))
    for name in order:
        s = summaries[name]
        if s.get("n_high_pareto_k"):  # NUTS / SVI draws: k > 0.7
            n, bound = s["n_high_pareto_k"], "> 0.7"
        elif s.get("pareto_k_high"):  # the tree MCMC: ArviZ's sample-size bound (<= 0.7)
            n, bound = s["pareto_k_high"], "above ArviZ's bound"
        else:
            continue
        lines.append(f"warning: {name}: {n} observation(s) with Pareto k {bound}, so its elpd is "
                     "unreliable (more draws, or K-fold cross-validation)")
    return lines


def cmd_compare(args) -> int:
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    if len(names) < 2:
        raise CLIError("--models: give at least two comma-separated model names")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise CLIError(f"--models: {', '.join(map(repr, twice))} is named more than once; name each "
                       "model once")
    from bayesmtl.registry import get_model

    for name in names:
        try:
            get_model(name)
        except ValueError as e:  # "model: unknown model ..."
            raise CLIError(f"--models: {str(e).removeprefix('model: ')}") from None
    check_out_dir(args.out, force=args.force)
    data = load_data(args.data, args)
    with atomic_dir(args.out, force=args.force) as tmp:
        summaries, table = _compare_into(names, data, args, tmp, args.data)
        (tmp / "summary.json").write_text(json.dumps(
            {"models": summaries, "compare": json.loads(table.to_json(orient="index"))},
            indent=2, default=_json_default))
    print(table.round(2).to_string())
    print("\n".join(verdict_lines(summaries, table.index)))
    print(f"wrote {args.out}")
    return 0


def cmd_sbc(args) -> int:
    import functools

    from bayesmtl.inference import sbc
    from bayesmtl.registry import get_model

    spec = get_model(args.model)
    if spec.family != "hierarchical":
        raise CLIError(f"--model: SBC needs a simulator that draws from the prior; {spec.name}'s "
                       "simulator draws well-separated tasks instead")
    kw = _model_kwargs(spec, args)
    check_out_dir(args.out, force=args.force)
    simulate = functools.partial(spec.simulate, n_tasks=args.tasks, n_per_task=args.per_task,
                                 n_features=args.features, **kw)
    warmup, samples = (min(args.warmup, 150), min(args.samples, 150)) if FAST else (
        args.warmup, args.samples)
    with atomic_dir(args.out, force=args.force) as tmp:
        res = sbc(spec.model, simulate=simulate, num_simulations=args.sims, num_warmup=warmup,
                  num_samples=samples, thin=args.thin, model_kwargs=kw, seed=args.seed,
                  workers=args.workers, scheduler=args.scheduler)
        import numpy as np

        np.savez(tmp / "ranks.npz", **res.ranks)
        (tmp / "summary.json").write_text(json.dumps(res.summary(), indent=2))
        res.plot(tmp / "ecdf_pit.png")
    print(json.dumps(res.summary(), indent=2))
    print(f"wrote {args.out}")
    return 0


def cmd_demo(args) -> int:
    """Fit pooled, independent and hierarchical models to the Exam data and compare by LOO."""
    from bayesmtl.data import load_exam

    check_out_dir(args.out, force=args.force)
    data = load_exam()
    t0 = time.perf_counter()
    with atomic_dir(args.out, force=args.force) as tmp:
        names = ["pooled", "independent", "hierarchical"]
        summaries, table = _compare_into(names, data, args, tmp, "exam")
        elapsed = time.perf_counter() - t0
        lines = [
            "# bayesmtl demo: Goldstein's Exam data", "",
            f"{data.n} students in {data.n_tasks} schools; normexam ~ intercept + standLRT + "
            "female, with school-specific weights under three priors.", "",
            f"NUTS, {args.chains} chains x {_settings(args)['num_samples']} draws "
            f"(after {_settings(args)['num_warmup']} warm-up); total {elapsed:.0f} s.", "",
            "| model | runtime (s) | max R-hat | min ESS bulk | divergences | elpd_loo (se) | gate |",
            "|---|---|---|---|---|---|---|",
        ]
        for n in names:
            s = summaries[n]
            lines.append(
                f"| {n} | {s['runtime_s']:.1f} | {s['max_rhat']:.3f} | {s['min_ess_bulk']:.0f} | "
                f"{s['divergences']} | {s['elpd_loo']:.1f} ({s['elpd_loo_se']:.1f}) | {s['gate']} |"
            )
        lines += ["", "## PSIS-LOO comparison (stacking weights)", "", "```",
                  table.round(2).to_string(), "```", "", "![compare](compare.png)", "",
                  "## Hierarchical model: school weights", "",
                  "![forest](hierarchical/forest.png)", "",
                  "![ppc](hierarchical/ppc.png)", "", "Per-model reports: "
                  + ", ".join(f"[{n}]({n}/summary.md)" for n in names), ""]
        (tmp / "report.md").write_text("\n".join(lines))
        (tmp / "summary.json").write_text(json.dumps(
            {"models": summaries, "compare": json.loads(table.to_json(orient="index")),
             "total_s": elapsed}, indent=2, default=_json_default))
    print(table.round(2).to_string())
    print("\n".join(verdict_lines(summaries, table.index)))
    print(f"wrote {args.out}/report.md in {elapsed:.0f} s")
    return 0


# --------------------------------------------------------------------------- parser
def _add_sampling(p):
    p.add_argument("--method", choices=["nuts", "svi", "eb", "em", "mcmc", "vem"], default=None,
                   help="nuts (NUTS) or svi (variational) for the NumPyro models; eb: Bakker & "
                        "Heskes empirical Bayes (clustering, gating); em: latent hierarchy, greedy "
                        "tree EM; mcmc: latent hierarchy, posterior over trees; vem: sparse-mtl "
                        "variational EM (default: the model's first method; `bayesmtl list` "
                        "shows each model's methods)")
    p.add_argument("--chains", type=int, default=2,
                   help="number of chains (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=1000,
                   help="warm-up (tuning) draws per chain (default: %(default)s)")
    p.add_argument("--samples", type=int, default=1000,
                   help="draws kept per chain (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--target-accept", dest="target_accept", type=float, default=0.8,
                   help="NUTS target acceptance probability; raise it to remove divergences "
                        "(default: %(default)s)")
    p.add_argument("--strict", action="store_true", help="exit non-zero if the gate fails")
    p.add_argument("--init", choices=["random", "eb"], default="random",
                   help="NUTS start: random (dispersed), or eb: the empirical-Bayes fit "
                        "(Bakker & Heskes models; steadies mixture chains)")


def _add_model_opts(p):
    p.add_argument("--likelihood", choices=["gaussian", "bernoulli"])
    p.add_argument("--noise", choices=["shared", "task"])
    p.add_argument("--centered", action="store_true", help="centred parametrisation")
    p.add_argument("--clusters", type=int, help="number of task clusters (clustering, gating)")
    p.add_argument("--hidden", type=int, help="tanh hidden units of the shared layer (0: linear)")
    p.add_argument("--prior", choices=["laplace", "student_t", "nig", "gig", "ard"],
                   help="sparse-mtl: GIG mixing prior of the feature blocks")
    p.add_argument("--rank", type=int, help="sparse-mtl: rank of the task covariance")
    p.add_argument("--leaf-var", dest="leaf_var", type=_leaf_var_arg,
                   help="latent-hierarchy, --method mcmc: extra leaf-branch length, a number >= 0 "
                        "(0: the paper's model) or 'learn'")


def _add_data(p, required=True):
    p.add_argument("--data", required=required,
                   help="data set name, synthetic:<model>?tasks=..&per_task=.., or a CSV path")
    p.add_argument("--task-col", dest="task_col")
    p.add_argument("--target")
    p.add_argument("--features", help="comma-separated input columns (CSV data)")
    p.add_argument("--task-features", dest="task_features",
                   help="comma-separated task-level columns, constant within a task (CSV data)")


MODEL_HELP = "model name, one of those `bayesmtl list` shows"
OUT_HELP = "output folder to create (it must not exist, unless --force)"
COMPARE_DESCRIPTION = (
    "Fit several models to the same data and rank them by PSIS-LOO, with stacking weights. "
    "--method applies to the NUTS/SVI models (default nuts; --method svi fits them by SVI); "
    "latent-hierarchy models are compared through their tree MCMC draws (the posterior over trees, "
    "with the same --chains, --warmup and --samples)."
)
FORCE_HELP = "replace an existing --out that bayesmtl wrote (never a folder of your own files)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bayesmtl", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="models, data sets and methods")

    s = sub.add_parser("simulate", help="simulate tasks from a model's prior predictive to CSV")
    s.add_argument("--model", required=True, help=MODEL_HELP)
    s.add_argument("--tasks", type=int, default=8, help="number of tasks (default: %(default)s)")
    s.add_argument("--per-task", dest="per_task", type=int, default=20,
                   help="rows per task (default: %(default)s)")
    s.add_argument("--features", type=int, default=2,
                   help="input features per row, x0, x1, ... (default: %(default)s)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    s.add_argument("--out", required=True,
                   help="CSV file to write; the true parameters go beside it (tasks.csv: "
                        "tasks.truth.json)")
    s.add_argument("--force", action="store_true",
                   help="overwrite an existing --out file and its .truth.json")
    _add_model_opts(s)

    f = sub.add_parser("fit", help="fit a model, write posterior, diagnostics and plots")
    f.add_argument("--model", required=True, help=MODEL_HELP)
    _add_data(f)
    _add_sampling(f)
    _add_model_opts(f)
    f.add_argument("--out", required=True, help=OUT_HELP)
    f.add_argument("--force", action="store_true", help=FORCE_HELP)

    c = sub.add_parser("compare", help="fit several models and compare them by PSIS-LOO",
                       description=COMPARE_DESCRIPTION)
    c.add_argument("--models", required=True,
                   help="comma-separated model names, each once (see `bayesmtl list`)")
    _add_data(c)
    _add_sampling(c)
    _add_model_opts(c)
    c.add_argument("--out", required=True, help=OUT_HELP)
    c.add_argument("--force", action="store_true", help=FORCE_HELP)

    b = sub.add_parser("sbc", help="simulation-based calibration")
    b.add_argument("--model", required=True,
                   help="a hierarchical-family model, whose simulator draws from the prior "
                        "(see `bayesmtl list`)")
    b.add_argument("--sims", type=int, default=100,
                   help="number of simulated data sets (default: %(default)s)")
    b.add_argument("--tasks", type=int, default=4, help="tasks per data set (default: %(default)s)")
    b.add_argument("--per-task", dest="per_task", type=int, default=8,
                   help="rows per task (default: %(default)s)")
    b.add_argument("--features", type=int, default=1,
                   help="input features per row, x0, x1, ... (default: %(default)s)")
    b.add_argument("--warmup", type=int, default=500,
                   help="warm-up (tuning) draws per fit (default: %(default)s)")
    b.add_argument("--samples", type=int, default=500,
                   help="draws kept per fit, before thinning (default: %(default)s)")
    b.add_argument("--thin", type=int, default=5,
                   help="keep every n-th draw for the ranks (default: %(default)s)")
    b.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    b.add_argument("--workers", type=int, default=1,
                   help="worker processes of a local Dask cluster (default: %(default)s)")
    b.add_argument("--scheduler", help="address of an existing Dask scheduler")
    _add_model_opts(b)
    b.add_argument("--out", required=True, help=OUT_HELP)
    b.add_argument("--force", action="store_true", help=FORCE_HELP)

    d = sub.add_parser("demo", help="pooled vs independent vs hierarchical on the Exam data")
    d.add_argument("--out", default="results/demo",
                   help="output folder to create (default: %(default)s)")
    d.add_argument("--force", action="store_true", help=FORCE_HELP)
    _add_sampling(d)
    d.set_defaults(target_accept=0.95)
    return p


COMMANDS = {"list": cmd_list, "simulate": cmd_simulate, "fit": cmd_fit, "compare": cmd_compare,
            "sbc": cmd_sbc, "demo": cmd_demo}


# A ValueError from inside names the Python argument; the user typed a flag.
FLAG_OF = {"num_chains": "--chains", "num_warmup": "--warmup", "num_samples": "--samples",
           "n_clusters": "--clusters", "task_col": "--task-col", "target": "--target",
           "features": "--features", "task_feature_cols": "--task-features", "model": "--model",
           "target_accept": "--target-accept", "n_tasks": "--tasks", "n_per_task": "--per-task",
           "n_features": "--features", "num_simulations": "--sims"}


def user_message(error: Exception) -> str:
    """The error's message with a leading internal argument name (``num_chains: ...``) replaced by
    the flag the user typed (``--chains: ...``)."""
    text = str(error)
    name, sep, rest = text.partition(":")
    if isinstance(error, CLIError) or not sep or name not in FLAG_OF:
        return text
    return f"{FLAG_OF[name]}:{rest}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "list":
        from bayesmtl.inference.runtime import configure

        configure()
    try:
        return COMMANDS[args.command](args)
    except (CLIError, ValueError) as e:
        print(f"bayesmtl {args.command}: error: {user_message(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

"""Pictures of a fit, saved as PNG: trace, rank, forest of task weights, posterior predictive check.

Trace, rank and posterior-predictive plots come from ArviZ (arviz-plots); the forest of task
weights is drawn here with one panel per feature and tasks sorted by posterior mean, which stays
readable for dozens of tasks where a stacked forest does not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "plot_evidence_trace",
    "plot_membership",
    "plot_ppc",
    "plot_rank",
    "plot_task_forest",
    "plot_trace",
    "save_fit_plots",
]


def _mpl():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        try:
            matplotlib.use("Agg")
        except Exception:  # pragma: no cover - an interactive backend already running
            pass
    import matplotlib.pyplot as plt

    return plt


def _global_vars(idata, limit: int = 6) -> list[str]:
    """Posterior variables without a ``task`` or ``obs`` dimension (the population level)."""
    post = idata.posterior
    names = [v for v, da in post.data_vars.items()
             if not {"task", "obs", "feature_"} & set(da.dims)]
    small = [v for v in names if int(np.prod([post[v].sizes[d] for d in post[v].dims[2:]])) <= 12]
    return (small or names)[:limit]


def _colour_dim(idata, var_names) -> str | None:
    """The one non-sample dimension the variables share (e.g. ``feature``), if it is small.

    Colour follows it across variables (``mu`` and ``tau`` of a feature in one colour), so one
    legend can name the colours. None when the variables have several such dimensions.
    """
    post = idata.posterior
    dims = {d for v in var_names for d in post[v].dims if d not in ("chain", "draw")}
    if len(dims) != 1 or any(len(post[v].dims) > 3 for v in var_names):
        return None
    dim = next(iter(dims))
    return dim if post.sizes[dim] <= 10 else None


def _trace_legend(pc, idata, var_names, dim):
    """One legend beside the trace plot: a colour per coordinate of ``dim``, a line per chain."""
    from matplotlib.lines import Line2D

    lines = pc.viz["trace"]
    handles = []
    if dim is not None:
        with_dim = [v for v in var_names if dim in idata.posterior[v].dims]
        coords = lines[with_dim[0]][dim].values
        for c in coords:
            line = lines[with_dim[0]].sel({dim: c}).isel(chain=0).item()
            handles.append(Line2D([], [], color=line.get_color(), lw=2, label=str(c)))
        without = [v for v in var_names if v not in with_dim]
        if without:  # those share one colour: name them
            line = lines[without[0]].isel(chain=0).item()
            handles.append(Line2D([], [], color=line.get_color(), lw=2, label=", ".join(without)))
    first = lines[var_names[0]]
    if first.sizes.get("chain", 1) > 1:
        one = first.isel({d: 0 for d in first.dims if d != "chain"})
        for ch, line in zip(one["chain"].values, one.values):
            handles.append(Line2D([], [], color="0.3", ls=line.get_linestyle(),
                                  label=f"chain {ch}"))
    if handles:
        fig = pc.viz["figure"].item()
        fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.91, 0.88), fontsize=8,
                   frameon=False, title=dim, title_fontsize=8)


def plot_trace(idata, path: str | Path | None = None, var_names=None):
    """Trace and marginal densities of the population-level variables (`arviz.plot_trace_dist`).

    When the variables share one small dimension (e.g. ``feature``), each of its coordinates keeps
    one colour across variables and a legend names them (``intercept``, ``standLRT``, ...) and the
    chains' line styles.
    """
    import arviz as az

    _mpl()
    var_names = list(var_names or _global_vars(idata))
    dim = _colour_dim(idata, var_names)
    aes = {"aes": {"color": [dim], "linestyle": ["chain"]}} if dim is not None else {}
    pc = az.plot_trace_dist(idata, var_names=var_names, **aes)
    _trace_legend(pc, idata, var_names, dim)
    if path is not None:
        pc.savefig(str(path), bbox_inches="tight")
    return pc


def plot_rank(idata, path: str | Path | None = None, var_names=None):
    """Rank plots per chain (`arviz.plot_rank`): flat histograms mean well-mixed chains."""
    import arviz as az

    _mpl()
    pc = az.plot_rank(idata, var_names=var_names or _global_vars(idata))
    if path is not None:
        pc.savefig(str(path))
    return pc


def _target_name(idata) -> str | None:
    """The target's name if the DataTree records one: ``attrs['target_name']`` of the root, of
    ``observed_data`` or of ``posterior``."""
    groups = [idata] + [idata[g] for g in ("observed_data", "posterior") if g in idata.children]
    for group in groups:
        if group.attrs.get("target_name"):
            return str(group.attrs["target_name"])
    return None


def plot_ppc(idata, path: str | Path | None = None, *, target_name: str | None = None,
             num_samples: int = 50):
    """Posterior predictive check: densities of replicated data sets against the observed one.

    Parameters
    ----------
    idata : DataTree
        With ``posterior_predictive`` and ``observed_data``.
    path : str or Path, optional
        PNG written here when given.
    target_name : str, optional
        Names the panel and its x axis (e.g. ``TaskData.target_name``); default: an
        ``attrs['target_name']`` of the DataTree (root, ``observed_data`` or ``posterior``), else
        the observed variable's name.
    num_samples : int
        Replicated data sets drawn.
    """
    import arviz as az
    from matplotlib.lines import Line2D

    _mpl()
    target_name = target_name or _target_name(idata)
    pc = az.plot_ppc_dist(idata, num_samples=num_samples, visuals={"remove_axis": False})
    for var in pc.viz["plot"].data_vars:
        ax = pc.viz["plot"][var].item()
        name = target_name if target_name and var == "y" else var
        pc.viz["title"][var].item().set_text(f"{name}: posterior predictive check")
        ax.set_xlabel(name)
        ax.set_ylabel("density")
        ax.spines[["top", "right"]].set_visible(False)
        observed = pc.viz["observed_dist"][var].item()
        replicated = pc.viz["predictive_dist"][var].values.flat[0]
        ax.legend(handles=[
            Line2D([], [], color=observed.get_color(), lw=observed.get_linewidth(),
                   label="observed"),
            Line2D([], [], color=replicated.get_color(), lw=replicated.get_linewidth(),
                   alpha=replicated.get_alpha(),
                   label=f"posterior predictive ({num_samples} draws)"),
        ], fontsize=8, frameon=False, loc="upper right")
    if path is not None:
        pc.savefig(str(path), bbox_inches="tight")
    return pc


def plot_task_forest(idata, path: str | Path | None = None, var: str = "w", prob: float = 0.9,
                     max_tasks: int = 80):
    """Central ``prob`` intervals of each task's weights, one panel per feature.

    Tasks are sorted by posterior mean within each panel; the dashed line marks the population
    mean when the posterior has ``mu``.
    """
    plt = _mpl()
    da = idata.posterior[var]
    if "task" not in da.dims:
        raise ValueError(f"var: posterior variable {var!r} has no task dimension")
    extra = [d for d in da.dims if d not in ("chain", "draw", "task")]
    da = da.stack(sample=("chain", "draw")).transpose("sample", "task", *extra)
    vals = np.asarray(da.values)
    if vals.ndim == 2:
        vals = vals[..., None]
    tasks = [str(t) for t in da["task"].values]
    feats = [str(f) for f in da[extra[0]].values] if extra else [var]
    n_tasks = min(len(tasks), max_tasks)
    lo_q, hi_q = (1 - prob) / 2, 1 - (1 - prob) / 2
    fig, axes = plt.subplots(1, len(feats), figsize=(3.0 * len(feats) + 1.2, 0.16 * n_tasks + 1.4),
                             squeeze=False, sharey=False)
    mu = idata.posterior["mu"] if "mu" in idata.posterior else None
    for j, (ax, name) in enumerate(zip(axes[0], feats)):
        v = vals[:, :n_tasks, j]
        mean = v.mean(axis=0)
        lo, hi = np.quantile(v, [lo_q, hi_q], axis=0)
        order = np.argsort(mean)
        ypos = np.arange(n_tasks)
        ax.hlines(ypos, lo[order], hi[order], color="C0", lw=1)
        ax.plot(mean[order], ypos, "o", ms=2.5, color="C0")
        if mu is not None and mu.ndim == 3 and j < mu.shape[-1]:
            ax.axvline(float(mu.values[..., j].mean()), color="k", ls="--", lw=0.8)
        ax.set_title(name, fontsize=10)
        if n_tasks <= 40:
            ax.set_yticks(ypos, [tasks[i] for i in order], fontsize=6)
        else:
            ax.set_yticks([])
            ax.set_ylabel("tasks (sorted)")
    fig.suptitle(f"{var}: {int(prob * 100)}% intervals per task", fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(str(path), dpi=110)
        plt.close(fig)
    return fig


def save_fit_plots(idata, out_dir: str | Path, *, target_name: str | None = None) -> list[str]:
    """Write ``trace.png``, ``rank.png``, ``forest.png`` and ``ppc.png`` where they apply.

    ``target_name`` (e.g. ``TaskData.target_name``) names the posterior predictive check.
    """
    plt = _mpl()
    out_dir = Path(out_dir)
    written = []
    jobs = [("trace.png", plot_trace), ("rank.png", plot_rank)]
    if "w" in idata.posterior and "task" in idata.posterior["w"].dims:
        jobs.append(("forest.png", plot_task_forest))
    if "posterior_predictive" in idata.children:
        jobs.append(("ppc.png", plot_ppc))
    for name, fn in jobs:
        if name == "rank.png" and idata.posterior.sizes.get("chain", 1) < 2:
            continue
        if fn is plot_ppc:
            fn(idata, out_dir / name, target_name=target_name)
        else:
            fn(idata, out_dir / name)
        plt.close("all")
        written.append(name)
    return written


def plot_membership(probabilities, path: str | Path | None = None, task_names=None,
                    max_tasks: int = 80):
    """Heatmap of cluster-membership probabilities (tasks x clusters), tasks sorted by cluster."""
    plt = _mpl()
    p = np.asarray(probabilities)[:max_tasks]
    order = np.lexsort((-p.max(axis=1), p.argmax(axis=1)))
    fig, ax = plt.subplots(figsize=(2.6 + 0.8 * p.shape[1], 0.12 * len(p) + 1.6))
    im = ax.imshow(p[order], aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(p.shape[1]), [f"cluster {a}" for a in range(p.shape[1])], fontsize=8)
    if task_names is not None and len(p) <= 40:
        ax.set_yticks(range(len(p)), [str(task_names[i]) for i in order], fontsize=6)
    else:
        ax.set_ylabel("tasks (sorted by cluster)")
    fig.colorbar(im, ax=ax, label="P(cluster | data)")
    fig.tight_layout()
    if path is not None:
        fig.savefig(str(path), dpi=110)
        plt.close(fig)
    return fig


def plot_evidence_trace(trace, path: str | Path | None = None, *, ylabel: str = "log evidence"):
    """Log evidence (or any objective, named by ``ylabel``) against EM iteration."""
    plt = _mpl()
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot(np.asarray(trace), marker=".", ms=3)
    ax.set_xlabel("EM iteration")
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    if path is not None:
        fig.savefig(str(path), dpi=110)
        plt.close(fig)
    return fig

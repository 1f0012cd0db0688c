"""Pictures for Bakker & Heskes task clustering and gating, saved as PNG.

* `plot_gates`: the gating probabilities ``q_ia = softmax_a(U_a' f_i)`` of an empirical-Bayes (or
  any) gate matrix ``U``, drawn against one task feature: a point per task at its own ``q_ia``, the
  fitted gate curve with the other features held at their mean, and, optionally, each task's
  posterior membership (responsibility) beside its gate.
* `evidence_loo_table` and `plot_evidence_vs_loo`: model choice by the empirical-Bayes log evidence
  and by PSIS-LOO from the full posterior, side by side (each as a difference from its best model).

Only numpy, scipy, pandas and matplotlib are used here; the fits come from
`bayesmtl.inference.empirical_bayes` and `bayesmtl.inference.fit`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from bayesmtl.inference.plots import _mpl
from scipy.special import softmax

__all__ = ["evidence_loo_table", "gate_curves", "gate_probabilities", "plot_evidence_vs_loo",
           "plot_gates"]


def _check_gates(gates, task_features, intercept: bool) -> tuple[np.ndarray, np.ndarray]:
    U = np.asarray(gates, dtype=float)
    F = np.asarray(task_features, dtype=float)
    if F.ndim == 1:
        F = F[:, None]
    if F.ndim != 2:
        raise ValueError(f"task_features: expected shape (n_tasks, f), got {F.shape}")
    if U.ndim != 2:
        raise ValueError(f"gates: expected shape (f', n_clusters), got {U.shape}")
    need = F.shape[1] + int(intercept)
    if U.shape[0] != need:
        raise ValueError(f"gates: {U.shape[0]} rows, but task_features has {F.shape[1]} columns"
                         f"{' plus the intercept' if intercept else ''} = {need}")
    if not (np.all(np.isfinite(U)) and np.all(np.isfinite(F))):
        raise ValueError("gates/task_features: contain NaN or infinite values")
    return U, F


def gate_probabilities(gates, task_features, *, intercept: bool = True) -> np.ndarray:
    """Prior gate of every task, ``q_ia = softmax_a(U_a' [1, f_i])``, shape ``(n_tasks, C)``.

    Examples
    --------
    >>> import numpy as np
    >>> gate_probabilities(np.zeros((2, 3)), np.ones((4, 1))).round(3)[0].tolist()
    [0.333, 0.333, 0.333]
    """
    U, F = _check_gates(gates, task_features, intercept)
    if intercept:
        F = np.column_stack([np.ones(len(F)), F])
    return softmax(F @ U, axis=-1)


def gate_curves(gates, task_features, *, feature: int = 0, intercept: bool = True,
                num: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """The gate ``q_a(f)`` along task feature ``feature``, other features at their mean.

    Returns the grid (``num`` values spanning the observed range) and the probabilities
    ``(num, C)``.

    Examples
    --------
    >>> import numpy as np
    >>> grid, q = gate_curves(np.array([[0.0, 0.0], [-1.0, 1.0]]), np.linspace(-2, 2, 5))
    >>> q.shape, bool(np.allclose(q.sum(1), 1))
    ((101, 2), True)
    """
    U, F = _check_gates(gates, task_features, intercept)
    if not 0 <= feature < F.shape[1]:
        raise ValueError(f"feature: must index one of the {F.shape[1]} task features, got "
                         f"{feature!r}")
    grid = np.linspace(F[:, feature].min(), F[:, feature].max(), int(num))
    G = np.broadcast_to(F.mean(axis=0), (grid.size, F.shape[1])).copy()
    G[:, feature] = grid
    if intercept:
        G = np.column_stack([np.ones(grid.size), G])
    return grid, softmax(G @ U, axis=-1)


def plot_gates(gates, task_features, path: str | Path | None = None, *, feature: int = 0,
               feature_name: str | None = None, responsibilities=None, intercept: bool = True,
               jitter: float = 0.0, seed: int = 0):
    """Gating probabilities against one task feature, with the fitted gate curves.

    Each cluster ``a`` has a colour: dots are the tasks' prior gates ``q_ia`` (from all their
    features), the line is ``q_a(f)`` along ``feature`` with the other features at their mean, and
    crosses (with ``responsibilities``) are the posterior memberships ``P(z_i = a | data)``.  A
    second panel shows the tasks sorted by the feature, as stacked gate bars.

    Parameters
    ----------
    gates : array, ``(f', C)``
        Gate weights ``U`` (e.g. ``EBResult.params["gates"]``); with ``intercept`` its first row
        is the intercept.
    task_features : array, ``(n_tasks, f)``
        The task features the gates were fitted on.
    path : str or Path, optional
        Where to save the PNG.
    feature : int
        Column of ``task_features`` on the horizontal axis.
    feature_name : str, optional
        Axis label.
    responsibilities : array, ``(n_tasks, C)``, optional
        Posterior memberships to draw beside the gates.
    intercept : bool
        Whether ``gates`` has an intercept row (the models' default).
    jitter : float
        Horizontal jitter of the dots (for binary features).
    seed : int
        Seed of the jitter.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> fig = plot_gates(np.array([[0.0, 0.0], [-2.0, 2.0]]), np.linspace(-1, 1, 8)[:, None])
    """
    plt = _mpl()
    U, F = _check_gates(gates, task_features, intercept)
    q = gate_probabilities(U, F, intercept=intercept)
    grid, curve = gate_curves(U, F, feature=feature, intercept=intercept)
    T, C = q.shape
    if responsibilities is not None:
        r = np.asarray(responsibilities, dtype=float)
        if r.shape != (T, C):
            raise ValueError(f"responsibilities: expected shape {(T, C)}, got {r.shape}")
    x = F[:, feature]
    xj = x + jitter * np.random.default_rng(seed).uniform(-1, 1, T)
    name = feature_name or f"task feature {feature}"
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.6),
                                  gridspec_kw={"width_ratios": [1.1, 1.0]})
    for a in range(C):
        col = f"C{a}"
        ax.plot(grid, curve[:, a], color=col, lw=2, label=f"gate, cluster {a}")
        ax.plot(xj, q[:, a], "o", color=col, ms=4, alpha=0.6)
        if responsibilities is not None:
            ax.plot(xj, r[:, a], "x", color=col, ms=4, alpha=0.8)
    ax.set_xlabel(name)
    ax.set_ylabel("probability")
    ax.set_ylim(-0.03, 1.03)
    extra = "; x: posterior membership" if responsibilities is not None else ""
    ax.set_title(f"gates q_a(f) (others at mean); dots: q_ia{extra}", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    order = np.argsort(x, kind="stable")
    bottom = np.zeros(T)
    for a in range(C):
        ax2.bar(np.arange(T), q[order, a], bottom=bottom, width=1.0, color=f"C{a}",
                label=f"cluster {a}")
        bottom += q[order, a]
    if responsibilities is not None:
        ax2.scatter(np.arange(T), np.full(T, 1.04), c=[f"C{a}" for a in r[order].argmax(1)],
                    s=8, marker="s", clip_on=False)
    ax2.set_xlim(-0.5, T - 0.5)
    ax2.set_ylim(0, 1.06)
    ax2.set_xlabel(f"tasks sorted by {name}")
    ax2.set_ylabel("q_ia")
    ax2.set_title("gate per task" + ("; squares: most probable cluster"
                                      if responsibilities is not None else ""), fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(str(path), dpi=110)
        plt.close(fig)
    return fig


def evidence_loo_table(log_evidence: Mapping[str, float], comparison):
    """One table of model choice by evidence and by PSIS-LOO.

    Parameters
    ----------
    log_evidence : mapping
        Model name -> empirical-Bayes log evidence (``EBResult.log_evidence``).
    comparison : pandas.DataFrame or mapping
        A comparison table (index: model names; columns ``elpd``, ``se``, ``dse``, as from
        ``arviz.compare``), or a mapping of the same names to fits (`FitResult` or DataTrees
        with a ``log_likelihood`` group), compared here by `bayesmtl.inference.compare`.

    Returns
    -------
    pandas.DataFrame
        Indexed by model, in the order of ``log_evidence``: ``log_evidence``,
        ``d_log_evidence`` (minus the best), ``rank_evidence``, ``elpd_loo``, ``elpd_se``,
        ``d_elpd_loo``, ``dse`` and ``rank_loo`` (1 = best).

    Examples
    --------
    >>> import pandas as pd
    >>> cmp = pd.DataFrame({"elpd": [-10.0, -12.0], "se": [1.0, 1.0], "dse": [0.0, 0.5]},
    ...                    index=["b", "a"])
    >>> evidence_loo_table({"a": -20.0, "b": -21.0}, cmp)["rank_loo"].tolist()
    [2, 1]
    """
    import pandas as pd

    if isinstance(comparison, Mapping):
        comparison = _loo_compare(comparison)
    names = list(log_evidence)
    missing = [n for n in names if n not in comparison.index]
    if missing or len(names) != len(comparison.index):
        raise ValueError(f"comparison: model names {sorted(comparison.index)} do not match "
                         f"log_evidence's {sorted(names)}")
    ev = np.array([float(log_evidence[n]) for n in names])
    if not np.all(np.isfinite(ev)):
        raise ValueError("log_evidence: contains NaN or infinite values")
    cmp = comparison.loc[names]
    elpd = cmp["elpd"].to_numpy(float)
    out = pd.DataFrame({
        "log_evidence": ev,
        "d_log_evidence": ev - ev.max(),
        "rank_evidence": (-ev).argsort().argsort() + 1,
        "elpd_loo": elpd,
        "elpd_se": cmp["se"].to_numpy(float),
        "d_elpd_loo": elpd - elpd.max(),
        "dse": cmp["dse"].to_numpy(float) if "dse" in cmp else np.nan,
        "rank_loo": (-elpd).argsort().argsort() + 1,
    }, index=pd.Index(names, name="model"))
    return out


def _loo_compare(fits: Mapping):
    """PSIS-LOO comparison of the fits by `bayesmtl.inference.compare` (full precision)."""
    from bayesmtl.inference.compare import compare

    return compare(dict(fits))


def plot_evidence_vs_loo(table, path: str | Path | None = None, *,
                         names: Sequence[str] | None = None):
    """Model choice by evidence and by PSIS-LOO, side by side.

    Two panels share the model axis: the empirical-Bayes log evidence and the PSIS-LOO
    ``elpd_loo`` (with its standard error of the difference, ``dse``), each minus its best
    model, so 0 marks each criterion's choice.

    Parameters
    ----------
    table : pandas.DataFrame
        From `evidence_loo_table`.
    path : str or Path, optional
        Where to save the PNG.
    names : sequence of str, optional
        Display labels (default: the table's index).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"d_log_evidence": [0.0, -3.0], "d_elpd_loo": [-1.0, 0.0],
    ...                   "dse": [1.0, 0.0], "log_evidence": [-5.0, -8.0],
    ...                   "elpd_loo": [-4.0, -3.0]}, index=["a", "b"])
    >>> fig = plot_evidence_vs_loo(t)
    """
    plt = _mpl()
    for col in ("d_log_evidence", "d_elpd_loo"):
        if col not in table:
            raise ValueError(f"table: missing column {col!r} (build it with evidence_loo_table)")
    labels = list(names) if names is not None else [str(i) for i in table.index]
    if len(labels) != len(table):
        raise ValueError(f"names: {len(labels)} labels for {len(table)} models")
    y = np.arange(len(table))[::-1]
    fig, axes = plt.subplots(1, 2, figsize=(9, 0.45 * len(table) + 1.6), sharey=True)
    panels = [("d_log_evidence", None, "log evidence (EB) - best"),
              ("d_elpd_loo", "dse", "elpd_loo (NUTS, PSIS-LOO) - best")]
    for ax, (col, err, title), colour in zip(axes, panels, ("C0", "C1"), strict=True):
        v = table[col].to_numpy(float)
        xerr = table[err].to_numpy(float) if err and err in table else None
        ax.barh(y, v, color=colour, alpha=0.75, xerr=xerr, capsize=3)
        best = int(np.argmax(v))
        ax.plot([0.0], [y[best]], marker="*", color="k", ms=10, ls="none", clip_on=False)
        e = np.zeros_like(v) if xerr is None else np.nan_to_num(xerr)
        lo, hi = min(float(np.min(v - e)), 0.0), max(float(np.max(v + e)), 0.0)
        pad = 0.08 * ((hi - lo) or 1.0)
        ax.set_xlim(lo - pad, hi + pad)
        ax.axvline(0.0, color="k", lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, labels, fontsize=8)
    fig.suptitle("model choice: evidence vs PSIS-LOO (star = chosen)", fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(str(path), dpi=110)
        plt.close(fig)
    return fig

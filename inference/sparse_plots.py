"""Pictures of a sparse multitask fit: block shrinkage and the task covariance, saved as PNG.

* `plot_block_shrinkage`: one bar per feature block, the block precision ``E[gamma_i]`` (log scale;
  a switched-off block has a large precision) or the posterior norm ``||E W_i||_F`` of its weights,
  with the true support marked when it is known.
* `plot_task_covariance`: the recovered task covariance ``V V' + tau I`` beside the true one, as
  heatmaps on a shared colour scale (trace-normalised by default: the scale of the task covariance is
  shared with gamma and not identified on its own).

Both accept a `bayesmtl.inference.vem_sparse.VEMResult`, a `bayesmtl.inference.FitResult` of
`bayesmtl.models.sparse_mtl.sparse_mtl` (NUTS or SVI), a dict of posterior draws, or plain arrays;
`block_statistics` and `task_covariance_estimate` do that conversion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["block_statistics", "plot_block_shrinkage", "plot_task_covariance",
           "task_covariance_estimate"]

STATISTICS = ("gamma", "norm")
NORMALIZE = ("trace", "corr", None)


def _mpl():
    # the backend is the caller's choice (MPLBACKEND, %matplotlib inline); headless falls back to Agg
    import matplotlib.pyplot as plt

    return plt


def _draws(result) -> dict | None:
    """Posterior draws with leading sample axes merged, or None for a point/moment summary."""
    if isinstance(result, dict):
        return {k: np.asarray(v) for k, v in result.items()}
    flat = getattr(result, "flat_samples", None)
    return flat() if callable(flat) else None


def _result_blocks(result, blocks):
    if blocks is not None:
        return np.asarray(blocks)
    if getattr(result, "blocks", None) is not None:
        return np.asarray(result.blocks)
    data = getattr(result, "data", None)
    if data is not None and getattr(data, "feature_blocks", None) is not None:
        return np.asarray(data.feature_blocks)
    return None


def block_statistics(result, *, blocks=None) -> dict[str, np.ndarray]:
    """Per-block shrinkage summaries of a fit.

    Parameters
    ----------
    result : VEMResult, FitResult or dict of draws
        VEM moments, or posterior draws with sites ``gamma (..., Q)`` and ``W (..., P, D)``.
    blocks : array_like of int, shape (D,), optional
        Block of each feature (default: the result's own, else one block per feature).

    Returns
    -------
    dict
        ``gamma (Q,)``: ``E[gamma_i]`` for VEM, the posterior median for draws (the mean of a
        switched-off block's precision is dominated by its heavy right tail); ``norm (Q,)``: the
        Frobenius norm of the posterior mean of each block's weights.

    Examples
    --------
    >>> import numpy as np
    >>> s = block_statistics({"gamma": np.ones((10, 2)), "W": np.ones((10, 3, 4))},
    ...                      blocks=[0, 0, 1, 1])
    >>> s["norm"].round(3).tolist()
    [2.449, 2.449]
    """
    draws = _draws(result)
    if draws is not None:
        if "gamma" not in draws or "W" not in draws:
            raise ValueError("result: draws need the sites 'gamma' and 'W' "
                             f"(got {sorted(draws)})")
        gamma = np.median(draws["gamma"], axis=0)
        W = draws["W"].mean(axis=0)
    elif hasattr(result, "gamma_mean") and hasattr(result, "W_mean"):
        gamma, W = np.asarray(result.gamma_mean), np.asarray(result.W_mean)
    else:
        raise ValueError(f"result: expected a VEMResult, a FitResult or a dict of draws, got "
                         f"{type(result).__name__}")
    b = _result_blocks(result, blocks)
    if b is None:
        b = np.arange(W.shape[-1])
    if b.shape != (W.shape[-1],):
        raise ValueError(f"blocks: expected one block per feature ({W.shape[-1]}), got shape {b.shape}")
    Q = gamma.shape[-1]
    if int(b.max()) + 1 != Q:
        raise ValueError(f"blocks: {int(b.max()) + 1} blocks but gamma has {Q} entries")
    norm = np.sqrt(np.bincount(b, weights=np.sum(W**2, axis=0), minlength=Q))
    return {"gamma": np.asarray(gamma, float), "norm": norm}


def task_covariance_estimate(result) -> np.ndarray:
    """The task covariance ``V V' + tau I`` of a fit: VEM's ``task_cov``, or the posterior mean over
    draws of ``V`` and ``tau``; an array is returned as it is.

    Examples
    --------
    >>> import numpy as np
    >>> task_covariance_estimate({"V": np.ones((5, 2, 1)), "tau": np.full(5, 0.5)}).tolist()
    [[1.5, 1.0], [1.0, 1.5]]
    """
    if hasattr(result, "task_cov"):
        return np.asarray(result.task_cov)
    draws = _draws(result)
    if draws is not None:
        if "V" not in draws or "tau" not in draws:
            raise ValueError("result: draws need the sites 'V' and 'tau' (fit with tau=None)")
        V, tau = draws["V"], draws["tau"]
        C = np.einsum("spk,sqk->pq", V, V) / V.shape[0]
        return C + tau.mean() * np.eye(V.shape[1])
    C = np.asarray(result, float)
    if C.ndim != 2 or C.shape[0] != C.shape[1]:
        raise ValueError(f"result: expected a square task covariance, got shape {C.shape}")
    return C


def _normalise(C: np.ndarray, how) -> np.ndarray:
    if how == "trace":
        return C / np.trace(C) * C.shape[0]
    if how == "corr":
        d = np.sqrt(np.diag(C))
        return C / np.outer(d, d)
    return C


def plot_block_shrinkage(
    result,
    path: str | Path | None = None,
    *,
    statistic: str = "gamma",
    blocks=None,
    true_active=None,
    block_names=None,
    threshold_ratio: float | None = 100.0,
    title: str | None = None,
):
    """Bar chart of per-block shrinkage, with the true support marked.

    Parameters
    ----------
    result : VEMResult, FitResult, dict of draws, or array_like of shape (Q,)
        A fit, or the values to plot directly.
    path : str or Path, optional
        Save the figure there as PNG.
    statistic : {"gamma", "norm"}
        Block precision (log scale; small = active) or the norm of the block's posterior mean weights.
    blocks : array_like of int, optional
        Feature blocks, when ``result`` does not carry them.
    true_active : array_like of bool, shape (Q,), optional
        The known support: active blocks are drawn in a strong colour and the others hatched.
    block_names : sequence of str, optional
    threshold_ratio : float, optional
        For ``statistic="gamma"``, draw the `active_blocks` rule (``ratio * min gamma``) as a line.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = plot_block_shrinkage([0.5, 900.0, 2.0], true_active=[True, False, True])
    >>> len(fig.axes[0].patches)
    3
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic: must be one of {STATISTICS}, got {statistic!r}")
    if isinstance(result, (list, tuple, np.ndarray)) and not hasattr(result, "gamma_mean"):
        values = np.asarray(result, float)
        if values.ndim != 1:
            raise ValueError(f"result: expected one value per block, got shape {values.shape}")
    else:
        values = block_statistics(result, blocks=blocks)[statistic]
    if not np.all(np.isfinite(values)):
        raise ValueError("result: non-finite block values")
    if statistic == "gamma" and (values <= 0).any():
        raise ValueError("result: block precisions must be positive")
    Q = values.shape[0]
    names = [str(n) for n in block_names] if block_names is not None else [str(i) for i in range(Q)]
    if len(names) != Q:
        raise ValueError(f"block_names: expected {Q} names, got {len(names)}")
    if true_active is not None:
        true_active = np.asarray(true_active, bool)
        if true_active.shape != (Q,):
            raise ValueError(f"true_active: expected shape ({Q},), got {true_active.shape}")
    plt = _mpl()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * Q + 2.0), 3.2), layout="constrained")
    colours = ["tab:blue"] * Q if true_active is None else [
        "tab:red" if a else "lightgrey" for a in true_active]
    bars = ax.bar(np.arange(Q), values, color=colours, edgecolor="black", linewidth=0.6)
    if true_active is not None:
        for bar, a in zip(bars, true_active):
            if not a:
                bar.set_hatch("//")
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(facecolor="tab:red", edgecolor="black", label="truly active"),
                           Patch(facecolor="lightgrey", edgecolor="black", hatch="//",
                                 label="truly zero")], fontsize=8, loc="best")
    if statistic == "gamma":
        ax.set_yscale("log")
        ax.set_ylabel("block precision gamma (small = active)")
        if threshold_ratio is not None:
            ax.axhline(threshold_ratio * values.min(), color="black", ls="--", lw=0.8)
    else:
        ax.set_ylabel("||posterior mean of W_block||_F")
    ax.set_xticks(np.arange(Q), names, rotation=90 if Q > 12 or max(map(len, names)) > 4 else 0,
                  fontsize=8)
    ax.set_xlabel("feature block")
    ax.set_title(title or "Block shrinkage", fontsize=10)
    if path is not None:
        fig.savefig(str(path), dpi=100)
    return fig


def plot_task_covariance(
    result,
    truth=None,
    path: str | Path | None = None,
    *,
    normalize: str | None = "trace",
    task_names=None,
    titles: tuple[str, str] = ("recovered", "true"),
):
    """Heatmaps of the recovered task covariance and, when given, the true one, side by side.

    Parameters
    ----------
    result : VEMResult, FitResult, dict of draws (``V``, ``tau``) or array_like (P, P)
    truth : array_like (P, P), optional
    path : str or Path, optional
        Save the figure there as PNG.
    normalize : {"trace", "corr", None}
        Scale both matrices to trace P (default; the overall scale is not identified), show
        correlations, or plot them as they are.
    task_names : sequence of str, optional
    titles : (str, str)

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> fig = plot_task_covariance(np.eye(3), truth=np.eye(3) + 0.1)
    >>> len(fig.axes)  # two heatmaps and a colour bar
    3
    """
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize: must be one of {NORMALIZE}, got {normalize!r}")
    mats = [task_covariance_estimate(result)]
    if truth is not None:
        T = np.asarray(truth, float)
        if T.shape != mats[0].shape:
            raise ValueError(f"truth: shape {T.shape} does not match the recovered "
                             f"{mats[0].shape} (shape mismatch)")
        mats.append(T)
    for M in mats:
        if not np.all(np.isfinite(M)):
            raise ValueError("result/truth: non-finite entries in a task covariance")
    mats = [_normalise(M, normalize) for M in mats]
    P = mats[0].shape[0]
    names = [str(n) for n in task_names] if task_names is not None else [str(i) for i in range(P)]
    if len(names) != P:
        raise ValueError(f"task_names: expected {P} names, got {len(names)}")
    lim = max(float(np.abs(M).max()) for M in mats)
    plt = _mpl()
    fig, axes = plt.subplots(1, len(mats), figsize=(3.6 * len(mats) + 0.8, 3.4),
                             layout="constrained", squeeze=False)
    for ax, M, t in zip(axes[0], mats, titles):
        im = ax.imshow(M, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(t, fontsize=10)
        step = max(1, P // 12)
        ax.set_xticks(np.arange(0, P, step), names[::step], rotation=90, fontsize=7)
        ax.set_yticks(np.arange(0, P, step), names[::step], fontsize=7)
    label = {"trace": "task covariance (trace = P)", "corr": "task correlation",
             None: "task covariance"}[normalize]
    fig.colorbar(im, ax=list(axes[0]), shrink=0.8, label=label)
    if path is not None:
        fig.savefig(str(path), dpi=100)
    return fig

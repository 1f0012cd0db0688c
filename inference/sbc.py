"""Simulation-based calibration (Talts et al. 2018).

Repeat: draw parameters and data from the prior predictive (``simulate``), fit the model, and
record the rank of each true parameter among ``L`` thinned posterior draws. If the sampler is
calibrated, every rank is uniform on ``{0, ..., L}``. Uniformity is tested per variable by a
chi-square test on binned ranks, with a Bonferroni correction across variables.

Elements the model pins to a constant (the first row and upper triangle of an LKJ Cholesky factor:
every posterior draw equals the true value) carry no information: their rank is always 0. They
are left out, element by element, of the tests and the ECDF plot, and listed in the summary.

The fits reuse one compiled NUTS kernel (all simulations share shapes), and can be spread over
processes with `map_processes` (Dask distributed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import numpy as np
from bayesmtl.inference.executor import map_processes
from scipy import stats

__all__ = ["SBCResult", "rank_statistics", "sbc"]


@dataclass
class SBCResult:
    """Ranks and uniformity tests of an SBC run.

    Attributes
    ----------
    ranks : dict
        Variable -> integer ranks ``(num_simulations, *shape)`` in ``[0, max_rank]``.
    max_rank : int
        Number of posterior draws each rank is taken among (``L``).
    p_values : dict
        Variable -> chi-square p-value of uniform ranks (elements pooled).
    alpha : float
        Family-wise level of the test.
    seeds : list of int
        Seed of each simulation.
    fixed : dict
        Variable -> boolean mask ``shape``: elements the model pins (every posterior draw equal to
        the true value in every simulation), left out of ``p_values`` and the plot. A variable
        missing here has none.
    """

    ranks: dict[str, np.ndarray]
    max_rank: int
    p_values: dict[str, float]
    alpha: float
    seeds: list[int] = field(default_factory=list)
    fixed: dict[str, np.ndarray] = field(default_factory=dict)

    def _free(self, name: str) -> np.ndarray:
        """Flat mask of the elements of ``name`` that are not fixed."""
        r = self.ranks[name]
        if name not in self.fixed:
            return np.ones(int(np.prod(r.shape[1:])), dtype=bool)
        return ~np.asarray(self.fixed[name], dtype=bool).reshape(-1)

    @property
    def uniform(self) -> bool:
        """True unless some variable's ranks are rejected (Bonferroni across variables)."""
        level = self.alpha / max(1, len(self.p_values))
        return all(p > level for p in self.p_values.values())

    def summary(self) -> dict:
        return {
            "num_simulations": int(next(iter(self.ranks.values())).shape[0]),
            "max_rank": self.max_rank,
            "p_values": {k: float(v) for k, v in self.p_values.items()},
            "alpha": self.alpha,
            "uniform": self.uniform,
            "fixed_elements": {
                k: [e for e, free in zip(_element_names(k, r.shape[1:]), self._free(k)) if not free]
                for k, r in self.ranks.items() if not self._free(k).all()
            },
        }

    def plot(self, path=None):
        """ECDF-difference plot of the ranks' PIT values with simultaneous 95 % bands.

        One panel per variable with a p-value, one curve per element; fixed elements are left out
        (the panel title counts them). Returns the matplotlib figure; saves a PNG when ``path`` is
        given.
        """
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        names = [k for k in self.ranks if k in self.p_values and self._free(k).any()]
        fig, axes = plt.subplots(1, max(1, len(names)), figsize=(3.2 * max(1, len(names)), 2.8),
                                 squeeze=False)
        for ax, name in zip(axes[0], names):
            r = self.ranks[name].reshape(self.ranks[name].shape[0], -1)
            free = self._free(name)
            labels = _element_names(name, self.ranks[name].shape[1:])
            n = r.shape[0]
            grid = np.linspace(0, 1, 101)
            # Simultaneous band for one ECDF of n uniforms (DKW inequality, 95 %).
            eps = np.sqrt(np.log(2 / 0.05) / (2 * n))
            ax.fill_between(grid, -eps, eps, color="0.85", label="95 % band")
            for j in np.flatnonzero(free):
                u = (r[:, j] + 0.5) / (self.max_rank + 1)
                ecdf = (u[None, :] <= grid[:, None]).mean(axis=1)
                ax.plot(grid, ecdf - grid, lw=0.8, label=labels[j])
            ax.axhline(0, color="k", lw=0.5)
            title = f"{name} (p={self.p_values[name]:.2f})"
            if not free.all():
                title += f"\n{int((~free).sum())} fixed element(s) left out"
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("PIT")
        if not names:
            axes[0][0].text(0.5, 0.5, "no variable with a free element", ha="center",
                            va="center", transform=axes[0][0].transAxes)
        axes[0][0].set_ylabel("ECDF - uniform")
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=110)
        return fig


def _element_names(name: str, shape) -> list[str]:
    """``name[i,j]`` for every element of an array of ``shape`` (``name`` for a scalar)."""
    if not shape:
        return [name]
    return [f"{name}[{','.join(map(str, idx))}]" for idx in np.ndindex(*shape)]


def rank_statistics(draws: dict, truth: dict, *, thin: int, num_ranks: int) -> dict:
    """Rank of each true value among ``num_ranks`` thinned draws (``draws`` flat, first axis)."""
    out = {}
    for name, d in draws.items():
        if name not in truth:
            continue
        kept = np.asarray(d)[::thin][:num_ranks]
        if kept.shape[0] < num_ranks:
            raise ValueError(
                f"num_ranks: only {kept.shape[0]} thinned draws available for {name!r}"
            )
        out[name] = (kept < np.asarray(truth[name])[None]).sum(axis=0)
    return out


def _simulation_ranks(draws: dict, truth: dict, *, thin: int, num_ranks: int) -> dict:
    """Ranks of one simulation, and which elements the model pins (every kept draw == truth)."""
    ranks = rank_statistics(draws, truth, thin=thin, num_ranks=num_ranks)
    pinned = {k: np.all(np.asarray(draws[k])[::thin][:num_ranks] == np.asarray(truth[k])[None],
                        axis=0)
              for k in ranks}
    return {"ranks": ranks, "pinned": pinned}


def _collect(per_sim: list[dict], *, max_rank: int, bins: int, alpha: float,
             seeds: list[int]) -> SBCResult:
    """Stack the simulations' ranks; test each variable's free elements for uniformity."""
    names = sorted(set.intersection(*(set(r["ranks"]) for r in per_sim)))
    if not names:
        raise ValueError("var_names: no posterior variable has a true value from simulate")
    ranks = {k: np.stack([r["ranks"][k] for r in per_sim]) for k in names}
    # An element is fixed when the model pins it in every simulation; a free element whose ranks
    # happen to be constant (truth always beyond the draws) is kept: that is a failure to show.
    fixed = {k: np.all(np.stack([r["pinned"][k] for r in per_sim]), axis=0) for k in names}
    p_values = {}
    for k, r in ranks.items():
        free = ~fixed[k].reshape(-1)
        if free.any():
            p_values[k] = _chi2_uniform(r.reshape(r.shape[0], -1)[:, free], max_rank, bins)
    return SBCResult(ranks=ranks, max_rank=max_rank, p_values=p_values, alpha=alpha,
                     seeds=seeds, fixed=fixed)


def _chi2_uniform(ranks: np.ndarray, max_rank: int, bins: int) -> float:
    r = np.asarray(ranks).ravel()
    edges = np.linspace(0, max_rank + 1, bins + 1)
    counts, _ = np.histogram(r, bins=edges)
    expected = r.size * np.diff(edges) / (max_rank + 1)
    return float(stats.chisquare(counts, expected).pvalue)


def _one_simulation(job: dict) -> dict:
    from bayesmtl.inference.fit import sample_nuts

    key = jax.random.key(job["seed"])
    data, truth = job["simulate"](key)
    samples, _ = sample_nuts(
        job["model"], data, job["model_kwargs"], key=jax.random.key(job["seed"] + 1),
        num_chains=1, num_warmup=job["num_warmup"], num_samples=job["num_samples"],
        chain_method="sequential",
    )
    draws = {k: v[0] for k, v in samples.items()}
    if job["var_names"] is not None:
        draws = {k: v for k, v in draws.items() if k in job["var_names"]}
    return _simulation_ranks(draws, truth, thin=job["thin"], num_ranks=job["num_ranks"])


def sbc(
    model: Callable,
    *,
    simulate: Callable,
    num_simulations: int,
    num_warmup: int = 500,
    num_samples: int = 500,
    thin: int = 5,
    var_names: list[str] | None = None,
    model_kwargs: dict | None = None,
    seed: int = 0,
    bins: int = 10,
    alpha: float = 0.01,
    workers: int = 1,
    scheduler: str | None = None,
    progress_bar: bool | None = None,
) -> SBCResult:
    """Simulation-based calibration of ``model`` fitted by NUTS.

    Parameters
    ----------
    model : callable
        The model to fit.
    simulate : callable
        ``simulate(key) -> (TaskData, truth)`` drawing from the prior predictive (e.g.
        ``functools.partial(bayesmtl.models.hierarchical.simulate, n_tasks=5, n_per_task=8,
        n_features=1)``). Must be picklable by cloudpickle when ``workers > 1``.
    num_simulations : int
    num_warmup, num_samples : int
        NUTS settings of each fit (one chain).
    thin : int
        Keep every ``thin``-th draw to reduce autocorrelation; ranks are among
        ``num_samples // thin`` draws.
    var_names : list of str, optional
        Variables to rank (default: every posterior variable present in ``truth``).
    model_kwargs : dict, optional
    seed : int
        Simulation ``i`` uses seed ``seed + 2 i``.
    bins : int
        Bins of the chi-square uniformity test.
    alpha : float
        Family-wise level (Bonferroni over variables).
    workers : int
        Worker processes (``1``: in-process).
    scheduler : str, optional
        Existing Dask scheduler address.

    Returns
    -------
    SBCResult

    Examples
    --------
    >>> import functools
    >>> from bayesmtl.models import hierarchical as H
    >>> res = sbc(H.pooled, simulate=functools.partial(H.simulate, n_tasks=2, n_per_task=5,
    ...           n_features=1, model="pooled"), num_simulations=4, num_warmup=100,
    ...           num_samples=100, thin=2, progress_bar=False)
    >>> res.ranks["w"].shape
    (4, 2)
    """
    for name, v in [("num_simulations", num_simulations), ("num_samples", num_samples),
                    ("thin", thin), ("bins", bins)]:
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}: expected a positive integer, got {v!r}")
    num_ranks = num_samples // thin
    if num_ranks < bins:
        raise ValueError(
            f"thin: num_samples // thin = {num_ranks} draws per rank is fewer than bins={bins}"
        )
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: must be in (0, 1), got {alpha!r}")
    seeds = [seed + 2 * i for i in range(num_simulations)]
    jobs = [
        dict(seed=s, simulate=simulate, model=model, model_kwargs=dict(model_kwargs or {}),
             num_warmup=num_warmup, num_samples=num_samples, thin=thin, num_ranks=num_ranks,
             var_names=var_names)
        for s in seeds
    ]
    per_sim = map_processes(_one_simulation, jobs, workers=workers, scheduler=scheduler,
                            progress_bar=progress_bar, desc="SBC")
    return _collect(per_sim, max_rank=num_ranks, bins=bins, alpha=alpha, seeds=seeds)

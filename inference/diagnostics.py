"""Convergence and fit diagnostics, and the gate that warns or raises when they fail.

For NUTS: rank-normalised split R-hat, bulk and tail ESS, divergent transitions and E-BFMI.
For every fit with observations: PSIS-LOO (elpd, its standard error, Pareto-k of each row).
For SVI: the ELBO trace and the Pareto-k of the importance weights of the guide's draws.
All statistics come from ArviZ; this module only gathers them and applies thresholds.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

import arviz as az
import numpy as np

__all__ = ["Diagnostics", "DiagnosticsError", "DiagnosticsWarning", "diagnose", "loo"]


class DiagnosticsWarning(UserWarning):
    """The diagnostics gate found a problem (default: warn)."""


class DiagnosticsError(RuntimeError):
    """The diagnostics gate found a problem and ``strict=True``."""


@dataclass
class Diagnostics:
    """Diagnostics of one fit, as plain numbers (JSON-ready via `as_dict`)."""

    method: str
    max_rhat: float | None
    min_ess_bulk: float | None
    min_ess_tail: float | None
    divergences: int | None
    min_ebfmi: float | None
    elpd_loo: float | None
    elpd_loo_se: float | None
    p_loo: float | None
    max_pareto_k: float | None
    n_high_pareto_k: int | None
    svi_pareto_k: float | None
    runtime_s: float
    failures: dict[str, list[str]] = field(default_factory=dict)
    passed: bool = True

    def as_dict(self) -> dict:
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, float) and not math.isfinite(v):
                out[k] = None
        return out

    def __str__(self) -> str:
        def f(v, fmt="{:.3f}"):
            return "-" if v is None else fmt.format(v)

        lines = [
            f"method        {self.method}",
            f"max R-hat     {f(self.max_rhat)}",
            f"min ESS bulk  {f(self.min_ess_bulk, '{:.0f}')}",
            f"min ESS tail  {f(self.min_ess_tail, '{:.0f}')}",
            f"divergences   {f(self.divergences, '{:d}')}",
            f"min E-BFMI    {f(self.min_ebfmi)}",
            f"elpd_loo      {f(self.elpd_loo, '{:.1f}')} (se {f(self.elpd_loo_se, '{:.1f}')})",
            f"max Pareto-k  {f(self.max_pareto_k)}",
            f"SVI Pareto-k  {f(self.svi_pareto_k)}",
            f"verdict       {'pass' if self.passed else 'FAIL'}",
        ]
        for name, why in self.failures.items():
            lines.append(f"  {name}: {'; '.join(why)}")
        return "\n".join(lines)


def _per_variable(ds) -> dict[str, float]:
    out = {}
    for name, da in ds.data_vars.items():
        vals = np.asarray(da.values, dtype=float)
        finite = vals[np.isfinite(vals)]
        if finite.size:
            out[name] = (float(finite.max()), float(finite.min()))
    return out


def loo(result):
    """PSIS-LOO of a fit (`arviz.loo`), or ``None`` when it has no log likelihood."""
    idata = result.idata if hasattr(result, "idata") else result
    if "log_likelihood" not in idata.children:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.loo(idata, pointwise=True)


def diagnose(
    result,
    *,
    rhat_max: float = 1.01,
    ess_min: float = 400,
    max_divergences: int = 0,
    ebfmi_min: float = 0.3,
    pareto_k_max: float = 0.7,
    strict: bool = False,
    compute_loo: bool = True,
    var_names: list[str] | None = None,
) -> Diagnostics:
    """Compute diagnostics of ``result`` and apply the gate.

    Parameters
    ----------
    result : FitResult
    rhat_max : float
        Largest acceptable R-hat (NUTS).
    ess_min : float
        Smallest acceptable bulk and tail ESS (NUTS).
    max_divergences : int
        Divergent transitions tolerated (NUTS).
    ebfmi_min : float
        Smallest acceptable E-BFMI per chain (NUTS).
    pareto_k_max : float
        Largest acceptable Pareto-k of the SVI importance weights. (PSIS-LOO's Pareto-k values
        are reported, not gated: a high one flags an influential row, not a failed fit.)
    strict : bool
        Raise `DiagnosticsError` instead of warning when a check fails.
    compute_loo : bool
        Compute PSIS-LOO.
    var_names : list of str, optional
        Posterior variables to check (default: all).

    Returns
    -------
    Diagnostics
        ``failures`` maps each failing variable (or ``"sampler"``) to what failed.

    Examples
    --------
    >>> import jax
    >>> from bayesmtl.models.hierarchical import pooled, simulate
    >>> from bayesmtl.inference.fit import fit
    >>> data, _ = simulate(jax.random.key(0), 3, 10, 1, model="pooled")
    >>> res = fit(pooled, data, num_chains=1, num_warmup=100, num_samples=100,
    ...           progress_bar=False)
    >>> d = diagnose(res, ess_min=10, rhat_max=1.1)
    >>> d.divergences
    0
    """
    idata = result.idata
    failures: dict[str, list[str]] = {}
    post = idata.posterior.to_dataset()
    if var_names is not None:
        missing = [v for v in var_names if v not in post.data_vars]
        if missing:
            raise ValueError(f"var_names: unknown posterior variable(s) {missing}")
        post = post[var_names]
    max_rhat = min_bulk = min_tail = min_ebfmi = None
    divergences = None
    svi_k = None
    if result.method == "nuts":
        n_chains = post.sizes.get("chain", 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rhat = _per_variable(az.rhat(post)) if n_chains > 1 else {}
            bulk = _per_variable(az.ess(post, method="bulk"))
            tail = _per_variable(az.ess(post, method="tail"))
        if rhat:
            max_rhat = max(v[0] for v in rhat.values())
            for name, (hi, _) in rhat.items():
                if hi > rhat_max:
                    failures.setdefault(name, []).append(f"R-hat {hi:.3f} > {rhat_max}")
        min_bulk = min(v[1] for v in bulk.values())
        min_tail = min(v[1] for v in tail.values())
        for name in bulk:
            lo_b, lo_t = bulk[name][1], tail.get(name, (np.inf, np.inf))[1]
            if lo_b < ess_min:
                failures.setdefault(name, []).append(f"bulk ESS {lo_b:.0f} < {ess_min:g}")
            if lo_t < ess_min:
                failures.setdefault(name, []).append(f"tail ESS {lo_t:.0f} < {ess_min:g}")
        stats = idata.sample_stats
        divergences = int(np.asarray(stats["diverging"]).sum())
        if divergences > max_divergences:
            failures.setdefault("sampler", []).append(f"{divergences} divergent transitions")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ebfmi = np.asarray(az.bfmi(idata, var_names="energy")["energy"]).ravel()
        min_ebfmi = float(np.min(ebfmi))
        if min_ebfmi < ebfmi_min:
            failures.setdefault("sampler", []).append(f"E-BFMI {min_ebfmi:.2f} < {ebfmi_min}")
    elif result.svi is not None:
        svi_k = result.svi.pareto_k
        if not result.svi.converged:
            failures.setdefault("svi", []).append("ELBO did not converge within the step budget")
        if svi_k > pareto_k_max:
            failures.setdefault("svi", []).append(
                f"importance-weight Pareto-k {svi_k:.2f} > {pareto_k_max} (guide unreliable)"
            )
    elpd = se = p = kmax = None
    n_high = None
    if compute_loo:
        res_loo = loo(result)
        if res_loo is not None:
            elpd, se, p = float(res_loo.elpd), float(res_loo.se), float(res_loo.p)
            k = np.asarray(res_loo.pareto_k)
            kmax = float(np.nanmax(k))
            n_high = int((k > 0.7).sum())
    diag = Diagnostics(
        method=result.method,
        max_rhat=max_rhat,
        min_ess_bulk=min_bulk,
        min_ess_tail=min_tail,
        divergences=divergences,
        min_ebfmi=min_ebfmi,
        elpd_loo=elpd,
        elpd_loo_se=se,
        p_loo=p,
        max_pareto_k=kmax,
        n_high_pareto_k=n_high,
        svi_pareto_k=svi_k,
        runtime_s=float(result.runtime_s),
        failures=failures,
        passed=not failures,
    )
    if failures:
        msg = "diagnostics gate failed: " + "; ".join(
            f"{name}: {', '.join(why)}" for name, why in failures.items()
        )
        if strict:
            raise DiagnosticsError(msg)
        warnings.warn(msg, DiagnosticsWarning, stacklevel=2)
    return diag

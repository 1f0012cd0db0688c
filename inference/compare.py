"""Model comparison by PSIS-LOO with stacking weights (`arviz.compare`)."""

from __future__ import annotations

import warnings

import arviz as az

__all__ = ["compare"]


def compare(results: dict, *, method: str = "stacking"):
    """Rank fits of the same data by expected log predictive density (PSIS-LOO).

    Parameters
    ----------
    results : dict
        Name -> `FitResult` (or DataTree with a ``log_likelihood`` group). At least two.
    method : {"stacking", "BB-pseudo-BMA", "pseudo-BMA"}
        How `arviz.compare` weights the models.

    Returns
    -------
    pandas.DataFrame
        One row per model, best first: ``elpd``, ``p``, ``elpd_diff``, ``weight``, ``se``,
        ``dse``, ``warning``.

    Examples
    --------
    >>> import jax
    >>> from bayesmtl.models.hierarchical import pooled, hierarchical, simulate
    >>> from bayesmtl.inference.fit import fit
    >>> data, _ = simulate(jax.random.key(0), 4, 10, 1)
    >>> kw = dict(num_chains=1, num_warmup=100, num_samples=100, progress_bar=False)
    >>> table = compare({"pooled": fit(pooled, data, **kw),
    ...                  "hierarchical": fit(hierarchical, data, **kw)})
    >>> sorted(table.index)
    ['hierarchical', 'pooled']
    """
    if not isinstance(results, dict) or len(results) < 2:
        raise ValueError("results: expected a dict of at least two named fits")
    trees = {}
    n_obs = set()
    for name, r in results.items():
        idata = getattr(r, "idata", r)
        if "log_likelihood" not in idata.children:
            raise ValueError(f"results[{name!r}]: has no log_likelihood group (fit with data.y)")
        trees[name] = idata
        n_obs.add(idata.log_likelihood["y"].sizes.get("obs"))
    if len(n_obs) > 1:
        raise ValueError(f"results: fits have different numbers of observations {sorted(n_obs)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.compare(trees, method=method, round_to="none")

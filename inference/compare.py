"""Model comparison by PSIS-LOO with stacking weights (`arviz.compare`), and the stacked predictive.

Stacking (Yao, Vehtari, Simpson & Gelman 2018) chooses the weights ``w_m`` of a mixture of the
models' predictive distributions, ``sum_m w_m p_m(y | data)``, to maximise the leave-one-out log
score on the training rows. The mixture predicts no worse than the weighted average of its
members' log scores (Jensen), and it keeps a model only as far as the training rows support it.
"""

from __future__ import annotations

import warnings

import arviz as az
import numpy as np
from bayesmtl.inference.predict import log_predictive

__all__ = ["compare", "stacked_log_predictive"]


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


def stacked_log_predictive(results: dict, new_data, *, weights=None) -> np.ndarray:
    """Log pointwise predictive density of held-out rows under the stacked mixture of ``results``.

    ``log sum_m w_m p_m(y_n | training data)`` for each row ``n`` of ``new_data``, where
    ``p_m(y_n | training data)`` is `bayesmtl.inference.predict.log_predictive` of model ``m``.

    Parameters
    ----------
    results : dict
        Name -> fit (`FitResult` or `TreePosterior`) of the same training rows. At least two.
    new_data : TaskData or dict
        Held-out rows of the training tasks, with ``y``; or name -> TaskData when the models
        were fitted to different designs of the same rows (e.g. a tree fitted with an explicit
        intercept column beside a model with ``intercept=True``).
    weights : mapping, optional
        Name -> weight (non-negative, summing to one). Default: the stacking weights of
        `compare` (PSIS-LOO on the training rows).

    Returns
    -------
    numpy.ndarray, shape (n,)

    Examples
    --------
    >>> import jax
    >>> from bayesmtl.data import train_test_split
    >>> from bayesmtl.models.hierarchical import pooled, hierarchical, simulate
    >>> from bayesmtl.inference.fit import fit
    >>> data, _ = simulate(jax.random.key(0), 4, 12, 1)
    >>> train, test = train_test_split(data, test_fraction=0.25, seed=0)
    >>> kw = dict(num_chains=1, num_warmup=100, num_samples=100, progress_bar=False)
    >>> fits = {"pooled": fit(pooled, train, **kw), "hierarchical": fit(hierarchical, train, **kw)}
    >>> stacked_log_predictive(fits, test).shape == (test.n,)
    True
    """
    if not isinstance(results, dict) or len(results) < 2:
        raise ValueError("results: expected a dict of at least two named fits")
    if weights is None:
        weights = compare(results, method="stacking")["weight"]
    weights = {str(k): v for k, v in dict(weights).items()}
    if set(weights) != set(results):
        raise ValueError(
            f"weights: names {sorted(weights)} do not match the results' {sorted(results)}"
        )
    w = np.array([float(weights[name]) for name in results])
    if not np.all(np.isfinite(w)) or np.any(w < 0) or abs(w.sum() - 1.0) > 1e-6:
        raise ValueError(f"weights: expected non-negative weights summing to one, got {w}")
    if isinstance(new_data, dict):
        if set(new_data) != set(results):
            raise ValueError(
                f"new_data: names {sorted(new_data)} do not match the results' {sorted(results)}"
            )
        per_model = [new_data[name] for name in results]
    else:
        per_model = [new_data] * len(results)
    lps = [log_predictive(r, d) for r, d in zip(results.values(), per_model)]
    if len({lp.shape for lp in lps}) > 1:
        raise ValueError(
            f"new_data: the models score different numbers of rows {[len(x) for x in lps]}"
        )
    with np.errstate(divide="ignore"):  # a zero weight drops its model
        return np.logaddexp.reduce(np.log(w)[:, None] + np.stack(lps), axis=0)

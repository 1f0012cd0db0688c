"""How beliefs are updated: samplers, diagnostics, comparison, calibration, papers' algorithms."""

from bayesmtl.inference.compare import compare, stacked_log_predictive
from bayesmtl.inference.diagnostics import (
    Diagnostics,
    DiagnosticsError,
    DiagnosticsWarning,
    diagnose,
)
from bayesmtl.inference.executor import map_processes
from bayesmtl.inference.fit import FitResult, fit
from bayesmtl.inference.latent_hierarchy_cov import CovarianceEMResult, covariance_sharing_em
from bayesmtl.inference.latent_hierarchy_cov_mcmc import covariance_tree_posterior
from bayesmtl.inference.latent_hierarchy_em import EMResult, latent_hierarchy_em
from bayesmtl.inference.predict import log_predictive, predict
from bayesmtl.inference.sbc import SBCResult, sbc
from bayesmtl.inference.tree_draws import TreePosterior
from bayesmtl.inference.tree_posterior import tree_posterior

__all__ = [
    "CovarianceEMResult",
    "Diagnostics",
    "DiagnosticsError",
    "DiagnosticsWarning",
    "EMResult",
    "FitResult",
    "SBCResult",
    "TreePosterior",
    "compare",
    "covariance_sharing_em",
    "covariance_tree_posterior",
    "diagnose",
    "fit",
    "latent_hierarchy_em",
    "log_predictive",
    "map_processes",
    "predict",
    "sbc",
    "stacked_log_predictive",
    "tree_posterior",
]

"""How beliefs are updated: samplers, diagnostics, comparison, calibration, papers' algorithms."""

from bayesmtl.inference.compare import compare
from bayesmtl.inference.diagnostics import (
    Diagnostics,
    DiagnosticsError,
    DiagnosticsWarning,
    diagnose,
)
from bayesmtl.inference.executor import map_processes
from bayesmtl.inference.fit import FitResult, fit
from bayesmtl.inference.predict import predict
from bayesmtl.inference.sbc import SBCResult, sbc

__all__ = [
    "fit",
    "FitResult",
    "diagnose",
    "Diagnostics",
    "DiagnosticsError",
    "DiagnosticsWarning",
    "predict",
    "compare",
    "sbc",
    "SBCResult",
    "map_processes",
]

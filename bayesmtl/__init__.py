"""bayesmtl: a probabilistic-programming model zoo for Bayesian multitask learning.

The public API in one place::

    import bayesmtl as bm
    data = bm.load_exam()
    result = bm.fit(bm.models.hierarchical.hierarchical, data)
    bm.diagnose(result)

Subpackages: `bayesmtl.data` (what is observed), `bayesmtl.models` (what is believed),
`bayesmtl.inference` (how beliefs are updated).
"""

from bayesmtl import data, inference, models
from bayesmtl.data import (
    Standardizer,
    TaskData,
    from_csv,
    from_dataframe,
    load_dataset,
    load_exam,
    load_grunfeld,
    load_linnerud,
    load_radon,
    train_test_split,
)
from bayesmtl.inference import (
    Diagnostics,
    DiagnosticsError,
    DiagnosticsWarning,
    FitResult,
    SBCResult,
    compare,
    diagnose,
    fit,
    log_predictive,
    map_processes,
    predict,
    sbc,
    stacked_log_predictive,
)
from bayesmtl.inference.runtime import configure
from bayesmtl.registry import MODELS, get_model

__version__ = "0.1.0"

__all__ = [
    "MODELS",
    "Diagnostics",
    "DiagnosticsError",
    "DiagnosticsWarning",
    "FitResult",
    "SBCResult",
    "Standardizer",
    "TaskData",
    "__version__",
    "compare",
    "configure",
    "data",
    "diagnose",
    "fit",
    "from_csv",
    "from_dataframe",
    "get_model",
    "inference",
    "load_dataset",
    "load_exam",
    "load_grunfeld",
    "load_linnerud",
    "load_radon",
    "log_predictive",
    "map_processes",
    "models",
    "predict",
    "sbc",
    "stacked_log_predictive",
    "train_test_split",
]

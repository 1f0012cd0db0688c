"""What is observed: the `TaskData` container, splits and scaling, loaders of real data."""

from bayesmtl.data.datasets import (
    DATASETS,
    load_dataset,
    load_exam,
    load_grunfeld,
    load_linnerud,
    load_radon,
)
from bayesmtl.data.ilea import load_ilea
from bayesmtl.data.multioutput import MultiOutputData, load_grunfeld_sur, to_multioutput
from bayesmtl.data.tabular import from_csv, from_dataframe
from bayesmtl.data.taskdata import TaskData
from bayesmtl.data.transforms import Standardizer, train_test_split

__all__ = [
    "DATASETS",
    "MultiOutputData",
    "Standardizer",
    "TaskData",
    "from_csv",
    "from_dataframe",
    "load_dataset",
    "load_exam",
    "load_grunfeld",
    "load_grunfeld_sur",
    "load_ilea",
    "load_linnerud",
    "load_radon",
    "to_multioutput",
    "train_test_split",
]

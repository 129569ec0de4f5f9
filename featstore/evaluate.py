"""Evaluation of binary classifiers on the test split, and sound comparisons between them.

Pure numpy / scipy / pandas (scikit-learn only for ROC AUC): no Spark, no Keras, so the same code
serves ``jobs/train.py``, ``jobs/report.py`` and the notebooks.

What is here and why:

* :func:`metrics` -- the usual scores of one classifier on one attribute, with the confusion
  matrix and the *majority-class baseline*. The honest baseline is the accuracy on the test split
  of always predicting the majority class **of the training split** (:func:`majority_baseline`);
  without ``y_train`` the dict falls back to the test majority, which is optimistic and is marked
  as such in ``baseline_source``.
* :func:`bootstrap_ci` -- bootstrap confidence interval (percentile, or BCa for independent
  images) of accuracy, error rate, balanced accuracy, F1 or ROC AUC, resampling the test images
  -- or, with ``groups`` (the identity of each image), whole clusters: CelebA has ~20 images per
  person, and images of one person are not independent.
* :func:`accuracy_ci` -- Wilson interval for accuracy, widened by the design effect of clusters.
* :func:`paired_difference_ci` -- paired bootstrap interval of the difference between two models
  on the same test set (same resamples for both).
* :func:`auc_vs_chance` -- one-sided Mann-Whitney test of AUC > 0.5: a test against chance that
  keeps its power under class imbalance, where McNemar against the majority constant has none.
* :func:`brier_score`, :func:`calibration_table` -- calibration of positive-class probabilities.
* :func:`roc_points` -- the ROC curve's vertices, thinned to a bounded number (what the results
  table stores per fit, for the report's ROC plots).
* :func:`mcnemar` -- the paired test of two classifiers on the same test images (statsmodels'
  conventions). Paired, because both models see the same images: an unpaired test of two
  accuracies would ignore that their errors are correlated and lose most of its power.
* :func:`holm` -- Holm-Bonferroni step-down adjustment (family-wise error rate);
  :func:`holm_by_family` applies it within the one family rule, :data:`FAMILY`.
* :func:`beats_baseline` -- McNemar of a model against the constant majority predictor.
* :func:`compare_models` / :func:`best_model_table` -- the study's tables over a results frame;
  the best model is chosen by ``selection_score`` (off the test split) where fits carry it.
* :func:`baseline_tests` -- :func:`beats_baseline` for every row of a results frame, with the
  train-majority class recovered from the row's ``majority_baseline``, and
  :func:`auc_vs_chance` where the row has ``y_score``, both Holm-corrected over :data:`FAMILY`.

Labels and predictions are 1-D arrays of 0/1 (bool, any integer dtype, or floats that are exactly
0.0 / 1.0); anything else raises one precise ``ValueError``.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats

log = logging.getLogger(__name__)

__all__ = [
    "BASELINE_COLUMNS",
    "BASELINE_FAMILY",
    "BEST_COLUMNS",
    "CALIBRATION_COLUMNS",
    "CHOSEN_BY_SELECTION",
    "CHOSEN_BY_TEST",
    "COMPARISON_COLUMNS",
    "COMPARISON_FAMILY",
    "FAMILY",
    "GROUP_KEYS",
    "MODEL_ORDER",
    "PAIRED_STATS",
    "STATS",
    "accuracy_ci",
    "auc_vs_chance",
    "baseline_tests",
    "beats_baseline",
    "best_model_table",
    "bootstrap_ci",
    "brier_score",
    "calibration_table",
    "compare_models",
    "holm",
    "holm_by_family",
    "majority_baseline",
    "mcnemar",
    "metrics",
    "paired_difference_ci",
    "roc_points",
]

#: Statistics :func:`bootstrap_ci` can resample.
STATS: tuple[str, ...] = ("accuracy", "error_rate", "balanced_accuracy", "f1", "roc_auc")

#: Statistics :func:`paired_difference_ci` can difference.
PAIRED_STATS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "roc_auc")

#: Columns identifying one test set on which several models are compared (paired).
GROUP_KEYS: list[str] = ["attribute", "feature_set", "train_size", "seed"]

#: The Holm family rule, defined once: every test of one (feature set, training size, seed) --
#: all attributes and all models of one table of the study -- is one family
#: (:func:`holm_by_family`). :func:`baseline_tests` uses it for the tests against the baseline
#: and against chance; the report and the notebooks read it from here.
FAMILY: list[str] = ["feature_set", "train_size", "seed"]

#: Columns identifying one Holm family in :func:`compare_models`: all attributes of one
#: (feature set, training size, seed, model pair) -- :data:`FAMILY` split by model pair.
COMPARISON_FAMILY: list[str] = [*FAMILY, "model_a", "model_b"]

#: Columns of the frame :func:`compare_models` returns, in order.
COMPARISON_COLUMNS: list[str] = [
    "attribute",
    "feature_set",
    "train_size",
    "seed",
    "model_a",
    "model_b",
    "n",
    "accuracy_a",
    "accuracy_b",
    "b",
    "c",
    "statistic",
    "method",
    "p_value",
    "p_holm",
    "significant",
]

#: Columns of the frame :func:`best_model_table` returns, in order.
BEST_COLUMNS: list[str] = [
    "attribute",
    "feature_set",
    "train_size",
    "seed",
    "n_models",
    "best_model",
    "best_accuracy",
    "runner_up",
    "runner_up_accuracy",
    "tied",
    "max_p_holm",
    "beats_all",
    "chosen_by",
    "best_selection_score",
]

#: ``chosen_by`` of :func:`best_model_table`: the best model is the argmax of
#: ``selection_score`` (chosen off the test split) ...
CHOSEN_BY_SELECTION = "selection_score"
#: ... or, for fits stored without ``selection_score`` (old stores), of test accuracy.
CHOSEN_BY_TEST = "test accuracy (fits without selection_score)"

#: Tie order of :func:`best_model_table` among equal selection scores: these probes first, in
#: this order, then any other by name.
MODEL_ORDER: tuple[str, ...] = ("lasso", "forest", "dense")

#: Old name of :data:`FAMILY` (the default family of :func:`baseline_tests`); until issue 24 it
#: also split by model.
BASELINE_FAMILY: list[str] = FAMILY

#: Columns of the frame :func:`baseline_tests` returns, in order.
BASELINE_COLUMNS: list[str] = [
    "attribute",
    "feature_set",
    "model",
    "train_size",
    "seed",
    "n",
    "accuracy",
    "baseline_accuracy",
    "baseline_class",
    "b",
    "c",
    "statistic",
    "method",
    "p_value",
    "p_holm",
    "beats_baseline",
    "auc",
    "p_auc",
    "p_auc_holm",
    "beats_chance",
]

# Bootstrap resamples are drawn in blocks of at most this many indices (64 MiB of float64 draws
# plus as much for the indices), so n = 20,000 test images x 2,000 resamples never holds the full
# 40M-entry index matrix. The draws do not depend on the block size (see bootstrap_ci).
_BLOCK_ELEMS = 4_000_000

# McNemar switches from the exact binomial test to the chi-square below this many discordant pairs.
_EXACT_BELOW = 25


# --------------------------------------------------------------------------- input validation


def _binary(name: str, values: Any) -> np.ndarray:
    """``values`` as a 1-D int8 array of 0/1, or one precise ValueError."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if arr.dtype == np.bool_:
        return arr.astype(np.int8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must hold 0/1 labels, got dtype {arr.dtype}")
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        first = arr[np.argmax(bad)]
        raise ValueError(f"{name} must hold only 0 and 1, found {first!r}")
    return arr.astype(np.int8)


def _same_length(**arrays: np.ndarray) -> int:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"arrays differ in length: {lengths}")
    return next(iter(lengths.values()))


# --------------------------------------------------------------------------- one classifier


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


# --------------------------------------------------------------------------- bootstrap


def _draw_indices(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    """``rows`` resamples of ``n`` indices in [0, n): ``floor(U * n)`` with U ~ rng.random().

    Uniform doubles consume exactly one 64-bit draw each, so the stream of indices is the same
    however the resamples are split into blocks (``Generator.integers`` does not guarantee that:
    its 32-bit buffering restarts at every call)."""
    idx = (rng.random((rows, n)) * n).astype(np.intp)
    np.minimum(idx, n - 1, out=idx)  # U * n can round up to n for U just below 1
    return idx


def _scores(name: str, values: Any, n: int) -> np.ndarray:
    """``values`` as a 1-D finite float64 array of length ``n``, or one precise ValueError."""
    if values is None:
        raise ValueError(f"{name} is required for roc_auc")
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if len(arr) != n:
        raise ValueError(f"arrays differ in length: {{'y_true': {n}, '{name}': {len(arr)}}}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return arr


def _group_codes(groups: Any, n: int) -> np.ndarray:
    """Integer cluster codes ``0 .. G-1`` for ``groups``, numbered by first appearance.

    A missing entry (None / NaN) is a cluster of its own: an image without a known identity is
    treated as independent of every other. First-appearance numbering makes all-distinct groups
    resample exactly like independent images (same draws, same result)."""
    arr = np.asarray(groups, dtype=object)
    if arr.ndim != 1:
        raise ValueError(f"groups must be 1-D, got shape {arr.shape}")
    if len(arr) != n:
        raise ValueError(f"arrays differ in length: {{'y_true': {n}, 'groups': {len(arr)}}}")
    codes, _ = pd.factorize(arr, use_na_sentinel=True)
    missing = codes < 0
    if missing.any():
        codes = codes.copy()
        codes[missing] = codes.max() + 1 + np.arange(int(missing.sum()))
        codes, _ = pd.factorize(codes)
    return codes.astype(np.intp)


class _Sample:
    """One model's test predictions, prepared for weighted statistics (see :func:`_stat`)."""

    def __init__(self, t: np.ndarray, p: np.ndarray | None, score: np.ndarray | None):
        self.t = t
        self.p = p
        self.score = score
        if score is not None:
            order = np.argsort(score, kind="stable")
            ordered = score[order]
            self.order = order
            self.starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
            self.pos_sorted = t[order].astype(bool)


def _stat(stat: str, s: _Sample, w: np.ndarray) -> np.ndarray:
    """``stat`` of sample ``s`` under each row of ``w`` (rows x n multiplicities: how often each
    test image is in a resample; a row of ones is the sample itself). NaN where undefined."""
    if stat == "roc_auc":
        ws = w[:, s.order]
        pos = np.add.reduceat(np.where(s.pos_sorted, ws, 0.0), s.starts, axis=1)
        neg = np.add.reduceat(np.where(s.pos_sorted, 0.0, ws), s.starts, axis=1)
        del ws
        below = np.cumsum(neg, axis=1) - neg  # negative weight strictly below each score level
        u = (pos * (below + 0.5 * neg)).sum(axis=1)  # Mann-Whitney U, ties count one half
        n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where((n_pos > 0) & (n_neg > 0), u / np.maximum(n_pos * n_neg, 1), np.nan)
    assert s.p is not None
    t, p = s.t, s.p
    n = w.sum(axis=1)
    if stat in ("accuracy", "error_rate"):
        acc = (w @ (t == p).astype(np.float64)) / n
        return acc if stat == "accuracy" else 1.0 - acc
    pos = w @ t.astype(np.float64)
    tp = w @ (t & p).astype(np.float64)
    pred_pos = w @ p.astype(np.float64)
    fn = pos - tp
    fp = pred_pos - tp
    tn = n - pos - fp
    with np.errstate(divide="ignore", invalid="ignore"):
        if stat == "f1":
            den = 2 * tp + fp + fn
            return np.where(den > 0, 2 * tp / np.maximum(den, 1), np.nan)
        # balanced accuracy: mean recall over the classes present in the resample
        tpr = np.where(pos > 0, tp / np.maximum(pos, 1), np.nan)
        tnr = np.where(n - pos > 0, tn / np.maximum(n - pos, 1), np.nan)
        both = np.stack([tpr, tnr])
        present = (~np.isnan(both)).sum(axis=0)
        return np.where(present > 0, np.nansum(both, axis=0) / np.maximum(present, 1), np.nan)


def _row_counts(idx: np.ndarray, m: int) -> np.ndarray:
    """Multiplicities (rows x m, float64) of the indices in each row of ``idx``."""
    rows = idx.shape[0]
    flat = idx + (np.arange(rows, dtype=np.intp) * m)[:, None]
    return np.bincount(flat.ravel(), minlength=rows * m).reshape(rows, m).astype(np.float64)


def _resample(
    fn: Any, n: int, codes: np.ndarray | None, n_boot: int, seed: int, per_image: int
) -> np.ndarray:
    """``fn(w)`` over ``n_boot`` bootstrap multiplicity rows ``w``, drawn in bounded blocks.

    Independent images (``codes`` None): resample ``r`` draws ``n`` image indices
    ``floor(U * n)``, U from ``numpy.random.default_rng(seed).random()``, draws
    ``r*n .. r*n + n - 1`` of the stream. Clusters: resample ``r`` draws ``G`` cluster indices
    the same way (draws ``r*G ..``) and takes every image of each drawn cluster, as often as the
    cluster was drawn. Blocks hold at most ~``_BLOCK_ELEMS / per_image`` multiplicities, and the
    values do not depend on the block size."""
    units = n if codes is None else int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    rows = max(1, _BLOCK_ELEMS // (n * per_image))
    values: np.ndarray | None = None
    for start in range(0, n_boot, rows):
        k = min(rows, n_boot - start)
        counts = _row_counts(_draw_indices(rng, k, units), units)
        w = counts if codes is None else counts[:, codes]
        block = np.asarray(fn(w), dtype=np.float64)
        if values is None:
            values = np.empty((n_boot, *block.shape[1:]), dtype=np.float64)
        values[start : start + k] = block
    assert values is not None
    return values


def _jackknife(stat: str, s: _Sample) -> np.ndarray:
    """Leave-one-image-out values of ``stat`` (closed forms; NaN where undefined)."""
    t = s.t.astype(bool)
    n = len(t)
    if stat == "roc_auc":
        assert s.score is not None
        score = s.score
        pos, neg = np.sort(score[t]), np.sort(score[~t])
        n_pos, n_neg = len(pos), len(neg)
        out = np.empty(n, dtype=np.float64)
        # pairs each image takes part in: positive i vs lower negatives (ties one half), ...
        below = np.searchsorted(neg, score[t], "left")
        ties = np.searchsorted(neg, score[t], "right") - below
        r_pos = below + 0.5 * ties
        u = r_pos.sum()
        # ... negative j vs higher positives
        above = n_pos - np.searchsorted(pos, score[~t], "right")
        ties = np.searchsorted(pos, score[~t], "right") - np.searchsorted(pos, score[~t], "left")
        r_neg = above + 0.5 * ties
        with np.errstate(divide="ignore", invalid="ignore"):
            out[t] = (u - r_pos) / ((n_pos - 1) * n_neg) if n_pos > 1 else np.nan
            out[~t] = (u - r_neg) / (n_pos * (n_neg - 1)) if n_neg > 1 else np.nan
        return out
    # every other statistic is a function of the weights: leave image i out = weight 0 on i
    assert s.p is not None
    out = np.empty(n, dtype=np.float64)
    block = max(1, _BLOCK_ELEMS // n)
    for start in range(0, n, block):
        stop = min(n, start + block)
        w = np.ones((stop - start, n))
        w[np.arange(stop - start), np.arange(start, stop)] = 0.0
        out[start:stop] = _stat(stat, s, w)
    return out


def _interval(
    values: np.ndarray,
    alpha: float,
    *,
    what: str,
    method: str,
    point: float | None = None,
    jackknife: np.ndarray | None = None,
) -> tuple[float, float]:
    """Percentile or BCa interval from bootstrap ``values`` (NaN = undefined resample, dropped
    with a warning). BCa follows Efron & Tibshirani (1993) 14.3 as scipy.stats.bootstrap does:
    bias ``z0 = Phi^-1((#{v < point} + #{v <= point}) / (2B))``, acceleration from the jackknife
    ``a = sum(d^3) / (6 sum(d^2)^1.5)``, ``d = mean(jack) - jack``; where BCa is undefined
    (a degenerate bootstrap distribution, the estimate outside it, an undefined jackknife value)
    the percentile interval is returned with a warning."""
    undefined = int(np.isnan(values).sum())
    if undefined == len(values):
        raise ValueError(f"{what} is undefined on every bootstrap resample")
    if undefined:
        # a few resamples without one class (a rare attribute resampled by person) are
        # expected; a share that could move the interval is worth a warning
        level = logging.WARNING if undefined > 0.05 * len(values) else logging.DEBUG
        log.log(
            level,
            "bootstrap: %s undefined on %d of %d resamples; dropped",
            what,
            undefined,
            len(values),
        )
    quantiles = np.array([alpha / 2.0, 1.0 - alpha / 2.0])
    if method == "bca":
        assert point is not None and jackknife is not None
        vals = values[~np.isnan(values)]
        share = (np.count_nonzero(vals < point) + np.count_nonzero(vals <= point)) / (2 * len(vals))
        z0 = float(special.ndtri(share))
        d = jackknife.mean() - jackknife
        if not (np.isfinite(z0) and np.isfinite(d).all()):
            log.warning(
                "bootstrap: BCa undefined for %s (estimate at the edge of the bootstrap "
                "distribution or undefined jackknife values); percentile interval",
                what,
            )
        else:
            ss = float(np.sum(d**2))
            accel = float(np.sum(d**3)) / (6.0 * ss**1.5) if ss > 0 else 0.0
            z = special.ndtri(quantiles)
            quantiles = special.ndtr(z0 + (z0 + z) / (1.0 - accel * (z0 + z)))
    low, high = np.nanquantile(values, quantiles)
    return float(low), float(high)


def _check_boot_args(stat: str, n_boot: Any, alpha: float, method: str = "percentile") -> None:
    if stat not in STATS:
        raise ValueError(f"stat must be one of {STATS}, got {stat!r}")
    if not (isinstance(n_boot, int | np.integer) and n_boot >= 1):
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if method not in ("percentile", "bca"):
        raise ValueError(f"method must be 'percentile' or 'bca', got {method!r}")


def _sample(
    stat: str, t: np.ndarray, pred: Any, score: Any, pred_name: str, score_name: str
) -> _Sample:
    n = len(t)
    if stat == "roc_auc":
        s = _scores(score_name, score, n)
        p = None
        if pred is not None:
            p = _binary(pred_name, pred)
            _same_length(y_true=t, **{pred_name: p})
        return _Sample(t, p, s)
    if pred is None:
        raise ValueError(f"{pred_name} is required for {stat}")
    p = _binary(pred_name, pred)
    _same_length(y_true=t, **{pred_name: p})
    return _Sample(t, p, None)


def bootstrap_ci(
    y_true: Any,
    y_pred: Any,
    *,
    stat: str = "accuracy",
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    groups: Any | None = None,
    y_score: Any | None = None,
    method: str = "percentile",
) -> tuple[float, float]:
    """Bootstrap ``1 - alpha`` confidence interval of ``stat`` over the test set.

    What is resampled: the independent units of the test set. Without ``groups`` the test images
    are the unit: each of ``n_boot`` resamples draws ``n`` indices uniformly with replacement,
    ``floor(U * n)`` for U from ``numpy.random.default_rng(seed).random()``, one resample after
    the other (resample ``r`` uses draws ``r*n .. r*n + n - 1`` of the stream). With ``groups``
    (one label per test image, e.g. the CelebA identity; None/NaN entries are clusters of their
    own) the *clusters* are the unit -- images of one person are not independent, and
    resampling them one by one would understate the uncertainty: each resample draws ``G``
    cluster indices the same way (clusters numbered by first appearance) and takes all images
    of every drawn cluster (so a resample's size varies). All-distinct groups give exactly the
    result without ``groups``.

    ``stat`` (one of :data:`STATS`) is computed on each resample; ``roc_auc`` needs ``y_score``
    (``y_pred`` may then be None). The classifier is held fixed: the interval reflects
    test-set sampling only, not training variability (use several training ``seed``s for that).

    ``method="percentile"`` (default): the ``alpha/2`` and ``1 - alpha/2`` quantiles of the
    resampled values (``numpy.quantile``, linear interpolation). ``method="bca"``
    (bias-corrected and accelerated, Efron 1987; independent images only, the acceleration
    comes from the leave-one-image-out jackknife): better coverage near the edges (accuracy
    close to 1) -- for clustered data use the percentile method (or :func:`accuracy_ci`).

    Vectorised: resamples are drawn as multiplicity matrices in blocks of at most ~4M entries
    (1M for ``roc_auc``), so memory is bounded for any ``n``; the result is the same for any
    block size and is deterministic for a ``seed``. A resample where the statistic is undefined
    (no positives for ``f1``; one class only for ``roc_auc``) is dropped with a warning.
    """
    _check_boot_args(stat, n_boot, alpha, method)
    t = _binary("y_true", y_true)
    s = _sample(stat, t, y_pred, y_score, "y_pred", "y_score")
    n = len(t)
    codes = None if groups is None else _group_codes(groups, n)
    if method == "bca" and codes is not None and codes.max() + 1 < n:
        raise ValueError(
            "method='bca' needs independent images; with groups use "
            "method='percentile' (or accuracy_ci for accuracy)"
        )
    per_image = 4 if stat == "roc_auc" else 1
    values = _resample(lambda w: _stat(stat, s, w), n, codes, int(n_boot), seed, per_image)
    if method == "bca":
        point = float(_stat(stat, s, np.ones((1, n)))[0])
        if math.isnan(point):
            raise ValueError(f"{stat} is undefined on the test set itself")
        return _interval(
            values, alpha, what=stat, method="bca", point=point, jackknife=_jackknife(stat, s)
        )
    return _interval(values, alpha, what=stat, method="percentile")


def paired_difference_ci(
    y_true: Any,
    pred_a: Any,
    pred_b: Any,
    *,
    stat: str = "accuracy",
    score_a: Any | None = None,
    score_b: Any | None = None,
    groups: Any | None = None,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict[str, float]:
    """Paired percentile bootstrap interval of ``stat(A) - stat(B)`` on one test set.

    Paired: both models are scored on the *same* resample each time (the same test images, or
    with ``groups`` the same drawn clusters, exactly as :func:`bootstrap_ci` draws them), so
    the interval reflects the sampling of the test set with the two models' correlated errors
    accounted for -- two separate intervals would overlap far more than the difference varies.
    ``stat`` is ``accuracy``, ``balanced_accuracy`` or ``roc_auc`` (which needs ``score_a`` and
    ``score_b``; ``pred_a`` / ``pred_b`` may then be None). A resample where either statistic
    is undefined is dropped with a warning.

    Returns ``diff`` (on the whole test set), ``ci_low``, ``ci_high``."""
    if stat not in PAIRED_STATS:
        raise ValueError(f"stat must be one of {PAIRED_STATS}, got {stat!r}")
    _check_boot_args(stat, n_boot, alpha)
    t = _binary("y_true", y_true)
    a = _sample(stat, t, pred_a, score_a, "pred_a", "score_a")
    b = _sample(stat, t, pred_b, score_b, "pred_b", "score_b")
    n = len(t)
    codes = None if groups is None else _group_codes(groups, n)
    per_image = 4 if stat == "roc_auc" else 1

    def diff(w: np.ndarray) -> np.ndarray:
        return _stat(stat, a, w) - _stat(stat, b, w)

    point = float(diff(np.ones((1, n)))[0])
    if math.isnan(point):
        raise ValueError(f"{stat} is undefined on the test set itself")
    values = _resample(diff, n, codes, int(n_boot), seed, per_image)
    low, high = _interval(values, alpha, what=f"{stat} difference", method="percentile")
    return {"diff": point, "ci_low": low, "ci_high": high}


def accuracy_ci(
    y_true: Any,
    y_pred: Any,
    *,
    groups: Any | None = None,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Wilson score ``1 - alpha`` interval for accuracy, widened for clustered test images.

    Without ``groups`` (or with all-distinct groups) the test images are independent and this
    is the Wilson interval of ``k`` correct out of ``n`` (equal to statsmodels'
    ``proportion_confint(k, n, method="wilson")``); unlike the percentile bootstrap it does not
    collapse at accuracy 0 or 1.

    With ``groups`` (one label per image, e.g. the identity; None/NaN entries are clusters of
    their own) the images of one cluster are correlated, and the effective sample size is
    ``n_eff = n / deff`` (Kish; Korn & Graubard 1998) with the design effect
    ``deff = max(1, v_cluster / v_iid)``: ``v_cluster = G/(G-1) * sum_g (y_g - acc m_g)^2 / n^2``
    is the cluster-robust variance of the ratio estimator ``acc = sum y_g / sum m_g``
    (``y_g`` correct of the ``m_g`` images of cluster ``g``, ``G`` clusters) and
    ``v_iid = n/(n-1) * acc (1 - acc) / n`` the same estimator with every image its own
    cluster. The interval is Wilson on ``(acc * n_eff, n_eff)``. ``deff`` is 1 when accuracy is
    0 or 1 (no variance to inflate)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    t = _binary("y_true", y_true)
    p = _binary("y_pred", y_pred)
    n = _same_length(y_true=t, y_pred=p)
    correct = (t == p).astype(np.float64)
    acc = float(correct.mean())
    n_eff = float(n)
    if groups is not None:
        codes = _group_codes(groups, n)
        n_groups = int(codes.max()) + 1
        if n_groups < n:  # some images share a cluster
            if n_groups < 2:
                raise ValueError(
                    "groups has a single cluster: the design effect needs at least 2 clusters"
                )
            if 0.0 < acc < 1.0:
                y_g = np.bincount(codes, weights=correct, minlength=n_groups)
                m_g = np.bincount(codes, minlength=n_groups)
                v_cluster = (
                    (n_groups / (n_groups - 1)) * float(np.sum((y_g - acc * m_g) ** 2)) / n**2
                )
                v_iid = (n / (n - 1)) * acc * (1.0 - acc) / n
                n_eff = n / max(1.0, v_cluster / v_iid)
    return _wilson(acc * n_eff, n_eff, alpha)


def _wilson(count: float, nobs: float, alpha: float) -> tuple[float, float]:
    """Wilson score interval of ``count`` successes in ``nobs`` trials (both may be fractional)."""
    z = float(special.ndtri(1.0 - alpha / 2.0))
    prop = count / nobs
    denom = 1.0 + z * z / nobs
    center = (prop + z * z / (2.0 * nobs)) / denom
    half = z * math.sqrt(prop * (1.0 - prop) / nobs + z * z / (4.0 * nobs * nobs)) / denom
    return max(0.0, center - half), min(1.0, center + half)


# --------------------------------------------------------------------------- scores


def auc_vs_chance(y_true: Any, y_score: Any) -> dict[str, float]:
    """One-sided test that positives score higher than negatives (ROC AUC > 0.5).

    The Mann-Whitney U test (``scipy.stats.mannwhitneyu(scores of positives, scores of
    negatives, alternative="greater")``, its default method: exact for small samples without
    ties, else the normal approximation with tie and continuity corrections). Unlike McNemar
    against the constant majority predictor, its power does not vanish under class imbalance.
    ``auc = U / (n_pos n_neg)`` equals ``sklearn.metrics.roc_auc_score``. Images are treated as
    independent (the test does not know identities). When ``y_true`` has a single class,
    ``auc``, ``statistic`` and ``p_value`` are NaN (no test; NaN is passed through by
    :func:`holm` and never reads as significant). Returns ``auc``, ``statistic`` (U),
    ``p_value``."""
    t = _binary("y_true", y_true)
    score = _scores("y_score", y_score, len(t))
    pos, neg = score[t == 1], score[t == 0]
    if len(pos) == 0 or len(neg) == 0:
        return {"auc": math.nan, "statistic": math.nan, "p_value": math.nan}
    res = stats.mannwhitneyu(pos, neg, alternative="greater")
    u = float(res.statistic)
    return {"auc": u / (len(pos) * len(neg)), "statistic": u, "p_value": float(res.pvalue)}


def _probabilities(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    t = _binary("y_true", y_true)
    score = _scores("y_score", y_score, len(t))
    if ((score < 0) | (score > 1)).any():
        bad = score[np.argmax((score < 0) | (score > 1))]
        raise ValueError(f"y_score must be probabilities in [0, 1], found {bad!r}")
    return t, score


def brier_score(y_true: Any, y_score: Any) -> float:
    """Mean squared difference between the positive-class probability and the label (lower is
    better; 0.25 for a constant 0.5). ``y_score`` must lie in [0, 1]: a decision value is not a
    probability. Equal to ``sklearn.metrics.brier_score_loss``."""
    t, score = _probabilities(y_true, y_score)
    return float(np.mean((score - t) ** 2))


#: Columns of the frame :func:`calibration_table` returns, in order.
CALIBRATION_COLUMNS: list[str] = ["bin_low", "bin_high", "n", "mean_score", "frac_positive"]


def calibration_table(y_true: Any, y_score: Any, bins: int = 10) -> pd.DataFrame:
    """Reliability table: ``bins`` equal-width bins on [0, 1], one row per non-empty bin with
    :data:`CALIBRATION_COLUMNS` -- edges ``bin_low`` / ``bin_high``, ``n`` images, their
    ``mean_score`` and ``frac_positive`` (a calibrated model has the two equal). Bin ``k``
    holds the scores in ``(low, high]``, the first bin also 0 -- the rule of
    ``sklearn.calibration.calibration_curve(strategy="uniform")``, whose ``prob_pred`` and
    ``prob_true`` are ``mean_score`` and ``frac_positive``."""
    if not (isinstance(bins, int | np.integer) and bins >= 1):
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    t, score = _probabilities(y_true, y_score)
    edges = np.linspace(0.0, 1.0, int(bins) + 1)
    ids = np.searchsorted(edges[1:-1], score)
    count = np.bincount(ids, minlength=bins)
    total = np.bincount(ids, weights=score, minlength=bins)
    positives = np.bincount(ids, weights=t.astype(np.float64), minlength=bins)
    keep = count > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        frame = pd.DataFrame(
            {
                "bin_low": edges[:-1],
                "bin_high": edges[1:],
                "n": count.astype(np.int64),
                "mean_score": total / count,
                "frac_positive": positives / count,
            }
        )
    return frame[keep].reset_index(drop=True)[CALIBRATION_COLUMNS]


# --------------------------------------------------------------------------- paired tests


def mcnemar(
    y_true: Any,
    pred_a: Any,
    pred_b: Any,
    *,
    exact: bool | None = None,
) -> dict[str, Any]:
    """McNemar's paired test of two classifiers on the same test images.

    ``b`` = images A gets right and B gets wrong, ``c`` = A wrong and B right; only these
    discordant pairs carry information. ``exact=None`` picks the exact test when
    ``b + c < 25``. Conventions are those of
    ``statsmodels.stats.contingency_tables.mcnemar(table, exact=..., correction=True)``:

    * exact: ``statistic = min(b, c)``, two-sided ``p = min(1, 2 * BinomCDF(min(b, c); b + c, 1/2))``;
    * chi-square: ``statistic = (|b - c| - 1)**2 / (b + c)`` on 1 df (continuity corrected; as in
      statsmodels the correction is not clipped at 0, so ``b == c`` gives ``1 / (b + c)``).

    ``b + c == 0`` (the two models agree on every image) gives ``statistic 0.0, p_value 1.0``
    whatever the method. Returns ``b``, ``c``, ``statistic``, ``p_value``, ``method``
    (``"exact"`` or ``"chi2"``)."""
    t = _binary("y_true", y_true)
    a = _binary("pred_a", pred_a)
    bb = _binary("pred_b", pred_b)
    _same_length(y_true=t, pred_a=a, pred_b=bb)
    a_right = a == t
    b_right = bb == t
    b = int(np.count_nonzero(a_right & ~b_right))
    c = int(np.count_nonzero(~a_right & b_right))
    discordant = b + c
    use_exact = discordant < _EXACT_BELOW if exact is None else bool(exact)
    method = "exact" if use_exact else "chi2"
    if discordant == 0:
        return {"b": 0, "c": 0, "statistic": 0.0, "p_value": 1.0, "method": method}
    if use_exact:
        statistic = float(min(b, c))
        p_value = min(1.0, 2.0 * float(stats.binom.cdf(min(b, c), discordant, 0.5)))
    else:
        statistic = (abs(b - c) - 1) ** 2 / discordant
        p_value = float(stats.chi2.sf(statistic, 1))
    return {"b": b, "c": c, "statistic": float(statistic), "p_value": p_value, "method": method}


def holm(p_values: Sequence[float | None] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values, in the input order.

    With the ``m`` valid p-values sorted ascending ``p_(1) <= ... <= p_(m)``, the adjusted value
    of ``p_(i)`` is ``min(1, max_{j <= i} (m - j + 1) * p_(j))`` -- monotone in the p-values and
    capped at 1; equal to ``statsmodels.stats.multitest.multipletests(p, method="holm")[1]``.
    NaN / None entries are passed through as NaN and do not count towards ``m``."""
    raw = np.array([np.nan if v is None else v for v in p_values], dtype=np.float64)
    if raw.ndim != 1:
        raise ValueError(f"p_values must be 1-D, got shape {raw.shape}")
    valid = ~np.isnan(raw)
    if ((raw[valid] < 0) | (raw[valid] > 1)).any():
        raise ValueError("p_values must lie in [0, 1]")
    out = np.full(raw.shape, np.nan)
    pv = raw[valid]
    m = len(pv)
    if m == 0:
        return out
    order = np.argsort(pv, kind="stable")
    scaled = (m - np.arange(m)) * pv[order]
    adjusted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    valid_out = np.empty(m)
    valid_out[order] = adjusted
    out[valid] = valid_out
    return out


def holm_by_family(
    frame: pd.DataFrame,
    p_column: str,
    *,
    family: Sequence[str] = tuple(FAMILY),
) -> pd.Series:
    """:func:`holm` of ``frame[p_column]`` within each family, aligned to ``frame``'s index.

    A family is the rows sharing the values of the ``family`` columns (default :data:`FAMILY`:
    one feature set, training size and seed -- every attribute and model of one table; missing
    values form a family of their own); ``family=[]`` makes every row one family. NaN p-values
    stay NaN and do not count towards a family's size."""
    family = list(family)
    missing = [c for c in [p_column, *family] if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks columns {missing}")
    p = frame[p_column].astype(np.float64)
    if frame.empty:
        return pd.Series(np.array([], dtype=np.float64), index=frame.index, name=p_column)
    if not family:
        return pd.Series(holm(p.to_numpy()), index=frame.index, name=p_column)
    return p.groupby([frame[c] for c in family], dropna=False).transform(
        lambda s: holm(s.to_numpy())
    )


def beats_baseline(
    y_true: Any,
    y_pred: Any,
    *,
    y_train: Any | None = None,
    baseline_class: int | None = None,
    alpha: float = 0.05,
    exact: bool | None = None,
) -> dict[str, Any]:
    """Does the classifier beat the constant majority predictor, significantly?

    The baseline predicts the majority class of ``y_train`` (of ``y_true`` when ``y_train`` is
    None, which is optimistic for the baseline, hence conservative here), or ``baseline_class``
    (0 or 1) when given -- the train-majority class known without ``y_train``, e.g. recovered
    from a results row (it takes precedence over ``y_train``). Both predict the same
    test images, so the test is :func:`mcnemar` with A = the model and B = the baseline;
    ``beats`` is ``accuracy > baseline_accuracy and p_value < alpha``. Returns ``accuracy``,
    ``baseline_accuracy``, ``baseline_class``, ``b``, ``c``, ``statistic``, ``p_value``,
    ``method``, ``beats``. Holm-correct ``p_value`` across attributes before reading it as a
    family."""
    t = _binary("y_true", y_true)
    p = _binary("y_pred", y_pred)
    _same_length(y_true=t, y_pred=p)
    if baseline_class is not None:
        if baseline_class not in (0, 1):
            raise ValueError(f"baseline_class must be 0 or 1, got {baseline_class!r}")
        majority = int(baseline_class)
    else:
        ref = t if y_train is None else _binary("y_train", y_train)
        majority = 1 if 2 * int(ref.sum()) > len(ref) else 0
    baseline = np.full_like(t, majority)
    test = mcnemar(t, p, baseline, exact=exact)
    accuracy = float(np.mean(p == t))
    baseline_accuracy = float(np.mean(baseline == t))
    return {
        "accuracy": accuracy,
        "baseline_accuracy": baseline_accuracy,
        "baseline_class": majority,
        **test,
        "beats": bool(accuracy > baseline_accuracy and test["p_value"] < alpha),
    }


# --------------------------------------------------------------------------- results tables

_RESULT_COLUMNS = ["attribute", "feature_set", "model", "train_size", "seed", "y_true", "y_pred"]


def _check_results(results: pd.DataFrame) -> None:
    missing = [c for c in _RESULT_COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(f"results frame lacks columns {missing}")
    dup = results.duplicated(subset=[*GROUP_KEYS, "model"])
    if dup.any():
        row = results.loc[dup, [*GROUP_KEYS, "model"]].iloc[0].to_dict()
        raise ValueError(f"results holds more than one row for {row}")


def _aligned(group: pd.DataFrame, key: tuple[Any, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """model -> (y_true, y_pred), all in the test order of the first model (sorted by name).

    With an ``image_ids`` column every model's predictions are reordered by image id onto the
    reference order, and the image sets must match. Without it the rows must already share one
    fixed test order: lengths must match. Either way ``y_true`` must then agree image by image."""
    has_ids = "image_ids" in group.columns
    rows = sorted(group.itertuples(index=False), key=lambda r: str(r.model))
    ref_true = _binary(f"y_true of {key}", rows[0].y_true)
    ref_order: np.ndarray | None = None
    ref_sorted_ids: np.ndarray | None = None
    if has_ids:
        ref_ids = np.asarray(rows[0].image_ids)
        ref_order = np.argsort(ref_ids, kind="stable")
        ref_sorted_ids = ref_ids[ref_order]
        if len(ref_ids) != len(ref_true) or (ref_sorted_ids[1:] == ref_sorted_ids[:-1]).any():
            raise ValueError(
                f"{key}, model {rows[0].model!r}: image_ids must be unique and as long as y_true"
            )
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for row in rows:
        where = f"{key}, model {row.model!r}"
        y_true = _binary(f"y_true of {where}", row.y_true)
        y_pred = _binary(f"y_pred of {where}", row.y_pred)
        _same_length(y_true=y_true, y_pred=y_pred)
        if len(y_true) != len(ref_true):
            raise ValueError(
                f"{where}: {len(y_true)} test predictions, "
                f"the first model of the group has {len(ref_true)}"
            )
        if has_ids:
            assert ref_order is not None and ref_sorted_ids is not None
            ids = np.asarray(row.image_ids)
            if len(ids) != len(y_true):
                raise ValueError(f"{where}: image_ids and y_true differ in length")
            order = np.argsort(ids, kind="stable")
            if not np.array_equal(ids[order], ref_sorted_ids):
                raise ValueError(
                    f"{where}: predicts a different set of test images than model {rows[0].model!r}"
                )
            t_al = np.empty_like(y_true)
            p_al = np.empty_like(y_pred)
            t_al[ref_order] = y_true[order]
            p_al[ref_order] = y_pred[order]
            y_true, y_pred = t_al, p_al
        if not np.array_equal(y_true, ref_true):
            raise ValueError(
                f"{where}: y_true disagrees with model {rows[0].model!r} on the same "
                "test images (different test order or labels)"
            )
        out[str(row.model)] = (y_true, y_pred)
    return out


def compare_models(
    results: pd.DataFrame,
    *,
    alpha: float = 0.05,
    exact: bool | None = None,
) -> pd.DataFrame:
    """Pairwise McNemar tests between the models of every test set, Holm-corrected.

    Input: one row per (attribute, feature_set, model, train_size, seed) with ``y_true`` and
    ``y_pred`` (arrays of 0/1 over the test images; int8 or bool) and optionally ``image_ids``
    (same length). With ``image_ids`` the models' predictions are aligned by image id; without
    them all models of a group must list the test images in one agreed order (checked: lengths
    and ``y_true`` must agree). Other columns are ignored.

    Output: one row per (attribute, feature_set, train_size, seed, model_a, model_b) for every
    unordered pair of models present in that group, ``model_a < model_b`` by name, with the
    columns :data:`COMPARISON_COLUMNS`: ``n`` test images, ``accuracy_a``, ``accuracy_b``,
    McNemar ``b`` (A right, B wrong), ``c`` (A wrong, B right), ``statistic``, ``method``,
    ``p_value``, ``p_holm`` and ``significant`` (``p_holm < alpha``).

    Family for Holm: all attributes of one (feature_set, train_size, seed, model_a, model_b),
    i.e. :data:`COMPARISON_FAMILY`. That is the question one table of the study answers -- "on
    which of the 40 attributes do A and B differ, on this feature set and training size?" -- and
    it controls the family-wise error over those attributes. Different model pairs, feature
    sets, training sizes and seeds are separate families (they are read as separate tables);
    apply :func:`holm` over a wider set of rows for a stricter claim.
    """
    _check_results(results)
    records: list[dict[str, Any]] = []
    for key, group in results.groupby(GROUP_KEYS, sort=True, dropna=False):
        preds = _aligned(group, key)
        for model_a, model_b in itertools.combinations(sorted(preds), 2):
            y_true, pred_a = preds[model_a]
            _, pred_b = preds[model_b]
            test = mcnemar(y_true, pred_a, pred_b, exact=exact)
            records.append(
                {
                    **dict(zip(GROUP_KEYS, key, strict=True)),
                    "model_a": model_a,
                    "model_b": model_b,
                    "n": len(y_true),
                    "accuracy_a": float(np.mean(pred_a == y_true)),
                    "accuracy_b": float(np.mean(pred_b == y_true)),
                    "b": test["b"],
                    "c": test["c"],
                    "statistic": test["statistic"],
                    "method": test["method"],
                    "p_value": test["p_value"],
                }
            )
    out = pd.DataFrame.from_records(records, columns=COMPARISON_COLUMNS[:-2])
    if out.empty:
        out["p_holm"] = pd.Series(dtype=np.float64)
        out["significant"] = pd.Series(dtype=bool)
        return out[COMPARISON_COLUMNS]
    out["p_holm"] = out.groupby(COMPARISON_FAMILY, dropna=False)["p_value"].transform(
        lambda s: holm(s.to_numpy())
    )
    out["significant"] = out["p_holm"] < alpha
    log.info(
        "compare_models: %d comparisons in %d Holm families, %d significant at %.3g",
        len(out),
        out.groupby(COMPARISON_FAMILY, dropna=False).ngroups,
        int(out["significant"].sum()),
        alpha,
    )
    return out[COMPARISON_COLUMNS].reset_index(drop=True)


def best_model_table(results: pd.DataFrame, comparisons: pd.DataFrame) -> pd.DataFrame:
    """Per test set (attribute, feature_set, train_size, seed): the best model, chosen off the
    test split, its test accuracy, and whether it beats every other model significantly.

    Choice: when ``results`` has a ``selection_score`` column (higher is better; the score each
    fit was chosen by, on validation data or CV/OOB inside train) that is non-null for every
    model of the group, the best model is the argmax of ``selection_score``; equal scores go
    to the first of :data:`MODEL_ORDER` (lasso, forest, dense), then to any other model by
    name; ``chosen_by`` is :data:`CHOSEN_BY_SELECTION`. Otherwise (old fits stored without it)
    the old rule is kept -- argmax of test accuracy, ties to the first by name -- and
    ``chosen_by`` is :data:`CHOSEN_BY_TEST`, which a report must flag: that number is
    optimistic (selected on the data it is reported on). Either way ``best_accuracy`` is the
    chosen model's *test* accuracy (the estimate), ``runner_up`` the next by the same rule.

    ``comparisons`` is :func:`compare_models` of the same ``results``; its ``significant``
    column (Holm-corrected McNemar) decides. Columns :data:`BEST_COLUMNS`: ``n_models``,
    ``best_model``, ``best_accuracy``, ``runner_up`` / ``runner_up_accuracy`` (None / NaN with
    a single model), ``tied`` (the runner-up equals the best on the ranking score: selection
    score, or test accuracy under the old rule), ``max_p_holm`` (largest Holm p-value of the
    best model against the others; NaN with a single model), ``beats_all`` (every comparison
    of the best model with another model is significant with the best model more accurate on
    test; a lone model does not "beat all": there is nothing it was tested against),
    ``chosen_by`` and ``best_selection_score`` (NaN under the old rule).
    """
    _check_results(results)
    missing = [c for c in COMPARISON_COLUMNS if c not in comparisons.columns]
    if missing:
        raise ValueError(f"comparisons frame lacks columns {missing}")
    index: dict[tuple[Any, ...], Any] = {}
    for row in comparisons.itertuples(index=False):
        key = (*(getattr(row, k) for k in GROUP_KEYS), row.model_a, row.model_b)
        index[tuple(_norm(v) for v in key)] = row

    records: list[dict[str, Any]] = []
    for key, group in results.groupby(GROUP_KEYS, sort=True, dropna=False):
        preds = _aligned(group, key)
        acc = {m: float(np.mean(p == t)) for m, (t, p) in preds.items()}
        selection = _selection_scores(group)
        if selection is not None:
            chosen_by = CHOSEN_BY_SELECTION
            rank_score = selection
            ranked = sorted(acc, key=lambda m: (-selection[m], *_model_rank(m)))
        else:
            chosen_by = CHOSEN_BY_TEST
            rank_score = acc
            ranked = sorted(acc, key=lambda m: (-acc[m], m))
        best = ranked[0]
        runner_up = ranked[1] if len(ranked) > 1 else None
        p_holms: list[float] = []
        wins: list[bool] = []
        for other in ranked[1:]:
            a, b = sorted((best, other))
            ckey = tuple(_norm(v) for v in (*key, a, b))
            if ckey not in index:
                raise ValueError(f"comparisons lacks the pair {a!r} vs {b!r} for {key}")
            comp = index[ckey]
            p_holms.append(float(comp.p_holm))
            wins.append(bool(comp.significant) and acc[best] > acc[other])
        records.append(
            {
                **dict(zip(GROUP_KEYS, key, strict=True)),
                "n_models": len(ranked),
                "best_model": best,
                "best_accuracy": acc[best],
                "runner_up": runner_up,
                "runner_up_accuracy": acc[runner_up] if runner_up is not None else math.nan,
                "tied": runner_up is not None and rank_score[runner_up] == rank_score[best],
                "max_p_holm": max(p_holms) if p_holms else math.nan,
                "beats_all": bool(wins) and all(wins),
                "chosen_by": chosen_by,
                "best_selection_score": selection[best] if selection is not None else math.nan,
            }
        )
    return pd.DataFrame.from_records(records, columns=BEST_COLUMNS)


def _model_rank(model: str) -> tuple[int, str]:
    """Tie order among equal selection scores: :data:`MODEL_ORDER` first, then by name."""
    return (MODEL_ORDER.index(model), "") if model in MODEL_ORDER else (len(MODEL_ORDER), model)


def _selection_scores(group: pd.DataFrame) -> dict[str, float] | None:
    """model -> selection_score when every model of the group has a finite one, else None."""
    if "selection_score" not in group.columns:
        return None
    scores: dict[str, float] = {}
    for model, value in zip(group["model"], group["selection_score"], strict=True):
        if value is None or pd.isna(value):
            return None
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"selection_score of model {model!r} is {value!r}")
        scores[str(model)] = value
    return scores


def _train_majority_classes(y_true: np.ndarray, majority_baseline: float, where: str) -> list[int]:
    """The constant class(es) whose accuracy on ``y_true`` is ``majority_baseline``.

    The results table stores the test accuracy of the train-majority constant, not the class:
    the class is the one that reproduces that accuracy. Both classes when the test split is
    exactly balanced (they are then equally accurate and the class cannot be told)."""
    if majority_baseline is None or math.isnan(majority_baseline):
        raise ValueError(f"{where}: majority_baseline is missing")
    share = {1: float(np.mean(y_true == 1)), 0: float(np.mean(y_true == 0))}
    classes = [k for k in (0, 1) if math.isclose(share[k], majority_baseline, abs_tol=1e-9)]
    if not classes:
        raise ValueError(
            f"{where}: majority_baseline {majority_baseline!r} is the accuracy of "
            f"neither constant (class 1: {share[1]!r}, class 0: {share[0]!r})"
        )
    return classes


def baseline_tests(
    results: pd.DataFrame,
    *,
    alpha: float = 0.05,
    exact: bool | None = None,
    family: Sequence[str] = tuple(FAMILY),
) -> pd.DataFrame:
    """:func:`beats_baseline` of every row of a results frame, Holm-corrected over ``family``.

    Input: rows with the columns of :func:`compare_models` plus ``majority_baseline`` (the test
    accuracy of always predicting the *training* majority class, as the grid stores it). The
    results table does not store the training labels, so the constant's class is recovered as
    the one whose test accuracy equals ``majority_baseline``. When the test split is exactly
    balanced both classes match (equally accurate constants, different McNemar tables): both
    are tested and the larger p-value is kept (conservative); ``baseline_class`` is then that
    constant's class.

    Output: one row per input row, in input order, with :data:`BASELINE_COLUMNS`: ``n`` test
    images, the model's ``accuracy``, ``baseline_accuracy``, ``baseline_class``, McNemar ``b``
    (model right, baseline wrong), ``c``, ``statistic``, ``method``, ``p_value``, ``p_holm``
    (Holm over the rows sharing the ``family`` columns: default :data:`FAMILY`, every
    attribute and model of one feature set, training size and seed; ``family=[]`` is one family
    over all rows) and ``beats_baseline`` (``accuracy > baseline_accuracy and p_holm < alpha``).

    McNemar against the constant has no power under strong imbalance (7 positives: even a
    perfect classifier gets p = 0.016). So, for rows whose optional ``y_score`` column holds a
    score array (the positive-class score of every test image, in the order of ``y_true``):
    ``auc`` and ``p_auc`` (:func:`auc_vs_chance`, one-sided Mann-Whitney, AUC > 0.5),
    ``p_auc_holm`` (Holm over the same family, on its own: the AUC tests are a second family
    of hypotheses beside the McNemar ones) and ``beats_chance`` (``p_auc_holm < alpha``). Rows
    without a score (a null ``y_score``, no such column, or one class in the test split) have
    NaN there and ``beats_chance`` False."""
    _check_results(results)
    family = list(family)
    missing = [c for c in ["majority_baseline", *family] if c not in results.columns]
    if missing:
        raise ValueError(f"results frame lacks columns {missing}")
    records: list[dict[str, Any]] = []
    for row in results.itertuples(index=False):
        key = tuple(
            getattr(row, k) for k in ["attribute", "feature_set", "model", "train_size", "seed"]
        )
        where = str(key)
        y_true = _binary(f"y_true of {where}", row.y_true)
        y_pred = _binary(f"y_pred of {where}", row.y_pred)
        _same_length(y_true=y_true, y_pred=y_pred)
        tests = [
            beats_baseline(y_true, y_pred, baseline_class=k, alpha=alpha, exact=exact)
            for k in _train_majority_classes(y_true, float(row.majority_baseline), where)
        ]
        test = max(tests, key=lambda r: r["p_value"])
        score = getattr(row, "y_score", None)
        chance = {"auc": math.nan, "p_value": math.nan}
        if score is not None and not (np.isscalar(score) and pd.isna(score)):
            chance = auc_vs_chance(y_true, _scores(f"y_score of {where}", score, len(y_true)))
        records.append(
            {
                **dict(
                    zip(
                        ["attribute", "feature_set", "model", "train_size", "seed"],
                        key,
                        strict=True,
                    )
                ),
                "n": len(y_true),
                **{
                    k: test[k]
                    for k in (
                        "accuracy",
                        "baseline_accuracy",
                        "baseline_class",
                        "b",
                        "c",
                        "statistic",
                        "method",
                        "p_value",
                    )
                },
                "auc": chance["auc"],
                "p_auc": chance["p_value"],
            }
        )
    columns = [
        c
        for c in BASELINE_COLUMNS
        if c not in ("p_holm", "beats_baseline", "p_auc_holm", "beats_chance")
    ]
    out = pd.DataFrame.from_records(records, columns=columns)
    out[["auc", "p_auc"]] = out[["auc", "p_auc"]].astype(np.float64)
    fam = results[family].reset_index(drop=True)
    for p_col, holm_col in (("p_value", "p_holm"), ("p_auc", "p_auc_holm")):
        out[holm_col] = holm_by_family(fam.assign(_p=out[p_col]), "_p", family=family).to_numpy()
    out["beats_baseline"] = (out["accuracy"] > out["baseline_accuracy"]) & (out["p_holm"] < alpha)
    out["beats_chance"] = out["p_auc_holm"] < alpha
    return out[BASELINE_COLUMNS].reset_index(drop=True)


def _norm(value: Any) -> Any:
    """Hashable, NaN-safe key part: numpy scalars to Python, NaN/None to one marker."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.generic):
        value = value.item()
        if isinstance(value, float) and math.isnan(value):
            return None
    return value

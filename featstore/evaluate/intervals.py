"""Confidence intervals over the test set: the bootstrap (percentile or BCa; images or whole
clusters resampled) of one model's statistic (:func:`bootstrap_ci`; of a K-class model's
:func:`class_bootstrap_ci`) or of the paired difference of two (:func:`paired_difference_ci`),
and the cluster-widened Wilson interval of accuracy (:func:`accuracy_ci`)."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from featstore.evaluate.inputs import _binary, _same_length, _score_array

log = logging.getLogger(__name__)


#: Statistics :func:`bootstrap_ci` can resample.
STATS: tuple[str, ...] = ("accuracy", "error_rate", "balanced_accuracy", "f1", "roc_auc")


#: Statistics :func:`class_bootstrap_ci` can resample (K-class predictions).
CLASS_STATS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "macro_f1")


#: Statistics :func:`paired_difference_ci` can difference.
PAIRED_STATS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "roc_auc")


# Bootstrap resamples are drawn in blocks of at most this many indices (64 MiB of float64 draws
# plus as much for the indices), so n = 20,000 test images x 2,000 resamples never holds the full
# 40M-entry index matrix. The draws do not depend on the block size (see bootstrap_ci).
_BLOCK_ELEMS = 4_000_000


def _draw_indices(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    """``rows`` resamples of ``n`` indices in [0, n): ``floor(U * n)`` with U ~ rng.random().

    Uniform doubles consume exactly one 64-bit draw each, so the stream of indices is the same
    however the resamples are split into blocks (``Generator.integers`` does not guarantee that:
    its 32-bit buffering restarts at every call)."""
    idx = (rng.random((rows, n)) * n).astype(np.intp)
    np.minimum(idx, n - 1, out=idx)  # U * n can round up to n for U just below 1
    return idx


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


def _check_boot_args(
    stat: str,
    n_boot: Any,
    alpha: float,
    method: str = "percentile",
    stats: tuple[str, ...] = STATS,
) -> None:
    if stat not in stats:
        raise ValueError(f"stat must be one of {stats}, got {stat!r}")
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
        s = _score_array(score_name, score, n)
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


def _class_stat(stat: str, true1: np.ndarray, pred1: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``stat`` of K-class predictions under each row of ``w`` (as in :func:`_stat`); ``true1``
    / ``pred1``: n x K one-hot of the true / predicted class. Balanced accuracy: the mean recall
    over the classes present in the resample; macro-F1: the mean F1 over the classes present
    in it or predicted in it (the definitions of :func:`featstore.multiclass.metrics`)."""
    tp = w @ (true1 * pred1)  # rows x K: correct images of each class
    if stat == "accuracy":
        return tp.sum(axis=1) / w.sum(axis=1)
    support = w @ true1
    den = support if stat == "balanced_accuracy" else support + (w @ pred1)
    scale = 1.0 if stat == "balanced_accuracy" else 2.0
    defined = den > 0  # weights are counts: a class in the resample has den >= 1
    per_class = np.where(defined, scale * tp / np.maximum(den, 1), 0.0)
    count = defined.sum(axis=1)
    return np.where(count > 0, per_class.sum(axis=1) / np.maximum(count, 1), np.nan)


def _class_indices(name: str, values: Any, n_classes: int) -> np.ndarray:
    """``values`` as a 1-D array of class indices in ``[0, n_classes)``, or one ValueError."""
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold class indices (integers), got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= n_classes:
        raise ValueError(f"{name} must hold class indices in [0, {n_classes})")
    return arr.astype(np.intp)


def class_bootstrap_ci(
    y_true: Any,
    y_pred: Any,
    *,
    n_classes: int,
    stat: str = "balanced_accuracy",
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    groups: Any | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap ``1 - alpha`` interval of ``stat`` (one of :data:`CLASS_STATS`) of
    a K-class model: ``y_true`` / ``y_pred`` hold class indices in ``[0, n_classes)``.

    The resamples are exactly :func:`bootstrap_ci`'s (the same draws for a ``seed``; with
    ``groups`` whole clusters -- the identities -- are the unit), only the statistic differs;
    with two classes, ``balanced_accuracy`` gives :func:`bootstrap_ci`'s interval. A resample
    where the statistic is undefined is dropped with a warning."""
    _check_boot_args(stat, n_boot, alpha, stats=CLASS_STATS)
    if not (isinstance(n_classes, int | np.integer) and n_classes >= 2):
        raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
    t = _class_indices("y_true", y_true, n_classes)
    p = _class_indices("y_pred", y_pred, n_classes)
    n = _same_length(y_true=t, y_pred=p)
    eye = np.eye(n_classes, dtype=np.float64)
    true1, pred1 = eye[t], eye[p]
    codes = None if groups is None else _group_codes(groups, n)
    values = _resample(
        lambda w: _class_stat(stat, true1, pred1, w), n, codes, int(n_boot), seed, per_image=1
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

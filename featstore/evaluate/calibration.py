"""Calibration of positive-class probabilities: :func:`brier_score` and the reliability table
:func:`calibration_table`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from featstore.evaluate.inputs import _binary, _score_array


def _probabilities(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    t = _binary("y_true", y_true)
    score = _score_array("y_score", y_score, len(t))
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

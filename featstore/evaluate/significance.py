"""Significance tests: McNemar's paired test of two classifiers (:func:`mcnemar`), of a model
against the constant majority predictor (:func:`beats_baseline`), the one-sided Mann-Whitney
test of AUC > 0.5 (:func:`auc_vs_chance`), and the Holm-Bonferroni adjustment (:func:`holm`,
:func:`holm_by_family` within the one family rule, :data:`FAMILY`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from featstore.evaluate.inputs import _binary, _same_length, _score_array

#: The Holm family rule, defined once: every test of one (feature set, training size, seed) --
#: all attributes and all models of one table of the study -- is one family
#: (:func:`holm_by_family`). :func:`baseline_tests` uses it for the tests against the baseline
#: and against chance; the report and the notebooks read it from here.
FAMILY: list[str] = ["feature_set", "train_size", "seed"]


# McNemar switches from the exact binomial test to the chi-square below this many discordant pairs.
_EXACT_BELOW = 25


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
    score = _score_array("y_score", y_score, len(t))
    pos, neg = score[t == 1], score[t == 0]
    if len(pos) == 0 or len(neg) == 0:
        return {"auc": math.nan, "statistic": math.nan, "p_value": math.nan}
    res = stats.mannwhitneyu(pos, neg, alternative="greater")
    u = float(res.statistic)
    return {"auc": u / (len(pos) * len(neg)), "statistic": u, "p_value": float(res.pvalue)}


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

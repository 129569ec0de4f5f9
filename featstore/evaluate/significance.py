"""Significance tests: McNemar's paired test of two classifiers (:func:`mcnemar`), of a model
against the constant majority predictor (:func:`beats_baseline`), the one-sided test of
AUC > 0.5 (:func:`auc_vs_chance`), and the Holm-Bonferroni adjustment (:func:`holm`,
:func:`holm_by_family` within the one family rule, :data:`FAMILY`).

Identity. CelebA has about 20 images per person, and a person's images are not independent:
a model that gets one wrong tends to get the others wrong too. A test that counts images as
independent then reads correlated errors as more evidence than they are (its p-values are too
small). With ``groups`` (the identity of each test image; ``None``/NaN entries are people of
their own) both tests take the person as the unit:

* McNemar becomes the exact sign-flip (randomization) test on each person's discordant balance
  ``d_k = b_k - c_k`` (A right and B wrong, minus A wrong and B right, over the person's images):
  under the null the two models are exchangeable within a person, so each ``d_k`` is as likely
  as ``-d_k``; the p-value is ``P(|sum eps_k d_k| >= |sum d_k|)`` over the ``2**K`` sign
  vectors, computed exactly by convolution. One image per person gives exactly the exact
  McNemar (binomial) test. ``exact=False`` gives the large-sample form of the same test, the
  clustered McNemar statistic of Durkalski et al. (Stat Med 2003;22:2417):
  ``(sum d_k)**2 / sum d_k**2`` on 1 df.
* The AUC test becomes the test of Obuchowski (Biometrics 1997;53:567), whose variance of the
  Mann-Whitney AUC sums each person's structural components, so a person counts once however
  many images they have (read on Student's t with people - 1 degrees of freedom, and never
  more significant than the image-level Mann-Whitney test: see :func:`_obuchowski`).

Where every person has one image (or ``groups`` is None) the tests are the classical ones, so a
source without identities gets the results it always got."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from featstore.evaluate.inputs import _binary, _same_length, _score_array
from featstore.evaluate.intervals import _group_codes

#: The Holm family rule, defined once: every test of one (feature set, training size, seed) --
#: all attributes and all models of one table of the study -- is one family
#: (:func:`holm_by_family`). :func:`baseline_tests` uses it for the tests against the baseline
#: and against chance; the report and the notebooks read it from here.
FAMILY: list[str] = ["feature_set", "train_size", "seed"]


# McNemar switches from the exact binomial test to the chi-square below this many discordant pairs.
_EXACT_BELOW = 25


def _clusters(groups: Any, n: int) -> np.ndarray | None:
    """Cluster codes of ``groups`` (see :func:`featstore.evaluate.intervals._group_codes`), or
    None when there is nothing to cluster: no groups, or every image a person of its own."""
    if groups is None:
        return None
    codes = _group_codes(groups, n)
    return None if n == 0 or codes.max() + 1 == n else codes


def auc_vs_chance(y_true: Any, y_score: Any, *, groups: Any | None = None) -> dict[str, Any]:
    """One-sided test that positives score higher than negatives (ROC AUC > 0.5).

    Without ``groups`` (or with one image per person): the Mann-Whitney U test
    (``scipy.stats.mannwhitneyu(scores of positives, scores of negatives,
    alternative="greater")``, its default method: exact for small samples without ties, else
    the normal approximation with tie and continuity corrections); ``statistic`` is U,
    ``method`` ``"mann-whitney"``. Unlike McNemar against the constant majority predictor, its
    power does not vanish under class imbalance. ``auc = U / (n_pos n_neg)`` equals
    ``sklearn.metrics.roc_auc_score``.

    With ``groups`` (the identity of each image): Obuchowski's clustered test (module
    docstring, :func:`_obuchowski`), ``statistic`` = z, ``method`` ``"obuchowski"``; the same
    AUC. Fewer than two people with a positive image, or with a negative one: no test. When ``y_true`` has a single class, ``auc``, ``statistic`` and ``p_value``
    are NaN (no test; NaN is passed through by :func:`holm` and never reads as significant).
    Returns ``auc``, ``statistic``, ``p_value``, ``method``."""
    t = _binary("y_true", y_true)
    score = _score_array("y_score", y_score, len(t))
    codes = _clusters(groups, len(t))
    pos, neg = score[t == 1], score[t == 0]
    if len(pos) == 0 or len(neg) == 0:
        return {"auc": math.nan, "statistic": math.nan, "p_value": math.nan, "method": None}
    if codes is not None:
        return _obuchowski(t, score, codes)
    res = stats.mannwhitneyu(pos, neg, alternative="greater")
    u = float(res.statistic)
    return {
        "auc": u / (len(pos) * len(neg)),
        "statistic": u,
        "p_value": float(res.pvalue),
        "method": "mann-whitney",
    }


def _obuchowski(t: np.ndarray, score: np.ndarray, codes: np.ndarray) -> dict[str, Any]:
    """Obuchowski's (1997) test of AUC > 0.5 with images clustered by ``codes``.

    Each positive's structural component is its share of negatives it outscores (ties count
    half), each negative's the share of positives that outscore it; per person ``i`` their sums
    ``V10_i``, ``V01_i`` with ``m_i`` positives and ``n_i`` negatives. With ``I`` people, ``M``
    positives and ``N`` negatives: ``S10 = I / ((I-1) M) sum (V10_i - m_i A)**2``, ``S01`` alike
    over negatives, ``S11 = I / (I-1) sum (V10_i - m_i A)(V01_i - n_i A)`` and
    ``var A = S10 / M + S01 / N + 2 S11 / (M N)``; ``z = (A - 0.5) / sqrt(var A)``.

    Two guards, both conservative. The variance rests on the people: ``z`` is read on Student's
    t with ``I - 1`` degrees of freedom (the small-sample reference of a cluster-robust
    variance), and fewer than two people with a positive (or with a negative) image is no
    test. Near perfect separation the variance estimate collapses towards 0 (as DeLong's does
    at AUC 1): the p-value is never below the image-level Mann-Whitney test's, which counts
    every image as independent evidence and so claims at least as much as the data hold."""
    pos, neg = score[t == 1], score[t == 0]
    m, n = len(pos), len(neg)
    people = int(codes.max()) + 1
    c_pos, c_neg = codes[t == 1], codes[t == 0]
    if np.unique(c_pos).size < 2 or np.unique(c_neg).size < 2:
        return {"auc": math.nan, "statistic": math.nan, "p_value": math.nan, "method": None}
    neg_sorted, pos_sorted = np.sort(neg), np.sort(pos)
    # share of negatives below each positive (ties half), share of positives above each negative
    v10 = (np.searchsorted(neg_sorted, pos, "left") + np.searchsorted(neg_sorted, pos, "right")) / (
        2.0 * n
    )
    v01 = (
        2 * m - np.searchsorted(pos_sorted, neg, "left") - np.searchsorted(pos_sorted, neg, "right")
    ) / (2.0 * m)
    auc = float(v10.mean())
    d10 = np.bincount(c_pos, weights=v10, minlength=people) - auc * np.bincount(
        c_pos, minlength=people
    )
    d01 = np.bincount(c_neg, weights=v01, minlength=people) - auc * np.bincount(
        c_neg, minlength=people
    )
    scale = people / (people - 1)
    s10 = scale * float(d10 @ d10) / m
    s01 = scale * float(d01 @ d01) / n
    s11 = scale * float(d10 @ d01)
    se = math.sqrt(max(s10 / m + s01 / n + 2.0 * s11 / (m * n), 0.0))
    if se == 0.0:  # every person's components exactly at the mean: perfect (or no) separation
        z = math.inf if auc > 0.5 else (0.0 if auc == 0.5 else -math.inf)
    else:
        z = (auc - 0.5) / se
    p_value = float(stats.t.sf(z, people - 1))
    image_level = float(stats.mannwhitneyu(pos, neg, alternative="greater").pvalue)
    return {
        "auc": auc,
        "statistic": z,
        "p_value": max(p_value, image_level),
        "method": "obuchowski",
    }


def mcnemar(
    y_true: Any,
    pred_a: Any,
    pred_b: Any,
    *,
    exact: bool | None = None,
    groups: Any | None = None,
) -> dict[str, Any]:
    """McNemar's paired test of two classifiers on the same test images.

    ``b`` = images A gets right and B gets wrong, ``c`` = A wrong and B right; only these
    discordant pairs carry information. ``exact=None`` picks the exact test when
    ``b + c < 25``. Conventions are those of
    ``statsmodels.stats.contingency_tables.mcnemar(table, exact=..., correction=True)``:

    * exact: ``statistic = min(b, c)``, two-sided ``p = min(1, 2 * BinomCDF(min(b, c); b + c, 1/2))``;
    * chi-square: ``statistic = (|b - c| - 1)**2 / (b + c)`` on 1 df (continuity corrected; as in
      statsmodels the correction is not clipped at 0, so ``b == c`` gives ``1 / (b + c)``).

    With ``groups`` (the identity of each image) where some person has several images, the
    person is the unit (module docstring): ``exact=None`` or True gives the exact sign-flip
    test (``statistic = |sum d_k|``, method ``"clustered exact"``), ``exact=False`` Durkalski's
    clustered chi-square (method ``"clustered chi2"``); ``b`` and ``c`` still count images.

    ``b + c == 0`` (the two models agree on every image) gives ``statistic 0.0, p_value 1.0``
    whatever the method. Returns ``b``, ``c``, ``statistic``, ``p_value``, ``method``
    (``"exact"``, ``"chi2"``, ``"clustered exact"`` or ``"clustered chi2"``)."""
    t = _binary("y_true", y_true)
    a = _binary("pred_a", pred_a)
    bb = _binary("pred_b", pred_b)
    _same_length(y_true=t, pred_a=a, pred_b=bb)
    codes = _clusters(groups, len(t))
    a_right = a == t
    b_right = bb == t
    b = int(np.count_nonzero(a_right & ~b_right))
    c = int(np.count_nonzero(~a_right & b_right))
    discordant = b + c
    if codes is not None:
        method = "clustered chi2" if exact is False else "clustered exact"
    else:
        use_exact = discordant < _EXACT_BELOW if exact is None else bool(exact)
        method = "exact" if use_exact else "chi2"
    if discordant == 0:
        return {"b": 0, "c": 0, "statistic": 0.0, "p_value": 1.0, "method": method}
    if codes is not None:
        balance = a_right.astype(np.int64) - b_right.astype(np.int64)
        d = np.bincount(codes, weights=balance).astype(np.int64)
        d = d[d != 0]
        if method == "clustered exact":
            statistic = float(abs(int(d.sum())))
            p_value = sign_flip_p(d)
        else:
            statistic = float(d.sum()) ** 2 / float(d @ d) if d.size else 0.0
            p_value = float(stats.chi2.sf(statistic, 1)) if d.size else 1.0
    elif method == "exact":
        statistic = float(min(b, c))
        p_value = min(1.0, 2.0 * float(stats.binom.cdf(min(b, c), discordant, 0.5)))
    else:
        statistic = (abs(b - c) - 1) ** 2 / discordant
        p_value = float(stats.chi2.sf(statistic, 1))
    return {"b": b, "c": c, "statistic": float(statistic), "p_value": p_value, "method": method}


def sign_flip_p(d: Any) -> float:
    """Exact two-sided p-value of the sign-flip test of integers ``d``: the share of the
    ``2**K`` sign vectors ``eps`` with ``|sum eps_k d_k| >= |sum d_k|``.

    The null distribution of ``sum eps_k d_k`` is built by convolution, one step per distinct
    ``|d_k|`` (the ``c`` values of size ``v`` contribute ``v (2 X - c)``, ``X ~ Binomial(c,
    1/2)``), on the lattice of integers from ``-sum |d_k|`` to ``sum |d_k|``: exact up to
    floating point (``scipy.signal.convolve`` picks direct or FFT convolution by size). All
    ``|d_k| == 1`` is the exact McNemar (binomial) test. Empty ``d``: 1.0."""
    from scipy import signal

    mags = np.abs(np.asarray(d, dtype=np.int64))
    mags = mags[mags != 0]
    if mags.size == 0:
        return 1.0
    observed = abs(int(np.asarray(d, dtype=np.int64).sum()))
    pmf = np.ones(1)  # distribution of the sum so far, offset by its minimum
    for v, count in zip(*np.unique(mags, return_counts=True)):
        step = np.zeros(2 * int(v) * int(count) + 1)
        step[:: 2 * int(v)] = stats.binom.pmf(np.arange(count + 1), count, 0.5)
        pmf = np.clip(signal.convolve(pmf, step), 0.0, None)
    total = int(mags.sum())
    sums = np.arange(-total, total + 1)
    return float(min(1.0, pmf[np.abs(sums) >= observed].sum()))


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
    groups: Any | None = None,
) -> dict[str, Any]:
    """Does the classifier beat the constant majority predictor, significantly?

    The baseline predicts the majority class of ``y_train`` (of ``y_true`` when ``y_train`` is
    None, which is optimistic for the baseline, hence conservative here), or ``baseline_class``
    (0 or 1) when given -- the train-majority class known without ``y_train``, e.g. recovered
    from a results row (it takes precedence over ``y_train``). Both predict the same
    test images, so the test is :func:`mcnemar` with A = the model and B = the baseline (by
    person with ``groups``, the identity of each image);
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
    test = mcnemar(t, p, baseline, exact=exact, groups=groups)
    accuracy = float(np.mean(p == t))
    baseline_accuracy = float(np.mean(baseline == t))
    return {
        "accuracy": accuracy,
        "baseline_accuracy": baseline_accuracy,
        "baseline_class": majority,
        **test,
        "beats": bool(accuracy > baseline_accuracy and test["p_value"] < alpha),
    }

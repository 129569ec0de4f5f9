"""The study's tables over a results frame (one row per fit with ``y_true`` / ``y_pred``):
pairwise McNemar comparisons (:func:`compare_models`), the best model per test set
(:func:`best_model_table`) and the tests against the baseline and chance
(:func:`baseline_tests`), all Holm-corrected."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from featstore.evaluate.inputs import _binary, _same_length, _score_array
from featstore.evaluate.intervals import paired_difference_ci
from featstore.evaluate.significance import (
    FAMILY,
    auc_vs_chance,
    beats_baseline,
    holm,
    holm_by_family,
    mcnemar,
)

log = logging.getLogger(__name__)


#: Columns identifying one test set on which several models are compared (paired).
GROUP_KEYS: list[str] = ["attribute", "feature_set", "train_size", "seed"]


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
    "gap",
    "gap_ci_low",
    "gap_ci_high",
    "tied",
    "max_p_holm",
    "beats_all",
    "chosen_by",
    "best_selection_score",
]


#: Resamples of the paired bootstrap interval of :func:`best_model_table`'s ``gap``.
GAP_BOOT = 1000


#: Columns of the frame :func:`pooled_comparisons` returns, in order.
POOLED_COLUMNS: list[str] = [
    "model_a",
    "model_b",
    "attributes",
    "n",
    "accuracy_a",
    "accuracy_b",
    "gap",
    "gap_ci_low",
    "gap_ci_high",
    "p_value",
    "p_holm",
    "significant",
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


def _reference_groups(group: pd.DataFrame, n: int, key: tuple[Any, ...]) -> np.ndarray | None:
    """The identities of a test set's images, in the order :func:`_aligned` puts them (the
    first model by name): its ``groups`` column, or None where the results have none."""
    if "groups" not in group.columns:
        return None
    first = min(group.itertuples(index=False), key=lambda r: str(r.model))
    return _row_groups(first.groups, n, f"{key}, model {first.model!r}")


def _row_groups(value: Any, n: int, where: str) -> np.ndarray | None:
    """One results row's ``groups`` (the identity of each test image) as an array, or None
    where the row has none; its length must be the row's test images."""
    if value is None or (np.isscalar(value) and pd.isna(value)):
        return None
    arr = np.asarray(value, dtype=object)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"{where}: groups must be 1-D with one entry per test image ({n})")
    return arr


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

    With a ``groups`` column (the identity of each test image, as the grid stores it), the
    tests take the person as the unit (:func:`featstore.evaluate.mcnemar` with ``groups``:
    ``method`` ``"clustered exact"``), since a person's images are not independent.

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
        people = _reference_groups(group, len(next(iter(preds.values()))[0]), key)
        for model_a, model_b in itertools.combinations(sorted(preds), 2):
            y_true, pred_a = preds[model_a]
            _, pred_b = preds[model_b]
            test = mcnemar(y_true, pred_a, pred_b, exact=exact, groups=people)
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


def best_model_table(
    results: pd.DataFrame,
    comparisons: pd.DataFrame,
    *,
    alpha: float = 0.05,
    n_boot: int = GAP_BOOT,
) -> pd.DataFrame:
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

    ``gap`` is the best model's test accuracy minus the runner-up's, ``gap_ci_low`` /
    ``gap_ci_high`` its paired ``1 - alpha`` bootstrap interval
    (:func:`featstore.evaluate.paired_difference_ci`, ``n_boot`` resamples, seed 0),
    resampling people where ``results`` has ``groups`` (images otherwise): how much better the
    chosen model is, and how sure; NaN with a single model.
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
        people = _reference_groups(group, len(preds[best][0]), key)
        gap = _gap(preds, best, runner_up, people, alpha, n_boot)
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
                "gap": gap["diff"],
                "gap_ci_low": gap["ci_low"],
                "gap_ci_high": gap["ci_high"],
                "tied": runner_up is not None and rank_score[runner_up] == rank_score[best],
                "max_p_holm": max(p_holms) if p_holms else math.nan,
                "beats_all": bool(wins) and all(wins),
                "chosen_by": chosen_by,
                "best_selection_score": selection[best] if selection is not None else math.nan,
            }
        )
    return pd.DataFrame.from_records(records, columns=BEST_COLUMNS)


def _gap(
    preds: dict[str, tuple[np.ndarray, np.ndarray]],
    best: str,
    runner_up: str | None,
    people: np.ndarray | None,
    alpha: float,
    n_boot: int,
) -> dict[str, float]:
    """The best model's test accuracy minus the runner-up's with its paired bootstrap interval
    (by person with ``people``); NaNs without a runner-up."""
    if runner_up is None:
        return {"diff": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    y_true, pred_best = preds[best]
    return paired_difference_ci(
        y_true, pred_best, preds[runner_up][1], groups=people, n_boot=n_boot, alpha=alpha
    )


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
    NaN there and ``beats_chance`` False.

    Rows with ``groups`` (the identity of each test image) are tested by person: McNemar's
    ``method`` is then ``"clustered exact"`` and the AUC test Obuchowski's (see
    :mod:`featstore.evaluate.significance`)."""
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
        people = _row_groups(getattr(row, "groups", None), len(y_true), where)
        tests = [
            beats_baseline(
                y_true, y_pred, baseline_class=k, alpha=alpha, exact=exact, groups=people
            )
            for k in _train_majority_classes(y_true, float(row.majority_baseline), where)
        ]
        test = max(tests, key=lambda r: r["p_value"])
        score = getattr(row, "y_score", None)
        chance = {"auc": math.nan, "p_value": math.nan}
        if score is not None and not (np.isscalar(score) and pd.isna(score)):
            score = _score_array(f"y_score of {where}", score, len(y_true))
            chance = auc_vs_chance(y_true, score, groups=people)
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


def _pooled_arrays(a_fits: dict[str, Any], b_fits: dict[str, Any]) -> tuple[np.ndarray, ...] | None:
    """Labels, A's and B's predictions and the clusters (a person, or an image where the rows
    carry no identities) over every attribute both have, one attribute after another; None
    when they share no attribute or their test images differ (labels or counts)."""
    parts: list[tuple[np.ndarray, ...]] = []
    for attribute in sorted(set(a_fits) & set(b_fits)):
        a, b = a_fits[attribute], b_fits[attribute]
        t = _binary(f"y_true of {attribute}", a.y_true)
        if not np.array_equal(t, _binary(f"y_true of {attribute}", b.y_true)):
            return None
        people = _row_groups(getattr(a, "groups", None), t.size, attribute)
        # the person's id is the cluster in every attribute (the same test images, in order)
        clusters = people if people is not None else np.arange(t.size)
        parts.append((t, _binary("y_pred", a.y_pred), _binary("y_pred", b.y_pred), clusters))
    if not parts:
        return None
    return tuple(np.concatenate(column) for column in zip(*parts, strict=True))


def pooled_difference(
    a_fits: dict[str, Any],
    b_fits: dict[str, Any],
    *,
    alpha: float = 0.05,
    n_boot: int = GAP_BOOT,
) -> dict[str, Any] | None:
    """Model (or base) A against B over all the attributes both were fitted on, on the same
    test images: ``{attribute: results row}`` each (rows with ``y_true``, ``y_pred`` and
    optionally ``groups``).

    ``gap``: A's test accuracy minus B's, pooled over the attributes (the mean of the
    per-attribute differences: every attribute has the same test images), with its paired
    ``1 - alpha`` bootstrap interval (:func:`featstore.evaluate.paired_difference_ci`, seed 0)
    and McNemar's test (:func:`featstore.evaluate.mcnemar`) over every attribute's images, both
    resampling or flipping whole people -- each person with all their images and attributes --
    or, without identities, whole images with all their attributes (an image's attributes are
    not independent). Returns ``attributes``, ``n`` (test images), ``accuracy_a``,
    ``accuracy_b``, ``gap``, ``gap_ci_low``, ``gap_ci_high``, ``p_value``; None when there is
    no attribute in common or the test images differ."""
    arrays = _pooled_arrays(a_fits, b_fits)
    if arrays is None:
        return None
    t, a, b, clusters = arrays
    attributes = sorted(set(a_fits) & set(b_fits))
    ci = paired_difference_ci(t, a, b, groups=clusters, n_boot=n_boot, alpha=alpha)
    return {
        "attributes": len(attributes),
        "n": int(t.size // len(attributes)),
        "accuracy_a": float(np.mean(a == t)),
        "accuracy_b": float(np.mean(b == t)),
        "gap": ci["diff"],
        "gap_ci_low": ci["ci_low"],
        "gap_ci_high": ci["ci_high"],
        "p_value": mcnemar(t, a, b, groups=clusters)["p_value"],
    }


def pooled_comparisons(
    fits: pd.DataFrame, *, alpha: float = 0.05, n_boot: int = GAP_BOOT
) -> pd.DataFrame:
    """Every pair of models of ``fits`` (one feature set, training size and seed: e.g. the
    report's summary fits) over all their attributes at once (:func:`pooled_difference`): the
    study's question -- is probe A better than probe B on these features, all attributes
    together? -- Holm-corrected over the pairs. Columns :data:`POOLED_COLUMNS`, pairs in
    :data:`MODEL_ORDER` (``model_a`` before ``model_b``)."""
    _check_results(fits)
    by_model = {
        str(m): {str(r.attribute): r for r in g.itertuples(index=False)}
        for m, g in fits.groupby("model", sort=False)
    }
    models = sorted(by_model, key=_model_rank)
    records = []
    for model_a, model_b in itertools.combinations(models, 2):
        pooled = pooled_difference(by_model[model_a], by_model[model_b], alpha=alpha, n_boot=n_boot)
        if pooled is not None:
            records.append({"model_a": model_a, "model_b": model_b, **pooled})
    out = pd.DataFrame.from_records(records, columns=POOLED_COLUMNS[:-2])
    out["p_holm"] = holm(out["p_value"].to_numpy(dtype=np.float64)) if len(out) else []
    out["significant"] = out["p_holm"] < alpha
    return out[POOLED_COLUMNS]

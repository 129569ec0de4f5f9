"""Evaluation of multi-class probes (``train.target: class``) and the comparisons between them.

Pure numpy / pandas; the same rules as the binary evaluation in :mod:`featstore.evaluate`:

* :func:`metrics` -- accuracy, balanced accuracy (mean recall over the classes in the test
  split), macro-F1, per-class precision and recall, the K x K confusion matrix (rows: true
  class, columns: predicted, in the order of ``classes``) and the majority-class baseline (the
  test accuracy of always predicting the TRAINING split's most frequent class).
* Intervals: the Wilson interval of the accuracy (:func:`featstore.evaluate.accuracy_ci` on
  per-image correctness, widened by identity where the store has one); percentile bootstrap
  intervals of the balanced accuracy and the macro-F1 (:func:`bootstrap_intervals`: the binary
  fits' resamples, :func:`featstore.evaluate.class_bootstrap_ci`, by identity where known).
* Tests on per-image correctness: a multi-class prediction is right or wrong, so two probes on
  the same test images form McNemar's 2 x 2 table exactly as binary ones do.
  :func:`correctness` turns results rows into 0/1 rows (``y_true`` all 1, ``y_pred`` = right)
  that :func:`featstore.evaluate.compare_models` takes unchanged (pairs of probes, Holm within
  :data:`featstore.evaluate.COMPARISON_FAMILY`); :func:`baseline_tests` tests each probe
  against the majority class (McNemar on correctness), Holm within
  :data:`featstore.evaluate.FAMILY`, the one family rule.
* :func:`summary_table` -- per (feature set, training size, seed): every probe's numbers and the
  winner, the argmax of ``selection_score`` (validation accuracy; ties: lasso, forest, dense),
  its test accuracy the estimate.

``y_score`` of a multi-class row is null (there is no single positive class); the rows'
``y_true`` / ``y_pred`` hold class indices into ``classes``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from featstore import evaluate

#: The results' ``attribute`` of a multi-class fit (the labels table's class column).
TARGET = "class"

SUMMARY_COLUMNS = [
    "feature_set",
    "train_size",
    "seed",
    "model",
    "n_classes",
    "n_test",
    "selection_score",
    "accuracy",
    "ci_low",
    "ci_high",
    "balanced_accuracy",
    "macro_f1",
    "majority_baseline",
    "p_holm_baseline",
    "beats_baseline",
    "best",
    "best_beats_all",
]


def confusion_matrix(y_true: Any, y_pred: Any, n_classes: int) -> np.ndarray:
    """K x K counts: ``[i, j]`` = test images of true class i predicted j."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"{t.size} labels for {p.size} predictions")
    return np.bincount(t * n_classes + p, minlength=n_classes**2).reshape(n_classes, n_classes)


def per_class(cm: np.ndarray) -> pd.DataFrame:
    """Per class (rows in the order of the matrix): support (test images of the class),
    predicted (images predicted as it), precision, recall, F1 (NaN where undefined)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, np.nan)
        recall = np.where(support > 0, tp / support, np.nan)
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), np.nan)
    return pd.DataFrame(
        {
            "support": support.astype(np.int64),
            "predicted": predicted.astype(np.int64),
            "precision": precision,
            "recall": recall,
            "f1": f1,
        }
    )


def metrics(y_true: Any, y_pred: Any, n_classes: int, *, y_train: Any) -> dict[str, Any]:
    """Scores of one multi-class fit on the test split (see the module docstring).
    Macro-F1 averages the F1 of the classes present in the test split or predicted."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    pc = per_class(cm)
    n = int(cm.sum())
    majority = int(np.argmax(np.bincount(np.asarray(y_train, dtype=np.int64), minlength=n_classes)))
    return {
        "accuracy": float(np.trace(cm) / n) if n else float("nan"),
        "balanced_accuracy": float(pc["recall"].mean(skipna=True)),
        "macro_f1": float(pc["f1"].mean(skipna=True)),
        "confusion": cm,
        "precision": pc["precision"].to_numpy(),
        "recall": pc["recall"].to_numpy(),
        "majority_class": majority,
        "majority_baseline": float(cm[majority].sum() / n) if n else float("nan"),
    }


def accuracy_interval(
    y_true: Any, y_pred: Any, *, groups: Any | None = None
) -> tuple[float, float]:
    """The Wilson interval of the accuracy (by identity with ``groups``), as for binary fits."""
    right = (np.asarray(y_true) == np.asarray(y_pred)).astype(np.int8)
    return evaluate.accuracy_ci(np.ones_like(right), right, groups=groups)


def bootstrap_intervals(
    y_true: Any,
    y_pred: Any,
    n_classes: int,
    *,
    groups: Any | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Bootstrap 95% intervals of the balanced accuracy and the macro-F1 (resampling identities
    with ``groups``, images otherwise; the same resamples for both): the results columns
    ``ba_ci_low`` / ``ba_ci_high`` and ``macro_f1_ci_low`` / ``macro_f1_ci_high``."""
    out: dict[str, float] = {}
    for stat, prefix in (("balanced_accuracy", "ba"), ("macro_f1", "macro_f1")):
        lo, hi = evaluate.class_bootstrap_ci(
            y_true, y_pred, n_classes=n_classes, stat=stat, n_boot=n_boot, seed=seed, groups=groups
        )
        out[f"{prefix}_ci_low"], out[f"{prefix}_ci_high"] = lo, hi
    return out


def multiclass_rows(results: pd.DataFrame) -> pd.Series:
    """True for the rows of multi-class fits (more than two classes)."""
    if "n_classes" not in results.columns:
        return pd.Series(False, index=results.index)
    return results["n_classes"].fillna(0).astype(np.int64) > 2


def correctness(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with ``y_true`` all 1 and ``y_pred`` 1 where the probe was right: the 0/1 form
    :func:`featstore.evaluate.compare_models` tests (McNemar on per-image correctness)."""
    out = rows.copy()
    right = [
        (np.asarray(t) == np.asarray(p)).astype(np.int8)
        for t, p in zip(rows["y_true"], rows["y_pred"])
    ]
    out["y_true"] = [np.ones_like(r) for r in right]
    out["y_pred"] = right
    return out


def baseline_tests(rows: pd.DataFrame, *, alpha: float = 0.05) -> pd.DataFrame:
    """Each probe against always predicting the training majority class: McNemar on the
    per-image correctness of the two (by person where the rows have ``groups``), Holm within
    :data:`featstore.evaluate.FAMILY`. Returns
    ``rows``' keys with accuracy, baseline_accuracy, p_value, p_holm, beats_baseline."""
    records = []
    for r in rows.itertuples(index=False):
        t, p = np.asarray(r.y_true), np.asarray(r.y_pred)
        base_class = int(json.loads(r.params)["majority_class"])  # the training split's
        ones = np.ones(t.size, dtype=np.int8)
        people = getattr(r, "groups", None)
        test = evaluate.mcnemar(
            ones,
            (t == p).astype(np.int8),
            (t == base_class).astype(np.int8),
            groups=None if people is None or np.isscalar(people) else people,
        )
        records.append(
            {
                "feature_set": r.feature_set,
                "train_size": r.train_size,
                "seed": r.seed,
                "model": r.model,
                "accuracy": float(np.mean(t == p)),
                "baseline_accuracy": float(np.mean(t == base_class)),
                "p_value": test["p_value"],
            }
        )
    out = pd.DataFrame.from_records(
        records,
        columns=[
            "feature_set",
            "train_size",
            "seed",
            "model",
            "accuracy",
            "baseline_accuracy",
            "p_value",
        ],
    )
    out["p_holm"] = evaluate.holm_by_family(out, "p_value") if len(out) else []
    out["beats_baseline"] = (out["accuracy"] > out["baseline_accuracy"]) & (out["p_holm"] < alpha)
    return out


def _rank(model: str) -> tuple[int, str]:
    order = evaluate.MODEL_ORDER
    return (order.index(model) if model in order else len(order), model)


def summary_table(ok: pd.DataFrame, *, alpha: float = 0.05) -> pd.DataFrame:
    """One row per multi-class fit (``ok``: status ok, n_classes > 2) with its test numbers,
    the test against the baseline, and ``best`` (the argmax of ``selection_score`` in its
    (feature set, training size, seed); ties and missing scores: lasso, forest, dense) and,
    for the best, whether every McNemar test against the other probes is significant after
    Holm (``best_beats_all``; never while it does not beat the baseline)."""
    if ok.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    keys = ["feature_set", "train_size", "seed", "model"]
    base = baseline_tests(ok, alpha=alpha).set_index(keys)
    comp = evaluate.compare_models(correctness(ok), alpha=alpha)
    rows = []
    for (fs, size, seed), group in ok.groupby(["feature_set", "train_size", "seed"], sort=True):
        sel = group["selection_score"].astype(float).fillna(-1.0)
        best = sorted(
            group["model"], key=lambda m: (-float(sel[group["model"] == m].iloc[0]), _rank(m))
        )[0]
        for r in sorted(group.itertuples(index=False), key=lambda r: _rank(r.model)):
            b = base.loc[(fs, size, seed, r.model)]
            mine = comp[
                (comp.feature_set == fs)
                & (comp.train_size == size)
                & (comp.seed == seed)
                & ((comp.model_a == r.model) | (comp.model_b == r.model))
            ]
            beats_all = bool(
                r.model == best
                and len(mine)
                and mine["significant"].all()
                and b["beats_baseline"]
                and (
                    mine["accuracy_a"].where(mine.model_a == r.model, mine["accuracy_b"])
                    > mine["accuracy_b"].where(mine.model_a == r.model, mine["accuracy_a"])
                ).all()
            )
            rows.append(
                {
                    "feature_set": fs,
                    "train_size": size,
                    "seed": seed,
                    "model": r.model,
                    "n_classes": int(r.n_classes),
                    "n_test": int(r.n_test),
                    "selection_score": r.selection_score,
                    "accuracy": r.accuracy,
                    "ci_low": r.ci_low,
                    "ci_high": r.ci_high,
                    "balanced_accuracy": r.balanced_accuracy,
                    "macro_f1": r.macro_f1,
                    "majority_baseline": r.majority_baseline,
                    "p_holm_baseline": float(b["p_holm"]),
                    "beats_baseline": bool(b["beats_baseline"]),
                    "best": r.model == best,
                    "best_beats_all": beats_all,
                }
            )
    return pd.DataFrame.from_records(rows, columns=SUMMARY_COLUMNS)

"""The HTML report of a store's results table: summary, heatmap, full table, plots, manifests.

:func:`build_report` writes into ``out_dir``:

* ``index.html`` -- one self-contained page: inline CSS, a few lines of inline JavaScript (the
  sortable tables), every plot a PNG embedded as a ``data:image/png;base64`` URI; nothing is
  loaded from anywhere else. Its only links are relative: to the files below and to the store's
  results and errors tables (``../store/errors/images/`` when the report sits beside the store),
  so they work wherever the store and the report folder are opened together;
* ``summary.csv`` -- the summary table, one row per attribute, machine-readable;
* ``summary.md`` -- the same table formatted for a terminal, a pull request or a wiki;
* ``table.csv`` -- the full table, one row per attribute and model (:func:`full_table`).

What the summary compares (one row per attribute):

* Only fits with ``status == "ok"``. One *group* of fits: the training size with the most
  training rows (``train_size`` 0, the whole train split, when it was run) and the smallest seed.
  One feature set for every attribute, fixed without looking at test accuracy: the one of the
  largest dimension (or ``summary_feature_set``). Choosing per attribute the set that scored
  best on the test split would select on the test split and bias accuracies and significance
  upwards; the other feature sets are in the accuracy-against-dimension plot.
  :func:`summary_fits` returns these fits; the heatmap, the full table, the ROC curves and the
  baseline tests are about the same fits.
* Per model: test accuracy with its 95% Wilson interval (the ``ci_low`` / ``ci_high`` the grid
  stored; widened by the design effect of the test split's people where identities are known);
  the validation accuracy it was chosen by (``selection_score``); the training-majority
  baseline; with several seeds of the cell, the mean and sd of the test accuracy over them.
* The best model is the argmax of ``selection_score`` (validation accuracy; ties: lasso, forest,
  dense), :func:`featstore.evaluate.best_model_table`; its test accuracy is the estimate.
  Results written before ``selection_score`` existed fall back to test accuracy (``chosen_by``
  says so; the page lists them).
* ``beats_all_models``: the best model is more accurate than every other model and each of those
  pairwise McNemar tests is significant after Holm's correction at 0.05, the Holm family being
  all attributes of one (feature set, training size, seed, model pair), as in
  :func:`featstore.evaluate.compare_models`. ``max_p_holm`` is the largest of those p-values.
  ``beats_all``: the same, and the best model beats the baseline (the guard the page shows).
* ``beats_baseline``: the best model is more accurate than the training-majority baseline
  (``majority_baseline``, the test accuracy of always predicting the majority class of the
  training rows) and McNemar's test of the best model against that constant predictor, on the
  same test images, is significant after Holm's correction at 0.05 (``p_baseline`` raw,
  ``p_baseline_holm`` adjusted), the Holm family being every model of every attribute of the
  summary (one feature set, training size, seed: :data:`featstore.evaluate.FAMILY`, defined
  once). ``beats_chance``: the best model's AUC is above 0.5 (one-sided Mann-Whitney,
  ``p_auc_holm`` in the same family), the test with power on rare attributes.
  :func:`baseline_family` computes both; the report and notebooks/compare_models.ipynb call it.
* The verdict column "best beats all others" of index.html / summary.md (``verdict`` in
  summary.csv) reads "yes" only for a best model that beats all others *and* the baseline.

For many attributes and imbalanced labels: an attribute x model heatmap of accuracy minus the
majority baseline and of balanced accuracy; the full sortable table (accuracy with its CI, the
gain over the baseline, balanced accuracy, F1, ROC AUC, the share of positives, the chosen
hyper-parameter and the baseline test per attribute and model); the chosen hyper-parameters per
model (:func:`chosen_hyperparameters`: C of the lasso, max_features of the forest, the epochs
the dense head kept); ROC curves of every model per attribute, the best one drawn thick (from
the ROC points the grid stores per fit, ``roc_fpr`` / ``roc_tpr``; results written before
those existed have none, and the report says so).

The plots are small multiples drawn one PNG per panel, laid out by the page in a grid, with
their titles as HTML text above each panel (so titles wrap and never overlap, whatever their
length), and one HTML legend per figure: accuracy minus the majority baseline against feature
dimension and against the number of training rows (one shared y-scale over the panels of a
figure; 0 is the baseline), the ROC curves, the confusion matrix of the best model per
attribute, PCA (axes labelled with their share of the variance) and t-SNE maps of one feature
set's test embeddings (at most :data:`MAX_MAP_POINTS`, a seeded sample), and the training
curves of a few dense heads: those with the highest, median and lowest test accuracy in the
summary group (loss panels share one y-scale, accuracy panels another).

No Spark: the results table and the feature sets are read with pyarrow. Figures are drawn on
matplotlib ``Figure`` objects with the Agg canvas, without ``pyplot``: there is no global figure
registry to close and no backend switch, so the ``plot_*`` functions are safe to call from a
notebook (where a returned ``Figure`` displays inline; :meth:`Panels.figure` draws a set of
panels as one figure) and from threads.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import logging
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from featstore import store
from featstore.errors import StoreError
from featstore.timing import Phases

logger = logging.getLogger(__name__)

#: The order models are listed in; other models (bottleneck..., multilabel) follow by name.
MODEL_ORDER: tuple[str, ...] = ("lasso", "forest", "dense")
#: At most this many test images in the PCA and t-SNE maps (a seeded random sample).
MAX_MAP_POINTS = 2000
#: At most this many dense training curves.
MAX_CURVES = 4
#: At most this many failed fits listed one by one in the HTML (all are in the results table).
MAX_FAILED_ROWS = 500
#: Significance level of the model comparisons.
ALPHA = 0.05

#: Section ids and headings of index.html, in order.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"),
    ("multiclass", "Multi-class targets"),  # only with multi-class fits (report_multiclass)
    ("heatmap", "Attributes × models"),
    ("bases", "Which conv base"),  # only when the results / retrieval tables hold >1 base
    ("table", "Every attribute and model"),
    ("roc", "ROC curves of the best models"),
    ("dimension", "Accuracy against feature dimension"),
    ("train-size", "Accuracy against training-set size"),
    ("confusion", "Confusion matrices of the best models"),
    ("calibration", "Scores: calibration and Brier"),
    ("seeds", "Spread over seeds"),
    ("maps", "Maps of the embeddings"),
    ("curves", "Training curves of dense heads"),
    ("feature-sets", "Feature sets"),
    ("failed", "Failed fits"),
    ("files", "Files and errors tables"),
)

_DPI = 90
_TSNE_THREADED_FROM = 1000  # t-SNE on fewer points runs on one OpenMP thread


@dataclass(frozen=True)
class ReportSummary:
    """What :func:`build_report` wrote and what it found."""

    store: str
    out_dir: str
    index_html: str
    summary_csv: str
    summary_md: str
    figures: tuple[str, ...]  # the figures of index.html, in order (each one or more panels)
    rows_ok: int
    rows_error: int
    attributes: int
    models: tuple[str, ...]
    train_size: int | None  # the summary group's requested training size (0: whole split)
    seed: int | None
    map_feature_set: str | None
    color_by: str | None
    markdown: str  # summary.md's text
    summary: pd.DataFrame = field(repr=False, compare=False)
    table_csv: str = ""  # the full table, one row per attribute and model
    table: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False, compare=False)
    images: int = 0  # PNG panels embedded in index.html
    multiclass_rows: int = 0  # successful multi-class fits (n_classes > 2; their own section)
    timing: Phases | None = field(default=None, repr=False, compare=False)  # seconds per part


# ----------------------------------------------------------------------------- tables


def order_models(models: Sequence[str]) -> list[str]:
    """Models in the report's order: lasso, forest, dense, then the others by name."""
    known = [m for m in MODEL_ORDER if m in set(models)]
    return known + sorted(set(models) - set(MODEL_ORDER))


def ok_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The successful fits (``status == "ok"``) of a results frame."""
    return results[results["status"] == "ok"].reset_index(drop=True)


def summary_group(ok: pd.DataFrame) -> tuple[int, int]:
    """``(train_size, seed)`` of the summary: the training size with the most training rows
    (0 = the whole split usually), and the smallest seed."""
    if ok.empty:
        raise ValueError("no successful fits")
    sizes = ok.groupby("train_size")["n_train"].median().sort_values(kind="stable")
    train_size = int(sizes.index[-1])
    seed = int(ok.loc[ok["train_size"] == train_size, "seed"].min())
    return train_size, seed


def _at_group(ok: pd.DataFrame) -> pd.DataFrame:
    train_size, seed = summary_group(ok)
    return ok[(ok["train_size"] == train_size) & (ok["seed"] == seed)].reset_index(drop=True)


def summary_feature_set(ok: pd.DataFrame, feature_set: str | None = None) -> str:
    """The one feature set of the summary: ``feature_set`` when given (ValueError when it has
    no fits in the summary group), else the largest dimension among the summary group's sets
    (of equal dimensions, the last by name), fixed without looking at test accuracy."""
    group = _at_group(ok)
    dims = group.groupby("feature_set")["dim"].first()
    chosen = feature_set or str(dims.sort_index().sort_values(kind="stable").index[-1])
    if chosen not in dims.index:
        train_size, seed = summary_group(ok)
        raise ValueError(
            f"feature set {chosen!r} has no results at train size {train_size}, seed {seed}"
        )
    return chosen


def summary_fits(ok: pd.DataFrame, feature_set: str | None = None) -> pd.DataFrame:
    """The fits the summary is about (:func:`summary_group`'s training size and seed, on
    :func:`summary_feature_set`): every model of every attribute there."""
    group = _at_group(ok)
    chosen = summary_feature_set(ok, feature_set)
    return group[group["feature_set"] == chosen].reset_index(drop=True)


def baseline_family(
    ok: pd.DataFrame, *, feature_set: str | None = None, alpha: float = ALPHA
) -> pd.DataFrame:
    """McNemar's test of every model of every attribute of the summary (:func:`summary_fits`)
    against the train-majority constant, Holm-corrected as **one family** over all of them:
    the best model of each attribute is picked on the test images, so the models it was picked
    from count too. Columns :data:`featstore.evaluate.BASELINE_COLUMNS`, one row per fit.

    The one place this family is defined: the report's summary and full table, and
    notebooks/compare_models.ipynb, read their ``p_holm`` from here."""
    from featstore import evaluate

    return evaluate.baseline_tests(summary_fits(ok, feature_set), alpha=alpha, family=[])


def summary_table(
    ok: pd.DataFrame, *, alpha: float = ALPHA, feature_set: str | None = None
) -> pd.DataFrame:
    """One row per attribute (see the module docstring for the choices).

    Columns: attribute, feature_set, dim, train_size, seed, n_train, n_test, majority_baseline,
    per model ``<model>_accuracy``, ``<model>_ci_low``, ``<model>_ci_high`` (test),
    ``<model>_selection`` (its selection_score: validation accuracy), ``<model>_auc`` (test ROC
    AUC) and, where the grid ran several seeds of the same cell, ``<model>_seeds``,
    ``<model>_seed_mean`` and ``<model>_seed_sd`` (test accuracy over the seeds); n_models,
    best_model (the argmax of selection_score; ``chosen_by`` says which rule chose it),
    best_selection_score, best_accuracy (its TEST accuracy: the estimate), runner_up,
    runner_up_accuracy, tied, max_p_holm, beats_all_models (the pairwise comparisons alone),
    beats_all (the same, guarded: False where the best model does not beat the baseline),
    p_baseline, p_baseline_holm, beats_baseline (McNemar against the majority constant),
    p_auc, p_auc_holm, beats_chance (the best model's AUC against 0.5: a test with power under
    imbalance), verdict (the text index.html shows)."""
    from featstore import evaluate

    models = order_models(ok["model"].unique()) if not ok.empty else []
    per_model = (
        "accuracy",
        "ci_low",
        "ci_high",
        "selection",
        "auc",
        "seeds",
        "seed_mean",
        "seed_sd",
    )
    model_cols = [f"{m}_{s}" for m in models for s in per_model]
    columns = [
        "attribute",
        "feature_set",
        "dim",
        "train_size",
        "seed",
        "n_train",
        "n_test",
        "majority_baseline",
        *model_cols,
        "n_models",
        "best_model",
        "chosen_by",
        "best_selection_score",
        "best_accuracy",
        "runner_up",
        "runner_up_accuracy",
        "tied",
        "max_p_holm",
        "beats_all_models",
        "beats_all",
        "p_baseline",
        "p_baseline_holm",
        "beats_baseline",
        "p_auc",
        "p_auc_holm",
        "beats_chance",
        "verdict",
    ]
    if ok.empty:
        return pd.DataFrame(columns=columns)
    train_size, seed = summary_group(ok)
    fits = summary_fits(ok, feature_set)
    # pairwise comparisons: one Holm family per model pair over the attributes of this set
    comparisons = evaluate.compare_models(fits, alpha=alpha)
    chosen = evaluate.best_model_table(fits, comparisons).sort_values("attribute", kind="stable")
    vs_baseline = baseline_family(ok, feature_set=feature_set, alpha=alpha).set_index(
        ["attribute", "model"]
    )
    spread = seed_spread(ok[ok["train_size"] == train_size])

    records = []
    for b in chosen.itertuples(index=False):
        rows = fits[fits["attribute"] == b.attribute].set_index("model")
        ref = rows.loc[b.best_model]
        rec: dict[str, Any] = {
            "attribute": b.attribute,
            "feature_set": b.feature_set,
            "dim": int(ref["dim"]),
            "train_size": train_size,
            "seed": seed,
            "n_train": int(ref["n_train"]),
            "n_test": int(ref["n_test"]),
            "majority_baseline": float(ref["majority_baseline"]),
        }
        for m in models:
            for s, col in (
                ("accuracy", "accuracy"),
                ("ci_low", "ci_low"),
                ("ci_high", "ci_high"),
                ("selection", "selection_score"),
                ("auc", "roc_auc"),
            ):
                v = rows.at[m, col] if m in rows.index else None
                rec[f"{m}_{s}"] = math.nan if v is None or pd.isna(v) else float(v)
            sp = spread.get((b.attribute, b.feature_set, m), (1, math.nan, math.nan))
            rec[f"{m}_seeds"], rec[f"{m}_seed_mean"], rec[f"{m}_seed_sd"] = sp
        test = vs_baseline.loc[(b.attribute, b.best_model)]
        rec.update(
            n_models=int(b.n_models),
            best_model=b.best_model,
            chosen_by=b.chosen_by,
            best_selection_score=float(b.best_selection_score),
            best_accuracy=float(b.best_accuracy),
            runner_up=b.runner_up,
            runner_up_accuracy=float(b.runner_up_accuracy),
            tied=bool(b.tied),
            max_p_holm=float(b.max_p_holm),
            beats_all_models=bool(b.beats_all),
            beats_all=bool(b.beats_all) and bool(test["beats_baseline"]),
            p_baseline=float(test["p_value"]),
            p_baseline_holm=float(test["p_holm"]),
            beats_baseline=bool(test["beats_baseline"]),
            p_auc=float(test["p_auc"]),
            p_auc_holm=float(test["p_auc_holm"]),
            beats_chance=bool(test["beats_chance"]),
        )
        rec["verdict"] = _verdict(pd.Series(rec))
        records.append(rec)
    return pd.DataFrame.from_records(records, columns=columns)


def seed_spread(ok: pd.DataFrame) -> dict[tuple[str, str, str], tuple[int, float, float]]:
    """``{(attribute, feature set, model): (seeds, mean, sd)}`` of the test accuracy over the
    seeds of one cell (the rows given: one training size); sd with ddof 1, NaN for one seed."""
    out: dict[tuple[str, str, str], tuple[int, float, float]] = {}
    if ok.empty:
        return out
    for key, g in ok.groupby(["attribute", "feature_set", "model"]):
        acc = g["accuracy"].astype(float)
        out[(str(key[0]), str(key[1]), str(key[2]))] = (
            len(acc),
            float(acc.mean()),
            float(acc.std(ddof=1)) if len(acc) > 1 else math.nan,
        )
    return out


def seed_table(ok: pd.DataFrame) -> pd.DataFrame:
    """Every cell run with more than one seed: attribute, feature_set, train_size, model, seeds,
    mean and sd of the test accuracy and of the selection_score over the seeds."""
    cols = [
        "attribute",
        "feature_set",
        "train_size",
        "model",
        "seeds",
        "accuracy_mean",
        "accuracy_sd",
        "selection_mean",
        "selection_sd",
    ]
    if ok.empty:
        return pd.DataFrame(columns=cols)
    g = ok.groupby(["attribute", "feature_set", "train_size", "model"])
    out = g.agg(
        seeds=("seed", "nunique"),
        accuracy_mean=("accuracy", "mean"),
        accuracy_sd=("accuracy", "std"),
        selection_mean=("selection_score", "mean"),
        selection_sd=("selection_score", "std"),
    ).reset_index()
    out = out[out["seeds"] > 1]
    return out[cols].reset_index(drop=True)


def _params(params: Any) -> dict[str, Any]:
    if isinstance(params, dict):
        return params
    if params is None or (isinstance(params, float) and math.isnan(params)) or params == "":
        return {}
    try:
        out = json.loads(params)
    except (TypeError, ValueError):
        return {}
    return out if isinstance(out, dict) else {}


def chosen_hyperparameters(model: str, params: Any) -> dict[str, Any]:
    """The hyper-parameters a fit chose, from its ``params`` (the results column, JSON):
    ``lasso`` -> ``{"C": ...}`` (the inverse L1 strength chosen by cross-validation, rescaled
    when the CV ran on a subsample); ``forest`` -> ``{"max_features": ...}``; ``dense`` and
    ``multilabel`` -> ``{"epochs": ...}``, the epoch whose weights early stopping kept (lowest
    validation loss), and ``epochs_run``; ``bottleneck<k>-<second>`` -> ``{"k": k, "epochs":
    ...}`` plus the second model's. Keys the fit did not record are left out."""
    p = _params(params)
    out: dict[str, Any] = {}
    kind = model.split("-")[0]
    if model == "lasso" or (kind.startswith("bottleneck") and p.get("second") == "lasso"):
        inner = p if model == "lasso" else _params(p.get("second_params"))
        if inner.get("C") is not None:
            out["C"] = float(inner["C"])
    if model == "forest" or (kind.startswith("bottleneck") and p.get("second") == "forest"):
        inner = p if model == "forest" else _params(p.get("second_params"))
        if inner.get("max_features") is not None:
            out["max_features"] = inner["max_features"]
    if model in ("dense", "multilabel") or kind.startswith("bottleneck"):
        if kind.startswith("bottleneck") and p.get("k") is not None:
            out = {"k": int(p["k"]), **out}
        if p.get("best_epoch") is not None:
            out["epochs"] = int(p["best_epoch"])
        if p.get("epochs_run") is not None:
            out["epochs_run"] = int(p["epochs_run"])
    return out


def _hp_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def hyperparameter_text(model: str, params: Any) -> str:
    """:func:`chosen_hyperparameters` as one short line, e.g. ``C = 0.0464``,
    ``max_features = sqrt``, ``epochs = 7 (of 12 run)``."""
    hp = chosen_hyperparameters(model, params)
    parts = []
    for key, value in hp.items():
        if key == "epochs_run":
            continue
        text = f"{key} = {_hp_value(value)}"
        if key == "epochs" and "epochs_run" in hp:
            text += f" (of {hp['epochs_run']} run)"
        parts.append(text)
    return ", ".join(parts) or "–"


#: Columns of :func:`full_table`, in order.
FULL_COLUMNS: list[str] = [
    "attribute",
    "model",
    "feature_set",
    "train_size",
    "seed",
    "n_train",
    "n_test",
    "positives",
    "majority_baseline",
    "selection_score",
    "accuracy",
    "ci_low",
    "ci_high",
    "gain",
    "balanced_accuracy",
    "ba_ci_low",
    "ba_ci_high",
    "f1",
    "roc_auc",
    "auc_ci_low",
    "auc_ci_high",
    "brier",
    "hyperparameters",
    "p_baseline",
    "p_baseline_holm",
    "beats_baseline",
    "p_auc",
    "p_auc_holm",
    "beats_chance",
    "best",
]


def full_table(
    ok: pd.DataFrame,
    *,
    feature_set: str | None = None,
    alpha: float = ALPHA,
    summary: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per attribute and model of the summary's fits (:func:`summary_fits`), columns
    :data:`FULL_COLUMNS`: ``positives`` (share of positive test labels), ``majority_baseline``,
    test ``accuracy`` with its bootstrap ``ci_low`` / ``ci_high``, ``gain`` (accuracy minus the
    baseline), ``balanced_accuracy``, ``f1``, ``roc_auc``, ``hyperparameters``
    (:func:`hyperparameter_text`), the baseline test of :func:`baseline_family` (``p_baseline``,
    ``p_baseline_holm``, ``beats_baseline``) and ``best`` (the summary's best model of the
    attribute). ``summary``: :func:`summary_table` of the same ``ok``, when already at hand."""
    if ok.empty:
        return pd.DataFrame(columns=FULL_COLUMNS)
    fits = summary_fits(ok, feature_set)
    tests = baseline_family(ok, feature_set=feature_set, alpha=alpha).set_index(
        ["attribute", "model"]
    )
    if summary is None:
        summary = summary_table(ok, alpha=alpha, feature_set=feature_set)
    best = dict(zip(summary["attribute"], summary["best_model"], strict=True))
    rank = {m: i for i, m in enumerate(order_models(fits["model"].unique()))}
    records = []
    for r in fits.itertuples(index=False):
        test = tests.loc[(r.attribute, r.model)]
        y_true = np.asarray(r.y_true)
        records.append(
            {
                "attribute": r.attribute,
                "model": r.model,
                "feature_set": r.feature_set,
                "train_size": int(r.train_size),
                "seed": int(r.seed),
                "n_train": int(r.n_train),
                "n_test": int(r.n_test),
                "positives": float(y_true.mean()) if y_true.size else math.nan,
                "majority_baseline": float(r.majority_baseline),
                "selection_score": _float(r.selection_score),
                "accuracy": float(r.accuracy),
                "ci_low": float(r.ci_low),
                "ci_high": float(r.ci_high),
                "gain": float(r.accuracy) - float(r.majority_baseline),
                "balanced_accuracy": float(r.balanced_accuracy),
                "ba_ci_low": _float(r.ba_ci_low),
                "ba_ci_high": _float(r.ba_ci_high),
                "f1": _float(r.f1),
                "roc_auc": _float(r.roc_auc),
                "auc_ci_low": _float(r.auc_ci_low),
                "auc_ci_high": _float(r.auc_ci_high),
                "brier": _float(r.brier),
                "hyperparameters": hyperparameter_text(str(r.model), r.params),
                "p_baseline": float(test["p_value"]),
                "p_baseline_holm": float(test["p_holm"]),
                "beats_baseline": bool(test["beats_baseline"]),
                "p_auc": float(test["p_auc"]),
                "p_auc_holm": float(test["p_auc_holm"]),
                "beats_chance": bool(test["beats_chance"]),
                "best": best.get(r.attribute) == r.model,
            }
        )
    out = pd.DataFrame.from_records(records, columns=FULL_COLUMNS)
    order = out["model"].map(rank)
    return (
        out.assign(_o=order)
        .sort_values(["attribute", "_o"], kind="stable")
        .drop(columns="_o")
        .reset_index(drop=True)
    )


def _float(value: Any) -> float:
    return math.nan if value is None or pd.isna(value) else float(value)


def hyperparameter_summary(
    ok: pd.DataFrame, *, feature_set: str | None = None
) -> list[tuple[str, str, str]]:
    """Per model and hyper-parameter, the values the summary's fits chose over the attributes:
    ``(model, hyper-parameter, "value (count), ...")``, or the median and range when more than
    eight distinct values were chosen."""
    if ok.empty:
        return []
    fits = summary_fits(ok, feature_set)
    out = []
    for model in order_models(fits["model"].unique()):
        chosen = [
            chosen_hyperparameters(model, p) for p in fits.loc[fits["model"] == model, "params"]
        ]
        keys = [k for k in dict.fromkeys(k for hp in chosen for k in hp) if k != "epochs_run"]
        for key in keys:
            values = [hp[key] for hp in chosen if key in hp]
            counts = pd.Series([_hp_value(v) for v in values]).value_counts()
            numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
            if len(counts) > 8 and numeric:
                arr = np.asarray(values, dtype=float)
                text = (
                    f"median {_hp_value(float(np.median(arr)))}, range "
                    f"{_hp_value(float(arr.min()))} – {_hp_value(float(arr.max()))} "
                    f"({len(counts)} distinct values over {len(values)} attributes)"
                )
            else:
                order = sorted(
                    counts.index, key=lambda v: (float(v) if _is_number(v) else math.inf, v)
                )
                text = ", ".join(f"{v} ({counts[v]})" for v in order)
            label = "epochs (kept by early stopping)" if key == "epochs" else key
            out.append((model, label, text))
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _fmt_int(value: Any) -> str:
    return (
        "–"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{int(value):,}"
    )


def _acc_ci(row: pd.Series, model: str) -> str:
    acc = row.get(f"{model}_accuracy", math.nan)
    if acc is None or math.isnan(acc):
        return "–"
    text = f"{acc:.3f} [{row[f'{model}_ci_low']:.3f}, {row[f'{model}_ci_high']:.3f}]"
    seeds = row.get(f"{model}_seeds", 1)
    if seeds is not None and not pd.isna(seeds) and int(seeds) > 1:
        text += (
            f"; {int(seeds)} seeds {row[f'{model}_seed_mean']:.3f} ± {row[f'{model}_seed_sd']:.3f}"
        )
    return text


def _chance_verdict(row: pd.Series) -> str:
    p = row.get("p_auc_holm", math.nan)
    if p is None or pd.isna(p):
        return "– (no scores)"
    return f"{'yes' if row['beats_chance'] else 'no'} (p_holm = {float(p):.2g})"


def _verdict(row: pd.Series) -> str:
    if not row["beats_baseline"]:
        return "no: not above baseline"
    if row["n_models"] < 2:
        return "no (one model)"
    p = row["max_p_holm"]
    if row["beats_all"]:
        return f"yes (p_holm ≤ {p:.2g})"
    if row["tied"]:
        return "no (tied)"
    return f"no (p_holm = {p:.2g})"


def _baseline_verdict(row: pd.Series) -> str:
    p_holm = float(row["p_baseline_holm"])
    p = "–" if math.isnan(p_holm) else f"{p_holm:.2g}"
    if row["beats_baseline"]:
        return f"yes (p_holm = {p})"
    if not row["best_accuracy"] > row["majority_baseline"]:
        return f"no (not more accurate, p_holm = {p})"
    return f"no (p_holm = {p})"


def display_rows(summary: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted cells of the summary table as shown in HTML and Markdown."""
    models = [
        c[: -len("_accuracy")]
        for c in summary.columns
        if c.endswith("_accuracy") and c not in ("best_accuracy", "runner_up_accuracy")
    ]
    headers = [
        "attribute",
        "feature set",
        "dim",
        "n_train",
        "n_test",
        "majority baseline",
        *[f"{m} accuracy [95% CI]" for m in models],
        "best",
        "beats baseline",
        "AUC above chance",
        "best beats all others",
    ]
    rows = []
    for _, r in summary.iterrows():
        best = str(r["best_model"])
        if r.get("chosen_by") not in (None, "selection_score") and not pd.isna(r.get("chosen_by")):
            best += " (by test: old fits)"
        rows.append(
            [
                str(r["attribute"]),
                str(r["feature_set"]),
                str(r["dim"]),
                str(r["n_train"]),
                str(r["n_test"]),
                _fmt(r["majority_baseline"]),
                *[_acc_ci(r, m) for m in models],
                best,
                _baseline_verdict(r),
                _chance_verdict(r),
                _verdict(r),
            ]
        )
    return headers, rows


def to_markdown(summary: pd.DataFrame) -> str:
    """The summary as a GitHub-flavoured Markdown table."""
    headers, rows = display_rows(summary)
    if not rows:
        return "(no successful fits)\n"

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    out = [line(headers), "| " + " | ".join("---" for _ in headers) + " |"]
    out += [line(r) for r in rows]
    return "\n".join(out) + "\n"


def manifest_rows(
    store_path: str | os.PathLike[str], feature_sets: Sequence[str]
) -> list[dict[str, Any]]:
    """What made each feature set: model, layers, pooling, weights source, reducer, dim, counts,
    created (``committed`` False for a name with no committed feature set)."""
    rows = []
    for name in feature_sets:
        try:
            m = store.feature_set_manifest(store_path, name)
        except StoreError:
            rows.append({"feature_set": name, "committed": False})
            continue
        layers = m.get("layers") or ([m["layer"]] if m.get("layer") else [])
        weights = m.get("weights")
        if isinstance(weights, dict):
            weights = weights.get("source")
        source = m.get("source") if isinstance(m.get("source"), dict) else {}
        reducer = f"{m['reducer']} of {source.get('name', '?')}" if m.get("reducer") else ""
        counts = m.get("counts", {})
        rows.append(
            {
                "feature_set": name,
                "committed": True,
                "model": m.get("model", ""),
                "layers": ", ".join(map(str, layers)),
                "pooling": m.get("pooling", ""),
                "weights": weights or "",
                "reducer": reducer,
                "dim": m.get("dim"),
                "ok": counts.get("ok"),
                "errors": counts.get("errors"),
                "created": m.get("created", ""),
            }
        )
    return rows


# ----------------------------------------------------------------------------- plots


def _figure(
    n_panels: int, *, ncols_max: int = 5, w: float = 3.2, h: float = 2.6
) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols_max, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(w * ncols, h * nrows), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def png_bytes(fig: Any) -> bytes:
    """The figure as PNG bytes (Agg)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


@dataclass(frozen=True)
class Panel:
    """One panel of a small-multiples figure: its title, and what draws it on a matplotlib
    ``Axes`` (everything but the title)."""

    title: str
    draw: Callable[[Any], None]


@dataclass(frozen=True)
class Panels:
    """A small-multiples figure. The report draws each panel as its own PNG with the title as
    HTML text above it (:meth:`pngs`); :meth:`figure` draws them all on one matplotlib figure
    with matplotlib titles (for notebooks). ``legend``: ``(label, colour, line style)`` entries
    shared by every panel ("-", "--", ":")."""

    name: str
    panels: tuple[Panel, ...]
    legend: tuple[tuple[str, str, str], ...] = ()
    size: tuple[float, float] = (3.2, 2.5)  # inches per panel

    def pngs(self) -> list[bytes]:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        out = []
        for panel in self.panels:
            fig = Figure(figsize=self.size, dpi=_DPI, layout="constrained")
            FigureCanvasAgg(fig)
            panel.draw(fig.add_subplot())
            out.append(png_bytes(fig))
        return out

    def figure(self, *, ncols_max: int = 5) -> Any:
        from matplotlib.lines import Line2D

        fig, axes = _figure(
            len(self.panels), ncols_max=ncols_max, w=self.size[0], h=self.size[1] + 0.25
        )
        for ax, panel in zip(axes, self.panels, strict=True):
            panel.draw(ax)
            ax.set_title(panel.title, fontsize=9, wrap=True)
        if self.legend:
            handles = [Line2D([], [], color=c, ls=ls, label=label) for label, c, ls in self.legend]
            fig.legend(
                handles=handles,
                loc="outside lower center",
                ncols=len(handles),
                fontsize=8,
                frameon=False,
            )
        return fig


def _model_styles(models: Sequence[str]) -> dict[str, dict[str, Any]]:
    from matplotlib.colors import to_hex

    markers = "osD^v<>ph*"
    return {
        m: {"color": to_hex(f"C{i % 10}"), "marker": markers[i % len(markers)]}
        for i, m in enumerate(order_models(models))
    }


def _model_legend(models: Sequence[str]) -> tuple[tuple[str, str, str], ...]:
    styles = _model_styles(models)
    return tuple((m, styles[m]["color"], "-") for m in order_models(models))


def _shared_limits(
    values: Sequence[float], *, include: Sequence[float] = (), min_span: float = 0.02
) -> tuple[float, float]:
    """One (low, high) for every panel of a figure: the range of ``values`` and ``include``,
    padded by 6% (at least ``min_span`` wide)."""
    v = np.asarray([*values, *include], dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (0.0, 1.0)
    lo, hi = float(v.min()), float(v.max())
    pad = max(min_span, hi - lo) * 0.06 + max(0.0, min_span - (hi - lo)) / 2
    return lo - pad, hi + pad


def _style_axes(ax: Any, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


GAIN_LABEL = "accuracy − majority baseline"


def _source_set(feature_set: Any) -> str:
    """The feature set a reduced set was made from (``NAME-pca<k>`` -> ``NAME``), else itself."""
    return re.sub(r"-pca\d+$", "", str(feature_set))


def _source_labels(sources: Sequence[str]) -> dict[str, str]:
    """Short legend labels of source sets: their conv base (the name's first part) when that
    tells them apart, else the whole name."""
    short = {src: src.split("-", 1)[0] for src in sources}
    return short if len(set(short.values())) == len(short) else {src: src for src in sources}


SOURCE_STYLES = ("-", "--", "-.")


def accuracy_panels(ok: pd.DataFrame, x: str, x_label: str, *, name: str) -> Panels:
    """Small multiples per attribute plus their mean: test accuracy minus the attribute's
    majority baseline against column ``x``, one line per model (rows of equal ``x`` averaged).
    Against ``dim``, when the fits come from several source sets (conv bases: a set and its
    ``-pca<k>`` reductions), one line per model and source set (colour: model; line style:
    base), never averaged across bases. Baseline-relative, on one y-scale for every panel: 0
    (dotted) is the baseline, so attributes of any label balance read alike."""
    attributes = sorted(ok["attribute"].unique())
    models = order_models(ok["model"].unique())
    styles = _model_styles(models)
    ok = ok.assign(source=ok["feature_set"].map(_source_set) if x == "dim" else "")
    sources = sorted(ok["source"].unique())
    by_source = len(sources) > 1
    line_style = {
        src: SOURCE_STYLES[i % len(SOURCE_STYLES)] if by_source else "-"
        for i, src in enumerate(sources)
    }
    per = ok.groupby(["attribute", "model", "source", x], as_index=False).agg(
        accuracy=("accuracy", "mean"), majority_baseline=("majority_baseline", "mean")
    )
    per["gain"] = per["accuracy"] - per["majority_baseline"]
    mean = per.groupby(["model", "source", x], as_index=False)["gain"].mean()
    xs = sorted(per[x].unique())
    log_x = len(xs) > 1 and min(xs) > 0 and max(xs) / min(xs) >= 8
    ylim = _shared_limits([*per["gain"], *mean["gain"]], include=[0.0])

    def draw(data: pd.DataFrame) -> Callable[[Any], None]:
        def _draw(ax: Any) -> None:
            for m in models:
                for src in sources:
                    d = data[(data["model"] == m) & (data["source"] == src)].sort_values(x)
                    if not d.empty:
                        ax.plot(
                            d[x], d["gain"], label=m, ms=4, lw=1.4, ls=line_style[src], **styles[m]
                        )
            ax.axhline(0.0, color="0.45", ls=":", lw=1)
            if log_x:
                ax.set_xscale("log", base=2)
            ax.set_ylim(*ylim)
            _style_axes(ax, x_label, GAIN_LABEL)

        return _draw

    panels = [Panel("mean over attributes", draw(mean))]
    panels += [Panel(a, draw(per[per["attribute"] == a])) for a in attributes]
    bases = (
        tuple((label, "#404040", line_style[src]) for src, label in _source_labels(sources).items())
        if by_source
        else ()
    )
    legend = (*_model_legend(models), *bases, ("majority baseline (0)", "#737373", ":"))
    return Panels(name, tuple(panels), legend)


def plot_accuracy_vs_dim(ok: pd.DataFrame) -> Any:
    """Accuracy minus the majority baseline against feature dimension (``dim``) of the given
    successful fits: one line per model (and base), a panel per attribute and one for the mean over
    attributes, one shared y-scale (:func:`accuracy_panels`), as one figure."""
    return accuracy_panels(ok, "dim", "feature dimension", name="accuracy_vs_dimension").figure()


def plot_accuracy_vs_train_size(ok: pd.DataFrame) -> Any:
    """Accuracy minus the baseline against the number of training rows (``n_train``)."""
    return accuracy_panels(ok, "n_train", "training rows", name="accuracy_vs_train_size").figure()


def roc_panels(fits: pd.DataFrame, summary: pd.DataFrame) -> Panels:
    """Per attribute, the test ROC curve of every model with stored ROC points (``roc_fpr`` /
    ``roc_tpr``), the summary's best model drawn thick and named with its AUC inside the panel
    (the title, the attribute, stays one line); the diagonal is chance. Attributes without any
    ROC points get no panel."""
    models = order_models(fits["model"].unique())
    styles = _model_styles(models)
    best = dict(zip(summary["attribute"], summary["best_model"], strict=True))
    has = (
        fits["roc_fpr"].map(lambda v: hasattr(v, "__len__") and len(v) > 1)
        if "roc_fpr" in fits
        else pd.Series(False, index=fits.index)
    )
    panels = []
    for attribute in sorted(fits["attribute"].unique()):
        rows = fits[(fits["attribute"] == attribute) & has]
        if rows.empty:
            continue
        top = best.get(attribute)
        top_row = rows[rows["model"] == top]
        auc = (
            f"\nAUC {float(top_row['roc_auc'].iloc[0]):.3f}"
            if len(top_row) and pd.notna(top_row["roc_auc"].iloc[0])
            else ""
        )
        note = f"best: {top}{auc}" if top is not None else ""

        def _draw(
            ax: Any, rows: pd.DataFrame = rows, top: str | None = top, note: str = note
        ) -> None:
            ax.plot([0, 1], [0, 1], color="0.6", ls=":", lw=1)
            if note:  # inside the axes, so the title stays one line over every panel
                ax.text(
                    0.97,
                    0.04,
                    note,
                    transform=ax.transAxes,
                    ha="right",
                    va="bottom",
                    fontsize=7,
                    bbox={
                        "facecolor": "white",
                        "edgecolor": "0.8",
                        "boxstyle": "round,pad=0.2",
                        "alpha": 0.9,
                    },
                )
            for r in sorted(rows.itertuples(index=False), key=lambda r: r.model == top):
                thick = r.model == top
                ax.plot(
                    r.roc_fpr,
                    r.roc_tpr,
                    color=styles[r.model]["color"],
                    lw=2.2 if thick else 1.0,
                    alpha=1.0 if thick else 0.8,
                    ls="-" if thick else "--",
                )
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.01)
            ax.set_aspect("equal")
            _style_axes(ax, "false positive rate", "true positive rate")

        panels.append(Panel(attribute, _draw))
    legend = (*_model_legend(models), ("chance", "#999999", ":"))
    return Panels("roc_curves", tuple(panels), legend, size=(2.9, 2.8))


def confusion_panels(rows: pd.DataFrame) -> Panels:
    """Confusion matrices (rows: true class, columns: predicted; colour: share of the true
    class) of the given fits, one panel each, titled attribute · model."""
    panels = []
    for _, r in rows.iterrows():
        cm = np.array([[r["tn"], r["fp"]], [r["fn"], r["tp"]]], dtype=float)

        def _draw(ax: Any, cm: np.ndarray = cm) -> None:
            share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
            ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
            for i in range(2):
                for j in range(2):
                    ax.text(
                        j,
                        i,
                        f"{int(cm[i, j])}\n{share[i, j]:.0%}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if share[i, j] > 0.6 else "black",
                    )
            ax.set_xticks([0, 1], ["0", "1"], fontsize=7)
            ax.set_yticks([0, 1], ["0", "1"], fontsize=7)
            ax.set_xlabel("predicted", fontsize=8)
            ax.set_ylabel("true", fontsize=8)

        panels.append(Panel(f"{r['attribute']} · {r['model']}", _draw))
    return Panels("confusion_matrices", tuple(panels), size=(2.2, 2.1))


def calibration_panels(fits: pd.DataFrame) -> Panels:
    """Reliability of the stored test scores (``y_score``), one panel per model pooled over the
    attributes of ``fits``: the share of positives in each score bin (of ten, on [0, 1])
    against the bin's mean score, the points sized by their images; the diagonal is perfect
    calibration. Titled with the model and its mean Brier score over the attributes."""
    from featstore import evaluate

    styles = _model_styles(order_models(fits["model"].unique()))
    panels = []
    for model in order_models(fits["model"].unique()):
        rows = fits[(fits["model"] == model) & fits["y_score"].notna()]
        if rows.empty:
            continue
        y = np.concatenate([np.asarray(v) for v in rows["y_true"]])
        score = np.concatenate([np.asarray(v) for v in rows["y_score"]])
        cal = evaluate.calibration_table(y, np.clip(score, 0.0, 1.0))
        brier = float(rows["brier"].astype(float).mean())
        colour = styles[model]["color"]

        def _draw(ax: Any, cal: pd.DataFrame = cal, colour: str = colour) -> None:
            ax.plot([0, 1], [0, 1], ls=":", color="0.5", lw=1)
            ax.plot(cal["mean_score"], cal["frac_positive"], color=colour, lw=1.2)
            ax.scatter(
                cal["mean_score"],
                cal["frac_positive"],
                color=colour,
                s=10 + 90 * cal["n"] / max(int(cal["n"].max()), 1),
                zorder=3,
            )
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            _style_axes(ax, "mean score in the bin", "share of positives")

        panels.append(Panel(f"{model} · Brier {brier:.3f}", _draw))
    return Panels("calibration", tuple(panels), size=(2.6, 2.4))


def plot_confusions(rows: pd.DataFrame) -> Any:
    """:func:`confusion_panels` as one figure."""
    return confusion_panels(rows).figure(ncols_max=6)


def map_points(
    store_path: str | os.PathLike[str],
    feature_set: str,
    color_by: str,
    *,
    max_points: int = MAX_MAP_POINTS,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Test embeddings (float32, at most ``max_points`` rows, a seeded sample in image_id order)
    and the ``color_by`` labels of the same images. Uses the test split, or every split when the
    feature set has no test split."""
    manifest = store.feature_set_manifest(store_path, feature_set)
    splits = ["test"] if "test" in manifest.get("counts", {}).get("splits", {}) else None
    table = store.read_arrow(store_path, feature_set, splits=splits, attributes=[color_by])
    n = table.num_rows
    if n == 0:
        raise StoreError(f"feature set {feature_set!r} has no rows to map")
    keep = np.arange(n)
    if n > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))
        table = table.take(keep)
    emb = table["embedding"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    x = emb.astype(np.float32, copy=False).reshape(table.num_rows, -1)
    y = table[color_by].to_numpy(zero_copy_only=False).astype(bool)
    return x, y


def tsne_perplexity(n: int) -> float:
    """30 (the usual value) when there are enough points, else about n / 4 (at least 2):
    perplexity must stay well below the number of points."""
    return float(max(2.0, min(30.0, (n - 1) / 4)))


def pca_2d(x: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The first two principal components of the rows of ``x`` and the share of the rows'
    total variance each explains (``(n, 2)`` coordinates, ``(2,)`` ratios)."""
    from sklearn.decomposition import PCA

    x = np.asarray(x, dtype=np.float64)
    if len(x) < 3:
        raise ValueError(f"a map needs at least 3 points, got {len(x)}")
    if x.shape[1] == 1:
        return np.column_stack([x[:, 0] - x[:, 0].mean(), np.zeros(len(x))]), np.array([1.0, 0.0])
    pca = PCA(n_components=2, random_state=seed)
    return pca.fit_transform(x), np.asarray(pca.explained_variance_ratio_, dtype=float)


def embed_2d(x: np.ndarray, method: str, *, seed: int = 0) -> np.ndarray:
    """2-D coordinates of the rows of ``x`` by ``"pca"`` or ``"tsne"`` (t-SNE runs on the first
    50 principal components when the dimension is larger)."""
    from sklearn.decomposition import PCA

    x = np.asarray(x, dtype=np.float64)
    if len(x) < 3:
        raise ValueError(f"a map needs at least 3 points, got {len(x)}")
    if method == "pca":
        return pca_2d(x, seed=seed)[0]
    if method == "tsne":
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        k = min(50, len(x))  # PCA cannot give more components than points
        if x.shape[1] > k:
            x = PCA(n_components=k, random_state=seed).fit_transform(x)
        tsne = TSNE(
            n_components=2,
            perplexity=tsne_perplexity(len(x)),
            init="pca",
            learning_rate="auto",
            random_state=seed,
        )
        # Barnes-Hut's OpenMP threads gain nothing on a few hundred points and spin badly on a
        # busy machine (60 points: 7.5 s with 2 threads on a loaded 2-core box, 0.2 s with 1)
        threads = 1 if len(x) < _TSNE_THREADED_FROM else None
        with threadpool_limits(limits=threads, user_api="openmp"):
            return tsne.fit_transform(x)
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")


def _draw_map(
    ax: Any, xy: np.ndarray, y: np.ndarray, color_by: str, xlabel: str, ylabel: str
) -> None:
    for value, color, label in ((False, "C0", f"not {color_by}"), (True, "C3", color_by)):
        m = y == value
        ax.scatter(
            xy[m, 0],
            xy[m, 1],
            s=8,
            alpha=0.6,
            color=color,
            label=f"{label} ({int(m.sum())})",
            linewidths=0,
        )
    ax.legend(fontsize=8, markerscale=2)
    _style_axes(ax, xlabel, ylabel)


def map_panels(
    x: np.ndarray, y: np.ndarray, *, feature_set: str, color_by: str, seed: int = 0
) -> Panels:
    """The PCA map (axes: the first two principal components, labelled with the share of the
    variance each explains) and the t-SNE map of embeddings ``x`` coloured by ``y``."""
    pca_xy, ratio = pca_2d(x, seed=seed)
    tsne_xy = embed_2d(x, "tsne", seed=seed)
    return Panels(
        "embedding_maps",
        (
            Panel(
                f"PCA of {feature_set}",
                lambda ax: _draw_map(
                    ax,
                    pca_xy,
                    y,
                    color_by,
                    f"PC 1 ({ratio[0]:.1%} of the variance)",
                    f"PC 2 ({ratio[1]:.1%} of the variance)",
                ),
            ),
            Panel(
                f"t-SNE of {feature_set} (perplexity {tsne_perplexity(len(x)):.0f})",
                lambda ax: _draw_map(ax, tsne_xy, y, color_by, "t-SNE 1", "t-SNE 2"),
            ),
        ),
        size=(5.6, 4.6),
    )


def plot_map(
    xy: np.ndarray, y: np.ndarray, *, title: str, color_by: str, xlabel: str = "", ylabel: str = ""
) -> Any:
    """Scatter of 2-D points coloured by a binary attribute."""
    fig, (ax,) = _figure(1, w=6.0, h=5.0)
    _draw_map(ax, xy, y, color_by, xlabel, ylabel)
    ax.set_title(title, fontsize=10)
    return fig


#: The "Which conv base" plots: (column of featstore.compare.base_table, axis label, log axis,
#: higher is cheaper) for the costs, (column, axis label) for the scores.
BASE_COSTS: tuple[tuple[str, str, bool, bool], ...] = (
    ("params", "parameters", True, False),
    ("flops", "FLOPs per image", True, False),
    ("images_per_second", "extraction images/s (measured)", True, True),
)
BASE_SCORES: tuple[tuple[str, str], ...] = (
    ("accuracy", "mean probe accuracy"),
    ("balanced_accuracy", "mean balanced accuracy"),
    ("retrieval_top5", "retrieval top-5 accuracy"),
)
#: each score's chance level: a column of the base table, or a constant
BASE_CHANCE: dict[str, str | float] = {
    "accuracy": "accuracy_chance",
    "balanced_accuracy": 0.5,
    "retrieval_top5": "retrieval_top5_chance",
}


def _base_chance(bases: pd.DataFrame, score: str) -> float:
    """The chance level of ``score`` (the mean over bases: they share the images and labels)."""
    chance = BASE_CHANCE.get(score)
    if isinstance(chance, str):
        v = pd.to_numeric(bases.get(chance), errors="coerce") if chance in bases else None
        return float(v.mean()) if v is not None and v.notna().any() else float("nan")
    return float(chance) if chance is not None else float("nan")


def plot_bases(bases: pd.DataFrame) -> Any:
    """Scores against costs per conv base (featstore.compare.base_table): one labelled scatter
    per (score, cost), the Pareto front (featstore.compare.pareto_front: cheaper and more
    accurate is better) drawn as a step line through its bases, which are filled. Each score's
    chance level (:data:`BASE_CHANCE`: the majority baseline, 0.5, random retrieval) is a dotted
    line inside the y-range, so a gap of a few thousandths reads as what it is."""
    from featstore.compare import pareto_front

    scores = [sc for sc in BASE_SCORES if bases[sc[0]].notna().any()]
    fig, axes = _figure(len(scores) * len(BASE_COSTS), ncols_max=len(BASE_COSTS), w=3.6, h=2.6)
    panels = [(sc, co) for sc in scores for co in BASE_COSTS]
    for ax, ((score, score_label), (cost, cost_label, log, higher)) in zip(
        axes, panels, strict=True
    ):
        d = bases[bases[score].notna() & bases[cost].notna()]
        if d.empty:
            ax.text(
                0.5,
                0.5,
                f"no {cost_label} recorded",
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize=8,
            )
        else:
            x = d[cost].to_numpy(float)
            y = d[score].to_numpy(float)
            front = pareto_front(-x if higher else x, y)
            ax.scatter(
                x[~front], y[~front], s=28, facecolors="none", edgecolors="C0", label="dominated"
            )
            ax.scatter(x[front], y[front], s=32, color="C3", label="Pareto front")
            order = np.argsort(x[front])
            ax.plot(
                x[front][order],
                y[front][order],
                color="C3",
                lw=1,
                ls="--",
                drawstyle="steps-pre" if higher else "steps-post",
            )
            for xi, yi, name in zip(x, y, d["base"], strict=True):
                right = len(x) > 1 and xi == x.max()  # the rightmost label ends at its point
                ax.annotate(
                    name,
                    (xi, yi),
                    xytext=(-3 if right else 3, 3),
                    textcoords="offset points",
                    fontsize=7,
                    ha="right" if right else "left",
                )
            if log and (x > 0).all() and x.max() / x.min() >= 8:  # else minor labels collide
                from matplotlib.ticker import NullFormatter

                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())  # 2x10^6, 3x10^6... overlap
            ax.margins(x=0.25, y=0.15)  # room for the labels of the outermost bases
            chance = _base_chance(bases, score)
            if np.isfinite(chance):
                ax.axhline(chance, color="0.45", ls=":", lw=1, label="chance")
                ax.set_ylim(*_shared_limits(y, include=[chance], min_span=0.01))
        ax.set_xlabel(cost_label + (" (higher: cheaper)" if higher else ""), fontsize=8)
        ax.set_ylabel(score_label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if axes:
        axes[0].legend(fontsize=7, loc="best")
    return fig


def representative_curves(
    ok: pd.DataFrame, summary: pd.DataFrame, *, k: int = MAX_CURVES
) -> pd.DataFrame:
    """Up to ``k`` dense fits with a training history, on the summary's feature set of each
    attribute and its training size and seed: the highest, lowest and median-accuracy ones
    (spread evenly over the fits sorted by test accuracy)."""
    with_hist = ok[ok["history"].notna() & (ok["model"] == "dense")]
    if with_hist.empty:
        with_hist = ok[ok["history"].notna()]
    if with_hist.empty or summary.empty:
        return with_hist.iloc[:0]
    keys = summary[["attribute", "feature_set", "train_size", "seed"]]
    cand = with_hist.merge(keys, on=["attribute", "feature_set", "train_size", "seed"])
    if cand.empty:
        cand = with_hist
    cand = cand.sort_values(
        ["accuracy", "attribute", "feature_set"], ascending=[False, True, True], kind="stable"
    ).reset_index(drop=True)
    if len(cand) <= k:
        return cand
    picks = sorted(set(np.linspace(0, len(cand) - 1, k).round().astype(int).tolist()))
    return cand.iloc[picks].reset_index(drop=True)


def curve_panels(rows: pd.DataFrame) -> Panels:
    """Loss and accuracy per epoch, train (solid) and validation (dashed), two panels per fit
    (the epoch of the lowest validation loss, whose weights early stopping kept, dotted). The
    loss panels share one y-scale, the accuracy panels another."""
    hists = [json.loads(h) for h in rows["history"]]
    limits = {
        m: _shared_limits([v for h in hists for key in (m, f"val_{m}") for v in (h.get(key) or [])])
        for m in ("loss", "accuracy")
    }
    panels = []
    for (_, r), hist in zip(rows.iterrows(), hists, strict=True):
        best = int(np.argmin(hist["val_loss"])) + 1 if hist.get("val_loss") else None
        for metric in ("loss", "accuracy"):

            def _draw(
                ax: Any, hist: dict[str, Any] = hist, metric: str = metric, best: int | None = best
            ) -> None:
                for key, style, color in ((metric, "-", "C0"), (f"val_{metric}", "--", "C1")):
                    values = hist.get(key)
                    if values:
                        ax.plot(range(1, len(values) + 1), values, style, color=color)
                if best is not None:
                    ax.axvline(best, color="0.5", ls=":", lw=1)
                ax.set_ylim(*limits[metric])
                _style_axes(ax, "epoch", metric)

            panels.append(
                Panel(
                    f"{r['attribute']} · {r['model']} (n_train {int(r['n_train'])}): {metric}",
                    _draw,
                )
            )
    legend = (
        ("train", "#1f77b4", "-"),
        ("validation", "#ff7f0e", "--"),
        ("epoch kept (lowest validation loss)", "#808080", ":"),
    )
    return Panels("training_curves", tuple(panels), legend, size=(3.4, 2.4))


def plot_curves(rows: pd.DataFrame) -> Any:
    """:func:`curve_panels` as one figure (two columns: loss, accuracy)."""
    return curve_panels(rows).figure(ncols_max=2)


# ----------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1400px;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ccc}
h3{font-size:1.05em;margin:1.2em 0 .3em}
.meta{color:#555;font-size:.9em}nav a{margin-right:1em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.yes{color:#116611;font-weight:bold}.note{color:#555;font-size:.9em;max-width:70em}.warn{color:#8a4b00;font-size:.9em;max-width:70em}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.85em;max-width:70em}
.panels{display:grid;gap:.8em .6em;margin:.4em 0}
.panel{min-width:0}.panel img{display:block;width:100%;height:auto}
.ptitle{font-size:.8em;font-weight:600;text-align:center;overflow-wrap:anywhere;
margin-bottom:.15em}
.legend{font-size:.8em;color:#333}.key{margin-right:1.2em;white-space:nowrap}
.sw{display:inline-block;width:1.8em;border-top:2px solid;vertical-align:middle;
margin-right:.35em}.sw.dashed{border-top-style:dashed}.sw.dotted{border-top-style:dotted}
table.sortable th[data-col]{cursor:pointer}
table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}
table.sortable th[aria-sort=descending]::after{content:" \\25BC"}
table.heat td.h{text-align:right;font-variant-numeric:tabular-nums;min-width:3.5em}
tr.best td{font-weight:600}
.scale{display:inline-block;width:10em;height:.8em;vertical-align:middle;margin:0 .4em;
border:1px solid #ccc}
"""

#: The sortable tables: a click (or Enter) on a heading with ``data-col`` sorts the rows by that
#: column, ascending then descending; cells sort by their ``data-v`` number when they have one
#: (missing values last), else by their text.
_SORT_JS = """
(function () {
  function key(td) {
    var v = td.getAttribute("data-v");
    if (v !== null) { var f = parseFloat(v); return isNaN(f) ? null : f; }
    return td.textContent.trim().toLowerCase();
  }
  function cmp(a, b) { return a === b ? 0 : (a < b ? -1 : 1); }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("th[data-col]").forEach(function (th) {
      function sort() {
        var col = +th.getAttribute("data-col");
        var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
        table.querySelectorAll("th[aria-sort]").forEach(function (o) {
          o.removeAttribute("aria-sort");
        });
        th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (r, s) {
          var a = key(r.cells[col]), b = key(s.cells[col]);
          if (a === null || b === null) { return (a === null) - (b === null); }
          return dir * cmp(a, b);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (e) { if (e.key === "Enter") { sort(); } });
    });
  });
})();
"""


def _table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    classes: Sequence[Sequence[str]] | None = None,
) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, cell in enumerate(row):
            cls = classes[i][j] if classes else ""
            attr = f' class="{cls}"' if cls else ""
            cells.append(f"<td{attr}>{html.escape(_fmt(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _num(value: Any) -> str:
    """A ``data-v`` sort key: the number in full, or "" (missing)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return repr(float(value))


def _img(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img data-figure="{html.escape(alt)}" alt="{html.escape(alt)}" '
        f'src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}'
        "</figcaption></figure>"
    )


def _legend_html(entries: Sequence[tuple[str, str, str]]) -> str:
    if not entries:
        return ""
    cls = {"-": "", "--": " dashed", ":": " dotted"}
    keys = "".join(
        f'<span class="key"><span class="sw{cls.get(ls, "")}" '
        f'style="border-color:{html.escape(color)}"></span>{html.escape(label)}</span>'
        for label, color, ls in entries
    )
    return f'<div class="legend">{keys}</div>'


def _panels_html(p: Panels, caption: str) -> tuple[str, int]:
    """A small-multiples figure: the legend, a grid of panels (HTML title over each PNG), the
    caption. Returns the HTML and the number of images."""
    w, h = (round(p.size[0] * _DPI), round(p.size[1] * _DPI))
    items = []
    for panel, png in zip(p.panels, p.pngs(), strict=True):
        data = base64.b64encode(png).decode("ascii")
        title = html.escape(panel.title)
        items.append(
            f'<div class="panel"><div class="ptitle">{title}</div>'
            f'<img data-figure="{html.escape(p.name)}" alt="{html.escape(p.name)}: '
            f'{title}" width="{w}" height="{h}" src="data:image/png;base64,{data}">'
            "</div>"
        )
    grid = f"grid-template-columns:repeat(auto-fill,minmax({round(w * 0.8)}px,1fr))"
    return (
        f'<figure class="multiples" id="fig-{html.escape(p.name)}">'
        f'{_legend_html(p.legend)}<div class="panels" style="{grid}">{"".join(items)}</div>'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>",
        len(items),
    )


def _p(text: str, cls: str = "note") -> str:
    return f'<p class="{cls}">{html.escape(text)}</p>'


def _heat_colour(norm: float) -> tuple[str, str]:
    """Background and text colour of a heatmap cell, ``norm`` in [-1, 1] (RdBu: red below,
    white at 0, blue above)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    if not math.isfinite(norm):
        return "#ffffff", "#222222"
    norm = max(-1.0, min(1.0, norm))
    rgba = colormaps["RdBu"](0.5 + norm / 2)
    return to_hex(rgba), "#ffffff" if abs(norm) > 0.6 else "#222222"


def _scale_html(low: str, high: str) -> str:
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    stops = ", ".join(to_hex(colormaps["RdBu"](t)) for t in np.linspace(0, 1, 7))
    return (
        f'{html.escape(low)}<span class="scale" style="background:linear-gradient(to right, '
        f'{stops})"></span>{html.escape(high)}'
    )


def heatmap_html(table: pd.DataFrame) -> str:
    """The attribute x model heatmap of the full table (:func:`full_table`): per model, the
    accuracy minus the majority baseline (diverging colour scale, 0 white, symmetric about 0 at
    the largest gain) and the balanced accuracy (0.5, chance, white; 1 darkest blue). Rows: the
    attributes; sortable by any column."""
    models = order_models(table["model"].unique())
    attributes = sorted(table["attribute"].unique())
    by = table.set_index(["attribute", "model"])
    span = max(0.05, float(np.nanmax(np.abs(table["gain"].to_numpy(float)))))
    col = 2
    head2 = []
    for _kind in ("gain", "balanced_accuracy"):
        for m in models:
            head2.append(f'<th data-col="{col}" tabindex="0">{html.escape(m)}</th>')
            col += 1
    n = len(models)
    head = (
        f'<tr><th rowspan="2" data-col="0" tabindex="0">attribute</th>'
        f'<th rowspan="2" data-col="1" tabindex="0">positives</th>'
        f'<th colspan="{n}">{html.escape(GAIN_LABEL)}</th>'
        f'<th colspan="{n}">balanced accuracy</th></tr><tr>{"".join(head2)}</tr>'
    )
    body = []
    for a in attributes:
        pos = float(table.loc[table["attribute"] == a, "positives"].iloc[0])
        cells = [f"<td>{html.escape(a)}</td>", f'<td class="h" data-v="{_num(pos)}">{pos:.1%}</td>']
        for kind in ("gain", "balanced_accuracy"):
            for m in models:
                v = float(by.at[(a, m), kind]) if (a, m) in by.index else math.nan
                norm = v / span if kind == "gain" else (v - 0.5) / 0.5
                bg, fg = _heat_colour(norm)
                text = (
                    "–" if not math.isfinite(v) else (f"{v:+.3f}" if kind == "gain" else f"{v:.3f}")
                )
                best = (a, m) in by.index and bool(by.at[(a, m), "best"])
                mark = ' title="best model"' if best else ""
                cells.append(
                    f'<td class="h" data-v="{_num(v)}"{mark} style="background:{bg};'
                    f'color:{fg}">{text}{" ★" if best else ""}</td>'
                )
        body.append("<tr>" + "".join(cells) + "</tr>")
    scales = (
        f"Colour: {GAIN_LABEL} "
        + _scale_html(f"{-span:+.2f}", f"{span:+.2f}")
        + " · balanced accuracy "
        + _scale_html("0", "1")
    )
    return (
        f'<p class="legend">{scales} · ★ the best model of the attribute</p>'
        f'<table class="heat sortable"><thead>{head}</thead><tbody>{"".join(body)}</tbody>'
        "</table>"
    )


#: The full table's columns in index.html: (heading, full_table column or None, numeric).
_FULL_HTML: tuple[tuple[str, str, bool], ...] = (
    ("attribute", "attribute", False),
    ("model", "model", False),
    ("positives", "positives", True),
    ("majority baseline", "majority_baseline", True),
    ("validation accuracy (selection)", "selection_score", True),
    ("accuracy [95% CI]", "accuracy", True),
    ("accuracy − baseline", "gain", True),
    ("balanced accuracy [95% CI]", "balanced_accuracy", True),
    ("F1", "f1", True),
    ("ROC AUC [95% CI]", "roc_auc", True),
    ("Brier", "brier", True),
    ("chosen hyper-parameters", "hyperparameters", False),
    ("p_holm vs baseline", "p_baseline_holm", True),
    ("beats baseline", "beats_baseline", False),
    ("p_holm AUC vs 0.5", "p_auc_holm", True),
)


def full_table_html(table: pd.DataFrame) -> str:
    """:func:`full_table` as a sortable HTML table (best models' rows in bold)."""
    head = "".join(
        f'<th data-col="{i}" data-key="{key}" tabindex="0">{html.escape(h)}</th>'
        for i, (h, key, _) in enumerate(_FULL_HTML)
    )
    body = []
    for r in table.itertuples(index=False):
        cells = []
        for _, key, numeric in _FULL_HTML:
            v = getattr(r, key)
            if key == "accuracy":
                text = f"{r.accuracy:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"
            elif key == "balanced_accuracy" and not pd.isna(r.ba_ci_low):
                text = f"{v:.3f} [{r.ba_ci_low:.3f}, {r.ba_ci_high:.3f}]"
            elif key == "roc_auc" and not pd.isna(r.auc_ci_low):
                text = f"{v:.3f} [{r.auc_ci_low:.3f}, {r.auc_ci_high:.3f}]"
            elif key == "p_auc_holm":
                text = "–" if pd.isna(v) else f"{v:.2g}"
            elif key == "positives":
                text = f"{v:.1%}"
            elif key == "gain":
                text = f"{v:+.3f}"
            elif key == "p_baseline_holm":
                text = f"{v:.2g}"
            elif key == "beats_baseline":
                text = "yes" if v else "no"
            else:
                text = _fmt(v)
            cls = (
                ' class="num"'
                if numeric
                else (' class="yes"' if key == "beats_baseline" and v else "")
            )
            sort = f' data-v="{_num(v)}"' if numeric else ""
            cells.append(f"<td{cls}{sort}>{html.escape(text)}</td>")
        row_cls = ' class="best"' if r.best else ""
        body.append(f"<tr{row_cls}>{''.join(cells)}</tr>")
    return (
        f'<table class="full sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _href(target: Path, out: Path) -> str:
    """A relative link from the report folder ``out`` to ``target`` (a folder ends in /)."""
    rel = os.path.relpath(target, out)
    return quote(rel, safe="/=+-._~") + ("/" if target.is_dir() else "")


def _files_html(layout: store.Layout, out: Path, tables: list[dict[str, Any]]) -> str:
    """The files of the report and the store's results and errors tables, as relative links."""
    items = [
        '<li><a href="summary.csv">summary.csv</a>: the summary table, one row per attribute</li>',
        '<li><a href="summary.md">summary.md</a>: the same as Markdown</li>',
        '<li><a href="table.csv">table.csv</a>: the full table, one row per attribute and '
        "model</li>",
    ]
    if layout.results.is_dir():
        items.append(
            f'<li><a href="{_href(layout.results, out)}">results/</a>: the results '
            "table (Parquet), one row per fit, failed fits included</li>"
        )
    errors = []
    for t in tables:
        path = t.get("errors_path")
        if not path or not Path(path).is_dir():
            continue
        rows = sum(int(f.get("rows", 0)) for f in (t["manifest"].get("errors_files") or []))
        errors.append((rows, t["id"], Path(path)))
    if errors:
        lines = "".join(
            f'<li><a href="{_href(p, out)}">{html.escape(layout.rel(p))}/</a>: '
            f"{rows:,} row{'s' if rows != 1 else ''} ({html.escape(tid)})</li>"
            for rows, tid, p in sorted(errors, key=lambda e: (-e[0], e[1]))
        )
        items.append(
            f"<li>errors tables (Parquet: the images a stage could not use, with the "
            f"stage and the reason):<ul>{lines}</ul></li>"
        )
    else:
        items.append("<li>errors tables: none in this store</li>")
    return f'<ul class="files">{"".join(items)}</ul>'


# ----------------------------------------------------------------------------- the report


def _choose_map_set(
    store_path: str | os.PathLike[str], ok: pd.DataFrame, feature_set: str | None
) -> str | None:
    if feature_set:
        store.feature_set_manifest(store_path, feature_set)  # StoreError if unknown
        return feature_set
    committed = {
        t["name"]: t["manifest"] for t in store.list_tables(store_path) if t["kind"] == "features"
    }
    used = [fs for fs in ok["feature_set"].unique() if fs in committed] if not ok.empty else []
    if used:  # the largest dimension among the feature sets in the results
        return sorted(used, key=lambda fs: (-int(committed[fs].get("dim") or 0), fs))[0]
    return next(iter(sorted(committed)), None)


def _choose_color(
    store_path: str | os.PathLike[str], summary: pd.DataFrame, color_by: str | None
) -> str | None:
    labels = store.read_manifest(store.Layout(store_path), "labels")
    known = list(labels["attributes"]) if labels else []
    if color_by:
        if color_by not in known:
            raise StoreError(
                f"--color-by {color_by!r}: not an attribute of the labels table "
                f"({', '.join(known[:8])}{', ...' if len(known) > 8 else ''})"
            )
        return color_by
    if not summary.empty:  # the attribute the models separate best from its baseline
        gain = summary["best_accuracy"] - summary["majority_baseline"]
        return str(summary.loc[gain.idxmax(), "attribute"])
    return known[0] if known else None


def replaced_rows(layout: store.Layout, results: pd.DataFrame) -> str:
    """Which results rows describe a feature set that has been replaced (its committed content
    is no longer the one they were fitted on) or removed since: "" when none."""
    out = []
    for fs, rows in results.groupby("feature_set"):
        try:
            current = store.read_manifest(layout, store.features_id(str(fs)))
        except (StoreError, ValueError):
            current = None
        now = store.fs_fingerprint(current) if current is not None else None
        old = rows["feature_set_content"].notna() & (rows["feature_set_content"] != now)
        if old.any():
            state = "replaced since" if current is not None else "gone"
            out.append(f"{int(old.sum())} rows of {fs} ({state})")
    if not out:
        return ""
    return (
        "these results rows describe a feature set version that no longer exists: "
        + "; ".join(out)
        + " (re-run `featstore train` to refit them)"
    )


def build_report(
    store_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    feature_set: str | None = None,
    color_by: str | None = None,
) -> ReportSummary:
    """Write ``index.html``, ``summary.csv``, ``summary.md`` and ``table.csv`` of the store's
    results table to ``out_dir`` (created). ``feature_set``: the feature set of the PCA / t-SNE
    maps (default: the largest-dimension feature set in the results); ``color_by``: the
    attribute colouring them (default: the attribute with the largest gain of its best model
    over the baseline).

    Raises StoreError (nothing written) for a store without a committed results table, an
    unknown feature set or attribute."""
    phases = Phases()
    phases.lap("read results")
    layout = store.open_store(store_path)
    results_manifest = store.read_manifest(layout, "results")
    if results_manifest is None:
        raise StoreError(
            f"{layout.results}: no committed results table (run `featstore train` first)"
        )
    results = store.read_results(layout.root)
    phases.lap("statistics")
    from featstore import multiclass

    failed = results[results["status"] != "ok"].reset_index(drop=True)
    is_multi = multiclass.multiclass_rows(results)
    multi_ok = ok_rows(results[is_multi])
    results = results[~is_multi].reset_index(drop=True)  # binary attribute fits
    ok = ok_rows(results)
    map_set = _choose_map_set(layout.root, ok, feature_set)  # bad names fail before any work
    if color_by:
        _choose_color(layout.root, pd.DataFrame(), color_by)
    summary = summary_table(ok)
    table = full_table(ok, summary=summary)
    color = _choose_color(layout.root, summary, color_by)
    train_size, seed = summary_group(ok) if not ok.empty else (None, None)
    models = tuple(order_models(ok["model"].unique())) if not ok.empty else ()
    summary_set = str(summary["feature_set"].iloc[0]) if not summary.empty else None
    logger.info(
        "results: %d ok, %d failed fits; summary of %d attributes at train_size %s, seed %s",
        len(ok),
        len(failed),
        len(summary),
        train_size,
        seed,
    )
    out = Path(out_dir).expanduser().resolve()

    figures: list[str] = []
    n_images = 0
    parts: dict[str, list[str]] = {sid: [] for sid, _ in SECTIONS}
    stale = replaced_rows(layout, results)
    if stale:  # results that describe a feature set since replaced (or removed)
        logger.warning("results: %s", stale)
        parts["summary"].append(_p(f"Stale: {stale}.", "note stale"))
    rows_text = "the whole train split" if train_size == 0 else f"{train_size} rows"
    where = f"training size {train_size} ({rows_text}), seed {seed}, feature set {summary_set}"

    def add_figure(section: str, name: str, fig: Any, caption: str) -> None:
        nonlocal n_images
        parts[section].append(_img(png_bytes(fig), name, caption))
        figures.append(name)
        n_images += 1
        logger.debug("figure %s drawn", name)

    def add_panels(section: str, panels: Panels, caption: str) -> None:
        nonlocal n_images
        text, count = _panels_html(panels, caption)
        parts[section].append(text)
        figures.append(panels.name)
        n_images += count
        logger.debug("figure %s drawn: %d panels", panels.name, count)

    # --- summary
    headers, cells = display_rows(summary)
    parts["summary"].append(
        '<p class="note">Files: <a href="summary.csv">summary.csv</a> · '
        '<a href="summary.md">summary.md</a> · <a href="table.csv">table.csv</a> · the results '
        'and errors tables of the store: <a href="#files">Files and errors tables</a></p>'
    )
    if cells:
        model_col = headers.index("best")
        base_col = headers.index("beats baseline")
        best_col = headers.index("best beats all others")
        classes = [
            ["num" if 2 <= j < model_col else "" for j in range(len(headers))] for _ in cells
        ]
        for i, (_, r) in enumerate(summary.iterrows()):
            if r["beats_baseline"]:
                classes[i][base_col] = "yes"
                if r["beats_all"]:
                    classes[i][best_col] = "yes"
        parts["summary"].append(_table(headers, cells, classes))
        size_text = "the whole train split" if train_size == 0 else f"{train_size} rows"
        parts["summary"].append(
            _p(
                f"Successful fits at training size {train_size} ({size_text}), seed {seed}, on one "
                "feature set for every attribute (the largest dimension; chosen without looking at "
                "test accuracy, the other sets are in the accuracy-against-dimension plot). "
                "How the winner is chosen: every probe is fitted and tuned on the train "
                "split only (lasso's C by cross-validation, the forest's max_features out of bag, "
                "both by the one-standard-error rule; the dense head stops early on a held-out "
                "tenth of the training rows), then scored once on the validation split: 'best' is "
                "the probe of highest validation accuracy (selection_score; ties: lasso, forest, "
                "dense). Which split each number comes from: the accuracies, intervals and "
                "tests are on the test split, touched once, after every choice was made. What "
                "the intervals resample: 95% Wilson intervals for accuracy, widened by the "
                "design effect of the people in the test split where the store knows identities "
                "(CelebA: ~20 images per person are not 20 independent draws); the balanced "
                "accuracy and AUC intervals of the full table are bootstraps that resample people. "
                "With several seeds the cell also shows the mean ± sd of the test accuracy over "
                "them. 'Best beats all others': every McNemar test of the best model against "
                f"another model is significant at {ALPHA} after Holm's correction across the "
                "attributes of one feature set, training size, seed and model pair; p_holm is the "
                "largest of those adjusted p-values. 'Beats baseline': the best model is more "
                "accurate than always predicting the training majority class and McNemar's test "
                "of the two on the same test images is significant at "
                f"{ALPHA} after Holm's correction across every model and attribute of this table "
                "(one family for the report, evaluate and the notebooks). 'AUC above chance': the "
                "best model's test scores rank positives above negatives (one-sided Mann-Whitney, "
                "AUC against 0.5), Holm-corrected in the same family: McNemar against a constant "
                "has no power on rare attributes, this test has. A best model that does not beat "
                "the baseline is never reported as beating the others ('no: not above "
                "baseline'), in summary.csv too (beats_all; beats_all_models keeps the "
                "comparison alone).",
                "note",
            )
        )
        for line in _score_notes(layout.root, ok, results):
            parts["summary"].append(_p(line, "warn"))
    elif multi_ok.empty:
        parts["summary"].append(_p("No successful fits in the results table."))
    else:
        parts["summary"].append(
            _p(
                "No binary attribute fits: this store's results are "
                "multi-class (see Multi-class targets)."
            )
        )

    # --- multi-class targets
    multi_summary = None
    if not multi_ok.empty:
        from featstore import report_multiclass

        mc_parts, multi_summary = report_multiclass.section(multi_ok, add_panels)
        parts["multiclass"][:0] = mc_parts
    else:
        parts.pop("multiclass")

    # --- which conv base (several bases in the results or retrieval tables)
    phases.lap("bases")
    from featstore.compare import base_table

    at_group = ok[(ok["train_size"] == train_size) & (ok["seed"] == seed)] if not ok.empty else ok
    bases = base_table(layout.root, at_group)
    if len(bases) > 1:
        parts["bases"].append(
            _table(
                [
                    "base",
                    "input",
                    "params",
                    "GFLOPs",
                    "images/s",
                    "validation acc. (chosen by)",
                    "test accuracy",
                    "test balanced acc.",
                    "chosen probe",
                    "retrieval top-5",
                ],
                [
                    [
                        r.base,
                        r.input_hw,
                        _fmt_int(r.params),
                        _fmt(r.flops / 1e9, 2),
                        _fmt(r.images_per_second, 1),
                        _fmt(r.selection_score),
                        _fmt(r.accuracy),
                        _fmt(r.balanced_accuracy),
                        r.probe,
                        _fmt(r.retrieval_top5),
                    ]
                    for r in bases.itertuples(index=False)
                ],
            )
        )
        if bases[[c for c, _ in BASE_SCORES]].notna().any().any():
            add_figure(
                "bases",
                "which_base",
                plot_bases(bases),
                f"Each conv base's scores against its cost. Accuracy and balanced accuracy: "
                f"the test scores, mean over attributes at training size {train_size}, of "
                "the base's (feature set, probe) pair with the best mean validation "
                "accuracy (chosen off the test split; the test split gives the estimate). "
                "Retrieval top-5: top-5 accuracy (a neighbour shares the query's label), "
                "mean over attributes, on the base's raw feature set. Parameters "
                "and FLOPs per image of the base at its input size, and images/s of its "
                "extraction, from the feature set's manifest. Filled and joined: the "
                "Pareto front (no other base is both cheaper and more accurate).",
            )
    else:
        parts.pop("bases")

    # --- heatmap, full table, hyper-parameters
    phases.lap("tables")
    if not table.empty:
        parts["heatmap"].append(heatmap_html(table))
        parts["heatmap"].append(
            _p(
                f"Every attribute (rows) and model (columns) at {where}. Accuracy minus the "
                "majority baseline: how far a model is above always predicting the training "
                "majority class (0: no better; the baseline is high for rare attributes, where "
                "accuracy alone flatters). Balanced accuracy: the mean of the recalls of the two "
                "classes (0.5: chance, whatever the label balance). Positives: the share of test "
                "images with the attribute. Click a heading to sort."
            )
        )
        parts["table"].append(full_table_html(table))
        parts["table"].append(
            _p(
                f"One row per attribute and model at {where} (also in table.csv); the best model "
                "of each attribute (highest validation accuracy) in bold. Validation accuracy: "
                "what the probe was chosen by. Test accuracy with its 95% Wilson interval (by "
                "identity where known); balanced accuracy and ROC AUC with 95% bootstrap intervals "
                "that resample people; Brier: the mean squared error of the test scores. p_holm vs "
                "baseline: McNemar's test against the training-majority constant; p_holm AUC vs "
                "0.5: the one-sided Mann-Whitney test of the scores; both Holm-corrected across "
                "every model and attribute of the table (the summary's family). Chosen "
                "hyper-parameters: C of the lasso (cross-validation), max_features of the forest "
                "(out of bag or cross-validated), both by the one-standard-error rule; the epochs of "
                "the dense head (early stopping on a held-out tenth of the training rows). Click a "
                "heading to sort."
            )
        )
        hp = hyperparameter_summary(ok)
        if hp:
            parts["table"].append("<h3>Chosen hyper-parameters</h3>")
            parts["table"].append(
                _table(
                    [
                        "model",
                        "hyper-parameter",
                        f"chosen over the {len(summary)} attributes (count)",
                    ],
                    [list(row) for row in hp],
                )
            )
    else:
        parts["heatmap"].append(_p("No successful fits."))
        parts["table"].append(_p("No successful fits."))

    # --- ROC curves
    phases.lap("ROC curves")
    if not summary.empty:
        fits = summary_fits(ok)
        roc = roc_panels(fits, summary)
        missing = int(fits["roc_fpr"].isna().sum())
        if roc.panels:
            add_panels(
                "roc",
                roc,
                f"Test ROC curves at {where}: every model of each attribute, the best "
                "model (the summary's, by validation accuracy) thick and solid, the "
                "others dashed; "
                "dotted: chance. AUC: the best model's.",
            )
        if missing:
            parts["roc"].append(
                _p(
                    f"{missing} of {len(fits)} fits have no ROC points: fits whose test labels are "
                    "of one class, or results written by a featstore that did not store them "
                    "(`featstore train --overwrite` fits them again with the points)."
                )
            )
    else:
        parts["roc"].append(_p("No successful fits."))

    # --- accuracy against dimension
    phases.lap("accuracy plots")
    if not ok.empty:
        add_panels(
            "dimension",
            accuracy_panels(at_group, "dim", "feature dimension", name="accuracy_vs_dimension"),
            f"Test accuracy minus the attribute's majority baseline against feature "
            f"dimension at training size {train_size}, seed {seed}: one y-scale for "
            "every panel, 0 (dotted) is the baseline; feature sets of equal dimension "
            "are averaged; first panel: mean over attributes.",
        )
    else:
        parts["dimension"].append(_p("No successful fits."))

    # --- accuracy against training-set size
    if not ok.empty:
        n_sizes = ok.groupby("feature_set")["n_train"].nunique()
        dims = ok.groupby("feature_set")["dim"].max()
        order = sorted(n_sizes.index, key=lambda fs: (-n_sizes[fs], fs != map_set, -dims[fs], fs))
        size_set = order[0]
        add_panels(
            "train-size",
            accuracy_panels(
                ok[ok["feature_set"] == size_set],
                "n_train",
                "training rows",
                name="accuracy_vs_train_size",
            ),
            f"Test accuracy minus the majority baseline against training rows on "
            f"{size_set} (the feature set with the most training sizes: "
            f"{int(n_sizes[size_set])}), mean over seeds; one y-scale for every panel, 0 "
            "(dotted) is the baseline.",
        )
    else:
        parts["train-size"].append(_p("No successful fits."))

    # --- confusion matrices
    phases.lap("confusion matrices")
    if not summary.empty:
        keys = summary[["attribute", "feature_set", "train_size", "seed", "best_model"]].rename(
            columns={"best_model": "model"}
        )
        best_rows = keys.merge(ok, on=["attribute", "feature_set", "train_size", "seed", "model"])
        add_panels(
            "confusion",
            confusion_panels(best_rows),
            f"Test confusion matrices of the best model per attribute (the summary's "
            f"choice, on {summary_set}): rows the true class, columns the predicted one; "
            "count and share of the true class; colour: that share.",
        )
    else:
        parts["confusion"].append(_p("No successful fits."))

    # --- calibration and Brier
    phases.lap("calibration")
    if not summary.empty:
        fits = summary_fits(ok)
        cal = calibration_panels(fits)
        if cal.panels:
            add_panels(
                "calibration",
                cal,
                f"Calibration of the test scores at {where}, every attribute pooled per "
                "model: the share of positives among the test images whose score fell "
                "in each tenth of [0, 1], against their mean score (dotted: perfect "
                "calibration; point size: images in the bin). Brier: the mean squared "
                "error of the scores, averaged over the attributes (lower is better; "
                "0.25 for a constant 0.5). Scores are probabilities: the lasso's and the "
                "dense head's sigmoid, the forest's share of trees.",
            )
        else:
            parts["calibration"].append(
                _p(
                    "No fit stores its test scores (results written before y_score existed: "
                    "`featstore train` fits them again with the scores)."
                )
            )
    else:
        parts["calibration"].append(_p("No successful fits."))

    # --- seeds
    seeds = seed_table(ok)
    if seeds.empty:
        parts["seeds"].append(
            _p(
                "Every cell was run with one seed: no spread over training draws to show (the "
                "study configs, conf/train.yaml and conf/seed_male_8k.yaml, run three)."
            )
        )
    else:
        parts["seeds"].append(
            _table(
                [
                    "attribute",
                    "feature set",
                    "training size",
                    "model",
                    "seeds",
                    "test accuracy mean ± sd",
                    "validation accuracy mean ± sd",
                ],
                [
                    [
                        r.attribute,
                        r.feature_set,
                        int(r.train_size),
                        r.model,
                        int(r.seeds),
                        f"{r.accuracy_mean:.3f} ± {r.accuracy_sd:.3f}",
                        "–"
                        if pd.isna(r.selection_mean)
                        else f"{r.selection_mean:.3f} ± {r.selection_sd:.3f}",
                    ]
                    for r in seeds.itertuples(index=False)
                ],
            )
        )
        parts["seeds"].append(
            _p(
                "Cells fitted with several seeds (a new draw of the training subsample, the CV "
                "folds, the bootstrap samples and the weight initialisation each): the mean and "
                "standard deviation over the seeds. A difference between two probes smaller than "
                "these spreads is not a finding."
            )
        )

    # --- maps
    phases.lap("PCA and t-SNE maps")
    if map_set is not None and color is not None:
        x, y = map_points(layout.root, map_set, color)
        if len(x) >= 3:
            parts["maps"].append(
                _p(f"{len(x)} test images of {map_set} (dim {x.shape[1]}), coloured by {color}.")
            )
            add_panels(
                "maps",
                map_panels(x, y, feature_set=map_set, color_by=color),
                f"Left: the first two principal components of the test embeddings (axes: "
                f"the share of their variance each explains). Right: t-SNE (perplexity "
                f"{tsne_perplexity(len(x)):.0f}, on the first 50 principal components of a "
                f"larger dimension); "
                f"its axes have no units. Coloured by {color}.",
            )
        else:
            parts["maps"].append(_p(f"{map_set}: fewer than 3 images; no map."))
    else:
        parts["maps"].append(_p("No committed feature set or no labels to map."))

    # --- training curves
    phases.lap("training curves")
    curves = representative_curves(ok, summary) if not ok.empty else ok
    if len(curves):
        add_panels(
            "curves",
            curve_panels(curves),
            "Loss and accuracy per epoch of the dense heads with the highest, median and "
            "lowest test accuracy in the summary; the loss panels share one y-scale, the "
            "accuracy panels another.",
        )
    else:
        parts["curves"].append(_p("No dense heads with a training history in the results."))

    # --- manifests
    phases.lap("manifests and files")
    # every committed feature set: the raw (extracted) sets too, which no probe trains on
    # when the grid runs on their reductions
    used = sorted(
        set(results["feature_set"].dropna().unique())
        | {t["name"] for t in store.list_tables(layout.root) if t["kind"] == "features"}
    )
    if map_set is not None and map_set not in used:
        used.append(map_set)
    mrows = manifest_rows(layout.root, used)
    mcols = [
        "feature_set",
        "model",
        "layers",
        "pooling",
        "weights",
        "reducer",
        "dim",
        "ok",
        "errors",
        "created",
    ]
    parts["feature-sets"].append(
        _table(
            [
                "feature set",
                "model",
                "layers",
                "pooling",
                "weights",
                "reduced by",
                "dim",
                "images ok",
                "errors",
                "created",
            ],
            [
                [r.get(c) for c in mcols]
                if r["committed"]
                else [r["feature_set"], "not committed", *[""] * (len(mcols) - 2)]
                for r in mrows
            ],
        )
    )

    # --- failed fits
    if failed.empty:
        parts["failed"].append(_p("None: every fit in the results table succeeded."))
    else:
        parts["failed"].append(
            _p(
                f"{len(failed)} fit{'s' if len(failed) != 1 else ''} failed; "
                "they are the rows with status 'error' in the results table."
            )
        )
        counts = failed.groupby("reason", dropna=False).size().sort_values(ascending=False)
        parts["failed"].append(
            _table(["reason", "fits"], [[str(k), int(v)] for k, v in counts.items()])
        )
        fcols = ["attribute", "feature_set", "model", "train_size", "seed", "reason"]
        shown = failed[fcols].head(MAX_FAILED_ROWS)
        parts["failed"].append(_table(fcols, shown.astype(object).values.tolist()))
        if len(failed) > MAX_FAILED_ROWS:
            parts["failed"].append(_p(f"… and {len(failed) - MAX_FAILED_ROWS} more."))

    # --- files
    parts["files"].append(_files_html(layout, out, store.list_tables(layout.root)))
    parts["files"].append(
        _p(
            "Links are relative to this folder, so they work wherever the store and the report "
            "folder are opened together. The tables are Parquet folders: read them with DuckDB, "
            "pandas, polars, pyarrow or Spark (see the README)."
        )
    )

    if ok.empty and not multi_ok.empty:  # a multi-class study only: no empty binary sections
        for sid in (
            "heatmap",
            "table",
            "roc",
            "dimension",
            "train-size",
            "confusion",
            "calibration",
            "seeds",
            "curves",
        ):
            parts.pop(sid, None)

    # --- write
    phases.lap("write")
    out.mkdir(parents=True, exist_ok=True)
    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    shown_sections = [(sid, title) for sid, title in SECTIONS if sid in parts]
    nav = "".join(f'<a href="#{sid}">{html.escape(title)}</a>' for sid, title in shown_sections)
    body = "".join(
        f'<section id="{sid}"><h2>{html.escape(title)}</h2>{"".join(parts[sid])}</section>'
        for sid, title in shown_sections
    )
    meta = (
        f"Store {layout.root} · results table of {results_manifest.get('created', '?')}: "
        f"{len(ok)} successful and {len(failed)} failed fits, {ok['attribute'].nunique()} "
        f"attributes, models {', '.join(models) or '–'} · report made {created}"
    )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>featstore report: {html.escape(layout.root.name)}</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<h1>featstore report: {html.escape(layout.root.name)}</h1>"
        f'<p class="meta">{html.escape(meta)}</p><nav>{nav}</nav>{body}'
        f"<script>{_SORT_JS}</script></body></html>\n"
    )
    index = out / "index.html"
    csv_path = out / "summary.csv"
    md_path = out / "summary.md"
    table_path = out / "table.csv"
    markdown = to_markdown(summary)
    _write_text(index, page)
    _write_text(csv_path, summary.to_csv(index=False))
    _write_text(md_path, markdown)
    _write_text(table_path, table.to_csv(index=False))
    if multi_summary is not None:
        _write_text(out / "multiclass.csv", multi_summary.to_csv(index=False))
    phases.lap(None)
    logger.info("report with %d figures (%d images) written to %s", len(figures), n_images, index)
    return ReportSummary(
        store=str(layout.root),
        out_dir=str(out),
        index_html=str(index),
        summary_csv=str(csv_path),
        summary_md=str(md_path),
        figures=tuple(figures),
        rows_ok=len(ok),
        rows_error=len(failed),
        attributes=len(summary),
        models=models,
        train_size=train_size,
        seed=seed,
        map_feature_set=map_set,
        color_by=color,
        markdown=markdown,
        summary=summary,
        table_csv=str(table_path),
        table=table,
        images=n_images,
        timing=phases,
        multiclass_rows=len(multi_ok),
    )


def _score_notes(root: Path, ok: pd.DataFrame, results: pd.DataFrame) -> list[str]:
    """Warning lines of the summary: degenerate feature sets that have fits, and fits written
    before selection_score / y_score existed (their "best" falls back to test accuracy)."""
    from featstore import spread

    notes = []
    for name in sorted(ok["feature_set"].dropna().unique()):
        try:
            flag = spread.note(store.feature_set_manifest(root, name))
        except StoreError:
            continue
        if flag:
            notes.append(
                f"Feature set {name} is {flag}: the probes standardize it, but its "
                "results say more about the layer, pooling or weights than about "
                "the attributes."
            )
    old = int(ok["selection_score"].isna().sum())
    if old:
        notes.append(
            f"{old} of {len(ok)} fits were written before featstore recorded "
            "selection_score and y_score: where a probe lacks it, 'best' falls back "
            "to test accuracy (marked 'by test: old fits') and those fits have no "
            "calibration or AUC test; `featstore train` fits them again."
        )
    return notes


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)

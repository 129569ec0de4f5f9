"""The report's statistics tables: the summary (one row per attribute), the full table (one
row per attribute and model), the spread over seeds, the chosen hyper-parameters, the feature
sets' manifests, and their text formatting (summary.md, the HTML cells). See
:mod:`featstore.report` for what the summary compares."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from featstore import store
from featstore.errors import StoreError

#: The order models are listed in; other models (bottleneck..., multilabel) follow by name.
MODEL_ORDER: tuple[str, ...] = ("lasso", "forest", "dense")
#: Significance level of the model comparisons.
ALPHA = 0.05


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


#: The per-model columns of :func:`summary_table`: ``<model>_<suffix>``.
_SUMMARY_PER_MODEL: tuple[str, ...] = (
    "accuracy",
    "ci_low",
    "ci_high",
    "selection",
    "auc",
    "seeds",
    "seed_mean",
    "seed_sd",
)


def _summary_columns(models: Sequence[str]) -> list[str]:
    """The columns of :func:`summary_table` for ``models`` (in the report's order)."""
    return [
        "attribute",
        "feature_set",
        "dim",
        "train_size",
        "seed",
        "n_train",
        "n_test",
        "majority_baseline",
        *[f"{m}_{s}" for m in models for s in _SUMMARY_PER_MODEL],
        "n_models",
        "best_model",
        "chosen_by",
        "best_selection_score",
        "best_accuracy",
        "runner_up",
        "runner_up_accuracy",
        "gap",
        "gap_ci_low",
        "gap_ci_high",
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
    runner_up_accuracy, gap, gap_ci_low, gap_ci_high (best minus runner-up test accuracy and its
    paired 95% bootstrap interval, by person where identities are known), tied, max_p_holm, beats_all_models (the pairwise comparisons alone),
    beats_all (the same, guarded: False where the best model does not beat the baseline),
    p_baseline, p_baseline_holm, beats_baseline (McNemar against the majority constant),
    p_auc, p_auc_holm, beats_chance (the best model's AUC against 0.5: a test with power under
    imbalance), verdict (the text index.html shows)."""
    from featstore import evaluate

    models = order_models(ok["model"].unique()) if not ok.empty else []
    columns = _summary_columns(models)
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
            **_model_cells(b, rows, models, spread),
            **_best_cells(b, vs_baseline.loc[(b.attribute, b.best_model)]),
        }
        rec["verdict"] = _verdict(pd.Series(rec))
        records.append(rec)
    return pd.DataFrame.from_records(records, columns=columns)


def _model_cells(
    b: Any,
    rows: pd.DataFrame,
    models: Sequence[str],
    spread: dict[tuple[str, str, str], tuple[int, float, float]],
) -> dict[str, Any]:
    """The per-model cells of one attribute's summary row (``b``: its best_model_table row,
    ``rows``: its fits by model)."""
    rec: dict[str, Any] = {}
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
    return rec


def _best_cells(b: Any, test: pd.Series) -> dict[str, Any]:
    """The best model's cells of one attribute's summary row: its comparison with the others
    (``b``: the best_model_table row) and with the baseline (``test``: its baseline_family row)."""
    return {
        "n_models": int(b.n_models),
        "best_model": b.best_model,
        "chosen_by": b.chosen_by,
        "best_selection_score": float(b.best_selection_score),
        "best_accuracy": float(b.best_accuracy),
        "runner_up": b.runner_up,
        "runner_up_accuracy": float(b.runner_up_accuracy),
        "gap": float(b.gap),
        "gap_ci_low": float(b.gap_ci_low),
        "gap_ci_high": float(b.gap_ci_high),
        "tied": bool(b.tied),
        "max_p_holm": float(b.max_p_holm),
        "beats_all_models": bool(b.beats_all),
        "beats_all": bool(b.beats_all) and bool(test["beats_baseline"]),
        "p_baseline": float(test["p_value"]),
        "p_baseline_holm": float(test["p_holm"]),
        "beats_baseline": bool(test["beats_baseline"]),
        "p_auc": float(test["p_auc"]),
        "p_auc_holm": float(test["p_auc_holm"]),
        "beats_chance": bool(test["beats_chance"]),
    }


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


def _gap_cell(row: pd.Series) -> str:
    """The best model's lead over the runner-up in test accuracy, with its paired interval."""
    gap = row.get("gap", math.nan)
    if gap is None or pd.isna(gap):
        return "–"
    low, high = row.get("gap_ci_low", math.nan), row.get("gap_ci_high", math.nan)
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return f"{gap:+.3f}"
    return f"{gap:+.3f} [{low:+.3f}, {high:+.3f}]"


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
        "best − runner-up [95% CI]",
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
                _gap_cell(r),
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

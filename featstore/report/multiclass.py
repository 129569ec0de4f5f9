"""The report's multi-class section (results rows with ``n_classes > 2``: ``train.target:
class``): the summary table of every probe with the winner chosen by ``selection_score``, the
confusion matrix of each probe as a heatmap (rows normalized, counts shown) and per-class recall
bars with the class sizes. :func:`featstore.report.build_report` calls :func:`section`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from featstore import multiclass
from featstore.report import captions
from featstore.report.html import _p, _table
from featstore.report.plots import Panel, Panels
from featstore.report.tables import ALPHA, _fmt, order_models

CSV_NAME = "multiclass.csv"


def shown_group(ok: pd.DataFrame) -> pd.DataFrame:
    """The rows the figures show: one (feature set, training size, seed), the feature set of
    largest dimension, the largest training size (0: the whole split) and the smallest seed."""
    keyed = ok.assign(_size=ok["train_size"].where(ok["train_size"] > 0, np.iinfo(np.int64).max))
    first = keyed.sort_values(
        ["dim", "_size", "seed", "feature_set"], ascending=[False, False, True, True]
    ).iloc[0]
    return ok[
        (ok["feature_set"] == first["feature_set"])
        & (ok["train_size"] == first["train_size"])
        & (ok["seed"] == first["seed"])
    ]


def confusion_panels(rows: pd.DataFrame) -> Panels:
    """One heatmap per probe: rows the true class, columns the predicted, in the order of
    ``classes``; colour the share of the true class (each row sums to 1), text the count."""
    panels = []
    by_model = {r.model: r for r in rows.itertuples(index=False)}
    for model in order_models(list(by_model)):
        r = by_model[model]
        cm = np.asarray(r.confusion, dtype=float)
        names = list(r.classes)

        def _draw(ax: Any, cm: np.ndarray = cm, names: list[str] = names) -> None:
            share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
            ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
            k = len(names)
            for i in range(k):
                for j in range(k):
                    ax.text(
                        j,
                        i,
                        f"{int(cm[i, j])}",
                        ha="center",
                        va="center",
                        fontsize=8 if k <= 8 else 6,
                        color="white" if share[i, j] > 0.6 else "black",
                    )
            ax.set_xticks(range(k), names, fontsize=7, rotation=45, ha="right")
            ax.set_yticks(
                range(k), [f"{n} ({int(cm[i].sum())})" for i, n in enumerate(names)], fontsize=7
            )
            ax.set_xlabel("predicted", fontsize=8)
            ax.set_ylabel("true (test images)", fontsize=8)

        panels.append(
            Panel(f"{model} · accuracy {r.accuracy:.3f} · macro-F1 {r.macro_f1:.3f}", _draw)
        )
    side = 1.0 + 0.45 * max((len(r.classes) for r in by_model.values()), default=4)
    return Panels("multiclass_confusion", tuple(panels), size=(max(3.2, side), max(3.0, side)))


def recall_panels(rows: pd.DataFrame) -> Panels:
    """Per-class recall of each probe as bars (one panel per probe), the class sizes in the
    test split under the class names; the dotted line is the balanced accuracy."""
    panels = []
    by_model = {r.model: r for r in rows.itertuples(index=False)}
    for model in order_models(list(by_model)):
        r = by_model[model]
        pc = multiclass.per_class(np.asarray(r.confusion))
        names = list(r.classes)

        def _draw(
            ax: Any,
            pc: pd.DataFrame = pc,
            names: list[str] = names,
            ba: float = float(r.balanced_accuracy),
        ) -> None:
            x = np.arange(len(names))
            ax.bar(x, pc["recall"].fillna(0.0), color="#4c72b0")
            ax.axhline(ba, ls=":", color="black", lw=1)
            ax.set_ylim(0, 1.05)
            ax.set_xticks(x, [f"{n}\nn={s}" for n, s in zip(names, pc["support"])], fontsize=7)
            ax.set_ylabel("recall (test)", fontsize=8)

        panels.append(Panel(f"{model} · balanced accuracy {r.balanced_accuracy:.3f}", _draw))
    return Panels(
        "multiclass_recall",
        tuple(panels),
        size=(max(3.2, 0.7 * max((len(r.classes) for r in by_model.values()), default=4)), 2.6),
    )


#: The multi-class summary table's headings.
HEADERS = [
    "feature set",
    "training size",
    "seed",
    "probe",
    "classes",
    "test images",
    "validation acc. (chosen by)",
    "test accuracy [95% CI]",
    "balanced acc. [95% CI]",
    "macro-F1 [95% CI]",
    "majority class",
    "p_holm vs majority",
    "best",
    "best beats all others",
]


#: The bootstrap intervals of the results rows, shown beside their numbers (and in the CSV).
INTERVAL_COLUMNS = ["ba_ci_low", "ba_ci_high", "macro_f1_ci_low", "macro_f1_ci_high"]


def with_intervals(summary: pd.DataFrame, ok: pd.DataFrame) -> pd.DataFrame:
    """``summary`` (multiclass.summary_table of ``ok``) with each probe's bootstrap intervals of
    the balanced accuracy and macro-F1 from its results row (null for fits written before
    them)."""
    keys = ["feature_set", "train_size", "seed", "model"]
    cols = [c for c in INTERVAL_COLUMNS if c not in summary.columns]
    extra = ok.reindex(columns=[*keys, *cols]).drop_duplicates(keys)
    return summary.merge(extra, on=keys, how="left")


def _with_ci(value: Any, low: Any, high: Any) -> str:
    if pd.isna(low) or pd.isna(high):
        return _fmt(value)
    return f"{_fmt(value)} [{_fmt(low)}, {_fmt(high)}]"


def _row(r: Any) -> list[Any]:
    """One probe's cells of the summary table (``r``: a :func:`with_intervals` row)."""
    return [
        r.feature_set,
        int(r.train_size),
        int(r.seed),
        r.model,
        int(r.n_classes),
        int(r.n_test),
        _fmt(r.selection_score),
        f"{_fmt(r.accuracy)} [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]",
        _with_ci(r.balanced_accuracy, r.ba_ci_low, r.ba_ci_high),
        _with_ci(r.macro_f1, r.macro_f1_ci_low, r.macro_f1_ci_high),
        _fmt(r.majority_baseline),
        "<0.001" if r.p_holm_baseline < 0.001 else _fmt(r.p_holm_baseline),
        "best" if r.best else "",
        ("yes" if r.best_beats_all else "no") if r.best else "",
    ]


def section(
    ok: pd.DataFrame, panels_html: Callable[[Panels, str], str]
) -> tuple[list[str], pd.DataFrame]:
    """The section's HTML parts (each figure's HTML from ``panels_html(panels, caption)``)
    and the summary table (written as multiclass.csv)."""
    summary = with_intervals(multiclass.summary_table(ok, alpha=ALPHA), ok)
    rows = shown_group(ok)
    r0 = rows.iloc[0]
    where = f"{r0['feature_set']}, training size {int(r0['train_size'])}, seed {int(r0['seed'])}"
    parts = [
        _table(HEADERS, [_row(r) for r in summary.itertuples(index=False)]),
        _p(captions.MULTICLASS.format(alpha=ALPHA, csv=CSV_NAME)),
        panels_html(confusion_panels(rows), captions.MULTICLASS_CONFUSION.format(where=where)),
        panels_html(recall_panels(rows), captions.MULTICLASS_RECALL.format(where=where)),
    ]
    return parts, summary

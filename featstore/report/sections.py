"""The sections of index.html, in page order: each :class:`Section` has its id, its heading and
``render(ctx)``, which returns the section's HTML parts (None: the section is left out).
:func:`featstore.report.build_report` runs them in this order, starting the timing phase a
section names before it (the report's timing line lists the phases in the order they ran)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from featstore import store
from featstore.comparison import base_table
from featstore.errors import StoreError
from featstore.report import captions
from featstore.report.context import ReportContext
from featstore.report.html import _files_html, _p, _table, full_table_html, heatmap_html
from featstore.report.maps import map_panels, map_points, tsne_perplexity
from featstore.report.plots import (
    BASE_SCORES,
    accuracy_panels,
    calibration_panels,
    confusion_panels,
    curve_panels,
    plot_bases,
    representative_curves,
    roc_panels,
)
from featstore.report.tables import (
    ALPHA,
    _fmt,
    _fmt_int,
    display_rows,
    hyperparameter_summary,
    manifest_rows,
    replaced_rows,
    seed_table,
    summary_fits,
)

logger = logging.getLogger(__package__)

#: At most this many failed fits listed one by one in the HTML (all are in the results table).
MAX_FAILED_ROWS = 500

Parts = list[str] | None


@dataclass(frozen=True)
class Section:
    """One section of index.html. ``phase``: the timing phase that starts with it (None: the
    running one goes on); ``binary``: about binary attribute fits, left out of a multi-class
    study."""

    id: str
    title: str
    render: Callable[[ReportContext], Parts]
    phase: str | None = None
    binary: bool = False


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
            notes.append(captions.DEGENERATE_SET.format(name=name, flag=flag))
    old = int(ok["selection_score"].isna().sum())
    if old:
        notes.append(captions.OLD_FITS.format(old=old, total=len(ok)))
    return notes


def _summary_classes(summary: pd.DataFrame, headers: list[str]) -> list[list[str]]:
    """The CSS classes of the summary table's cells: numbers, and the verdicts that read yes."""
    model_col = headers.index("best")
    base_col = headers.index("beats baseline")
    best_col = headers.index("best beats all others")
    classes = [
        ["num" if 2 <= j < model_col else "" for j in range(len(headers))]
        for _ in range(len(summary))
    ]
    for i, (_, r) in enumerate(summary.iterrows()):
        if r["beats_baseline"]:
            classes[i][base_col] = "yes"
            if r["beats_all"]:
                classes[i][best_col] = "yes"
    return classes


def summary_section(ctx: ReportContext) -> Parts:
    parts = []
    stale = replaced_rows(ctx.layout, ctx.results)
    if stale:  # results that describe a feature set since replaced (or removed)
        logger.warning("results: %s", stale)
        parts.append(_p(captions.STALE.format(stale=stale), "note stale"))
    headers, cells = display_rows(ctx.summary)
    parts.append(captions.SUMMARY_FILES_HTML)
    if cells:
        parts.append(_table(headers, cells, _summary_classes(ctx.summary, headers)))
        text = captions.SUMMARY.format(
            train_size=ctx.train_size, size_text=ctx.size_text, seed=ctx.seed, alpha=ALPHA
        )
        parts.append(_p(text, "note"))
        parts += _pooled_parts(ctx)
        for line in _score_notes(ctx.layout.root, ctx.ok, ctx.results):
            parts.append(_p(line, "warn"))
    elif ctx.multi_ok.empty:
        parts.append(_p(captions.SUMMARY_NO_FITS))
    else:
        parts.append(_p(captions.SUMMARY_MULTICLASS_ONLY))
    return parts


#: The headings of the summary's probe-against-probe table over all attributes.
POOLED_HEADERS = [
    "probe A",
    "probe B",
    "attributes",
    "test images",
    "accuracy A",
    "accuracy B",
    "A − B [95% CI]",
    "p_holm",
]


def _pooled_parts(ctx: ReportContext) -> Parts:
    """Each probe against each other over all the summary's attributes at once
    (:func:`featstore.evaluate.pooled_comparisons` of the summary's fits)."""
    from featstore import evaluate

    pooled = evaluate.pooled_comparisons(summary_fits(ctx.ok, ctx.summary_set), alpha=ALPHA)
    if pooled.empty:
        return []
    rows = [
        [
            r.model_a,
            r.model_b,
            str(r.attributes),
            str(r.n),
            _fmt(r.accuracy_a),
            _fmt(r.accuracy_b),
            f"{r.gap:+.3f} [{r.gap_ci_low:+.3f}, {r.gap_ci_high:+.3f}]",
            f"{r.p_holm:.2g}" + (" (significant)" if r.significant else ""),
        ]
        for r in pooled.itertuples(index=False)
    ]
    return [
        _table(POOLED_HEADERS, rows),
        _p(captions.POOLED.format(where=ctx.where), "note"),
    ]


def multiclass_section(ctx: ReportContext) -> Parts:
    if ctx.multi_ok.empty:
        return None
    from featstore.report import multiclass as report_multiclass  # scipy, through evaluate

    parts, ctx.multi_summary = report_multiclass.section(ctx.multi_ok, ctx.panels)
    return parts


def heatmap_section(ctx: ReportContext) -> Parts:
    if ctx.table.empty:
        return [_p(captions.NO_FITS)]
    return [heatmap_html(ctx.table), _p(captions.HEATMAP.format(where=ctx.where))]


#: The "Which conv base" table's headings.
BASE_HEADERS = [
    "base",
    "input",
    "params",
    "GFLOPs",
    "images/s",
    "validation acc. (chosen by)",
    "test accuracy",
    "test balanced acc.",
    "chosen probe",
    "best − this base [95% CI]",
    "p_holm vs best",
    "retrieval top-5",
]


def _vs_best(r: Any) -> tuple[str, str]:
    """A base's cells against the best base: the accuracy gap with its interval, p_holm."""
    if pd.isna(r.vs_best_gap):
        return "–", "–"
    if r.vs_best_gap == 0 and pd.isna(r.vs_best_p):
        return "best", ""
    gap = f"{r.vs_best_gap:+.3f} [{r.vs_best_ci_low:+.3f}, {r.vs_best_ci_high:+.3f}]"
    p = "–" if pd.isna(r.vs_best_p_holm) else f"{r.vs_best_p_holm:.2g}"
    below = not pd.isna(r.below_best) and bool(r.below_best)
    return gap, p + (" (below best)" if below else "")


def bases_section(ctx: ReportContext) -> Parts:
    """Which conv base: only when the results or retrieval tables hold several bases."""
    bases = base_table(ctx.layout.root, ctx.at_group)
    if len(bases) <= 1:
        return None
    rows = [
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
            *_vs_best(r),
            _fmt(r.retrieval_top5),
        ]
        for r in bases.itertuples(index=False)
    ]
    parts = [_table(BASE_HEADERS, rows)]
    if bases[[c for c, _ in BASE_SCORES]].notna().any().any():
        caption = captions.BASES.format(train_size=ctx.train_size)
        parts.append(ctx.figure("which_base", plot_bases(bases), caption))
    return parts


def table_section(ctx: ReportContext) -> Parts:
    if ctx.table.empty:
        return [_p(captions.NO_FITS)]
    parts = [full_table_html(ctx.table), _p(captions.TABLE.format(where=ctx.where))]
    hp = hyperparameter_summary(ctx.ok)
    if hp:
        parts.append("<h3>Chosen hyper-parameters</h3>")
        headers = [
            "model",
            "hyper-parameter",
            f"chosen over the {len(ctx.summary)} attributes (count)",
        ]
        parts.append(_table(headers, [list(row) for row in hp]))
    return parts


def roc_section(ctx: ReportContext) -> Parts:
    if ctx.summary.empty:
        return [_p(captions.NO_FITS)]
    parts = []
    fits = summary_fits(ctx.ok)
    roc = roc_panels(fits, ctx.summary)
    missing = int(fits["roc_fpr"].isna().sum())
    if roc.panels:
        parts.append(ctx.panels(roc, captions.ROC.format(where=ctx.where)))
    if missing:
        parts.append(_p(captions.ROC_MISSING.format(missing=missing, total=len(fits))))
    return parts


def dimension_section(ctx: ReportContext) -> Parts:
    if ctx.ok.empty:
        return [_p(captions.NO_FITS)]
    panels = accuracy_panels(ctx.at_group, "dim", "feature dimension", name="accuracy_vs_dimension")
    return [ctx.panels(panels, captions.DIMENSION.format(train_size=ctx.train_size, seed=ctx.seed))]


def train_size_section(ctx: ReportContext) -> Parts:
    """Against training-set size, on the feature set with the most training sizes (of those,
    the maps' set, then the largest dimension)."""
    ok = ctx.ok
    if ok.empty:
        return [_p(captions.NO_FITS)]
    n_sizes = ok.groupby("feature_set")["n_train"].nunique()
    dims = ok.groupby("feature_set")["dim"].max()
    order = sorted(n_sizes.index, key=lambda fs: (-n_sizes[fs], fs != ctx.map_set, -dims[fs], fs))
    size_set = order[0]
    panels = accuracy_panels(
        ok[ok["feature_set"] == size_set], "n_train", "training rows", name="accuracy_vs_train_size"
    )
    caption = captions.TRAIN_SIZE.format(feature_set=size_set, sizes=int(n_sizes[size_set]))
    return [ctx.panels(panels, caption)]


def confusion_section(ctx: ReportContext) -> Parts:
    if ctx.summary.empty:
        return [_p(captions.NO_FITS)]
    cols = ["attribute", "feature_set", "train_size", "seed"]
    keys = ctx.summary[[*cols, "best_model"]].rename(columns={"best_model": "model"})
    best_rows = keys.merge(ctx.ok, on=[*cols, "model"])
    caption = captions.CONFUSION.format(feature_set=ctx.summary_set)
    return [ctx.panels(confusion_panels(best_rows), caption)]


def calibration_section(ctx: ReportContext) -> Parts:
    if ctx.summary.empty:
        return [_p(captions.NO_FITS)]
    cal = calibration_panels(summary_fits(ctx.ok))
    if not cal.panels:
        return [_p(captions.CALIBRATION_NO_SCORES)]
    return [ctx.panels(cal, captions.CALIBRATION.format(where=ctx.where))]


#: The seeds table's headings.
SEED_HEADERS = [
    "attribute",
    "feature set",
    "training size",
    "model",
    "seeds",
    "test accuracy mean ± sd",
    "validation accuracy mean ± sd",
]


def seeds_section(ctx: ReportContext) -> Parts:
    seeds = seed_table(ctx.ok)
    if seeds.empty:
        return [_p(captions.SEEDS_ONE)]
    rows = [
        [
            r.attribute,
            r.feature_set,
            int(r.train_size),
            r.model,
            int(r.seeds),
            f"{r.accuracy_mean:.3f} ± {r.accuracy_sd:.3f}",
            "–" if pd.isna(r.selection_mean) else f"{r.selection_mean:.3f} ± {r.selection_sd:.3f}",
        ]
        for r in seeds.itertuples(index=False)
    ]
    return [_table(SEED_HEADERS, rows), _p(captions.SEEDS)]


def maps_section(ctx: ReportContext) -> Parts:
    map_set, color = ctx.map_set, ctx.color
    if map_set is None or color is None:
        return [_p(captions.MAPS_NONE)]
    x, y = map_points(ctx.layout.root, map_set, color)
    if len(x) < 3:
        return [_p(captions.MAPS_TOO_FEW.format(feature_set=map_set))]
    intro = captions.MAPS_INTRO.format(n=len(x), feature_set=map_set, dim=x.shape[1], color=color)
    caption = captions.MAPS.format(perplexity=tsne_perplexity(len(x)), color=color)
    panels = map_panels(x, y, feature_set=map_set, color_by=color)
    return [_p(intro), ctx.panels(panels, caption)]


def curves_section(ctx: ReportContext) -> Parts:
    curves = representative_curves(ctx.ok, ctx.summary) if not ctx.ok.empty else ctx.ok
    if not len(curves):
        return [_p(captions.CURVES_NONE)]
    return [ctx.panels(curve_panels(curves), captions.CURVES)]


#: The feature sets table: (manifest_rows key, heading).
MANIFEST_COLUMNS: tuple[tuple[str, str], ...] = (
    ("feature_set", "feature set"),
    ("model", "model"),
    ("layers", "layers"),
    ("pooling", "pooling"),
    ("weights", "weights"),
    ("reducer", "reduced by"),
    ("dim", "dim"),
    ("ok", "images ok"),
    ("errors", "errors"),
    ("created", "created"),
)


def feature_sets_section(ctx: ReportContext) -> Parts:
    # every committed feature set: the raw (extracted) sets too, which no probe trains on
    # when the grid runs on their reductions
    used = sorted(
        set(ctx.results["feature_set"].dropna().unique())
        | {t["name"] for t in store.list_tables(ctx.layout.root) if t["kind"] == "features"}
    )
    if ctx.map_set is not None and ctx.map_set not in used:
        used.append(ctx.map_set)
    mcols = [c for c, _ in MANIFEST_COLUMNS]
    rows = [
        [r.get(c) for c in mcols]
        if r["committed"]
        else [r["feature_set"], "not committed", *[""] * (len(mcols) - 2)]
        for r in manifest_rows(ctx.layout.root, used)
    ]
    return [_table([h for _, h in MANIFEST_COLUMNS], rows)]


def failed_section(ctx: ReportContext) -> Parts:
    failed = ctx.failed
    if failed.empty:
        return [_p(captions.FAILED_NONE)]
    parts = [_p(captions.FAILED.format(n=len(failed), s="s" if len(failed) != 1 else ""))]
    counts = failed.groupby("reason", dropna=False).size().sort_values(ascending=False)
    parts.append(_table(["reason", "fits"], [[str(k), int(v)] for k, v in counts.items()]))
    fcols = ["attribute", "feature_set", "model", "train_size", "seed", "reason"]
    shown = failed[fcols].head(MAX_FAILED_ROWS)
    parts.append(_table(fcols, shown.astype(object).values.tolist()))
    if len(failed) > MAX_FAILED_ROWS:
        parts.append(_p(captions.FAILED_MORE.format(more=len(failed) - MAX_FAILED_ROWS)))
    return parts


def files_section(ctx: ReportContext) -> Parts:
    tables = store.list_tables(ctx.layout.root)
    return [_files_html(ctx.layout, ctx.out, tables), _p(captions.FILES)]


#: The sections of index.html, in page order (and the order they run in).
SECTIONS: tuple[Section, ...] = (
    Section("summary", "Summary", summary_section),
    Section("multiclass", "Multi-class targets", multiclass_section),
    # the heatmap draws the statistics' full table: it runs in their phase
    Section("heatmap", "Attributes × models", heatmap_section, binary=True),
    Section("bases", "Which conv base", bases_section, phase="bases"),
    Section("table", "Every attribute and model", table_section, "tables", binary=True),
    Section("roc", "ROC curves of the best models", roc_section, "ROC curves", binary=True),
    Section(
        "dimension",
        "Accuracy against feature dimension",
        dimension_section,
        "accuracy plots",
        binary=True,
    ),
    Section("train-size", "Accuracy against training-set size", train_size_section, binary=True),
    Section(
        "confusion",
        "Confusion matrices of the best models",
        confusion_section,
        "confusion matrices",
        binary=True,
    ),
    Section(
        "calibration",
        "Scores: calibration and Brier",
        calibration_section,
        "calibration",
        binary=True,
    ),
    Section("seeds", "Spread over seeds", seeds_section, binary=True),
    Section("maps", "Maps of the embeddings", maps_section, "PCA and t-SNE maps"),
    Section(
        "curves",
        "Training curves of dense heads",
        curves_section,
        "training curves",
        binary=True,
    ),
    Section("feature-sets", "Feature sets", feature_sets_section, "manifests and files"),
    Section("failed", "Failed fits", failed_section),
    Section("files", "Files and errors tables", files_section),
)

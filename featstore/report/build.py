"""The report's orchestration: :func:`build_report` reads the results table and writes
index.html, summary.csv, summary.md and table.csv."""

from __future__ import annotations

import datetime as _dt
import html
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from featstore import store
from featstore.errors import StoreError
from featstore.fsio import write_text
from featstore.report.html import (
    _CSS,
    _SORT_JS,
    _files_html,
    _img,
    _p,
    _panels_html,
    _table,
    full_table_html,
    heatmap_html,
)
from featstore.report.maps import map_panels, map_points, tsne_perplexity
from featstore.report.plots import (
    BASE_SCORES,
    Panels,
    accuracy_panels,
    calibration_panels,
    confusion_panels,
    curve_panels,
    plot_bases,
    png_bytes,
    representative_curves,
    roc_panels,
)
from featstore.report.tables import (
    ALPHA,
    _fmt,
    _fmt_int,
    display_rows,
    full_table,
    hyperparameter_summary,
    manifest_rows,
    ok_rows,
    order_models,
    replaced_rows,
    seed_table,
    summary_fits,
    summary_group,
    summary_table,
    to_markdown,
)
from featstore.timing import Phases

logger = logging.getLogger(__package__)

#: At most this many failed fits listed one by one in the HTML (all are in the results table).
MAX_FAILED_ROWS = 500

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
        from featstore.report import multiclass as report_multiclass

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
    write_text(index, page)
    write_text(csv_path, summary.to_csv(index=False))
    write_text(md_path, markdown)
    write_text(table_path, table.to_csv(index=False))
    if multi_summary is not None:
        write_text(out / "multiclass.csv", multi_summary.to_csv(index=False))
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

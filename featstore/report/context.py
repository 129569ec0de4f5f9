"""What the report's sections read and what they collect: :class:`ReportContext`, built by
:func:`load_context` from the store's results table (the statistics every section shares)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from featstore import store
from featstore.errors import StoreError
from featstore.report.html import _img, _panels_html
from featstore.report.plots import Panels, png_bytes
from featstore.report.tables import (
    full_table,
    ok_rows,
    order_models,
    summary_group,
    summary_table,
)
from featstore.timing import Phases

logger = logging.getLogger(__package__)


@dataclass
class ReportContext:
    """The store, its results (split into the kinds of fits the sections show), the options,
    the statistics every section shares, and the figures the sections drew."""

    layout: store.Layout
    out: Path  # the report folder (resolved)
    results_manifest: store.Manifest
    results: pd.DataFrame  # the binary attribute fits, every status
    failed: pd.DataFrame  # every fit that failed (multi-class ones too)
    ok: pd.DataFrame  # the successful binary attribute fits
    multi_ok: pd.DataFrame  # the successful multi-class fits
    map_set: str | None  # the feature set of the PCA / t-SNE maps
    color: str | None  # the attribute colouring them
    summary: pd.DataFrame  # tables.summary_table
    table: pd.DataFrame  # tables.full_table
    train_size: int | None  # the summary group's requested training size (0: whole split)
    seed: int | None
    models: tuple[str, ...]
    summary_set: str | None  # the summary's one feature set
    figures: list[str] = field(default_factory=list)  # the figures drawn, in order
    images: int = 0  # PNG panels drawn
    multi_summary: pd.DataFrame | None = None  # the multi-class summary (multiclass.csv)

    @property
    def at_group(self) -> pd.DataFrame:
        """The successful fits of the summary's training size and seed (every feature set)."""
        ok = self.ok
        if ok.empty:
            return ok
        return ok[(ok["train_size"] == self.train_size) & (ok["seed"] == self.seed)]

    @property
    def size_text(self) -> str:
        return "the whole train split" if self.train_size == 0 else f"{self.train_size} rows"

    @property
    def where(self) -> str:
        """The summary group in words, for captions."""
        return (
            f"training size {self.train_size} ({self.size_text}), seed {self.seed}, "
            f"feature set {self.summary_set}"
        )

    @property
    def multiclass_only(self) -> bool:
        """A multi-class study only: no binary attribute sections."""
        return self.ok.empty and not self.multi_ok.empty

    def figure(self, name: str, fig: Any, caption: str) -> str:
        """A matplotlib figure as one embedded PNG with its caption (recorded as drawn)."""
        text = _img(png_bytes(fig), name, caption)
        self.figures.append(name)
        self.images += 1
        logger.debug("figure %s drawn", name)
        return text

    def panels(self, panels: Panels, caption: str) -> str:
        """A small-multiples figure as HTML (recorded as drawn)."""
        text, count = _panels_html(panels, caption)
        self.figures.append(panels.name)
        self.images += count
        logger.debug("figure %s drawn: %d panels", panels.name, count)
        return text


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


def load_context(
    store_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    feature_set: str | None,
    color_by: str | None,
    phases: Phases,
) -> ReportContext:
    """Read the results table and compute the statistics (phases "read results" and
    "statistics"). Raises StoreError before any work for a store without a committed results
    table, an unknown feature set or attribute."""
    phases.lap("read results")
    layout = store.open_store(store_path)
    results_manifest = store.read_manifest(layout, "results")
    if results_manifest is None:
        raise StoreError(
            f"{layout.results}: no committed results table (run `featstore train` first)"
        )
    results = store.read_results(layout.root)
    phases.lap("statistics")
    from featstore import multiclass  # scipy, through evaluate: imported when needed

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
    logger.info(
        "results: %d ok, %d failed fits; summary of %d attributes at train_size %s, seed %s",
        len(ok),
        len(failed),
        len(summary),
        train_size,
        seed,
    )
    return ReportContext(
        layout=layout,
        out=Path(out_dir).expanduser().resolve(),
        results_manifest=results_manifest,
        results=results,
        failed=failed,
        ok=ok,
        multi_ok=multi_ok,
        map_set=map_set,
        color=color,
        summary=summary,
        table=table,
        train_size=train_size,
        seed=seed,
        models=tuple(order_models(ok["model"].unique())) if not ok.empty else (),
        summary_set=str(summary["feature_set"].iloc[0]) if not summary.empty else None,
    )

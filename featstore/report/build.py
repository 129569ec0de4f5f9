"""The report's orchestration: :func:`build_report` reads the results table
(:func:`featstore.report.context.load_context`), renders the sections of index.html
(:data:`featstore.report.sections.SECTIONS`) and writes index.html, summary.csv, summary.md and
table.csv."""

from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import dataclass, field

import pandas as pd

from featstore.fsio import write_text
from featstore.report.context import ReportContext, load_context
from featstore.report.html import page_html
from featstore.report.sections import SECTIONS
from featstore.report.tables import to_markdown
from featstore.timing import Phases

logger = logging.getLogger(__package__)


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
    ctx = load_context(
        store_path, out_dir, feature_set=feature_set, color_by=color_by, phases=phases
    )
    shown: list[tuple[str, str, list[str]]] = []
    for section in SECTIONS:
        if section.phase is not None:
            phases.lap(section.phase)
        if section.binary and ctx.multiclass_only:  # no empty binary sections
            continue
        parts = section.render(ctx)
        if parts is not None:
            shown.append((section.id, section.title, parts))
    phases.lap("write")
    summary = _write(ctx, shown, phases)
    phases.lap(None)
    logger.info(
        "report with %d figures (%d images) written to %s",
        len(ctx.figures),
        ctx.images,
        summary.index_html,
    )
    return summary


def _meta(ctx: ReportContext) -> str:
    """The page's line under the title: the store, the results table, the report's time."""
    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    ok = ctx.ok
    return (
        f"Store {ctx.layout.root} · results table of {ctx.results_manifest.get('created', '?')}: "
        f"{len(ok)} successful and {len(ctx.failed)} failed fits, {ok['attribute'].nunique()} "
        f"attributes, models {', '.join(ctx.models) or '–'} · report made {created}"
    )


def _write(
    ctx: ReportContext, shown: list[tuple[str, str, list[str]]], phases: Phases
) -> ReportSummary:
    """Write the report's files (each atomically) and say what was written."""
    out = ctx.out
    out.mkdir(parents=True, exist_ok=True)
    page = page_html(ctx.layout.root.name, _meta(ctx), shown)
    index = out / "index.html"
    csv_path = out / "summary.csv"
    md_path = out / "summary.md"
    table_path = out / "table.csv"
    markdown = to_markdown(ctx.summary)
    write_text(index, page)
    write_text(csv_path, ctx.summary.to_csv(index=False))
    write_text(md_path, markdown)
    write_text(table_path, ctx.table.to_csv(index=False))
    if ctx.multi_summary is not None:
        write_text(out / "multiclass.csv", ctx.multi_summary.to_csv(index=False))
    return ReportSummary(
        store=str(ctx.layout.root),
        out_dir=str(out),
        index_html=str(index),
        summary_csv=str(csv_path),
        summary_md=str(md_path),
        figures=tuple(ctx.figures),
        rows_ok=len(ctx.ok),
        rows_error=len(ctx.failed),
        attributes=len(ctx.summary),
        models=ctx.models,
        train_size=ctx.train_size,
        seed=ctx.seed,
        map_feature_set=ctx.map_set,
        color_by=ctx.color,
        markdown=markdown,
        summary=ctx.summary,
        table_csv=str(table_path),
        table=ctx.table,
        images=ctx.images,
        timing=phases,
        multiclass_rows=len(ctx.multi_ok),
    )

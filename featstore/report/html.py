"""The report's HTML: the page's CSS and JavaScript, tables, figures, the heatmap and the
full table, the links to the store's files; every text escaped here."""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from featstore import store
from featstore.report.plots import _DPI, GAIN_LABEL, Panels
from featstore.report.tables import _fmt, order_models

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


def page_html(name: str, meta: str, sections: Sequence[tuple[str, str, Sequence[str]]]) -> str:
    """index.html: the title (the store's folder ``name``), the ``meta`` line, a navigation bar
    and ``(id, heading, HTML parts)`` of each section, with the inline CSS and JavaScript."""
    nav = "".join(f'<a href="#{sid}">{html.escape(title)}</a>' for sid, title, _ in sections)
    body = "".join(
        f'<section id="{sid}"><h2>{html.escape(title)}</h2>{"".join(parts)}</section>'
        for sid, title, parts in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>featstore report: {html.escape(name)}</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<h1>featstore report: {html.escape(name)}</h1>"
        f'<p class="meta">{html.escape(meta)}</p><nav>{nav}</nav>{body}'
        f"<script>{_SORT_JS}</script></body></html>\n"
    )

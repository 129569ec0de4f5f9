"""The HTML report of a store's results table: summary, plots, manifests, failed fits.

:func:`build_report` writes into ``out_dir``:

* ``index.html`` -- one self-contained page: inline CSS, every plot a PNG embedded as a
  ``data:image/png;base64`` URI, no script, no network access needed to view it;
* ``summary.csv`` -- the summary table, one row per attribute, machine-readable;
* ``summary.md`` -- the same table formatted for a terminal, a pull request or a wiki.

What the summary compares (one row per attribute):

* Only fits with ``status == "ok"``. One *group* of fits: the training size with the most
  training rows (``train_size`` 0, the whole train split, when it was run) and the smallest seed.
  One feature set for every attribute, fixed without looking at test accuracy: the one of the
  largest dimension (or ``summary_feature_set``). Choosing per attribute the set that scored
  best on the test split would select on the test split and bias accuracies and significance
  upwards; the other feature sets are in the accuracy-against-dimension plot.
* Per model: test accuracy with its 95% percentile-bootstrap CI (the ``ci_low`` / ``ci_high``
  the grid stored); the training-majority baseline; the best model and the runner-up.
* ``beats_all``: the best model is more accurate than every other model and each of those
  pairwise McNemar tests is significant after Holm's correction at 0.05, the Holm family being
  all attributes of one (feature set, training size, seed, model pair), as in
  :func:`featstore.evaluate.compare_models`. ``max_p_holm`` is the largest of those p-values.
* ``beats_baseline``: the best model is more accurate than the training-majority baseline
  (``majority_baseline``, the test accuracy of always predicting the majority class of the
  training rows) and McNemar's test of the best model against that constant predictor, on the
  same test images, is significant after Holm's correction at 0.05 (``p_baseline`` raw,
  ``p_baseline_holm`` adjusted), the Holm family being every model of every attribute of the
  summary (one feature set, training size, seed): the best model is chosen on the test split,
  so the models it was chosen from are counted too; see :func:`featstore.evaluate.baseline_tests` (which
  recovers the constant's class from ``majority_baseline``; on an exactly balanced test split,
  where it cannot, the larger p-value of the two constants is kept).
* The verdict column "best beats all others" of index.html / summary.md reads "yes" only for a
  best model that beats all others *and* the baseline; a best model that does not beat the
  baseline reads "no: not above baseline", whatever the model comparisons say (beating models
  that are no better than a constant is no win). The ``beats_all`` column of summary.csv keeps
  the comparison alone.

The plots: accuracy against feature dimension (one line per model, small multiples per attribute
and their average; feature sets of equal dimension are averaged), accuracy against the number of
training rows (the feature set with the most training sizes), the confusion matrix of the best
model per attribute, PCA and t-SNE maps of one feature set's test embeddings (at most
:data:`MAX_MAP_POINTS`, a seeded sample), and the training curves of a few dense heads: those
with the highest, median and lowest test accuracy in the summary group.

No Spark: the results table and the feature sets are read with pyarrow. Figures are drawn on
matplotlib ``Figure`` objects with the Agg canvas, without ``pyplot``: there is no global figure
registry to close and no backend switch, so the ``plot_*`` functions are safe to call from a
notebook (where a returned ``Figure`` displays inline) and from threads.
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from featstore import store
from featstore.errors import StoreError

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
    ("bases", "Which conv base"),  # only when the results / retrieval tables hold >1 base
    ("dimension", "Accuracy against feature dimension"),
    ("train-size", "Accuracy against training-set size"),
    ("confusion", "Confusion matrices of the best models"),
    ("maps", "Maps of the embeddings"),
    ("curves", "Training curves of dense heads"),
    ("feature-sets", "Feature sets"),
    ("failed", "Failed fits"),
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
    figures: tuple[str, ...]  # the plots embedded in index.html, in order
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


def summary_table(ok: pd.DataFrame, *, alpha: float = ALPHA,
                  feature_set: str | None = None) -> pd.DataFrame:
    """One row per attribute (see the module docstring for the choices).

    Columns: attribute, feature_set, dim, train_size, seed, n_train, n_test, majority_baseline,
    ``<model>_accuracy``, ``<model>_ci_low``, ``<model>_ci_high`` per model, n_models,
    best_model, best_accuracy, runner_up, runner_up_accuracy, tied, max_p_holm, beats_all,
    p_baseline, p_baseline_holm, beats_baseline."""
    from featstore import evaluate

    models = order_models(ok["model"].unique()) if not ok.empty else []
    model_cols = [f"{m}_{s}" for m in models for s in ("accuracy", "ci_low", "ci_high")]
    columns = ["attribute", "feature_set", "dim", "train_size", "seed", "n_train", "n_test",
               "majority_baseline", *model_cols, "n_models", "best_model", "best_accuracy",
               "runner_up", "runner_up_accuracy", "tied", "max_p_holm", "beats_all",
               "p_baseline", "p_baseline_holm", "beats_baseline"]
    if ok.empty:
        return pd.DataFrame(columns=columns)
    train_size, seed = summary_group(ok)
    group = ok[(ok["train_size"] == train_size) & (ok["seed"] == seed)].reset_index(drop=True)
    comparisons = evaluate.compare_models(group, alpha=alpha)
    best = evaluate.best_model_table(group, comparisons)
    dims = group.groupby("feature_set")["dim"].first()
    best["dim"] = best["feature_set"].map(dims)
    # ONE feature set for every attribute, fixed before looking at test accuracy: picking per
    # attribute the set that scored best on the test split would select on the test split and
    # bias the figures (and the significance) upwards. Default: the largest dimension.
    summary_set = feature_set or str(dims.sort_index().sort_values(kind="stable").index[-1])
    if summary_set not in dims.index:
        raise ValueError(f"feature set {summary_set!r} has no results at train size "
                         f"{train_size}, seed {seed}")
    chosen = best[best["feature_set"] == summary_set].sort_values("attribute", kind="stable")
    # every model of every attribute of this summary against the train-majority constant, one
    # Holm family over all of them: the best model is picked on the test split, so testing it
    # alone (Holm over attributes only) would not count the models it was picked from
    vs_baseline = evaluate.baseline_tests(
        group[group["feature_set"] == summary_set].reset_index(drop=True), alpha=alpha,
        family=[]).set_index(["attribute", "model"])

    records = []
    for b in chosen.itertuples(index=False):
        rows = group[(group["attribute"] == b.attribute)
                     & (group["feature_set"] == b.feature_set)].set_index("model")
        ref = rows.loc[b.best_model]
        rec: dict[str, Any] = {
            "attribute": b.attribute, "feature_set": b.feature_set, "dim": int(ref["dim"]),
            "train_size": train_size, "seed": seed, "n_train": int(ref["n_train"]),
            "n_test": int(ref["n_test"]), "majority_baseline": float(ref["majority_baseline"]),
        }
        for m in models:
            for s in ("accuracy", "ci_low", "ci_high"):
                rec[f"{m}_{s}"] = float(rows.at[m, s]) if m in rows.index else math.nan
        rec.update(n_models=int(b.n_models), best_model=b.best_model,
                   best_accuracy=float(b.best_accuracy), runner_up=b.runner_up,
                   runner_up_accuracy=float(b.runner_up_accuracy), tied=bool(b.tied),
                   max_p_holm=float(b.max_p_holm), beats_all=bool(b.beats_all),
                   p_baseline=float(vs_baseline.at[(b.attribute, b.best_model), "p_value"]),
                   p_baseline_holm=float(vs_baseline.at[(b.attribute, b.best_model), "p_holm"]),
                   beats_baseline=bool(vs_baseline.at[(b.attribute, b.best_model),
                                                      "beats_baseline"]))
        records.append(rec)
    return pd.DataFrame.from_records(records, columns=columns)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _fmt_int(value: Any) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{int(value):,}"


def _acc_ci(row: pd.Series, model: str) -> str:
    acc = row.get(f"{model}_accuracy", math.nan)
    if acc is None or math.isnan(acc):
        return "–"
    return f"{acc:.3f} [{row[f'{model}_ci_low']:.3f}, {row[f'{model}_ci_high']:.3f}]"


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
    models = [c[: -len("_accuracy")] for c in summary.columns
              if c.endswith("_accuracy") and c not in ("best_accuracy", "runner_up_accuracy")]
    headers = ["attribute", "feature set", "dim", "n_train", "n_test", "majority baseline",
               *[f"{m} accuracy [95% CI]" for m in models], "best", "beats baseline",
               "best beats all others"]
    rows = []
    for _, r in summary.iterrows():
        rows.append([str(r["attribute"]), str(r["feature_set"]), str(r["dim"]),
                     str(r["n_train"]), str(r["n_test"]), _fmt(r["majority_baseline"]),
                     *[_acc_ci(r, m) for m in models], str(r["best_model"]),
                     _baseline_verdict(r), _verdict(r)])
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


def manifest_rows(store_path: str | os.PathLike[str],
                  feature_sets: Sequence[str]) -> list[dict[str, Any]]:
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
        rows.append({"feature_set": name, "committed": True, "model": m.get("model", ""),
                     "layers": ", ".join(map(str, layers)), "pooling": m.get("pooling", ""),
                     "weights": weights or "", "reducer": reducer, "dim": m.get("dim"),
                     "ok": counts.get("ok"), "errors": counts.get("errors"),
                     "created": m.get("created", "")})
    return rows


# ----------------------------------------------------------------------------- plots


def _figure(n_panels: int, *, ncols_max: int = 5, w: float = 3.2,
            h: float = 2.6) -> tuple[Any, list[Any]]:
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


def _model_styles(models: Sequence[str]) -> dict[str, dict[str, Any]]:
    markers = "osD^v<>ph*"
    return {m: {"color": f"C{i % 10}", "marker": markers[i % len(markers)]}
            for i, m in enumerate(order_models(models))}


def _lines(ok: pd.DataFrame, x: str, title_x: str, *, baseline: bool) -> Any:
    """Small multiples per attribute plus their average: accuracy against column ``x``, one line
    per model (rows of equal ``x`` are averaged)."""
    attributes = sorted(ok["attribute"].unique())
    models = order_models(ok["model"].unique())
    styles = _model_styles(models)
    fig, axes = _figure(len(attributes) + 1)
    per = ok.groupby(["attribute", "model", x], as_index=False).agg(
        accuracy=("accuracy", "mean"), majority_baseline=("majority_baseline", "mean"))
    mean = per.groupby(["model", x], as_index=False)["accuracy"].mean()
    xs = sorted(per[x].unique())
    log_x = len(xs) > 1 and min(xs) > 0 and max(xs) / min(xs) >= 8
    panels = [("mean over attributes", mean, None)]
    panels += [(a, per[per["attribute"] == a], per[per["attribute"] == a]) for a in attributes]
    for ax, (title, data, own) in zip(axes, panels, strict=True):
        for m in models:
            d = data[data["model"] == m].sort_values(x)
            if not d.empty:
                ax.plot(d[x], d["accuracy"], label=m, **styles[m])
        if baseline and own is not None and not own.empty:
            ax.axhline(float(own["majority_baseline"].mean()), color="0.5", ls=":", lw=1,
                       label="majority baseline")
        if log_x:
            ax.set_xscale("log", base=2)
        ax.set_title(title, fontsize=10, fontweight="bold" if own is None else "normal")
        ax.set_xlabel(title_x, fontsize=8)
        ax.set_ylabel("test accuracy", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles, labels = axes[1 if len(axes) > 1 else 0].get_legend_handles_labels()
    axes[0].legend(handles, labels, fontsize=7, loc="best")
    return fig


def plot_accuracy_vs_dim(ok: pd.DataFrame) -> Any:
    """Accuracy against feature dimension (``dim``) of the given successful fits: one line per
    model, a panel per attribute and one for the mean over attributes."""
    return _lines(ok, "dim", "feature dimension", baseline=True)


def plot_accuracy_vs_train_size(ok: pd.DataFrame) -> Any:
    """Accuracy against the number of training rows (``n_train``), one line per model."""
    return _lines(ok, "n_train", "training rows", baseline=True)


def plot_confusions(rows: pd.DataFrame) -> Any:
    """Confusion matrices (rows: true class, columns: predicted; colour: share of the true
    class) of the given fits, one panel each, titled by attribute / model / feature set."""
    fig, axes = _figure(len(rows), ncols_max=6, w=2.4, h=2.5)
    for ax, (_, r) in zip(axes, rows.iterrows(), strict=True):
        cm = np.array([[r["tn"], r["fp"]], [r["fn"], r["tp"]]], dtype=float)
        share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
        for i in range(2):
            for j in range(2):
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=9,
                        color="white" if share[i, j] > 0.6 else "black")
        ax.set_xticks([0, 1], ["pred 0", "pred 1"], fontsize=7)
        ax.set_yticks([0, 1], ["true 0", "true 1"], fontsize=7)
        ax.set_title(f"{r['attribute']}\n{r['model']} · {r['feature_set']}", fontsize=8)
    return fig


def map_points(store_path: str | os.PathLike[str], feature_set: str, color_by: str, *,
               max_points: int = MAX_MAP_POINTS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
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


def embed_2d(x: np.ndarray, method: str, *, seed: int = 0) -> np.ndarray:
    """2-D coordinates of the rows of ``x`` by ``"pca"`` or ``"tsne"`` (t-SNE runs on the first
    50 principal components when the dimension is larger)."""
    from sklearn.decomposition import PCA

    x = np.asarray(x, dtype=np.float64)
    if len(x) < 3:
        raise ValueError(f"a map needs at least 3 points, got {len(x)}")
    if method == "pca":
        if x.shape[1] == 1:
            return np.column_stack([x[:, 0] - x[:, 0].mean(), np.zeros(len(x))])
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        k = min(50, len(x))  # PCA cannot give more components than points
        if x.shape[1] > k:
            x = PCA(n_components=k, random_state=seed).fit_transform(x)
        tsne = TSNE(n_components=2, perplexity=tsne_perplexity(len(x)), init="pca",
                    learning_rate="auto", random_state=seed)
        # Barnes-Hut's OpenMP threads gain nothing on a few hundred points and spin badly on a
        # busy machine (60 points: 7.5 s with 2 threads on a loaded 2-core box, 0.2 s with 1)
        threads = 1 if len(x) < _TSNE_THREADED_FROM else None
        with threadpool_limits(limits=threads, user_api="openmp"):
            return tsne.fit_transform(x)
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")


def plot_map(xy: np.ndarray, y: np.ndarray, *, title: str, color_by: str) -> Any:
    """Scatter of 2-D points coloured by a binary attribute."""
    fig, (ax,) = _figure(1, w=6.0, h=5.0)
    for value, color, label in ((False, "C0", f"not {color_by}"), (True, "C3", color_by)):
        m = y == value
        ax.scatter(xy[m, 0], xy[m, 1], s=8, alpha=0.6, color=color,
                   label=f"{label} ({int(m.sum())})", linewidths=0)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, markerscale=2)
    ax.tick_params(labelsize=7)
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


def plot_bases(bases: pd.DataFrame) -> Any:
    """Scores against costs per conv base (featstore.compare.base_table): one labelled scatter
    per (score, cost), the Pareto front (featstore.compare.pareto_front: cheaper and more
    accurate is better) drawn as a step line through its bases, which are filled."""
    from featstore.compare import pareto_front

    scores = [sc for sc in BASE_SCORES if bases[sc[0]].notna().any()]
    fig, axes = _figure(len(scores) * len(BASE_COSTS), ncols_max=len(BASE_COSTS), w=3.6, h=3.0)
    panels = [(sc, co) for sc in scores for co in BASE_COSTS]
    for ax, ((score, score_label), (cost, cost_label, log, higher)) in zip(
            axes, panels, strict=True):
        d = bases[bases[score].notna() & bases[cost].notna()]
        if d.empty:
            ax.text(0.5, 0.5, f"no {cost_label} recorded", ha="center", va="center",
                    transform=ax.transAxes, fontsize=8)
        else:
            x = d[cost].to_numpy(float)
            y = d[score].to_numpy(float)
            front = pareto_front(-x if higher else x, y)
            ax.scatter(x[~front], y[~front], s=28, facecolors="none", edgecolors="C0",
                       label="dominated")
            ax.scatter(x[front], y[front], s=32, color="C3", label="Pareto front")
            order = np.argsort(x[front])
            ax.plot(x[front][order], y[front][order], color="C3", lw=1, ls="--",
                    drawstyle="steps-pre" if higher else "steps-post")
            for xi, yi, name in zip(x, y, d["base"], strict=True):
                right = len(x) > 1 and xi == x.max()  # the rightmost label ends at its point
                ax.annotate(name, (xi, yi), xytext=(-3 if right else 3, 3),
                            textcoords="offset points", fontsize=7,
                            ha="right" if right else "left")
            if log and (x > 0).all() and x.max() / x.min() >= 8:  # else minor labels collide
                from matplotlib.ticker import NullFormatter

                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())  # 2x10^6, 3x10^6... overlap
            ax.margins(x=0.25, y=0.15)  # room for the labels of the outermost bases
        ax.set_xlabel(cost_label + (" (higher: cheaper)" if higher else ""), fontsize=8)
        ax.set_ylabel(score_label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if axes:
        axes[0].legend(fontsize=7, loc="best")
    return fig


def representative_curves(ok: pd.DataFrame, summary: pd.DataFrame, *,
                          k: int = MAX_CURVES) -> pd.DataFrame:
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
    cand = cand.sort_values(["accuracy", "attribute", "feature_set"], ascending=[False, True, True],
                            kind="stable").reset_index(drop=True)
    if len(cand) <= k:
        return cand
    picks = sorted(set(np.linspace(0, len(cand) - 1, k).round().astype(int).tolist()))
    return cand.iloc[picks].reset_index(drop=True)


def plot_curves(rows: pd.DataFrame) -> Any:
    """Loss and accuracy per epoch, train and validation, one row of two panels per fit (the
    epoch of the lowest validation loss dotted)."""
    fig, axes = _figure(2 * len(rows), ncols_max=2, w=4.2, h=2.6)
    for i, (_, r) in enumerate(rows.iterrows()):
        hist = json.loads(r["history"])
        best = int(np.argmin(hist["val_loss"])) + 1 if hist.get("val_loss") else None
        for ax, metric in zip(axes[2 * i: 2 * i + 2], ("loss", "accuracy"), strict=True):
            for key, style in ((metric, "-"), (f"val_{metric}", "--")):
                values = hist.get(key)
                if values:
                    ax.plot(range(1, len(values) + 1), values, style,
                            label="validation" if key.startswith("val_") else "train")
            if best is not None:
                ax.axvline(best, color="0.5", ls=":", lw=1)
            ax.set_title(f"{r['attribute']} · {r['model']} · {r['feature_set']} "
                         f"(n_train {int(r['n_train'])}): {metric}", fontsize=8)
            ax.set_xlabel("epoch", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    return fig


# ----------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1400px;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ccc}
.meta{color:#555;font-size:.9em}nav a{margin-right:1em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.yes{color:#116611;font-weight:bold}.note{color:#555;font-size:.9em;max-width:70em}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.85em}
"""


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
           classes: Sequence[Sequence[str]] | None = None) -> str:
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


def _img(png: bytes, alt: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _p(text: str, cls: str = "note") -> str:
    return f'<p class="{cls}">{html.escape(text)}</p>'


# ----------------------------------------------------------------------------- the report


def _choose_map_set(store_path: str | os.PathLike[str], ok: pd.DataFrame,
                    feature_set: str | None) -> str | None:
    if feature_set:
        store.feature_set_manifest(store_path, feature_set)  # StoreError if unknown
        return feature_set
    committed = {t["name"]: t["manifest"] for t in store.list_tables(store_path)
                 if t["kind"] == "features"}
    used = [fs for fs in ok["feature_set"].unique() if fs in committed] if not ok.empty else []
    if used:  # the largest dimension among the feature sets in the results
        return sorted(used, key=lambda fs: (-int(committed[fs].get("dim") or 0), fs))[0]
    return next(iter(sorted(committed)), None)


def _choose_color(store_path: str | os.PathLike[str], summary: pd.DataFrame,
                  color_by: str | None) -> str | None:
    labels = store.read_manifest(store.Layout(store_path), "labels")
    known = list(labels["attributes"]) if labels else []
    if color_by:
        if color_by not in known:
            raise StoreError(f"--color-by {color_by!r}: not an attribute of the labels table "
                             f"({', '.join(known[:8])}{', ...' if len(known) > 8 else ''})")
        return color_by
    if not summary.empty:  # the attribute the models separate best from its baseline
        gain = summary["best_accuracy"] - summary["majority_baseline"]
        return str(summary.loc[gain.idxmax(), "attribute"])
    return known[0] if known else None


def build_report(store_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                 feature_set: str | None = None, color_by: str | None = None) -> ReportSummary:
    """Write ``index.html``, ``summary.csv`` and ``summary.md`` of the store's results table to
    ``out_dir`` (created). ``feature_set``: the feature set of the PCA / t-SNE maps (default: the
    largest-dimension feature set in the results); ``color_by``: the attribute colouring them
    (default: the attribute with the largest gain of its best model over the baseline).

    Raises StoreError (nothing written) for a store without a committed results table, an
    unknown feature set or attribute."""
    layout = store.open_store(store_path)
    results_manifest = store.read_manifest(layout, "results")
    if results_manifest is None:
        raise StoreError(f"{layout.results}: no committed results table (run `featstore train` "
                         "first)")
    results = store.read_results(layout.root)
    ok = ok_rows(results)
    failed = results[results["status"] != "ok"].reset_index(drop=True)
    map_set = _choose_map_set(layout.root, ok, feature_set)  # bad names fail before any work
    if color_by:
        _choose_color(layout.root, pd.DataFrame(), color_by)
    summary = summary_table(ok)
    color = _choose_color(layout.root, summary, color_by)
    train_size, seed = summary_group(ok) if not ok.empty else (None, None)
    models = tuple(order_models(ok["model"].unique())) if not ok.empty else ()
    logger.info("results: %d ok, %d failed fits; summary of %d attributes at train_size %s, "
                "seed %s", len(ok), len(failed), len(summary), train_size, seed)

    figures: list[str] = []
    parts: dict[str, list[str]] = {sid: [] for sid, _ in SECTIONS}

    def add_figure(section: str, name: str, fig: Any, caption: str) -> None:
        parts[section].append(_img(png_bytes(fig), name, caption))
        figures.append(name)
        logger.debug("figure %s drawn", name)

    # --- summary
    headers, cells = display_rows(summary)
    if cells:
        model_col = headers.index("best")
        base_col = headers.index("beats baseline")
        best_col = headers.index("best beats all others")
        classes = [["num" if 2 <= j < model_col else "" for j in range(len(headers))]
                   for _ in cells]
        for i, (_, r) in enumerate(summary.iterrows()):
            if r["beats_baseline"]:
                classes[i][base_col] = "yes"
                if r["beats_all"]:
                    classes[i][best_col] = "yes"
        parts["summary"].append(_table(headers, cells, classes))
        size_text = "the whole train split" if train_size == 0 else f"{train_size} rows"
        parts["summary"].append(_p(
            f"Successful fits at training size {train_size} ({size_text}), seed {seed}, on one "
            "feature set for every attribute (the largest dimension; chosen without looking at "
            "test accuracy, the other sets are in the next plot). Accuracy with its 95% percentile-bootstrap interval over test "
            "images. 'Best beats all others': every McNemar test of the best model against "
            f"another model is significant at {ALPHA} after Holm's correction across the "
            "attributes of one feature set, training size, seed and model pair; p_holm is the "
            "largest of those adjusted p-values. 'Beats baseline': the best model is more "
            "accurate than always predicting the training majority class and McNemar's test "
            "of the two on the same test images is significant at "
            f"{ALPHA} after Holm's correction across every model and attribute of this table "
            "(p_holm; the best model is picked on the test images, so all models count). "
            "A best model that does not beat the baseline is never reported as beating the "
            "others ('no: not above baseline'): winning against models no better than a "
            "constant is no win."))
    else:
        parts["summary"].append(_p("No successful fits in the results table."))

    # --- which conv base (several bases in the results or retrieval tables)
    from featstore.compare import base_table

    at_group = (ok[(ok["train_size"] == train_size) & (ok["seed"] == seed)]
                if not ok.empty else ok)
    bases = base_table(layout.root, at_group)
    if len(bases) > 1:
        parts["bases"].append(_table(
            ["base", "input", "params", "GFLOPs", "images/s", "accuracy", "balanced acc.",
             "best probe", "retrieval top-5"],
            [[r.base, r.input_hw, _fmt_int(r.params), _fmt(r.flops / 1e9, 2),
              _fmt(r.images_per_second, 1), _fmt(r.accuracy), _fmt(r.balanced_accuracy),
              r.probe, _fmt(r.retrieval_top5)] for r in bases.itertuples(index=False)]))
        if bases[[c for c, _ in BASE_SCORES]].notna().any().any():
            add_figure("bases", "which_base", plot_bases(bases),
                       f"Each conv base's scores against its cost. Accuracy and balanced accuracy: "
                       f"the best (feature set, probe) pair's mean over attributes of test accuracy "
                       f"at training size {train_size}, seed {seed} (picked on the test images). "
                       "Retrieval top-5: top-5 accuracy (a neighbour shares the query's label), "
                       "mean over attributes, the best of the base's retrieval runs. Parameters "
                       "and FLOPs per image of the base at its input size, and images/s of its "
                       "extraction, from the feature set's manifest. Filled and joined: the "
                       "Pareto front (no other base is both cheaper and more accurate).")
    else:
        parts.pop("bases")

    # --- accuracy against dimension
    if not ok.empty:
        at_size = ok[(ok["train_size"] == train_size) & (ok["seed"] == seed)]
        add_figure("dimension", "accuracy_vs_dimension", plot_accuracy_vs_dim(at_size),
                   f"Test accuracy against feature dimension at training size {train_size}, "
                   f"seed {seed}; dotted: majority baseline; feature sets of equal dimension are "
                   "averaged; first panel: mean over attributes.")
    else:
        parts["dimension"].append(_p("No successful fits."))

    # --- accuracy against training-set size
    if not ok.empty:
        n_sizes = ok.groupby("feature_set")["n_train"].nunique()
        dims = ok.groupby("feature_set")["dim"].max()
        order = sorted(n_sizes.index, key=lambda fs: (-n_sizes[fs], fs != map_set, -dims[fs], fs))
        size_set = order[0]
        add_figure("train-size", "accuracy_vs_train_size",
                   plot_accuracy_vs_train_size(ok[ok["feature_set"] == size_set]),
                   f"Test accuracy against training rows on {size_set} (the feature set with "
                   f"the most training sizes: {int(n_sizes[size_set])}), mean over seeds.")
    else:
        parts["train-size"].append(_p("No successful fits."))

    # --- confusion matrices
    if not summary.empty:
        keys = summary[["attribute", "feature_set", "train_size", "seed", "best_model"]].rename(
            columns={"best_model": "model"})
        best_rows = keys.merge(ok, on=["attribute", "feature_set", "train_size", "seed", "model"])
        add_figure("confusion", "confusion_matrices", plot_confusions(best_rows),
                   "Test confusion matrices of the best model per attribute (the summary's "
                   "choice); colour: share of the true class.")
    else:
        parts["confusion"].append(_p("No successful fits."))

    # --- maps
    if map_set is not None and color is not None:
        x, y = map_points(layout.root, map_set, color)
        if len(x) >= 3:
            parts["maps"].append(_p(
                f"{len(x)} test images of {map_set} (dim {x.shape[1]}), coloured by {color}."))
            add_figure("maps", "pca_map",
                       plot_map(embed_2d(x, "pca"), y, title=f"PCA of {map_set}", color_by=color),
                       f"First two principal components of {map_set}, coloured by {color}.")
            add_figure("maps", "tsne_map",
                       plot_map(embed_2d(x, "tsne"), y, title=f"t-SNE of {map_set}",
                                color_by=color),
                       f"t-SNE (perplexity {tsne_perplexity(len(x)):.0f}) of {map_set}, "
                       f"coloured by {color}.")
        else:
            parts["maps"].append(_p(f"{map_set}: fewer than 3 images; no map."))
    else:
        parts["maps"].append(_p("No committed feature set or no labels to map."))

    # --- training curves
    curves = representative_curves(ok, summary) if not ok.empty else ok
    if len(curves):
        add_figure("curves", "training_curves", plot_curves(curves),
                   "Loss and accuracy per epoch (solid: train, dashed: validation; dotted "
                   "vertical: lowest validation loss) of the dense heads with the highest, "
                   "median and lowest test accuracy in the summary.")
    else:
        parts["curves"].append(_p("No dense heads with a training history in the results."))

    # --- manifests
    used = sorted(results["feature_set"].dropna().unique())
    if map_set is not None and map_set not in used:
        used.append(map_set)
    mrows = manifest_rows(layout.root, used)
    mcols = ["feature_set", "model", "layers", "pooling", "weights", "reducer", "dim", "ok",
             "errors", "created"]
    parts["feature-sets"].append(_table(
        ["feature set", "model", "layers", "pooling", "weights", "reduced by", "dim",
         "images ok", "errors", "created"],
        [[r.get(c) for c in mcols] if r["committed"]
         else [r["feature_set"], "not committed", *[""] * (len(mcols) - 2)] for r in mrows]))

    # --- failed fits
    if failed.empty:
        parts["failed"].append(_p("None: every fit in the results table succeeded."))
    else:
        parts["failed"].append(_p(f"{len(failed)} fit{'s' if len(failed) != 1 else ''} failed; "
                                  "they are the rows with status 'error' in the results table."))
        counts = failed.groupby("reason", dropna=False).size().sort_values(ascending=False)
        parts["failed"].append(_table(["reason", "fits"],
                                      [[str(k), int(v)] for k, v in counts.items()]))
        fcols = ["attribute", "feature_set", "model", "train_size", "seed", "reason"]
        shown = failed[fcols].head(MAX_FAILED_ROWS)
        parts["failed"].append(_table(fcols, shown.astype(object).values.tolist()))
        if len(failed) > MAX_FAILED_ROWS:
            parts["failed"].append(_p(f"… and {len(failed) - MAX_FAILED_ROWS} more."))

    # --- write
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    shown = [(sid, title) for sid, title in SECTIONS if sid in parts]
    nav = "".join(f'<a href="#{sid}">{html.escape(title)}</a>' for sid, title in shown)
    body = "".join(f'<section id="{sid}"><h2>{html.escape(title)}</h2>{"".join(parts[sid])}'
                   "</section>" for sid, title in shown)
    meta = (f"Store {layout.root} · results table of {results_manifest.get('created', '?')}: "
            f"{len(ok)} successful and {len(failed)} failed fits, {ok['attribute'].nunique()} "
            f"attributes, models {', '.join(models) or '–'} · report made {created}")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>featstore report: {html.escape(layout.root.name)}</title>"
            f"<style>{_CSS}</style></head><body>"
            f"<h1>featstore report: {html.escape(layout.root.name)}</h1>"
            f"<p class=\"meta\">{html.escape(meta)}</p><nav>{nav}</nav>{body}</body></html>\n")
    index = out / "index.html"
    csv_path = out / "summary.csv"
    md_path = out / "summary.md"
    markdown = to_markdown(summary)
    _write_text(index, page)
    _write_text(csv_path, summary.to_csv(index=False))
    _write_text(md_path, markdown)
    logger.info("report with %d figures written to %s", len(figures), index)
    return ReportSummary(
        store=str(layout.root), out_dir=str(out), index_html=str(index),
        summary_csv=str(csv_path), summary_md=str(md_path), figures=tuple(figures),
        rows_ok=len(ok), rows_error=len(failed), attributes=len(summary), models=models,
        train_size=train_size, seed=seed, map_feature_set=map_set, color_by=color,
        markdown=markdown, summary=summary)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)

"""The report's matplotlib panels: small multiples (:class:`Panels`) of accuracy against
feature dimension and training size, ROC curves, confusion matrices, calibration, training
curves, and the "Which conv base" scatter. Drawn on ``Figure`` objects with the Agg canvas,
without ``pyplot``."""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from featstore.comparison import pareto_front
from featstore.report.tables import order_models

#: At most this many dense training curves.
MAX_CURVES = 4

_DPI = 90


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


#: The "Which conv base" plots: (column of featstore.comparison.base_table, axis label, log axis,
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
    """Scores against costs per conv base (featstore.comparison.base_table): one labelled scatter
    per (score, cost), the Pareto front (featstore.comparison.pareto_front: cheaper and more
    accurate is better) drawn as a step line through its bases, which are filled. Each score's
    chance level (:data:`BASE_CHANCE`: the majority baseline, 0.5, random retrieval) is a dotted
    line inside the y-range, so a gap of a few thousandths reads as what it is."""
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

"""jobs/report.py: the self-contained HTML report, summary.csv / summary.md / table.csv, the
heatmap, the full sortable table, ROC curves and hyper-parameters, the report in headless
Chromium (every image loads, no two titles overlap, the table sorts), and bad input.

One small store with real results (a grid run through jobs/train.py) and its report are built
once per test session and shared with tests/test_notebooks.py (:func:`results_store`,
:func:`report_output`)."""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featstore import store
from featstore.train.grid import read_results
from jobs import report as report_job
from jobs import train as train_job
from tests.storefakes import write_feature_set

FAST = [
    "--set",
    "train.folds=3",
    "--set",
    "train.forest_trees=20",
    "--set",
    "train.forest_max_features=[sqrt]",
    "--set",
    "train.dense_epochs=8",
    "--set",
    "train.bootstrap=200",
    "--set",
    "train.lasso_cs=4",
]
ATTRIBUTES = ["Male", "Smiling"]  # have ok fits; Bald has one class in train: error rows
FEATURE_SETS = {"sig-pca2": 2, "sig-pca4": 4, "sig": 8}
MODELS = ["lasso", "forest", "dense"]
SMALL_SIZE = 60  # a second training size on "sig"
HEADINGS = [
    "Summary",
    "Attributes × models",
    "Every attribute and model",
    "ROC curves of the best models",
    "Accuracy against feature dimension",
    "Accuracy against training-set size",
    "Confusion matrices of the best models",
    "Scores: calibration and Brier",
    "Spread over seeds",
    "Maps of the embeddings",
    "Training curves of dense heads",
    "Feature sets",
    "Failed fits",
    "Files and errors tables",
]
#: figure -> its panels: a panel per attribute (+ the mean) or per fit, as the design says
PANELS = {
    "roc_curves": len(ATTRIBUTES),
    "accuracy_vs_dimension": len(ATTRIBUTES) + 1,
    "accuracy_vs_train_size": len(ATTRIBUTES) + 1,
    "confusion_matrices": len(ATTRIBUTES),
    "calibration": len(MODELS),
    "embedding_maps": 2,
    "training_curves": 2 * len(ATTRIBUTES),
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHROMIUM = "/usr/bin/chromium"

_BUILT: dict[str, Path] = {}


def _write_signal_store(root: Path, n: int = 300, seed: int = 0) -> Path:
    """Smiling follows feature 0, Male features 1 and 2; Bald has one class in the train split.
    sig-pca2 keeps features 1, 2 (no Smiling signal), sig-pca4 features 0-3, sig all 8."""
    rng = np.random.default_rng(seed)
    ids = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    splits = ["train" if i < n * 0.6 else ("val" if i < n * 0.8 else "test") for i in range(n)]
    x = rng.normal(size=(n, 8)).astype(np.float32)
    labels = {
        "Smiling": x[:, 0] + 0.3 * rng.normal(size=n) > 0,
        "Male": x[:, 1] - 0.5 * x[:, 2] + 0.3 * rng.normal(size=n) > 0.2,
        "Bald": np.array([s != "train" and i % 2 == 0 for i, s in enumerate(splits)]),
    }
    with store.TableWriter(store.Layout(root), "labels") as w:
        pq.write_table(
            pa.table(
                {"image_id": ids, "split": splits, **labels},
                schema=store.labels_schema(list(labels)),
            ),
            w.data / "part-00000.parquet",
        )
        w.commit(
            store.base_manifest("labels", attributes=list(labels), counts={"rows": n}),
            has_errors=False,
        )
    write_feature_set(root, "sig", ids, splits, x)
    write_feature_set(root, "sig-pca4", ids, splits, x[:, :4].copy())
    write_feature_set(root, "sig-pca2", ids, splits, x[:, 1:3].copy())
    return root


def _commit_results(root: Path, table: pa.Table) -> None:
    """A hand-made results table, committed through the store's writer."""
    with store.TableWriter(store.Layout(root), "results") as w:
        pq.write_table(table, w.data / "part-00000.parquet")
        w.commit(store.base_manifest("results", counts={"rows": table.num_rows}), has_errors=False)


def results_store(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> Path:
    """The signal store with a results table: every feature set x model x {Male, Smiling, Bald}
    on the whole train split, and "sig" also at SMALL_SIZE training rows. Built once per
    session (about 30 fits)."""
    if "store" not in _BUILT:
        root = _write_signal_store(tmp_path_factory.mktemp("report") / "store")
        common = ["--store", str(root), "--models", ",".join(MODELS), *FAST]
        assert (
            train_job.main(
                [
                    *common,
                    "--feature-sets",
                    ",".join(FEATURE_SETS),
                    "--attributes",
                    "Smiling,Male,Bald",
                ],
                spark=spark,
            )
            == 0
        )
        assert (
            train_job.main(
                [
                    *common,
                    "--feature-sets",
                    "sig",
                    "--attributes",
                    "Smiling,Male",
                    "--train-sizes",
                    str(SMALL_SIZE),
                ],
                spark=spark,
            )
            == 0
        )
        _BUILT["store"] = root
    return _BUILT["store"]


def _run_report(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = report_job.main(argv)
    return rc, out.getvalue()


def report_output(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> dict[str, Any]:
    """``featstore report`` of :func:`results_store` (maps of "sig" coloured by Smiling), run
    once per session: ``rc``, ``stdout``, ``out`` (the folder) and ``html`` (index.html)."""
    if "report" not in _BUILT:
        root = results_store(tmp_path_factory, spark)
        out = tmp_path_factory.mktemp("report-out") / "report"
        rc, stdout = _run_report(
            [
                "--store",
                str(root),
                "--out",
                str(out),
                "--feature-set",
                "sig",
                "--color-by",
                "Smiling",
            ]
        )
        html = (out / "index.html").read_text(encoding="utf-8") if rc == 0 else ""
        _BUILT["report"] = {"rc": rc, "stdout": stdout, "out": out, "html": html}
    return _BUILT["report"]


@pytest.fixture(scope="module")
def sig_results(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> Path:
    return results_store(tmp_path_factory, spark)


@pytest.fixture(scope="module")
def report(
    sig_results: Path, tmp_path_factory: pytest.TempPathFactory, spark: Any
) -> dict[str, Any]:
    return report_output(tmp_path_factory, spark)


def _images(html: str) -> list[tuple[str, str]]:
    """(figure name, src) of every image of the page, in order."""
    return re.findall(
        r'<img data-figure="([^"]*)" alt="[^"]*"(?: width="\d+" height="\d+")? '
        r'src="([^"]*)"',
        html,
    )


def _section(html: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', html, re.S)
    assert match, f"no section {section_id!r}"
    return match.group(1)


def test_index_has_every_section_and_embedded_pngs(report):
    assert report["rc"] == 0
    html = report["html"]
    headings = re.findall(r"<h2>(.*?)</h2>", html)
    assert headings == HEADINGS
    images = _images(html)
    counts: dict[str, int] = {}
    for name, _ in images:
        counts[name] = counts.get(name, 0) + 1
    assert counts == PANELS
    assert list(dict.fromkeys(name for name, _ in images)) == list(PANELS)  # in this order
    assert html.count("<img") == len(images) == sum(PANELS.values())
    # every panel has its title as HTML text above its image
    assert html.count('<div class="ptitle">') == len(images)
    from PIL import Image

    for name, src in images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix), name
        png = base64.b64decode(src[len(prefix) :], validate=True)
        assert png.startswith(PNG_MAGIC), name
        with Image.open(io.BytesIO(png)) as im:
            im.verify()
        with Image.open(io.BytesIO(png)) as im:
            assert im.format == "PNG" and min(im.size) >= 150, (name, im.size)


def test_index_needs_nothing_from_outside(report):
    html = report["html"]
    assert "<link" not in html and "@import" not in html and "url(" not in html
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)  # base64 holds "//"
    assert not re.search(r"\b(?:https?|ftp|wss?):|//[a-z0-9]", text, re.I)
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert len(scripts) == 1 and scripts[0][0] == ""  # one inline script, no src
    assert not re.search(r"fetch|XMLHttpRequest|import\(|WebSocket|src\s*=", scripts[0][1])
    ids = set(re.findall(r' id="([^"]+)"', html))
    for attr in re.findall(r'src="([^"]*)"', html):
        assert attr.startswith("data:image/png;base64,"), attr[:40]
    links = re.findall(r'href="([^"]*)"', html)
    assert {"summary.csv", "summary.md", "table.csv"} <= set(links)
    for link in links:
        if link.startswith("#"):
            assert link[1:] in ids, link
        else:  # relative to the report folder, and there
            assert not link.startswith("/") and ":" not in link, link
            assert (report["out"] / unquote(link)).exists(), link


def test_summary_csv_one_row_per_attribute_consistent_with_results(report, sig_results):
    summary = pd.read_csv(report["out"] / "summary.csv")
    assert sorted(summary["attribute"]) == ATTRIBUTES
    for col in [
        "feature_set",
        "dim",
        "train_size",
        "n_train",
        "n_test",
        "majority_baseline",
        *[f"{m}_{s}" for m in MODELS for s in ("accuracy", "ci_low", "ci_high")],
        "best_model",
        "best_accuracy",
        "runner_up",
        "max_p_holm",
        "beats_all",
    ]:
        assert col in summary.columns, col

    res = read_results(sig_results)
    ok = res[(res.status == "ok") & (res.train_size == 0)]
    for row in summary.itertuples(index=False):
        assert row.train_size == 0 and row.n_train == 180 and row.n_test == 60
        assert row.dim == FEATURE_SETS[row.feature_set]
        fits = ok[(ok.attribute == row.attribute) & (ok.feature_set == row.feature_set)]
        fits = fits.set_index("model")
        for m in MODELS:
            assert getattr(row, f"{m}_accuracy") == pytest.approx(fits.at[m, "accuracy"])
            assert getattr(row, f"{m}_ci_low") == pytest.approx(fits.at[m, "ci_low"])
            assert getattr(row, f"{m}_ci_high") == pytest.approx(fits.at[m, "ci_high"])
        assert row.majority_baseline == pytest.approx(fits.at[row.best_model, "majority_baseline"])
        assert row.best_accuracy == pytest.approx(fits["accuracy"].max())
        assert fits.at[row.best_model, "accuracy"] == pytest.approx(row.best_accuracy)
        # the chosen feature set is the one with the most accurate model for this attribute
        assert row.best_accuracy == pytest.approx(
            ok.loc[ok.attribute == row.attribute, "accuracy"].max()
        )
        assert row.best_accuracy > row.majority_baseline + 0.2  # real signal
        assert 0 <= row.max_p_holm <= 1
        if row.beats_all:
            assert row.max_p_holm < 0.05 and row.best_accuracy > row.runner_up_accuracy
    smiling = summary.set_index("attribute").loc["Smiling"]
    assert smiling.feature_set != "sig-pca2"  # the features without Smiling's signal


def test_summary_md_and_what_the_job_prints(report):
    md = (report["out"] / "summary.md").read_text()
    lines = md.strip().splitlines()
    assert len(lines) == 2 + len(ATTRIBUTES)
    assert lines[0].startswith("| attribute |") and "lasso accuracy [95% CI]" in lines[0]
    assert re.fullmatch(r"\|( --- \|)+", lines[1])
    assert sorted(line.split("|")[1].strip() for line in lines[2:]) == ATTRIBUTES
    assert all(re.search(r"0\.\d{3} \[0\.\d{3}, [01]\.\d{3}\]", line) for line in lines[2:])
    stdout = report["stdout"]
    assert md in stdout
    *_, done, timing = stdout.strip().splitlines()
    assert done.startswith(f"report: {report['out'] / 'index.html'}")
    # where the time went, every part of the report in the order it ran
    parts = re.findall(
        r"(?:^|, )([A-Za-z][A-Za-z -]*?) [\d.]+ s \(\d+%\)", timing.removeprefix("report time: ")
    )
    assert timing.startswith("report time: ") and parts == [
        "read results",
        "statistics",
        "bases",
        "tables",
        "ROC curves",
        "accuracy plots",
        "confusion matrices",
        "calibration",
        "PCA and t-SNE maps",
        "training curves",
        "manifests and files",
        "write",
    ], timing


def test_feature_sets_and_failed_fits_sections(report):
    html = report["html"]
    sets = _section(html, "feature-sets")
    for name, dim in FEATURE_SETS.items():
        row = rf"<tr><td>{re.escape(name)}</td><td>toy</td>(?:<td>[^<]*</td>){{4}}<td>{dim}</td>"
        assert re.search(row, sets), name
    failed = _section(html, "failed")
    assert "9 fits failed" in failed  # Bald x 3 feature sets x 3 models
    assert failed.count("<td>Bald</td>") == 9 and "one class" in failed
    maps = _section(html, "maps")
    assert "60 test images of sig (dim 8), coloured by Smiling" in maps


def test_store_without_results_exits_2(tmp_path, capsys):
    root = _write_signal_store(tmp_path / "store", n=30)
    out = tmp_path / "report"
    assert report_job.main(["--store", str(root), "--out", str(out)]) == 2
    err = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("featstore: error")
    ]
    assert len(err) == 1 and "no committed results table" in err[0], err
    assert not out.exists()


def test_results_with_only_failed_fits_still_report_them(tmp_path):
    from featstore.train.grid import RESULTS_SCHEMA

    root = _write_signal_store(tmp_path / "store", n=30)
    row = {f.name: None for f in RESULTS_SCHEMA}
    row.update(
        attribute="Bald",
        feature_set="sig",
        model="lasso",
        train_size=0,
        seed=0,
        status="error",
        reason="training sample has one class only",
    )
    _commit_results(root, pa.Table.from_pylist([row], schema=RESULTS_SCHEMA))
    out = tmp_path / "report"
    rc, stdout = _run_report(["--store", str(root), "--out", str(out)])
    assert rc == 0
    html = (out / "index.html").read_text()
    assert re.findall(r"<h2>(.*?)</h2>", html) == HEADINGS
    assert "No successful fits" in _section(html, "summary")
    assert [name for name, _ in _images(html)] == ["embedding_maps", "embedding_maps"]
    assert "1 fit failed" in _section(html, "failed") and "one class only" in html
    assert pd.read_csv(out / "summary.csv").empty
    assert "(no successful fits)" in stdout


def test_unknown_colour_attribute_exits_2(sig_results, tmp_path, capsys):
    out = tmp_path / "report"
    assert (
        report_job.main(["--store", str(sig_results), "--out", str(out), "--color-by", "Smilling"])
        == 2
    )
    assert "'Smilling': not an attribute" in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------------ 40 attributes, imbalance


def _hp_expected(model: str, params: str) -> str:
    p = json.loads(params)
    if model == "lasso":
        return f"C = {p['C']:.3g}"
    if model == "forest":
        return f"max_features = {p['max_features']}"
    return f"epochs = {p['best_epoch']} (of {p['epochs_run']} run)"


def test_full_table_csv_one_row_per_attribute_and_model(report, sig_results):
    table = pd.read_csv(report["out"] / "table.csv")
    summary = pd.read_csv(report["out"] / "summary.csv").set_index("attribute")
    assert sorted(zip(table["attribute"], table["model"], strict=True)) == sorted(
        (a, m) for a in ATTRIBUTES for m in MODELS
    )
    res = read_results(sig_results)
    fits = res[(res.status == "ok") & (res.train_size == 0) & (res.feature_set == "sig")]
    fits = fits.set_index(["attribute", "model"])
    for r in table.itertuples(index=False):
        fit = fits.loc[(r.attribute, r.model)]
        assert r.feature_set == "sig" and r.n_test == fit.n_test
        for col in (
            "accuracy",
            "ci_low",
            "ci_high",
            "balanced_accuracy",
            "f1",
            "roc_auc",
            "majority_baseline",
        ):
            assert getattr(r, col) == pytest.approx(fit[col]), col
        assert r.gain == pytest.approx(fit.accuracy - fit.majority_baseline)
        assert r.positives == pytest.approx(np.mean(fit.y_true))
        assert r.hyperparameters == _hp_expected(r.model, fit.params)
        assert r.best == (summary.at[r.attribute, "best_model"] == r.model)
        if r.best:
            assert r.p_baseline_holm == pytest.approx(summary.at[r.attribute, "p_baseline_holm"])
    assert table.groupby("attribute")["best"].sum().tolist() == [1] * len(ATTRIBUTES)


def test_heatmap_and_full_table_in_the_page_hold_table_csv(report):
    table = pd.read_csv(report["out"] / "table.csv").set_index(["attribute", "model"])
    heat = re.search(
        r'<table class="heat sortable">(.*?)</table>', _section(report["html"], "heatmap"), re.S
    ).group(1)
    head = re.findall(r'<th[^>]* data-col="(\d+)"[^>]*>([^<]*)</th>', heat)
    assert [h for _, h in head] == ["attribute", "positives", *MODELS, *MODELS]
    rows = re.findall(r"<tr><td>([^<]*)</td>(.*?)</tr>", heat, re.S)
    assert [a for a, _ in rows] == ATTRIBUTES
    for attribute, cells in rows:
        values = [float(v) for v in re.findall(r'data-v="([^"]+)"', cells)]
        want = [
            table.at[(attribute, MODELS[0]), "positives"],
            *[table.at[(attribute, m), "gain"] for m in MODELS],
            *[table.at[(attribute, m), "balanced_accuracy"] for m in MODELS],
        ]
        np.testing.assert_allclose(values, want, rtol=1e-12)
        best = [m for m in MODELS if table.at[(attribute, m), "best"]]
        assert cells.count("★") == 2 * len(best) == 2  # in both halves
    full = _section(report["html"], "table")
    assert full.count("<tr") == 1 + len(table) + 4  # + the hyper-parameter table (head + 3)
    shown = {
        (a, m): rest
        for a, m, rest in re.findall(
            r"<tr(?: class=\"best\")?><td>([^<]*)</td><td>([^<]*)</td>(.*?)</tr>", full
        )
    }
    for (attribute, model), r in table.iterrows():
        row = shown[(attribute, model)]
        numbers = [float(v) for v in re.findall(r'data-v="([^"]+)"', row)]  # the sort keys
        np.testing.assert_allclose(
            numbers,
            [
                r.positives,
                r.majority_baseline,
                r.selection_score,
                r.accuracy,
                r.gain,
                r.balanced_accuracy,
                r.f1,
                r.roc_auc,
                r.brier,
                r.p_baseline_holm,
                r.p_auc_holm,
            ],
            rtol=1e-12,
        )
        assert f"{r.accuracy:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]</td>" in row
        assert f"<td>{r.hyperparameters}</td>" in row


def test_chosen_hyperparameters_per_model_are_shown(report, sig_results):
    res = read_results(sig_results)
    fits = res[(res.status == "ok") & (res.train_size == 0) & (res.feature_set == "sig")]
    section = _section(report["html"], "table")
    rows = dict(
        re.findall(r"<tr><td>(lasso|forest|dense)</td><td>[^<]*</td><td>([^<]*)</td>", section)
    )
    for model, key in (("lasso", "C"), ("forest", "max_features"), ("dense", "best_epoch")):
        chosen = pd.Series([json.loads(p)[key] for p in fits.loc[fits.model == model, "params"]])
        shown = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in chosen]
        counts = pd.Series(shown).value_counts()
        assert sorted(rows[model].split(", ")) == sorted(f"{v} ({n})" for v, n in counts.items())


def test_chosen_hyperparameters_of_every_model_kind():
    from featstore.report import chosen_hyperparameters, hyperparameter_text

    assert hyperparameter_text("lasso", json.dumps({"C": 0.046415888, "cv_C": 0.1})) == "C = 0.0464"
    assert hyperparameter_text("forest", '{"max_features": 0.2}') == "max_features = 0.2"
    assert (
        hyperparameter_text("dense", '{"best_epoch": 7, "epochs_run": 12, "epochs": 30}')
        == "epochs = 7 (of 12 run)"
    )
    assert chosen_hyperparameters(
        "bottleneck20-forest",
        json.dumps(
            {
                "k": 20,
                "best_epoch": 4,
                "epochs_run": 9,
                "second": "forest",
                "second_params": {"max_features": "sqrt"},
            }
        ),
    ) == {"k": 20, "max_features": "sqrt", "epochs": 4, "epochs_run": 9}
    assert hyperparameter_text("multilabel", None) == "–"


def test_roc_points_are_stored_for_every_fit(sig_results):
    from sklearn.metrics import auc  # the trapezoid area (np.trapz is gone in NumPy 2.4)

    from featstore.evaluate import ROC_POINTS

    ok = read_results(sig_results).query("status == 'ok'")
    assert len(ok) and ok["roc_fpr"].notna().all()
    for r in ok.itertuples(index=False):
        fpr, tpr = r.roc_fpr, r.roc_tpr
        assert fpr.dtype == np.float32 and len(fpr) == len(tpr) <= min(ROC_POINTS, r.n_test + 1)
        assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
        assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()
        # n_test 60: the whole curve is kept, and its area is the fit's ROC AUC
        assert auc(fpr, tpr) == pytest.approx(r.roc_auc, abs=1e-6)


def test_roc_points_of_a_long_curve_are_its_own_vertices():
    from sklearn.metrics import auc, roc_auc_score, roc_curve

    from featstore.evaluate import ROC_POINTS, roc_points

    rng = np.random.default_rng(3)
    y = rng.random(20_000) < 0.08  # imbalanced
    score = y + rng.normal(size=y.size)
    fpr, tpr = roc_points(y, score)
    exact_f, exact_t, _ = roc_curve(y, score)
    exact = set(
        zip(exact_f.astype(np.float32).tolist(), exact_t.astype(np.float32).tolist(), strict=True)
    )
    assert len(exact) > 5 * ROC_POINTS and len(fpr) <= ROC_POINTS
    assert set(zip(fpr.tolist(), tpr.tolist(), strict=True)) <= exact
    # evenly spread along the curve: two kept points are at most one even step apart, plus the
    # exact curve's own straight segment that ends at the later one
    along = exact_f + exact_t
    index = {
        p: i
        for i, p in enumerate(
            zip(
                exact_f.astype(np.float32).tolist(),
                exact_t.astype(np.float32).tolist(),
                strict=True,
            )
        )
    }
    kept = [index[p] for p in zip(fpr.tolist(), tpr.tolist(), strict=True)]
    step = along[-1] / (ROC_POINTS - 1)
    for a, b in itertools.pairwise(kept):
        assert along[b] - along[a] <= step + (along[b] - along[b - 1]) + 1e-9
    assert auc(fpr, tpr) == pytest.approx(roc_auc_score(y, score), abs=2e-3)
    assert roc_points(np.zeros(9), np.arange(9.0)) is None  # one class: no curve


def test_results_without_roc_points_stay_readable(tmp_path):
    """A results table (and grid cells) written before the ROC columns existed."""
    from featstore.report import build_report
    from featstore.train.grid import RESULTS_SCHEMA, _merge_cells

    old_schema = pa.schema([f for f in RESULTS_SCHEMA if f.name not in store.RESULTS_ADDED_COLUMNS])
    rows = [
        {**r, "y_true": r["y_true"].tolist(), "y_pred": r["y_pred"].tolist()}
        for r in _baseline_results().to_dict("records")
    ]
    old = pa.Table.from_pylist(
        [{k: v for k, v in r.items() if k in old_schema.names} for r in rows], schema=old_schema
    )
    root = _write_signal_store(tmp_path / "store", n=30)
    _commit_results(root, old)
    res = read_results(root)
    assert len(res) == 4 and res["roc_fpr"].isna().all() and res["roc_tpr"].isna().all()
    cells = tmp_path / "cells"
    cells.mkdir()
    pq.write_table(old, cells / "old.parquet")
    merged = _merge_cells(cells)
    assert merged.schema == RESULTS_SCHEMA and merged["roc_fpr"].null_count == 4
    made = build_report(root, tmp_path / "report")
    assert "roc_curves" not in made.figures
    assert "4 of 4 fits have no ROC points" in _section(
        (tmp_path / "report" / "index.html").read_text(), "roc"
    )


def test_small_multiples_share_one_y_scale_and_the_pca_map_has_labelled_axes(sig_results):
    from featstore.report import accuracy_panels, map_panels, ok_rows

    ok = ok_rows(read_results(sig_results)).query("train_size == 0")
    fig = accuracy_panels(ok, "dim", "feature dimension", name="d").figure()
    limits = {ax.get_ylim() for ax in fig.axes}
    assert len(fig.axes) == len(ATTRIBUTES) + 1 and len(limits) == 1
    low, high = limits.pop()
    gains = ok["accuracy"] - ok["majority_baseline"]
    assert low < 0 < high and low <= gains.min() and gains.max() <= high  # baseline at 0
    x = np.random.default_rng(0).normal(size=(80, 4)) * [4.0, 2.0, 1.0, 1.0]
    fig = map_panels(x, x[:, 0] > 0, feature_set="fs", color_by="A").figure()
    pc1, pc2 = (
        re.fullmatch(r"PC (\d) \((\d+\.\d)% of the variance\)", fig.axes[0].get_xlabel()),
        re.fullmatch(r"PC (\d) \((\d+\.\d)% of the variance\)", fig.axes[0].get_ylabel()),
    )
    assert pc1 and pc2 and (pc1.group(1), pc2.group(1)) == ("1", "2")
    share1, share2 = float(pc1.group(2)), float(pc2.group(2))
    assert 100 > share1 > share2 > 0 and share1 > 50  # the first axis carries most variance
    assert (fig.axes[1].get_xlabel(), fig.axes[1].get_ylabel()) == ("t-SNE 1", "t-SNE 2")


def test_links_to_the_errors_tables_are_relative_and_resolve(job_store, tmp_path):
    """The report of the job store (2 bad images in its images errors table): its links to
    summary.csv, the results table and every errors table resolve from the report folder, also
    after the store and the report are moved together."""
    from featstore.report import build_report

    first = tmp_path / "here"
    shutil.copytree(job_store, first / "store")
    build_report(first / "store", first / "report")

    def links(folder: Path) -> dict[str, Path]:
        page = (folder / "report" / "index.html").read_text()
        files = _section(page, "files")
        return {
            text: (folder / "report" / unquote(href)).resolve()
            for href, text in re.findall(r'<a href="([^"#]+)">([^<]+)</a>', files)
        }

    found = links(first)
    assert found["summary.csv"] == first / "report" / "summary.csv"
    assert found["results/"] == first / "store" / "results"
    errors = {t: p for t, p in found.items() if t.startswith("errors/")}
    assert errors["errors/images/"] == first / "store" / "errors" / "images"
    assert sorted(errors) == sorted(
        f"{store.Layout(first / 'store').rel(Path(t['errors_path']))}/"
        for t in store.list_tables(first / "store")
        if t["errors_path"]
    )
    assert "2 rows (images)" in _section((first / "report" / "index.html").read_text(), "files")
    moved = tmp_path / "moved elsewhere"
    (first).rename(moved)
    assert all(p.exists() for p in links(moved).values())
    assert links(moved)["errors/images/"] == moved / "store" / "errors" / "images"


# ------------------------------------------------------------------ in a real browser

#: Runs in the page after load: whether each image decoded, the text boxes of every title
#: (panel titles, headings, captions, table headings: getBoundingClientRect of a Range over the
#: element's text, in page coordinates) and every image's box, then sorts the full table by
#: "accuracy − baseline" twice (ascending, descending) and reads that column back. It writes
#: one JSON object into <pre id="probe"> for the test to read from --dump-dom.
_PROBE = """<script>
window.addEventListener("load", function () {
  function page(r) { return [r.left + scrollX, r.top + scrollY, r.right + scrollX,
                             r.bottom + scrollY]; }
  var imgs = Array.prototype.slice.call(document.images);
  var out = {total: imgs.length, loaded: imgs.filter(function (i) {
    return i.complete && i.naturalWidth > 0; }).length};
  out.titles = Array.prototype.map.call(
    document.querySelectorAll(".ptitle, h1, h2, h3, figcaption, th"), function (el) {
      var range = document.createRange();
      range.selectNodeContents(el);
      return {tag: el.tagName.toLowerCase() + (el.className ? "." + el.className : ""),
              text: el.textContent, box: page(range.getBoundingClientRect())};
    });
  out.images = imgs.map(function (i) { return page(i.getBoundingClientRect()); });
  var table = document.querySelector("table.full");
  var th = table.querySelector('th[data-key="gain"]');
  var col = +th.getAttribute("data-col");
  function column() { return Array.prototype.map.call(table.tBodies[0].rows, function (r) {
    return parseFloat(r.cells[col].getAttribute("data-v")); }); }
  th.click(); out.ascending = column(); out.sort_ascending = th.getAttribute("aria-sort");
  th.click(); out.descending = column(); out.sort_descending = th.getAttribute("aria-sort");
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script></body>"""


def _chromium() -> str:
    path = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if path:
        return path
    if os.environ.get("FEATSTORE_SKIP_BROWSER") == "1":
        pytest.skip("FEATSTORE_SKIP_BROWSER=1: headless Chromium check of the report skipped")
    pytest.fail(
        f"headless Chromium not found at {CHROMIUM} (nor chromium on PATH): install it "
        "with `apt-get install -y chromium` (Debian/Ubuntu), or set "
        "FEATSTORE_SKIP_BROWSER=1 to skip this test",
        pytrace=False,
    )


def _in_browser(page_html: str, tmp_path: Path, *, width: int = 1400) -> dict[str, Any]:
    """Load the page (with the probe) in headless Chromium, no network at all, at ``width``
    CSS pixels; the probe's JSON."""
    import html as html_lib
    import json

    page = tmp_path / "index.html"
    page.write_text(page_html.replace("</body>", _PROBE, 1), encoding="utf-8")
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # no network at all
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
        f"--window-size={width},1000",
        "--dump-dom",
        page.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, proc.stdout[-1000:]
    return json.loads(html_lib.unescape(found.group(1)))


def _overlap(a: list[float], b: list[float], eps: float = 0.5) -> bool:
    return min(a[2], b[2]) - max(a[0], b[0]) > eps and min(a[3], b[3]) - max(a[1], b[1]) > eps


def overlapping_titles(probe: dict[str, Any]) -> list[tuple[str, str]]:
    """Pairs of titles whose text boxes intersect, and titles whose text runs over an image."""
    titles = [
        t
        for t in probe["titles"]
        if t["text"].strip() and t["box"][2] > t["box"][0] and t["box"][3] > t["box"][1]
    ]
    bad = [
        (a["text"], b["text"])
        for i, a in enumerate(titles)
        for b in titles[i + 1 :]
        if _overlap(a["box"], b["box"])
    ]
    bad += [
        (t["text"], f"image {j}")
        for t in titles
        for j, img in enumerate(probe["images"])
        if _overlap(t["box"], img)
    ]
    return bad


@pytest.fixture(scope="module")
def browser(report, tmp_path_factory) -> dict[str, Any]:
    """The report loaded once in headless Chromium at 1400 px: the probe's findings."""
    return _in_browser(report["html"], tmp_path_factory.mktemp("chromium"))


def test_every_plot_loads_in_headless_chromium(browser):
    n_images = sum(PANELS.values())
    assert (browser["total"], browser["loaded"]) == (n_images, n_images)


def test_no_titles_overlap_in_headless_chromium(browser):
    # the titles are text in the page: every panel's, every heading, caption, table heading
    kinds = [t["tag"] for t in browser["titles"]]
    assert kinds.count("div.ptitle") == sum(PANELS.values())
    assert kinds.count("h2") == len(HEADINGS)
    # the check has neighbours to look at: at this width a figure's panels sit side by side
    # (the dimension figure's titles, after the ROC curves', share one line)
    first = PANELS["roc_curves"]
    dim = [t["box"] for t in browser["titles"] if t["tag"] == "div.ptitle"][
        first : first + PANELS["accuracy_vs_dimension"]
    ]
    assert len({round(b[1]) for b in dim}) == 1 and len({round(b[0]) for b in dim}) == len(dim)
    assert overlapping_titles(browser) == []
    # every panel title is one line (a two-line ROC title pushed its panel down): the same
    # height for all, and the ROC panels of one row start at one height
    heights = {
        round(t["box"][3] - t["box"][1]) for t in browser["titles"] if t["tag"] == "div.ptitle"
    }
    assert len(heights) == 1, heights
    roc = [t["box"] for t in browser["titles"] if t["tag"] == "div.ptitle"][:first]
    assert len({round(b[1]) for b in roc}) == 1


def test_full_table_sorts_in_headless_chromium(browser, report):
    # a click on a heading sorts by that column, ascending, then descending: the numbers of
    # table.csv in order
    gains = pd.read_csv(report["out"] / "table.csv")["gain"].tolist()
    assert (browser["sort_ascending"], browser["sort_descending"]) == ("ascending", "descending")
    np.testing.assert_allclose(browser["ascending"], sorted(gains), rtol=1e-12)
    np.testing.assert_allclose(browser["descending"], sorted(gains, reverse=True), rtol=1e-12)


def test_maps_of_fewer_points_than_pca_components():
    """t-SNE on 15 points of 2,048 dims (a tiny test split): PCA first to at most 15 components."""
    import numpy as np

    from featstore.report import embed_2d

    x = np.random.default_rng(0).normal(size=(15, 2048))
    for method in ("pca", "tsne"):
        xy = embed_2d(x, method)
        assert xy.shape == (15, 2) and np.isfinite(xy).all()


# ------------------------------------------------------------------ best model against the baseline

N_TEST = 400


def _fit_row(
    attribute: str, model: str, y_true: np.ndarray, y_pred: np.ndarray, y_train_majority: int
) -> dict[str, Any]:
    from featstore import evaluate
    from featstore.train.grid import RESULTS_SCHEMA

    m = evaluate.metrics(y_true, y_pred, y_train=np.array([y_train_majority]))
    lo, hi = evaluate.bootstrap_ci(y_true, y_pred, n_boot=200)
    row = {f.name: None for f in RESULTS_SCHEMA}
    row.update(
        attribute=attribute,
        feature_set="sig",
        model=model,
        train_size=0,
        seed=0,
        status="ok",
        n_train=1000,
        n_val=200,
        n_test=len(y_true),
        dim=8,
        ci_low=lo,
        ci_high=hi,
        y_true=y_true.astype(np.int8),
        y_pred=y_pred.astype(np.int8),
        **{
            k: m[k]
            for k in (
                "accuracy",
                "balanced_accuracy",
                "f1",
                "tn",
                "fp",
                "fn",
                "tp",
                "majority_baseline",
            )
        },
    )
    return row


def _baseline_results() -> pd.DataFrame:
    """Smiling: 200 of 400 test images positive (a 50/50 baseline), forest right on 95% of them,
    lasso on 80%. Male: 230 positive, train majority 1 (baseline 0.575); lasso predicts coin
    flips independent of the labels, forest is wrong on 70% of the images -- lasso is the best
    and beats forest significantly, but is no better than the constant."""
    rng = np.random.default_rng(7)
    rows = []
    y = np.zeros(N_TEST, dtype=np.int8)
    y[rng.permutation(N_TEST)[:200]] = 1
    for model, n_wrong in (("lasso", 80), ("forest", 20)):
        pred = y.copy()
        pred[rng.permutation(N_TEST)[:n_wrong]] ^= 1
        rows.append(_fit_row("Smiling", model, y, pred, y_train_majority=0))
    y = np.zeros(N_TEST, dtype=np.int8)
    y[rng.permutation(N_TEST)[:230]] = 1
    coin = (rng.random(N_TEST) < 0.5).astype(np.int8)
    wrong = y.copy()
    wrong[rng.permutation(N_TEST)[:280]] ^= 1
    rows.append(_fit_row("Male", "lasso", y, coin, y_train_majority=1))
    rows.append(_fit_row("Male", "forest", y, wrong, y_train_majority=1))
    return pd.DataFrame(rows)


def test_summary_tests_the_best_model_against_the_train_majority_baseline(tmp_path):
    from statsmodels.stats.multitest import multipletests

    from featstore import evaluate
    from featstore.report import build_report, ok_rows, summary_table
    from featstore.train.grid import RESULTS_SCHEMA

    results = _baseline_results()
    summary = summary_table(ok_rows(results)).set_index("attribute")
    smiling, male = summary.loc["Smiling"], summary.loc["Male"]
    assert (smiling.best_model, smiling.majority_baseline) == ("forest", 0.5)
    assert (male.best_model, male.majority_baseline) == ("lasso", 0.575)
    # beats forest, not the constant: the comparison alone says so, the guarded flag does not
    assert male.best_accuracy < 0.6 and bool(male.beats_all_models) and not bool(male.beats_all)

    # raw p-values: McNemar of the best model against the train-majority constant; Smiling's
    # balanced test split fits either constant, the larger p-value is kept
    by = results.set_index(["attribute", "model"])
    sm_t, sm_p = by.loc[("Smiling", "forest"), ["y_true", "y_pred"]]
    p_smiling = max(evaluate.beats_baseline(sm_t, sm_p, y_train=[k])["p_value"] for k in (0, 1))
    ma_t, ma_p = by.loc[("Male", "lasso"), ["y_true", "y_pred"]]
    p_male = evaluate.beats_baseline(ma_t, ma_p, y_train=[1])["p_value"]
    assert summary.loc[["Smiling", "Male"], "p_baseline"].tolist() == pytest.approx(
        [p_smiling, p_male], rel=1e-12, abs=0
    )
    # Holm across every model and attribute of the summary (the best is picked among them)
    every = [
        max(evaluate.beats_baseline(t, p, y_train=[k])["p_value"] for k in ks)
        for (t, p, ks) in [
            (*by.loc[("Smiling", m), ["y_true", "y_pred"]], (0, 1)) for m in ("lasso", "forest")
        ]
        + [(*by.loc[("Male", m), ["y_true", "y_pred"]], (1,)) for m in ("lasso", "forest")]
    ]
    adjusted = multipletests(every, method="holm")[1]  # Smiling lasso, forest; Male lasso, forest
    np.testing.assert_allclose(
        summary.loc[["Smiling", "Male"], "p_baseline_holm"], [adjusted[1], adjusted[2]], rtol=1e-12
    )
    assert (
        (summary["p_baseline_holm"] >= summary["p_baseline"])
        & (summary["p_baseline"] >= 0)
        & (summary["p_baseline_holm"] <= 1)
    ).all()
    assert smiling.p_baseline_holm < 1e-20 and bool(smiling.beats_baseline)
    assert male.p_baseline_holm > 0.05 and not male.beats_baseline

    # the files: summary.csv, summary.md, index.html
    root = _write_signal_store(tmp_path / "store", n=30)
    table = pa.Table.from_pylist(
        [
            {**r, "y_true": r["y_true"].tolist(), "y_pred": r["y_pred"].tolist()}
            for r in results.to_dict("records")
        ],
        schema=RESULTS_SCHEMA,
    )
    _commit_results(root, table)
    out = tmp_path / "report"
    made = build_report(root, out)
    csv = pd.read_csv(out / "summary.csv").set_index("attribute")
    for col in ("p_baseline", "p_baseline_holm", "beats_baseline"):
        assert col in csv.columns, col
    assert csv["beats_baseline"].to_dict() == {"Male": False, "Smiling": True}
    np.testing.assert_allclose(
        csv.loc[["Smiling", "Male"], "p_baseline_holm"],
        summary.loc[["Smiling", "Male"], "p_baseline_holm"],
        rtol=1e-12,
    )

    p_sm = f"{smiling.p_baseline_holm:.2g}"
    p_ma = f"{male.p_baseline_holm:.2g}"
    md = (out / "summary.md").read_text()
    assert md == made.markdown
    header, _, *lines = md.strip().splitlines()
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols[-5:] == [
        "best",
        "beats baseline",
        "AUC above chance",
        "best − runner-up [95% CI]",
        "best beats all others",
    ]
    cells = {c[0]: c for c in ([x.strip() for x in line.strip("|").split("|")] for line in lines)}
    assert cells["Smiling"][-4] == f"yes (p_holm = {p_sm})"
    assert cells["Smiling"][-1].startswith("yes (p_holm ≤")
    assert cells["Male"][-4] == f"no (not more accurate, p_holm = {p_ma})"
    for attribute in ("Smiling", "Male"):  # the lead over the runner-up, with its interval
        row = csv.loc[attribute]
        assert row.gap_ci_low <= row.gap <= row.gap_ci_high
        assert row.gap == pytest.approx(row.best_accuracy - row.runner_up_accuracy)
        shown = f"{row.gap:+.3f} [{row.gap_ci_low:+.3f}, {row.gap_ci_high:+.3f}]"
        assert cells[attribute][-2] == shown
    assert cells["Male"][-1] == "no: not above baseline"  # although it beats forest

    summary_html = _section((out / "index.html").read_text(), "summary")
    assert (
        "<th>beats baseline</th><th>AUC above chance</th><th>best − runner-up [95% CI]</th>"
        "<th>best beats all others</th>" in summary_html
    )
    assert csv["beats_all"].to_dict() == {"Male": False, "Smiling": True}  # the same guard
    assert csv.loc["Male", "verdict"] == "no: not above baseline"
    assert f'<td class="yes">yes (p_holm = {p_sm})</td>' in summary_html
    assert f"<td>no (not more accurate, p_holm = {p_ma})</td>" in summary_html
    assert "<td>no: not above baseline</td>" in summary_html
    assert "Beats baseline" in summary_html and "training majority class" in summary_html


def test_the_summary_tests_by_the_identities_the_results_carry():
    """Results with ``groups`` (each test image's person, as the grid stores them): the
    summary's p-values are the tests by identity on those fits, not the image-level ones."""
    from featstore import evaluate
    from featstore.report import ok_rows, summary_table

    people = np.repeat(np.arange(N_TEST // 20), 20)  # 20 images a person
    results = _baseline_results()
    results["groups"] = [people.tolist()] * len(results)
    summary = summary_table(ok_rows(results)).set_index("attribute")
    blind = summary_table(ok_rows(_baseline_results())).set_index("attribute")
    by = results.set_index(["attribute", "model"])
    pairs = []
    for attribute, constants in (("Smiling", (0, 1)), ("Male", (1,))):
        t, p = by.loc[(attribute, summary.at[attribute, "best_model"]), ["y_true", "y_pred"]]
        want = max(
            evaluate.beats_baseline(t, p, baseline_class=k, groups=people)["p_value"]
            for k in constants
        )
        assert summary.at[attribute, "p_baseline"] == pytest.approx(want, rel=1e-12)
        forest, lasso = by.xs(attribute)["y_pred"].loc[["forest", "lasso"]]
        pair = evaluate.mcnemar(t, forest, lasso, groups=people)
        assert pair["method"] == "clustered exact"
        pairs.append(pair["p_value"])
    # one Holm family: the forest-lasso pair over both attributes
    np.testing.assert_allclose(summary["max_p_holm"].loc[["Smiling", "Male"]], evaluate.holm(pairs))
    assert (summary["p_baseline"] != blind["p_baseline"]).all()


def test_the_summary_compares_the_probes_over_all_attributes(report, sig_results):
    """Below the summary: each probe against each other over all the summary's attributes,
    as evaluate.pooled_comparisons computes it on the summary's fits."""
    from featstore import evaluate
    from featstore.report import ok_rows, summary_fits

    ok = ok_rows(read_results(sig_results))
    summary = pd.read_csv(report["out"] / "summary.csv")
    fits = summary_fits(ok, summary["feature_set"].iloc[0])
    pooled = evaluate.pooled_comparisons(fits)
    assert len(pooled) == 3 and set(pooled["attributes"]) == {len(summary)}
    page = _section(report["html"], "summary")
    assert "<th>A − B [95% CI]</th>" in page
    for r in pooled.itertuples():
        cell = f"<td>{r.gap:+.3f} [{r.gap_ci_low:+.3f}, {r.gap_ci_high:+.3f}]</td>"
        assert f"<td>{r.model_a}</td><td>{r.model_b}</td>" in page and cell in page

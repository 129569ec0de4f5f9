"""jobs/report.py: the self-contained HTML report, summary.csv / summary.md, and bad input.

One small store with real results (a grid run through jobs/train.py) is built once per test
session and shared with tests/test_notebooks.py (:func:`results_store`)."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

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

FAST = ["--set", "train.folds=3", "--set", "train.forest_trees=20", "--set",
        "train.forest_max_features=[sqrt]", "--set", "train.dense_epochs=8", "--set",
        "train.bootstrap=200", "--set", "train.lasso_cs=4"]
ATTRIBUTES = ["Male", "Smiling"]  # have ok fits; Bald has one class in train: error rows
FEATURE_SETS = {"sig-pca2": 2, "sig-pca4": 4, "sig": 8}
MODELS = ["lasso", "forest", "dense"]
SMALL_SIZE = 60  # a second training size on "sig"
HEADINGS = ["Summary", "Accuracy against feature dimension", "Accuracy against training-set size",
            "Confusion matrices of the best models", "Maps of the embeddings",
            "Training curves of dense heads", "Feature sets", "Failed fits"]
PLOTS = ["accuracy_vs_dimension", "accuracy_vs_train_size", "confusion_matrices", "pca_map",
         "tsne_map", "training_curves"]
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
        pq.write_table(pa.table({"image_id": ids, "split": splits, **labels},
                                schema=store.labels_schema(list(labels))),
                       w.data / "part-00000.parquet")
        w.commit(store.base_manifest("labels", attributes=list(labels), counts={"rows": n}),
                 has_errors=False)
    write_feature_set(root, "sig", ids, splits, x)
    write_feature_set(root, "sig-pca4", ids, splits, x[:, :4].copy())
    write_feature_set(root, "sig-pca2", ids, splits, x[:, 1:3].copy())
    return root


def _commit_results(root: Path, table: pa.Table) -> None:
    """A hand-made results table, committed through the store's writer."""
    with store.TableWriter(store.Layout(root), "results") as w:
        pq.write_table(table, w.data / "part-00000.parquet")
        w.commit(store.base_manifest("results", counts={"rows": table.num_rows}),
                 has_errors=False)


def results_store(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> Path:
    """The signal store with a results table: every feature set x model x {Male, Smiling, Bald}
    on the whole train split, and "sig" also at SMALL_SIZE training rows. Built once per
    session (about 30 fits)."""
    if "store" not in _BUILT:
        root = _write_signal_store(tmp_path_factory.mktemp("report") / "store")
        common = ["--store", str(root), "--models", ",".join(MODELS), *FAST]
        assert train_job.main([*common, "--feature-sets", ",".join(FEATURE_SETS),
                               "--attributes", "Smiling,Male,Bald"], spark=spark) == 0
        assert train_job.main([*common, "--feature-sets", "sig", "--attributes", "Smiling,Male",
                               "--train-sizes", str(SMALL_SIZE)], spark=spark) == 0
        _BUILT["store"] = root
    return _BUILT["store"]


def _run_report(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = report_job.main(argv)
    return rc, out.getvalue()


@pytest.fixture(scope="module")
def sig_results(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> Path:
    return results_store(tmp_path_factory, spark)


@pytest.fixture(scope="module")
def report(sig_results: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("report-out") / "report"
    rc, stdout = _run_report(["--store", str(sig_results), "--out", str(out),
                              "--feature-set", "sig", "--color-by", "Smiling"])
    html = (out / "index.html").read_text(encoding="utf-8") if rc == 0 else ""
    return {"rc": rc, "stdout": stdout, "out": out, "html": html}


def _images(html: str) -> list[tuple[str, str]]:
    return re.findall(r'<img alt="([^"]*)" src="([^"]*)"', html)


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
    assert [alt for alt, _ in images] == PLOTS
    assert html.count("<img") == len(PLOTS)
    from PIL import Image

    for alt, src in images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix), alt
        png = base64.b64decode(src[len(prefix):], validate=True)
        assert png.startswith(PNG_MAGIC), alt
        with Image.open(io.BytesIO(png)) as im:
            im.verify()
        with Image.open(io.BytesIO(png)) as im:
            assert im.format == "PNG" and min(im.size) >= 150, (alt, im.size)


def test_index_needs_nothing_from_outside(report):
    html = report["html"]
    assert "<script" not in html and "<link" not in html and "@import" not in html
    for attr in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert attr.startswith(("data:", "#")), attr


def test_summary_csv_one_row_per_attribute_consistent_with_results(report, sig_results):
    summary = pd.read_csv(report["out"] / "summary.csv")
    assert sorted(summary["attribute"]) == ATTRIBUTES
    for col in ["feature_set", "dim", "train_size", "n_train", "n_test", "majority_baseline",
                *[f"{m}_{s}" for m in MODELS for s in ("accuracy", "ci_low", "ci_high")],
                "best_model", "best_accuracy", "runner_up", "max_p_holm", "beats_all"]:
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
            ok.loc[ok.attribute == row.attribute, "accuracy"].max())
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
    assert stdout.strip().splitlines()[-1].startswith(f"report: {report['out'] / 'index.html'}")


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
    err = [line for line in capsys.readouterr().err.splitlines()
           if line.startswith("featstore: error")]
    assert len(err) == 1 and "no committed results table" in err[0], err
    assert not out.exists()


def test_results_with_only_failed_fits_still_report_them(tmp_path):
    from featstore.train.grid import RESULTS_SCHEMA

    root = _write_signal_store(tmp_path / "store", n=30)
    row = {f.name: None for f in RESULTS_SCHEMA}
    row.update(attribute="Bald", feature_set="sig", model="lasso", train_size=0, seed=0,
               status="error", reason="training sample has one class only")
    _commit_results(root, pa.Table.from_pylist([row], schema=RESULTS_SCHEMA))
    out = tmp_path / "report"
    rc, stdout = _run_report(["--store", str(root), "--out", str(out)])
    assert rc == 0
    html = (out / "index.html").read_text()
    assert re.findall(r"<h2>(.*?)</h2>", html) == HEADINGS
    assert "No successful fits" in _section(html, "summary")
    assert [alt for alt, _ in _images(html)] == ["pca_map", "tsne_map"]
    assert "1 fit failed" in _section(html, "failed") and "one class only" in html
    assert pd.read_csv(out / "summary.csv").empty
    assert "(no successful fits)" in stdout


def test_unknown_colour_attribute_exits_2(sig_results, tmp_path, capsys):
    out = tmp_path / "report"
    assert report_job.main(["--store", str(sig_results), "--out", str(out),
                            "--color-by", "Smilling"]) == 2
    assert "'Smilling': not an attribute" in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------------ in a real browser

_PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  document.body.dataset.total = imgs.length;
  document.body.dataset.loaded = imgs.filter(function (i) {
    return i.complete && i.naturalWidth > 0;
  }).length;
});
</script></body>"""


def _chromium() -> str:
    path = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    if path:
        return path
    if os.environ.get("FEATSTORE_SKIP_BROWSER") == "1":
        pytest.skip("FEATSTORE_SKIP_BROWSER=1: headless Chromium check of the report skipped")
    pytest.fail(f"headless Chromium not found at {CHROMIUM} (nor chromium on PATH): install it "
                "with `apt-get install -y chromium` (Debian/Ubuntu), or set "
                "FEATSTORE_SKIP_BROWSER=1 to skip this test", pytrace=False)


def test_every_plot_loads_in_headless_chromium(report, tmp_path):
    chromium = _chromium()
    page = tmp_path / "index.html"
    page.write_text(report["html"].replace("</body>", _PROBE, 1), encoding="utf-8")
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND",  # no network at all
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
           "--dump-dom", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", proc.stdout)
    assert body, proc.stdout[:500]
    attrs = dict(re.findall(r'data-(\w+)="(\d+)"', body.group(1)))
    assert attrs == {"total": str(len(PLOTS)), "loaded": str(len(PLOTS))}, attrs


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


def _fit_row(attribute: str, model: str, y_true: np.ndarray, y_pred: np.ndarray,
             y_train_majority: int) -> dict[str, Any]:
    from featstore import evaluate
    from featstore.train.grid import RESULTS_SCHEMA

    m = evaluate.metrics(y_true, y_pred, y_train=np.array([y_train_majority]))
    lo, hi = evaluate.bootstrap_ci(y_true, y_pred, n_boot=200)
    row = {f.name: None for f in RESULTS_SCHEMA}
    row.update(attribute=attribute, feature_set="sig", model=model, train_size=0, seed=0,
               status="ok", n_train=1000, n_val=200, n_test=len(y_true), dim=8, ci_low=lo,
               ci_high=hi, y_true=y_true.astype(np.int8), y_pred=y_pred.astype(np.int8),
               **{k: m[k] for k in ("accuracy", "balanced_accuracy", "f1", "tn", "fp", "fn",
                                    "tp", "majority_baseline")})
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
    assert male.best_accuracy < 0.6 and bool(male.beats_all)  # beats forest, not the constant

    # raw p-values: McNemar of the best model against the train-majority constant; Smiling's
    # balanced test split fits either constant, the larger p-value is kept
    by = results.set_index(["attribute", "model"])
    sm_t, sm_p = by.loc[("Smiling", "forest"), ["y_true", "y_pred"]]
    p_smiling = max(evaluate.beats_baseline(sm_t, sm_p, y_train=[k])["p_value"] for k in (0, 1))
    ma_t, ma_p = by.loc[("Male", "lasso"), ["y_true", "y_pred"]]
    p_male = evaluate.beats_baseline(ma_t, ma_p, y_train=[1])["p_value"]
    assert summary.loc[["Smiling", "Male"], "p_baseline"].tolist() == pytest.approx(
        [p_smiling, p_male], rel=1e-12, abs=0)
    # Holm across every model and attribute of the summary (the best is picked among them)
    every = [max(evaluate.beats_baseline(t, p, y_train=[k])["p_value"] for k in ks)
             for (t, p, ks) in [(*by.loc[("Smiling", m), ["y_true", "y_pred"]], (0, 1))
                                for m in ("lasso", "forest")]
             + [(*by.loc[("Male", m), ["y_true", "y_pred"]], (1,)) for m in ("lasso", "forest")]]
    adjusted = multipletests(every, method="holm")[1]  # Smiling lasso, forest; Male lasso, forest
    np.testing.assert_allclose(summary.loc[["Smiling", "Male"], "p_baseline_holm"],
                               [adjusted[1], adjusted[2]], rtol=1e-12)
    assert ((summary["p_baseline_holm"] >= summary["p_baseline"])
            & (summary["p_baseline"] >= 0) & (summary["p_baseline_holm"] <= 1)).all()
    assert smiling.p_baseline_holm < 1e-20 and bool(smiling.beats_baseline)
    assert male.p_baseline_holm > 0.05 and not male.beats_baseline

    # the files: summary.csv, summary.md, index.html
    root = _write_signal_store(tmp_path / "store", n=30)
    table = pa.Table.from_pylist(
        [{**r, "y_true": r["y_true"].tolist(), "y_pred": r["y_pred"].tolist()}
         for r in results.to_dict("records")], schema=RESULTS_SCHEMA)
    _commit_results(root, table)
    out = tmp_path / "report"
    made = build_report(root, out)
    csv = pd.read_csv(out / "summary.csv").set_index("attribute")
    for col in ("p_baseline", "p_baseline_holm", "beats_baseline"):
        assert col in csv.columns, col
    assert csv["beats_baseline"].to_dict() == {"Male": False, "Smiling": True}
    np.testing.assert_allclose(csv.loc[["Smiling", "Male"], "p_baseline_holm"],
                               summary.loc[["Smiling", "Male"], "p_baseline_holm"], rtol=1e-12)

    p_sm = f"{smiling.p_baseline_holm:.2g}"
    p_ma = f"{male.p_baseline_holm:.2g}"
    md = (out / "summary.md").read_text()
    assert md == made.markdown
    header, _, *lines = md.strip().splitlines()
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols[-3:] == ["best", "beats baseline", "best beats all others"]
    cells = {c[0]: c for c in ([x.strip() for x in line.strip("|").split("|")] for line in lines)}
    assert cells["Smiling"][-2] == f"yes (p_holm = {p_sm})"
    assert cells["Smiling"][-1].startswith("yes (p_holm ≤")
    assert cells["Male"][-2] == f"no (not more accurate, p_holm = {p_ma})"
    assert cells["Male"][-1] == "no: not above baseline"  # although it beats forest

    summary_html = _section((out / "index.html").read_text(), "summary")
    assert "<th>beats baseline</th><th>best beats all others</th>" in summary_html
    assert f'<td class="yes">yes (p_holm = {p_sm})</td>' in summary_html
    assert f"<td>no (not more accurate, p_holm = {p_ma})</td>" in summary_html
    assert "<td>no: not above baseline</td>" in summary_html
    assert "Beats baseline" in summary_html and "training majority class" in summary_html

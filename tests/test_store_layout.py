"""Store layout 2 as analysts and jobs see it: every table safe to glob, manifests and paths,
results that resume correctly, the embedder cache, and the migration from layout 1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from featstore import store
from featstore.errors import StoreError
from jobs.cli import main as cli_main
from tests.conftest import JOB_FS, kill_job_when

REPO = Path(__file__).resolve().parents[1]
V1_FIXTURE = REPO / "tests" / "data" / "store_v1.tar.gz"  # made by featstore before layout 2


def _committed(root: Path) -> dict[str, tuple[Path, int, Path | None, int]]:
    """{table: (data path, rows, errors path, error rows)} from the manifests."""
    out = {}
    for t in store.list_tables(root):
        m = t["manifest"]
        rows = sum(f["rows"] for f in m["files"])
        errs = sum(f["rows"] for f in m.get("errors_files") or [])
        out[t["name"]] = (
            Path(t["path"]),
            rows,
            Path(t["errors_path"]) if t["errors_path"] else None,
            errs,
        )
    return out


def test_data_folders_hold_only_their_parquet_files(job_store):
    layout = store.Layout(job_store)
    for folder in (
        layout.images,
        layout.labels,
        layout.features_root,
        layout.results,
        layout.errors_root,
    ):
        files = [p for p in folder.rglob("*") if p.is_file()]
        assert files and all(
            p.suffix == ".parquet" and not p.name.startswith((".", "_")) for p in files
        ), folder
    assert sorted(p.name for p in layout.features_root.iterdir()) == [
        f"feature_set={JOB_FS}",
        f"feature_set={JOB_FS}-pca4",
    ]


def test_feature_files_are_written_without_dictionaries(job_store):
    """Extract's and reduce's files (store.FEATURES_WRITE_OPTIONS): every float is distinct."""
    layout = store.Layout(job_store)
    for name in (JOB_FS, f"{JOB_FS}-pca4"):
        files = sorted(layout.features(name).rglob("*.parquet"))
        assert files, name
        for f in files:
            meta = pq.ParquetFile(f).metadata
            for rg in range(meta.num_row_groups):
                for c in range(meta.num_columns):
                    col = meta.row_group(rg).column(c)
                    assert not col.has_dictionary_page, (f, col.path_in_schema)
                    assert not {"PLAIN_DICTIONARY", "RLE_DICTIONARY"} & set(col.encodings), (
                        f,
                        col.path_in_schema,
                        col.encodings,
                    )


def test_every_glob_of_every_table_returns_the_committed_rows(spark, job_store):
    import duckdb
    import polars as pl
    import pyarrow.dataset as ds

    tables = _committed(job_store)
    assert set(tables) == {"images", "labels", "results", JOB_FS, f"{JOB_FS}-pca4"}
    assert tables["images"][3] == 2  # the two bad images of the fixture
    for name, (path, rows, errors_path, error_rows) in tables.items():
        for hive in ("true", "false"):
            (n,) = duckdb.sql(
                f"SELECT count(*) FROM read_parquet('{path}/**/*.parquet', "
                f"hive_partitioning = {hive})"
            ).fetchall()[0]
            assert n == rows, (name, hive)
        assert pl.scan_parquet(f"{path}/").select(pl.len()).collect().item() == rows, name
        assert ds.dataset(path, format="parquet", partitioning="hive").count_rows() == rows
        assert spark.read.parquet(store.spark_uri(path)).count() == rows, name
        if errors_path is not None:
            assert pq.read_table(errors_path).num_rows == error_rows, name
    # one glob over every feature set, the set's name as a column
    per_set = dict(
        duckdb.sql(
            f"SELECT feature_set, count(*) FROM read_parquet('{job_store}/features/**/*.parquet', "
            "hive_partitioning = true) GROUP BY ALL"
        ).fetchall()
    )
    assert per_set == {JOB_FS: tables[JOB_FS][1], f"{JOB_FS}-pca4": tables[JOB_FS][1]}
    errors = duckdb.sql(
        f"SELECT image_id FROM read_parquet('{job_store}/errors/**/*.parquet', "
        "union_by_name = true) ORDER BY 1"
    ).fetchall()
    assert errors == [("000007.jpg",), ("000011.jpg",)]


def test_describe_json_names_the_data_and_errors_paths(job_store, capsys):
    assert cli_main(["describe", str(job_store), JOB_FS, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    data, errors = Path(out["paths"]["data"]), Path(out["paths"]["errors"])
    assert data == store.Layout(job_store).features(JOB_FS) and errors.is_dir()
    on_disk = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.parquet"))
    assert on_disk == sorted(f["path"] for f in out["files"])
    assert out["counts"]["ok"] == sum(f["rows"] for f in out["files"])
    assert all(len(f["sha256"]) == 64 for f in out["files"])


def test_feature_sets_of_a_grid_are_checked_before_spark(job_store, capsys):
    before = store.read_manifest(store.Layout(job_store), "results")
    rc = cli_main(
        [
            "train",
            "--store",
            str(job_store),
            "--feature-sets",
            f"{JOB_FS}-pca9",
            "--models",
            "lasso",
        ],
        spark=None,
    )
    assert rc == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("featstore:")]
    assert len(lines) == 1 and f"no committed feature set '{JOB_FS}-pca9'" in lines[0]
    assert JOB_FS in lines[0]  # the committed ones are named
    assert store.read_manifest(store.Layout(job_store), "results") == before


def test_an_error_cell_is_fitted_again_and_an_ok_cell_kept(job_store, tmp_path, monkeypatch):
    from featstore.train import cells, grid

    root = tmp_path / "store"
    shutil.copytree(job_store, root)
    cfg = grid.GridConfig(
        feature_sets=(f"{JOB_FS}-pca4",),
        attributes=("Smiling", "Young"),
        models=("lasso",),
        folds=3,
        bootstrap=50,
    )
    real_fit = cells._fit

    def flaky(cell, *a, **kw):
        if cell.attribute == "Young":
            raise ValueError("a transient failure")
        return real_fit(cell, *a, **kw)

    monkeypatch.setattr(cells, "_fit", flaky)
    first = grid.run_grid(None, str(root), cfg, parallel=False)
    assert (first.ran, first.ok_rows, first.error_rows) == (2, 2, 1)  # + Male from the fixture
    res = store.read_results(root).set_index("attribute")
    assert res.loc["Young", "status"] == "error" and "transient" in res.loc["Young", "reason"]
    smiling = res.loc["Smiling", "created"]

    monkeypatch.setattr(cells, "_fit", real_fit)
    second = grid.run_grid(None, str(root), cfg, parallel=False)
    assert (second.ran, second.resumed) == (1, 1)  # only the error cell runs again
    res = store.read_results(root).set_index("attribute")
    assert res.loc["Young", "status"] == "ok" and res.loc["Smiling", "created"] == smiling
    manifest = store.check_table(root, "results", checksums=True)
    assert manifest["feature_sets"] == {
        f"{JOB_FS}-pca4": store.feature_set_manifest(root, f"{JOB_FS}-pca4")["content_fingerprint"]
    }


def test_train_overwrite_killed_mid_grid_keeps_the_old_results(job_store, tmp_path, caplog):
    """kill -9 of ``train --overwrite`` after some fits: the old results stay readable and
    complete; the next reader breaks the dead job's lock, the next train commits."""
    root = tmp_path / "store"
    shutil.copytree(job_store, root)
    before = store.read_results(root).sort_values("cell").reset_index(drop=True)
    old_cells = sorted(p.name for p in store.Layout(root).cells.iterdir())
    attrs = "Smiling,Male,Young,Bangs,Eyeglasses,Wavy_Hair,Black_Hair,Big_Nose"
    cmd = [
        sys.executable,
        str(REPO / "jobs" / "train.py"),
        "--store",
        str(root),
        "--feature-sets",
        f"{JOB_FS}-pca4",
        "--attributes",
        attrs,
        "--models",
        "lasso",
        "--set",
        "train.folds=3",
        "--overwrite",
        "--master",
        "local[1]",
    ]
    staging = store.Layout(root).staging
    kill_job_when(cmd, staging, "results-*/cells/*.parquet")  # after the first fit
    assert store.Layout(root).lock_path("results").exists()  # the dead job's lock

    after = store.read_results(root).sort_values("cell").reset_index(drop=True)
    assert after[["cell", "attribute", "status", "accuracy"]].equals(
        before[["cell", "attribute", "status", "accuracy"]]
    )
    store.check_table(root, "results", checksums=True)
    assert sorted(p.name for p in store.Layout(root).cells.iterdir()) == old_cells
    # the reader broke the dead job's lock (its staging, resumable state, stays for the writer)
    assert not store.Layout(root).lock_path("results").exists()
    assert "breaking the stale lock of table results" in caplog.text

    proc = subprocess.run(
        [*cmd[:-3], "--master", "local[1]"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = store.read_results(root)
    assert len(res) == 8 and (res.status == "ok").all()
    assert not list(staging.iterdir())


def test_embedder_cache_sees_a_rewritten_weights_file(spark, job_store, tmp_path):
    """Two extracts in one Spark session (reused Python workers) with the same weights path,
    the file rewritten in between: the second uses the new weights."""
    import keras

    root = tmp_path / "store"
    shutil.copytree(job_store, root)
    path = tmp_path / "w.weights.h5"
    embeddings = {}
    for seed in (1, 2):
        keras.utils.set_random_seed(seed)
        keras.applications.MobileNetV2(
            include_top=False, weights=None, input_shape=(32, 32, 3)
        ).save_weights(str(path))
        assert (
            cli_main(
                [
                    "extract",
                    "--store",
                    str(root),
                    "--model",
                    "mobilenetv2",
                    "--input-size",
                    "32x32",
                    "--batch-size",
                    "8",
                    "--weights",
                    str(path),
                    "--feature-set",
                    f"w{seed}",
                ],
                spark=spark,
            )
            == 0
        )
        # nothing of the job still runs: a warm-up task left loading the weights file held it
        # locked, and the next save_weights failed (BlockingIOError, seen in CI)
        assert spark.sparkContext.statusTracker().getActiveJobsIds() == []
        t = store.read_arrow(root, f"w{seed}", attributes=[])
        embeddings[seed] = np.stack(t["embedding"].to_numpy(zero_copy_only=False))
        assert store.feature_set_manifest(root, f"w{seed}")["weights"][
            "sha256"
        ] == store.sha256_file(path)
    shutil.copy(path, tmp_path / "fresh.weights.h5")  # the seed-2 weights under a new path
    assert (
        cli_main(
            [
                "extract",
                "--store",
                str(root),
                "--model",
                "mobilenetv2",
                "--input-size",
                "32x32",
                "--batch-size",
                "8",
                "--weights",
                str(tmp_path / "fresh.weights.h5"),
                "--feature-set",
                "fresh",
            ],
            spark=spark,
        )
        == 0
    )
    fresh = np.stack(
        store.read_arrow(root, "fresh", attributes=[])["embedding"].to_numpy(zero_copy_only=False)
    )
    scale = float(np.abs(fresh).max())  # random-init activations are tiny: compare to the largest
    assert scale > 0
    assert np.abs(embeddings[1] - embeddings[2]).max() > 0.1 * scale  # new weights, new values
    np.testing.assert_allclose(embeddings[2], fresh, rtol=0, atol=1e-5 * scale)


def test_layout_1_store_is_refused_then_migrated(tmp_path, capsys, spark):
    with tarfile.open(V1_FIXTURE) as tar:
        tar.extractall(tmp_path)
    root = tmp_path / "store"
    assert cli_main(["ls", str(root)]) == 2
    err = capsys.readouterr().err
    assert "written by an older featstore" in err and f"featstore migrate {root}" in err
    with pytest.raises(StoreError, match="featstore migrate"):
        store.read_pandas(root, "mobilenetv2-out_relu-avg-32x32-random0")

    assert cli_main(["migrate", str(root)]) == 0
    assert "migrated 5 tables" in capsys.readouterr().out
    fs = "mobilenetv2-out_relu-avg-32x32-random0"
    names = sorted(t["name"] for t in store.list_tables(root))
    assert names == ["images", "labels", fs, f"{fs}-pca4", "results"]
    for name in names:
        store.check_table(root, name, deep=True)
    assert not list(root.rglob("_manifest.json")) and not list(root.rglob("_errors"))
    assert store.read_errors(root, "images")["image_id"].to_pylist() == ["000007.jpg"]
    assert store.read_pandas(root, fs).shape == (29, 43)
    from featstore.reduce import load_projection
    from featstore.train.saved import load_model, predict_scores

    proj = load_projection(root, f"{fs}-pca4")
    x, _, _ = store.load_xy(root, fs, "Male", "test")
    reduced = store.read_arrow(root, f"{fs}-pca4", splits=["test"], attributes=[])
    np.testing.assert_allclose(
        proj.transform(x),
        np.stack(reduced["embedding"].to_numpy(zero_copy_only=False)),
        rtol=0,
        atol=1e-4,
    )
    res = store.read_results(root).set_index("attribute")
    assert res.loc["Male", "model_path"].startswith("models/")
    xt, _, _ = store.load_xy(root, f"{fs}-pca4", "Male", "test")
    pred = (
        predict_scores(load_model(root, res.loc["Male"].to_dict() | {"attribute": "Male"}), xt)
        > 0.5
    ).astype("int8")
    np.testing.assert_array_equal(pred, res.loc["Male", "y_pred"])
    assert cli_main(["migrate", str(root)]) == 0  # a second run has nothing to do
    assert "migrated 0 tables" in capsys.readouterr().out
    # its feature set's run key still means "these settings" (keys then held the width too)
    from jobs import extract as extract_job

    assert (
        extract_job.main(
            [
                "--store",
                str(root),
                "--model",
                "mobilenetv2",
                "--weights",
                "random",
                "--input-size",
                "32x32",
            ],
            spark=spark,
        )
        == 0
    )
    assert f"already extracted: {fs}" in capsys.readouterr().out

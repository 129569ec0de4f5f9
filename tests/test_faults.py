"""The store under faults, concurrency and bad input: each case of the fault campaign reproduced
on a small store and shown fixed, asserting on what readers then see and on exit codes.
(The kill -9 of ``train --overwrite`` and of extract between chunks are in test_store_layout.py
and test_extract.py; the randomized campaign is bench/bench_faults.py.)"""

from __future__ import annotations

import json
import os
import shutil
import types
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from featstore import fsio, store
from featstore.errors import StoreError
from jobs.cli import main as cli_main
from tests.conftest import JOB_FS, JOB_MODEL, build_job_store

MODEL = JOB_MODEL  # extract as the job_store fixture did


@pytest.fixture()
def copy_store(job_store, tmp_path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(job_store, root)
    return root


def _err_lines(capsys) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("featstore:")]


def _os_failing_after(n: int, when: str) -> types.SimpleNamespace:
    """A stand-in for a module's ``os`` whose ``replace`` dies (like a kill) after ``n`` calls
    whose source path contains ``when``."""
    calls = {"n": 0}

    def replace(src, dst):
        if when in str(src):
            calls["n"] += 1
            if calls["n"] > n:
                raise SystemExit("killed")
        return os.replace(src, dst)

    fake = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
    fake.replace = replace
    return fake


# ---------------------------------------------------------------- 1. paths


def test_a_store_path_with_space_percent_hash_and_unicode_round_trips(spark, tmp_path):
    root = build_job_store(spark, tmp_path / "sp ace %20 #1 é", train=False)
    layout = store.Layout(root)
    images = store.read_manifest(layout, "images")
    assert images["counts"]["ok"] == 38 and images["counts"]["errors"] == 2
    assert pq.read_table(layout.images).num_rows == 38  # the parts are where the store is
    assert store.read_arrow(root, f"{JOB_FS}-pca4").num_rows == 38
    assert [p.name for p in tmp_path.iterdir()] == ["sp ace %20 #1 é"]  # nothing beside it
    for name in ("images", JOB_FS, f"{JOB_FS}-pca4"):
        store.check_table(root, name, deep=True)


def test_a_path_spark_would_glob_is_refused_before_spark(tmp_path, capsys):
    src = tmp_path / "celeba"
    from featstore.sources.synthetic import generate

    generate(src, 6, seed=1)
    rc = cli_main(["ingest", "--store", str(tmp_path / "st[1]"), "--path", str(src)], spark=None)
    assert rc == 2
    (line,) = _err_lines(capsys)
    assert "as a glob pattern" in line and "[" in line
    assert not (tmp_path / "st[1]").exists()


# ---------------------------------------------------------------- 2. stale results


def test_results_follow_a_rebuilt_feature_set(spark, copy_store, capsys):
    root = copy_store
    old = store.read_results(root).set_index("attribute")
    pca = f"{JOB_FS}-pca4"
    assert (
        cli_main(
            [
                "extract",
                "--store",
                str(root),
                *MODEL,
                "--feature-set",
                JOB_FS,
                "--set",
                "extract.seed=1",
                "--overwrite",
            ],
            spark=spark,
        )
        == 0
    )
    assert (
        cli_main(
            ["reduce", "--store", str(root), "--feature-set", JOB_FS, "--dims", "4"], spark=spark
        )
        == 0
    )
    content = store.feature_set_manifest(root, pca)["content_fingerprint"]
    assert content != old.loc["Smiling", "feature_set_content"]
    capsys.readouterr()
    assert (
        cli_main(
            [
                "train",
                "--store",
                str(root),
                "--feature-sets",
                pca,
                "--attributes",
                "Smiling,Male",
                "--models",
                "lasso",
                "--set",
                "train.save_models=true",
                "--set",
                "train.folds=3",
            ],
            spark=spark,
        )
        == 0
    )
    assert "2 fits (2 run, 0 already done)" in capsys.readouterr().out
    new = store.read_results(root).set_index("attribute")
    assert len(new) == 2 and (new.feature_set_content == content).all()
    assert (new.created > old.created.max()).all()


# ---------------------------------------------------------------- 3 and 10. bit rot, damage


def _first_file(root: Path, name: str) -> Path:
    m = store.feature_set_manifest(root, name)
    return store.Layout(root).features(name) / m["files"][0]["path"]


def test_a_flipped_byte_is_found_by_check(copy_store, capsys):
    name = f"{JOB_FS}-pca4"
    path = _first_file(copy_store, name)
    col = pq.ParquetFile(path).metadata.row_group(0).column(1)  # the embedding column
    data = bytearray(path.read_bytes())
    data[col.data_page_offset + col.total_compressed_size // 2] ^= 0x01  # inside a data page
    path.write_bytes(bytes(data))
    assert cli_main(["describe", str(copy_store), name, "--check"]) == 2
    (line,) = _err_lines(capsys)
    assert f"table features/{name} is damaged: checksum differs" in line and str(path) in line
    assert cli_main(["describe", str(copy_store), JOB_FS, "--check", "--deep"]) == 0


def test_a_truncated_file_is_reported_as_damage_by_readers_and_check(copy_store, capsys):
    name = f"{JOB_FS}-pca4"
    path = _first_file(copy_store, name)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(StoreError, match=rf"table features/{name} is damaged"):
        store.read_pandas(copy_store, name)
    with pytest.raises(StoreError, match="is damaged"):
        store.load_xy(copy_store, name, "Male", "train")
    assert cli_main(["describe", str(copy_store), name, "--check"]) == 2
    (line,) = _err_lines(capsys)
    assert "is damaged" in line and "re-run resumes" not in line
    rc = cli_main(
        ["train", "--store", str(copy_store), "--feature-sets", name, "--models", "lasso"],
        spark=None,
    )
    assert rc == 2 and "is damaged" in _err_lines(capsys)[0]


def test_an_edited_count_fails_check(copy_store, capsys):
    path = store.Layout(copy_store).manifest_path(store.features_id(JOB_FS))
    m = json.loads(path.read_text())
    m["counts"]["ok"] += 1
    path.write_text(json.dumps(m))
    assert cli_main(["describe", str(copy_store), JOB_FS, "--check"]) == 2
    assert "counts say 39 rows, its files hold 38" in _err_lines(capsys)[0]


def test_a_data_file_the_manifest_does_not_list_is_damage(copy_store, capsys):
    folder = store.Layout(copy_store).features(JOB_FS) / "split=train"
    shutil.copy(next(folder.glob("*.parquet")), folder / "part-extra.parquet")
    assert cli_main(["describe", str(copy_store), JOB_FS, "--check"]) == 2
    assert "a data file its manifest does not list" in _err_lines(capsys)[0]


# ---------------------------------------------------------------- 4. kill during assembly, commit


def test_a_kill_during_assembly_resumes_exactly(spark, copy_store, monkeypatch):
    from featstore import extract as extract_mod
    from featstore.config import load_config

    cfg = load_config(
        None,
        [
            "extract.model=mobilenetv2",
            "extract.input_size=32x32",
            "extract.batch_size=8",
            "extract.weights=random",
            "extract.feature_set=asm",
            "extract.chunk_rows=10",
        ],
    ).extract
    monkeypatch.setattr(extract_mod, "os", _os_failing_after(3, "/chunks/"))
    with pytest.raises(SystemExit):
        extract_mod.extract(spark, cfg, str(copy_store))
    assert "asm" not in store.feature_set_names(copy_store)
    monkeypatch.undo()
    summary = extract_mod.extract(spark, cfg, str(copy_store))
    assert summary.chunks_resumed == 4 and summary.ok == 38
    t = store.read_arrow(copy_store, "asm", attributes=[])
    ref = store.read_arrow(copy_store, JOB_FS, attributes=[])  # same settings, other name
    assert t["image_id"].to_pylist() == ref["image_id"].to_pylist()
    got, want = (np.stack(x["embedding"].to_numpy(zero_copy_only=False)) for x in (t, ref))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(np.abs(want).max()))
    store.check_table(copy_store, "asm", deep=True)


def test_a_kill_inside_a_commit_is_finished_by_the_next_reader(copy_store, monkeypatch):
    """The writer dies after moving the new data in but before the metadata: the journal lets
    the next reader finish the commit; until then no reader sees a mix."""
    from tests.storefakes import write_feature_set

    ids = [f"{i:06d}.jpg" for i in range(1, 7)]
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    write_feature_set(copy_store, "j", ids, ["train"] * 6, x)
    # staged moves: the errors file, the manifest, then the commit's data, errors, metadata
    fake_os = _os_failing_after(3, "/_featstore/staging/")
    for module in (fsio, store.lock):  # the files written, the commit's renames
        monkeypatch.setattr(module, "os", fake_os)
    with pytest.raises(SystemExit):
        write_feature_set(copy_store, "j", ids, ["train"] * 6, x + 100)
    monkeypatch.undo()
    layout = store.Layout(copy_store)
    assert layout.journal("features/j").is_file()
    got = store.read_arrow(copy_store, "j", attributes=[])  # finishes the commit first
    assert not layout.journal("features/j").exists()
    np.testing.assert_array_equal(
        np.stack(got["embedding"].to_numpy(zero_copy_only=False)), x + 100
    )
    store.check_table(copy_store, "j", deep=True)
    assert not list(layout.staging.iterdir())


# ---------------------------------------------------------------- 5. staging of other sets


def test_a_set_never_removes_the_staging_of_a_set_whose_name_it_prefixes(copy_store):
    layout = store.Layout(copy_store)
    key = "ab" * 32
    with (
        pytest.raises(RuntimeError),
        store.TableWriter(layout, "features/x-pca4", resume_key=key) as w,
    ):
        (w.chunk(0)).mkdir(parents=True)
        (w.chunk(0) / "_SUCCESS").write_text("")
        raise RuntimeError("killed after one chunk")
    kept = w.staging
    assert kept.is_dir()
    with store.TableWriter(layout, "features/x", resume_key="cd" * 32):
        pass
    assert (kept / "chunks" / "chunk-00000" / "_SUCCESS").is_file()
    with store.TableWriter(layout, "features/x-pca4", resume_key="ef" * 32):
        assert not kept.exists()  # its own older staging does go


# ---------------------------------------------------------------- 6. two writers


def test_a_second_writer_of_a_table_exits_2_naming_the_holder(spark, copy_store, capsys):
    layout = store.Layout(copy_store)
    with store.TableLock(layout, "features/twice"):
        rc = cli_main(
            ["extract", "--store", str(copy_store), *MODEL, "--feature-set", "twice"], spark=spark
        )
        assert rc == 2
        (line,) = _err_lines(capsys)
        assert "table features/twice is being written by another featstore job" in line
        assert f"pid {os.getpid()}" in line
        assert not list(layout.staging.glob("features__twice-*"))
    assert (
        cli_main(
            ["extract", "--store", str(copy_store), *MODEL, "--feature-set", "twice"], spark=spark
        )
        == 0
    )


def test_a_dead_holders_lock_is_broken_with_a_message(copy_store, caplog):
    layout = store.Layout(copy_store)
    path = layout.lock_path("results")
    path.parent.mkdir(parents=True, exist_ok=True)
    import socket

    path.write_text(
        json.dumps(
            {
                "owner": "someone",
                "host": socket.gethostname(),
                "pid": 2**22 + 12345,
                "started": "2026-01-01T00:00:00",
            }
        )
    )
    with store.TableLock(layout, "results"):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert "breaking the stale lock of table results held by someone" in caplog.text
    assert not path.exists()


# ---------------------------------------------------------------- 7. one damaged manifest


def test_one_corrupt_manifest_does_not_blind_the_store(copy_store, capsys):
    name = f"{JOB_FS}-pca4"
    store.Layout(copy_store).manifest_path(store.features_id(name)).write_text("{not json")
    assert cli_main(["ls", str(copy_store)]) == 2
    out = capsys.readouterr()
    assert f"{name}" in out.out and "DAMAGED" in out.out and "1 damaged table" in out.err
    for healthy in ("images", "labels", "results", JOB_FS):
        assert healthy in out.out
    assert store.read_pandas(copy_store, JOB_FS).shape[0] == 38
    with pytest.raises(StoreError, match=f"damaged manifest of table features/{name}"):
        store.read_pandas(copy_store, name)


# ---------------------------------------------------------------- 10. bad settings, before Spark


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "extract.chunk_rows=0"], "extract.chunk_rows must be >= 1"),
        (["--feature-set", "bad/name"], "invalid feature set name 'bad/name'"),
        (["--feature-set", "_hidden"], "invalid feature set name '_hidden'"),
    ],
)
def test_bad_extract_settings_exit_2_before_spark(copy_store, capsys, extra, message):
    before = sorted(p.relative_to(copy_store) for p in copy_store.rglob("*"))
    assert cli_main(["extract", "--store", str(copy_store), *MODEL, *extra], spark=None) == 2
    (line,) = _err_lines(capsys)
    assert message in line
    assert sorted(p.relative_to(copy_store) for p in copy_store.rglob("*")) == before


def test_a_weights_file_that_is_not_hdf5_exits_2_before_spark(copy_store, tmp_path, capsys):
    bad = tmp_path / "not.weights.h5"
    bad.write_bytes(b"PK\x03\x04 a zip, not HDF5")
    before = sorted(p.relative_to(copy_store) for p in copy_store.rglob("*"))
    rc = cli_main(
        [
            "extract",
            "--store",
            str(copy_store),
            "--model",
            "mobilenetv2",
            "--input-size",
            "32x32",
            "--weights",
            str(bad),
        ],
        spark=None,
    )
    assert rc == 2
    (line,) = _err_lines(capsys)
    assert "is not an HDF5 file" in line and str(bad) in line
    assert sorted(p.relative_to(copy_store) for p in copy_store.rglob("*")) == before

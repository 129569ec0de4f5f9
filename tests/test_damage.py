"""Damage stays where it happened (issue 25): verified reads of a stage's input, an honest
``featstore ls``, one line that names a failure's cause, nothing left behind by a dead job, and
stale derived tables marked. Stores are the real jobs' (the session's ``job_store``, copied)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import types
import uuid
from pathlib import Path

import pytest

from featstore import fsio, store
from jobs.cli import main as cli_main
from jobs.common import run_guarded
from tests.conftest import JOB_FS
from tests.test_faults import MODEL, _err_lines, _first_file

PCA = f"{JOB_FS}-pca4"


@pytest.fixture()
def copy_store(job_store, tmp_path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(job_store, root)
    return root


@pytest.fixture()
def no_spark(monkeypatch):
    """Fails the test if a job starts a SparkSession: what it refuses, it refuses before."""
    import jobs.spark

    def refuse(*a, **k):
        raise AssertionError("a SparkSession was started")

    monkeypatch.setattr(jobs.spark, "get_spark", refuse)


def _flip_byte(path: Path) -> None:
    import pyarrow.parquet as pq

    col = pq.ParquetFile(path).metadata.row_group(0).column(1)  # the embedding column
    data = bytearray(path.read_bytes())
    data[col.data_page_offset + col.total_compressed_size // 2] ^= 0x01  # inside a data page
    path.write_bytes(bytes(data))


def _committed(root: Path) -> dict[str, str]:
    """Every committed table and when it was created."""
    return {t["id"]: t["manifest"]["created"] for t in store.list_tables(root)}


def _mount(kind: str, target: Path, *opts: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", *kind.split(), *opts, str(target)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount {kind} here ({r.stderr.strip() or r.returncode}); needs root")


@contextlib.contextmanager
def _mounted(kind: str, target: Path, *opts: str):
    _mount(kind, target, *opts)
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


# ---------------------------------------------------------------- verified reads


def test_a_flipped_byte_in_a_base_set_stops_reduce_retrieve_and_train(copy_store, capsys, no_spark):
    path = _first_file(copy_store, JOB_FS)
    _flip_byte(path)
    before = _committed(copy_store)
    root = str(copy_store)
    for argv in (
        ["reduce", "--store", root, "--feature-set", JOB_FS, "--dims", "4", "--overwrite"],
        ["retrieve", "--store", root, "--feature-set", JOB_FS, "--backend", "numpy", "--k", "1"],
        [
            "train",
            "--store",
            root,
            "--feature-sets",
            JOB_FS,
            "--attributes",
            "Male",
            "--models",
            "lasso",
        ],
    ):
        assert cli_main(argv, spark=None) == 2, argv[0]
        (line,) = _err_lines(capsys)
        assert str(path) in line and "checksum differs from the manifest's" in line, line
    assert _committed(copy_store) == before  # nothing derived committed
    assert not list(store.Layout(copy_store).staging.iterdir())


def test_extract_over_a_damaged_set_refuses_then_repairs_with_overwrite(spark, copy_store, capsys):
    path = _first_file(copy_store, JOB_FS)
    _flip_byte(path)
    root = str(copy_store)
    assert cli_main(["extract", "--store", root, *MODEL], spark=None) == 2  # before Spark
    (line,) = _err_lines(capsys)
    assert str(path) in line and "rebuild it with --overwrite" in line
    assert "already extracted" not in capsys.readouterr().out
    # repaired, from another seed: the PCA set derived from the old content is now stale
    assert (
        cli_main(
            [
                "extract",
                "--store",
                root,
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
    capsys.readouterr()
    assert cli_main(["describe", root, JOB_FS, "--check"]) == 0
    capsys.readouterr()
    assert cli_main(["ls", root]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["NAME", "KIND", "ROWS", "DIM", "CREATED", "STATE"]
    rows = {ln.split()[0]: ln for ln in out[1:]}
    assert rows[PCA].endswith(f"STALE: derived from {JOB_FS} (replaced since)")
    assert rows[JOB_FS].endswith("  ok") and rows["results"].endswith("  ok")
    col = out[0].index("STATE")
    assert all(ln[col - 2 : col] == "  " for ln in out)  # one column, whatever the name length
    assert cli_main(["describe", root, PCA]) == 0
    assert (
        f"STALE: derived from a version that no longer exists: {JOB_FS}" in capsys.readouterr().out
    )
    # the PCA set re-derived: now the results fitted on its old version are the stale ones
    assert (
        cli_main(["reduce", "--store", root, "--feature-set", JOB_FS, "--dims", "4"], spark=spark)
        == 0
    )
    capsys.readouterr()
    assert cli_main(["ls", root]) == 0
    rows = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()[1:]}
    assert rows["results"].endswith(f"STALE: derived from {PCA} (replaced since)")
    assert rows[PCA].endswith("  ok")
    from featstore.report import replaced_rows

    assert f"2 rows of {PCA} (replaced since)" in replaced_rows(
        store.Layout(root), store.read_results(root)
    )


# ---------------------------------------------------------------- ls


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("truncate", "bytes, the manifest says"),
        ("delete", "file missing"),
        ("stray", "a data file its manifest does not list"),
    ],
)
def test_ls_finds_a_truncated_a_missing_and_a_stray_file(copy_store, capsys, damage, reason):
    path = _first_file(copy_store, JOB_FS)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:3000])
    elif damage == "delete":
        path.unlink()
    else:
        shutil.copy(path, path.with_name("part-copy.parquet"))
    assert cli_main(["ls", str(copy_store)]) == 2
    out = capsys.readouterr()
    (line,) = [ln for ln in out.out.splitlines() if ln.startswith(f"{JOB_FS} ")]
    assert "DAMAGED" in line and reason in line
    assert "1 damaged table" in out.err
    # and a stage asked to rebuild it says so, never "already extracted"
    assert cli_main(["extract", "--store", str(copy_store), *MODEL], spark=None) == 2
    assert "rebuild it with --overwrite" in _err_lines(capsys)[0]


def test_ls_of_a_folder_that_is_not_a_store_and_a_typo(copy_store, tmp_path, capsys):
    assert cli_main(["ls", str(tmp_path)]) == 2
    (line,) = _err_lines(capsys)
    assert "not a featstore store" in line
    assert cli_main(["describe", str(copy_store), JOB_FS.replace("avg", "agv")]) == 2
    (line,) = _err_lines(capsys)
    assert f"did you mean '{JOB_FS}'?" in line


# ---------------------------------------------------------------- a full disk, a read-only store


def test_a_full_disk_is_one_line_naming_the_cause_and_the_path(spark, job_store, tmp_path, capsys):
    from featstore.causes import root_cause

    size = sum(p.stat().st_size for p in job_store.rglob("*") if p.is_file())
    with _mounted("-t tmpfs tmpfs", tmp_path / "mnt", "-o", f"size={size + (4 << 20)}") as mnt:
        root = mnt / "store"
        shutil.copytree(job_store, root)
        filler = mnt / "filler"
        with contextlib.suppress(OSError), open(filler, "wb") as fh:  # fill it up
            while True:
                fh.write(b"\0" * (1 << 16))
                fh.flush()
        # a stage: refused before Spark starts (free space against what it will write)
        assert (
            cli_main(
                [
                    "reduce",
                    "--store",
                    str(root),
                    "--feature-set",
                    JOB_FS,
                    "--dims",
                    "4",
                    "--overwrite",
                ],
                spark=None,
            )
            == 2
        )
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(lines) == 1 and "No space left on device" in lines[0], lines
        assert str(root) in lines[0] and "nothing was started" in lines[0]
        # Spark's own write failing on the full disk: the cause chain walked to its root
        out = mnt / "out"
        exc_seen = []

        def job() -> int:
            try:
                spark.range(50_000, numPartitions=1).selectExpr("id", "uuid() AS u").write.parquet(
                    store.spark_uri(out)
                )
            except Exception as exc:
                exc_seen.append(exc)
                raise
            return 0

        assert run_guarded(job) == 3
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(lines) == 1, lines
        assert f"No space left on device: {out}" in lines[0], lines[0]
        assert str(out) in root_cause(exc_seen[0])


def test_a_read_only_store_is_refused_before_spark(copy_store, tmp_path, capsys, no_spark):
    with _mounted("--bind", tmp_path / "ro", str(copy_store)) as ro:
        r = subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True, text=True
        )
        if r.returncode:
            pytest.skip(f"cannot remount read-only here ({r.stderr.strip()})")
        root = ro
        for argv in (
            ["reduce", "--store", str(root), "--feature-set", JOB_FS, "--dims", "4", "--overwrite"],
            [
                "train",
                "--store",
                str(root),
                "--feature-sets",
                PCA,
                "--attributes",
                "Male",
                "--models",
                "lasso",
                "--overwrite",
            ],
            ["extract", "--store", str(root), *MODEL, "--feature-set", "other"],
        ):
            assert cli_main(argv, spark=None) == 2, argv[0]
            (line,) = _err_lines(capsys)
            assert "not writable (Read-only file system)" in line and str(root) in line


# ---------------------------------------------------------------- leftovers


def _fake_os(fail_on: str) -> types.SimpleNamespace:
    """``os`` for the store's modules whose ``replace`` dies (like a kill) when its target holds
    ``fail_on``: a kill inside the journal's write leaves its temporary behind."""

    def replace(src, dst):
        if fail_on in str(dst):
            raise SystemExit("killed")
        return os.replace(src, dst)

    fake = types.SimpleNamespace(**{k: getattr(os, k) for k in dir(os) if not k.startswith("__")})
    fake.replace = replace
    return fake


def _fake_shutil(fail_on: str) -> types.SimpleNamespace:
    """``shutil`` for the store's modules whose ``rmtree`` of a staging folder dies: a kill in the commit
    tail, after the renames and the journal's removal, before the cleanup."""

    def rmtree(path, *a, **k):
        if fail_on in str(path):
            raise SystemExit("killed")
        return shutil.rmtree(path, *a, **k)

    fake = types.SimpleNamespace(
        **{k: getattr(shutil, k) for k in dir(shutil) if not k.startswith("__")}
    )
    fake.rmtree = rmtree
    return fake


def test_a_dead_jobs_journal_temporary_staging_and_lock_are_gone_after_the_next_run(
    spark, copy_store, monkeypatch, capsys
):
    layout = store.Layout(copy_store)
    tid = store.features_id(PCA)
    argv = ["reduce", "--store", str(copy_store), "--feature-set", JOB_FS, "--dims", "4"]
    # killed inside the journal's write
    fake_os = _fake_os("/_featstore/journal/")
    for module in (fsio, store.lock):  # the files written, the commit's renames
        monkeypatch.setattr(module, "os", fake_os)
    with pytest.raises(SystemExit):
        cli_main([*argv, "--overwrite"], spark=spark)
    monkeypatch.undo()
    assert list((layout.meta / "journal").glob(".*.tmp"))
    # killed in the commit tail: the staging (the old table aside) and, kill -9, the lock stay
    fake_shutil = _fake_shutil("/_featstore/staging/")
    for module in (store.lock, store.writer):
        monkeypatch.setattr(module, "shutil", fake_shutil)
    with pytest.raises(SystemExit):
        cli_main([*argv, "--overwrite"], spark=spark)
    monkeypatch.undo()
    staged = list(layout.staging.iterdir())
    assert staged and not layout.journal(tid).exists()
    assert not list((layout.meta / "journal").glob(".*.tmp"))  # the next writer removed it
    layout.lock_path(tid).write_text(
        json.dumps(
            {
                "owner": "someone",
                "host": socket.gethostname(),
                "pid": 2**22 + 4321,
                "started": "2026-01-01T00:00:00",
                "token": uuid.uuid4().hex,
            }
        )
    )
    capsys.readouterr()
    assert cli_main(argv, spark=spark) == 0  # the next run: nothing to do, and it tidies
    assert "already reduced" in capsys.readouterr().out
    assert not list(layout.staging.iterdir())
    assert not layout.lock_path(tid).exists()
    assert cli_main(["describe", str(copy_store), PCA, "--check"]) == 0

"""The one writer every table goes through (:class:`TableWriter`), its commit, and the removal
of a table (see :mod:`featstore.store`)."""

from __future__ import annotations

import logging
import re
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from featstore import fsio
from featstore.errors import StoreError
from featstore.store.checks import (
    describe_files,
    fix_embedding_width,
    parquet_files,
    rows_per_split,
)
from featstore.store.layout import MANIFEST, Layout, ensure_layout, now_iso, safe_tid, write_json
from featstore.store.lock import (
    RESUMABLE,
    TableLock,
    find_debris,
    recover,
    remove_paths,
    roll_forward,
)
from featstore.store.manifest import Manifest, fingerprint
from featstore.store.schema import ERRORS_SCHEMA
from featstore.timing import Stopwatch

logger = logging.getLogger("featstore.store")


class TableWriter:
    """The one way a table is written (see :mod:`featstore.store`).

    ::

        with TableWriter(layout, "features/x", resume_key=run_key, spark=spark) as w:
            df.write.parquet(spark_uri(w.data))        # or w.chunk(k) for resumable chunks
            write_errors(w.errors, rows)
            w.commit(base_manifest("features", ...))

    ``resume_key``: the staging folder is named by it and survives a failure, so a re-run with
    the same key finds its finished chunks; without it staging is private to this run and
    dropped on failure. ``overwrite`` discards resumable staging. ``extra_moves``: further
    ``(staged, target)`` folders committed with the table (the grid's cells)."""

    def __init__(
        self,
        layout: Layout,
        tid: str,
        *,
        resume_key: str | None = None,
        overwrite: bool = False,
        spark: Any = None,
        lock_wait_s: float = 0.0,
    ) -> None:
        self.layout, self.tid = layout, tid
        self.resume_key, self.overwrite, self.spark = resume_key, overwrite, spark
        self.lock = TableLock(layout, tid, wait_s=lock_wait_s)
        self.committed: Manifest | None = None
        self._journalled = False  # the commit's journal exists: its staging must stay
        self._conf: dict[str, str | None] = {}
        token = resume_key[:12] if resume_key else uuid.uuid4().hex[:12]
        self.staging = layout.staging / f"{safe_tid(tid)}-{token}"

    @property
    def data(self) -> Path:
        return self.staging / "data"

    @property
    def errors(self) -> Path:
        return self.staging / "errors"

    @property
    def meta(self) -> Path:
        return self.staging / "meta"

    def chunk(self, k: int) -> Path:
        return self.staging / "chunks" / f"chunk-{k:05d}"

    def __enter__(self) -> TableWriter:
        ensure_layout(self.layout)
        self.lock.acquire()
        try:
            recover(self.layout, self.tid, locked=True)
            # leftovers of earlier runs of this table (we hold its lock: they are dead); the
            # exact pattern, so table "x" never touches the staging of "x-pca8"
            mine = re.compile(rf"^{re.escape(safe_tid(self.tid))}-[0-9a-f]{{12}}$")
            if self.layout.staging.is_dir():
                for entry in self.layout.staging.iterdir():
                    if mine.match(entry.name) and entry != self.staging:
                        shutil.rmtree(entry, ignore_errors=True)
            remove_paths(
                find_debris(self.layout, self.tid, keep=self.staging)
            )  # journal temporaries
            if self.overwrite and self.staging.exists():
                shutil.rmtree(self.staging)
            for d in (self.data, self.errors, self.meta):
                d.mkdir(parents=True, exist_ok=True)
            if self.resume_key:
                (self.staging / RESUMABLE).touch()
        except BaseException:
            self.lock.release()
            raise
        return self

    def set_spark_conf(self, key: str, value: str) -> None:
        """Set a Spark SQL setting for this write; the previous value is restored on exit."""
        if key not in self._conf:
            self._conf[key] = self.spark.conf.get(key, None)
        self.spark.conf.set(key, value)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            for key, value in self._conf.items():
                if value is None:
                    self.spark.conf.unset(key)
                else:
                    self.spark.conf.set(key, value)
            if self._journalled and self.committed is None:
                logger.warning(
                    "table %s: the commit was interrupted; the next reader or writer "
                    "of the table finishes it",
                    self.tid,
                )
            elif self.committed is None and (exc_type is None or self.resume_key is None):
                shutil.rmtree(self.staging, ignore_errors=True)
        finally:
            self.lock.release()

    def commit(
        self,
        manifest: dict[str, Any] | Manifest,
        *,
        has_errors: bool = True,
        extra_moves: Sequence[tuple[Path, Path]] = (),
    ) -> Manifest:
        """Describe the staged files in the manifest and commit data, errors and metadata.

        Checks before anything moves: the manifest's ``counts.rows`` (or, without it,
        ``counts.ok``) equals the rows of the data files, ``counts.errors`` the rows of the errors files."""
        layout = self.layout
        if isinstance(manifest, Manifest):
            manifest = manifest.to_dict()
        for folder in (self.data, self.errors):  # Spark's _SUCCESS and .crc files: not data
            keep = set(parquet_files(folder))
            for p in folder.rglob("*") if folder.is_dir() else []:
                if p.is_file() and p not in keep:
                    p.unlink()
        if self.tid.startswith("features/") and manifest.get("dim"):
            t0 = Stopwatch()
            n = fix_embedding_width(self.data, int(manifest["dim"]))
            if n:
                logger.info(
                    "%s: %d files rewritten with fixed-size embeddings in %.2f s",
                    self.tid,
                    n,
                    t0.seconds,
                )
        files = describe_files(self.data)
        rows = sum(f["rows"] for f in files)
        counts = manifest.setdefault("counts", {})
        declared = counts.get("rows", counts.get("ok"))
        if declared is not None and int(declared) != rows:
            raise StoreError(
                f"{self.staging}: the staged data holds {rows} rows, the job "
                f"counted {declared}; nothing committed"
            )
        splits = rows_per_split(files)
        if splits:
            counts["splits"] = splits
        manifest["files"] = files
        manifest["data_path"] = layout.rel(layout.data(self.tid))
        manifest["content_fingerprint"] = fingerprint([f"{f['path']}:{f['sha256']}" for f in files])
        moves: list[tuple[Path, Path]] = [(self.data, layout.data(self.tid))]
        if has_errors:
            err_files = describe_files(self.errors)
            err_rows = sum(f["rows"] for f in err_files)
            if counts.get("errors") is not None and int(counts["errors"]) != err_rows:
                raise StoreError(
                    f"{self.staging}: the staged errors table holds {err_rows} rows, "
                    f"the job counted {counts['errors']}; nothing committed"
                )
            manifest["errors_files"] = err_files
            manifest["errors_path"] = layout.rel(layout.errors(self.tid))
            moves.append((self.errors, layout.errors(self.tid)))
        else:
            moves.append((self.errors, layout.errors(self.tid)))  # removes an old one
            shutil.rmtree(self.errors, ignore_errors=True)
        moves.extend(extra_moves)
        manifest["sidecars"] = sorted(p.name for p in self.meta.iterdir() if p.name != MANIFEST)
        write_json(self.meta / MANIFEST, manifest)
        moves.append((self.meta, layout.table_meta(self.tid)))  # last: the commit point
        write_json(
            layout.journal(self.tid),
            {
                "table": self.tid,
                "staging": layout.rel(self.staging),
                "created": now_iso(),
                "moves": [[layout.rel(a), layout.rel(b)] for a, b in moves],
            },
        )
        self._journalled = True
        roll_forward(layout, layout.journal(self.tid))
        self.committed = Manifest.from_dict(manifest)
        return self.committed


def write_errors(folder: Path, rows: Sequence[dict[str, Any]], name: str = "part-00000") -> int:
    """Write an errors table file into ``folder`` (a writer's ``errors``; always, even empty, so
    readers find the schema)."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(list(rows), schema=ERRORS_SCHEMA)
    with fsio.atomic_path(folder / f"{name}.parquet") as tmp:
        pq.write_table(table, tmp)
    return table.num_rows


def remove_table(layout: Layout, tid: str) -> None:
    """Drop a committed table (data, errors, metadata) through a journalled commit."""
    with TableLock(layout, tid):
        recover(layout, tid, locked=True)
        staging = layout.staging / f"{safe_tid(tid)}-{uuid.uuid4().hex[:12]}"
        staging.mkdir(parents=True)
        moves = [
            (layout.table_meta(tid), staging / "gone-meta"),
            (layout.data(tid), staging / "gone-data"),
            (layout.errors(tid), staging / "gone-errors"),
        ]
        write_json(
            layout.journal(tid),
            {
                "table": tid,
                "staging": layout.rel(staging),
                "created": now_iso(),
                "moves": [[layout.rel(a), layout.rel(b)] for a, b in moves],
            },
        )
        roll_forward(layout, layout.journal(tid))


# ---------------------------------------------------------------- the store itself

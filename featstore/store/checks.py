"""Files against manifests: sha256, the description of a table's files, verification, and the
rewrite of a feature set's files to the fixed embedding width."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa

from featstore import fsio
from featstore.errors import StoreError
from featstore.store.layout import Layout
from featstore.store.manifest import Manifest
from featstore.store.schema import FEATURES_PYARROW_OPTIONS, embedding_type

M = TypeVar("M", bound=Mapping[str, Any])


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def parquet_files(folder: Path) -> list[Path]:
    """The Parquet data files under ``folder`` (recursively, sorted; hidden files skipped)."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in p.relative_to(folder).parts)
    )


def describe_files(folder: Path, *, checksums: bool = True) -> list[dict[str, Any]]:
    """One entry per data file: path (relative to ``folder``), rows (footer), bytes, sha256."""
    import pyarrow.parquet as pq

    out = []
    for f in parquet_files(folder):
        entry: dict[str, Any] = {
            "path": f.relative_to(folder).as_posix(),
            "rows": pq.ParquetFile(f).metadata.num_rows,
            "bytes": f.stat().st_size,
        }
        if checksums:
            entry["sha256"] = sha256_file(f)
        out.append(entry)
    return out


def fix_embedding_width(folder: Path, dim: int) -> int:
    """Rewrite the data files under ``folder`` whose ``embedding`` is a variable list (Spark's
    writes) with :func:`embedding_type` ``(dim)``, row group by row group (a feed reads row
    groups as its units), through a hidden temporary file and a rename. Files already of that
    type are left alone (so a commit rolled forward after a kill redoes only what is left).
    Returns the files rewritten. A row of another width raises :class:`StoreError`."""
    import pyarrow.parquet as pq

    want = embedding_type(dim)
    rewritten = 0
    for f in parquet_files(folder):
        pf = pq.ParquetFile(f)
        schema = pf.schema_arrow
        if "embedding" not in schema.names or schema.field("embedding").type == want:
            continue
        i = schema.get_field_index("embedding")
        target = schema.set(i, pa.field("embedding", want, nullable=schema.field(i).nullable))
        with (
            fsio.atomic_path(f) as tmp,
            pq.ParquetWriter(tmp, target, **FEATURES_PYARROW_OPTIONS) as out,
        ):
            for g in range(pf.num_row_groups):
                part = pf.read_row_group(g)
                try:
                    part = part.cast(target)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    raise StoreError(f"{f}: embeddings are not all {dim} long") from None
                out.write_table(part, row_group_size=max(1, part.num_rows))
        rewritten += 1
    return rewritten


def rows_per_split(files: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Rows per ``split=<s>`` partition of a file list (:func:`describe_files`)."""
    rows: dict[str, int] = {}
    for f in files:
        for part in f["path"].split("/")[:-1]:
            if part.startswith("split="):
                s = part.split("=", 1)[1]
                rows[s] = rows.get(s, 0) + int(f["rows"])
    return rows


# ---------------------------------------------------------------- locks


def check_files(
    layout: Layout,
    tid: str,
    manifest: Mapping[str, Any],
    *,
    checksums: bool = False,
    deep: bool = False,
    footers: bool = True,
) -> None:
    """Check the files on disk against the manifest: every file present with its size and row
    count (cheap: footers only; what every reader does), no extra data files, the counts
    consistent with the files. ``footers=False``: a directory listing and stats only, no file
    opened (what ``featstore ls`` does). ``checksums``: also every file's sha256 (finds a
    flipped bit; what a stage does to the table it derives from, :func:`verify_table`).
    ``deep``: checksums, and every file decoded in full (finds damage that was already there
    when the table was committed). Raises StoreError naming the first damage."""
    m = Manifest.from_dict(manifest)
    checksums = checksums or deep
    footers = footers or checksums
    import pyarrow.parquet as pq

    damaged = f"table {tid} is damaged"
    fix = "rebuild it with --overwrite"
    for key, folder in (("files", layout.data(tid)), ("errors_files", layout.errors(tid))):
        listed = getattr(m, key)
        if listed is None:
            if key == "files":
                raise StoreError(
                    f"{layout.manifest_path(tid)}: {damaged}: its manifest lists no files; {fix}"
                )
            continue
        names = {f["path"] for f in listed}
        extra = [
            p.relative_to(folder).as_posix()
            for p in parquet_files(folder)
            if p.relative_to(folder).as_posix() not in names
        ]
        if extra:
            raise StoreError(
                f"{folder / extra[0]}: {damaged}: a data file its manifest does not list; {fix}"
            )
        for f in listed:
            path = folder / f["path"]
            if not path.is_file():
                raise StoreError(f"{path}: {damaged}: file missing; {fix}")
            if path.stat().st_size != f["bytes"]:
                raise StoreError(
                    f"{path}: {damaged}: {path.stat().st_size} bytes, the manifest "
                    f"says {f['bytes']}; {fix}"
                )
            if not footers:
                continue
            try:
                rows = pq.ParquetFile(path).metadata.num_rows
            except Exception as exc:  # ArrowInvalid and friends: one line, not a traceback
                raise StoreError(
                    f"{path}: {damaged}: not a readable Parquet file "
                    f"({str(exc).splitlines()[0]}); {fix}"
                ) from None
            if rows != f["rows"]:
                raise StoreError(
                    f"{path}: {damaged}: {rows} rows, the manifest says {f['rows']}; {fix}"
                )
            if checksums and _verified_sha256(path) != f["sha256"]:
                raise StoreError(
                    f"{path}: {damaged}: checksum differs from the manifest's "
                    f"(the file changed after it was committed); {fix}"
                )
            if deep:
                try:
                    pq.read_table(path)
                except Exception as exc:
                    raise StoreError(
                        f"{path}: {damaged}: cannot be decoded ({str(exc).splitlines()[0]}); {fix}"
                    ) from None
    counts = m.counts
    rows = sum(int(f["rows"]) for f in m.files)
    declared = counts.get("rows", counts.get("ok"))
    if declared is not None and int(declared) != rows:
        raise StoreError(
            f"{layout.manifest_path(tid)}: {damaged}: counts say {declared} rows, "
            f"its files hold {rows}; {fix}"
        )
    splits = rows_per_split(m.files)
    if splits and {k: int(v) for k, v in counts.get("splits", {}).items() if v} != splits:
        raise StoreError(
            f"{layout.manifest_path(tid)}: {damaged}: counts.splits "
            f"{counts.get('splits')} disagree with its files {splits}; {fix}"
        )
    if m.errors_files is not None and counts.get("errors") is not None:
        err_rows = sum(int(f["rows"]) for f in m.errors_files)
        if int(counts["errors"]) != err_rows:
            raise StoreError(
                f"{layout.manifest_path(tid)}: {damaged}: counts.errors "
                f"{counts['errors']} but its errors table holds {err_rows}; {fix}"
            )


#: sha256 of files this process already hashed, by (path, inode, size, mtime): a stage that
#: verifies its input in its plan and again when it runs reads each file once
_SHA_SEEN: dict[tuple[str, int, int, int], str] = {}


def _verified_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _SHA_SEEN:
        _SHA_SEEN[key] = sha256_file(path)
    return _SHA_SEEN[key]


def verify_table(layout: Layout, tid: str, manifest: M) -> M:
    """A verified read: the table's files against its manifest, every byte against the
    manifest's sha256 (see bench/RESULTS.md for what it costs). What every stage does to the
    table it derives another from, and to a table it would otherwise skip as already done.
    Raises StoreError naming the file and what differs."""
    check_files(layout, tid, manifest, checksums=True)
    return manifest

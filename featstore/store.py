"""The feature store: layout, the one declaration of every table's schema, manifests, commits.

Layout (``<store>/``)::

    images/split=<s>/part-*.parquet      image_id, split, content, width, height, source_path
    images/_manifest.json                written last: the ingest is committed
    images/_errors/part-*.parquet        image_id, split, source_path, stage, error
    labels/part-*.parquet                image_id, split, one bool column per attribute
    labels/_manifest.json
    features/<set>/split=<s>/part-*.parquet   image_id, split, embedding
    features/<set>/_manifest.json
    features/<set>/_errors/part-*.parquet

Error tables live in ``_errors`` (not ``errors`` as first sketched) because Spark, pyarrow and
petastorm all skip ``_``-prefixed entries when they read a partitioned folder: an ``errors`` folder
inside ``split=...`` partitions breaks Spark's partition discovery.

A table is *committed* when its ``_manifest.json`` exists. Tables are built in
``<store>/_staging/<name>-<token>/`` and moved into place with a rename after the manifest is
written, so a killed job leaves nothing that readers see.

Schemas are declared once here as Arrow schemas; Spark schemas are derived from them.

Where the store lives: a directory of a POSIX file system that the driver and every executor see
at the same path (local disk in local mode; NFS, Lustre, EFS, a FUSE mount of object storage on a
cluster), because commits are renames and manifests are written by the driver. ``file://`` URIs
are accepted; other schemes (``hdfs://``, ``s3a://``, ``gs://``) are refused with one line, not
misread as relative local paths. Spark is always handed ``file:`` URIs (:func:`spark_uri`), so a
cluster whose ``fs.defaultFS`` is HDFS still reads and writes the store where the driver does.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from featstore import __version__
from featstore.errors import StoreError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST = "_manifest.json"
ERRORS_DIR = "_errors"
STAGING_DIR = "_staging"

IMAGES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("content", pa.binary(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("source_path", pa.string(), nullable=False),
    ]
)

ERRORS_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=True),
        pa.field("source_path", pa.string(), nullable=True),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
    ]
)

FEATURES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32()), nullable=False),
    ]
)


def labels_schema(attributes: Sequence[str]) -> pa.Schema:
    return pa.schema(
        [
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            *[pa.field(a, pa.bool_(), nullable=False) for a in attributes],
        ]
    )


def spark_schema(schema: pa.Schema) -> Any:
    """The Spark StructType of an Arrow schema (pyspark imported here only)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(//)?")


def local_path(path: str | os.PathLike[str]) -> Path:
    """The absolute local path of a store location: a path or a ``file:`` URI.

    Raises :class:`StoreError` for any other URI scheme (``hdfs://``, ``s3a://``...): the store
    needs a POSIX file system shared by driver and executors (see the module docstring)."""
    text = os.fspath(path)
    m = _URI.match(text)
    if m and len(m.group(1)) > 1:  # one letter is a Windows drive ("C:")
        if m.group(1).lower() != "file":
            raise StoreError(
                f"store location {text!r}: {m.group(1)}:// is not supported; the store must be a "
                "directory on a file system mounted at the same path on the driver and every "
                "executor (local disk, NFS, Lustre, EFS, a FUSE mount of a bucket)")
        from urllib.parse import unquote, urlparse

        parsed = urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise StoreError(f"store location {text!r}: file URIs on another host are not "
                             "supported")
        text = unquote(parsed.path)
    return Path(text).expanduser().resolve()


def spark_uri(path: str | os.PathLike[str]) -> str:
    """``file:///...`` for a local path: what Spark reads and writes, whatever ``fs.defaultFS``
    says (a bare ``/data/store`` would mean ``hdfs:///data/store`` on a YARN cluster)."""
    return local_path(path).as_uri()


class Layout:
    """Paths inside a store."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = local_path(root)

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def labels(self) -> Path:
        return self.root / "labels"

    @property
    def features_root(self) -> Path:
        return self.root / "features"

    def features(self, name: str) -> Path:
        return self.features_root / name

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def staging(self) -> Path:
        return self.root / STAGING_DIR

    def new_staging(self, name: str) -> Path:
        path = self.staging / f"{name}-{uuid.uuid4().hex[:12]}"
        path.mkdir(parents=True)
        return path


# ---------------------------------------------------------------- manifests


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def base_manifest(table: str, **fields: Any) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "table": table,
        "code_version": __version__,
        "created": now_iso(),
        **fields,
    }


def write_manifest(table_dir: Path, manifest: dict[str, Any]) -> Path:
    """Write ``_manifest.json`` atomically (temp file + rename)."""
    path = Path(table_dir) / MANIFEST
    tmp = path.with_name(f".{MANIFEST}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)
    return path


def read_manifest(table_dir: Path) -> dict[str, Any] | None:
    """The committed manifest of a table, or None if the table is not committed.

    Raises StoreError for a manifest of a schema_version this code does not know."""
    path = Path(table_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise StoreError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise StoreError(
            f"{path}: schema_version {version!r} is not supported by featstore {__version__} "
            f"(expects {SCHEMA_VERSION}); upgrade featstore or rebuild the table"
        )
    return manifest


def commit(staged: Path, target: Path) -> None:
    """Move a staged table (manifest already written inside it) into place, replacing ``target``.

    The old table is first renamed aside, so there is no moment when a half-written table is
    visible; if the process dies between the two renames the old table is in ``_staging`` and
    ``target`` is absent (uncommitted), never mixed."""
    if not (staged / MANIFEST).is_file():
        raise StoreError(f"{staged}: refusing to commit a table without {MANIFEST}")
    target.parent.mkdir(parents=True, exist_ok=True)
    trash = None
    if target.exists():
        trash = staged.parent / f"trash-{target.name}-{uuid.uuid4().hex[:8]}"
        os.replace(target, trash)
    os.replace(staged, target)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def clean_staging(layout: Layout, prefix: str) -> None:
    """Remove staged leftovers of earlier killed runs whose name starts with ``prefix``."""
    if not layout.staging.is_dir():
        return
    for entry in layout.staging.iterdir():
        if entry.name.startswith(prefix):
            shutil.rmtree(entry, ignore_errors=True)


# ---------------------------------------------------------------- fingerprints


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(parts: Iterable[str | bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


# ---------------------------------------------------------------- errors tables


def write_errors(table_dir: Path, rows: Sequence[dict[str, Any]]) -> int:
    """Write an ``_errors`` table (always, even empty, so readers find the schema)."""
    import pyarrow.parquet as pq

    path = Path(table_dir) / ERRORS_DIR
    path.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(list(rows), schema=ERRORS_SCHEMA)
    pq.write_table(table, path / "part-00000.parquet")
    return table.num_rows


def read_errors(table_dir: Path) -> pa.Table:
    import pyarrow.parquet as pq

    path = Path(table_dir) / ERRORS_DIR
    if not path.is_dir():
        return ERRORS_SCHEMA.empty_table()
    files = sorted(path.glob("*.parquet"))
    if not files:
        return ERRORS_SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(f, schema=ERRORS_SCHEMA) for f in files])


def require_committed(table_dir: Path, what: str) -> dict[str, Any]:
    manifest = read_manifest(table_dir)
    if manifest is None:
        hint = " (run `featstore ingest` first)" if what in ("images", "labels") else ""
        raise StoreError(f"{table_dir}: no committed {what} table{hint}")
    return manifest


# ---------------------------------------------------------------- listing


def open_store(path: str | os.PathLike[str]) -> Layout:
    layout = Layout(path)
    if not layout.root.is_dir():
        raise StoreError(f"{layout.root}: no such store folder")
    return layout


def list_tables(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Committed tables and feature sets of a store: name, kind, manifest. Uncommitted ones (no
    manifest: a run in progress or killed) are not listed."""
    layout = open_store(path)
    out: list[dict[str, Any]] = []
    for name, table_dir in (("images", layout.images), ("labels", layout.labels),
                            ("results", layout.results)):
        manifest = read_manifest(table_dir)
        if manifest is not None:
            out.append({"name": name, "kind": "table", "path": str(table_dir),
                        "manifest": manifest})
    if layout.features_root.is_dir():
        for entry in sorted(layout.features_root.iterdir()):
            if entry.name.startswith(("_", ".")) or not entry.is_dir():
                continue
            manifest = read_manifest(entry)
            if manifest is not None:
                out.append({"name": entry.name, "kind": "features", "path": str(entry),
                            "manifest": manifest})
    return out


def find_table(path: str | os.PathLike[str], name: str) -> dict[str, Any]:
    tables = list_tables(path)
    for t in tables:
        if t["name"] == name:
            return t
    known = ", ".join(t["name"] for t in tables) or "none"
    raise StoreError(f"{Layout(path).root}: no committed table or feature set {name!r} "
                     f"(committed: {known})")


# ---------------------------------------------------------------- readers


def feature_set_manifest(path: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """The manifest of a committed feature set (StoreError if unknown or uncommitted)."""
    table = find_table(path, name)
    if table["kind"] != "features":
        raise StoreError(f"{name!r} is a table, not a feature set")
    return table["manifest"]


def parquet_rows(table_dir: Path) -> dict[str, int]:
    """Rows per split partition, from the Parquet footers only (cheap)."""
    import pyarrow.parquet as pq

    rows: dict[str, int] = {}
    for part in Path(table_dir).glob("split=*/*.parquet"):
        split = part.parent.name.split("=", 1)[1]
        rows[split] = rows.get(split, 0) + pq.ParquetFile(part).metadata.num_rows
    return rows


def check_feature_set(path: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """Manifest of ``name`` after checking that the rows on disk are the rows it declares."""
    manifest = feature_set_manifest(path, name)
    table_dir = Layout(path).features(name)
    on_disk = parquet_rows(table_dir)
    declared = {k: int(v) for k, v in manifest.get("counts", {}).get("splits", {}).items() if v}
    if on_disk != declared:
        raise StoreError(f"{table_dir}: rows on disk {on_disk} disagree with the manifest "
                         f"{declared}; the feature set is damaged, rebuild it with --overwrite")
    return manifest


def _check_selection(path: str | os.PathLike[str], name: str, manifest: dict[str, Any],
                     splits: Sequence[str] | None,
                     attributes: Sequence[str] | None) -> tuple[list[str], list[str]]:
    have_splits = sorted(manifest["counts"]["splits"])
    want_splits = list(splits) if splits else have_splits
    for s in want_splits:
        if s not in have_splits:
            raise StoreError(f"feature set {name!r} has no split {s!r} (it has "
                             f"{', '.join(have_splits)})")
    labels_manifest = require_committed(Layout(path).labels, "labels")
    known = labels_manifest["attributes"]
    want_attrs = list(known) if attributes is None else list(attributes)
    for a in want_attrs:
        if a not in known:
            raise StoreError(f"unknown attribute {a!r}; the labels table has {len(known)}: "
                             f"{', '.join(known[:8])}{', ...' if len(known) > 8 else ''}")
    return want_splits, want_attrs


def read_spark(spark: Any, path: str | os.PathLike[str], name: str, *,
               splits: Sequence[str] | None = None,
               attributes: Sequence[str] | None = None) -> Any:
    """A feature set joined with its labels, as a Spark DataFrame:
    ``image_id, split, embedding, <attributes...>`` (attributes=None: all; [] : none)."""
    from pyspark.sql import functions as F

    manifest = check_feature_set(path, name)
    want_splits, want_attrs = _check_selection(path, name, manifest, splits, attributes)
    layout = Layout(path)
    feats = spark.read.parquet(spark_uri(layout.features(name))).filter(
        F.col("split").isin(want_splits))
    if not want_attrs:
        return feats.select("image_id", "split", "embedding")
    labels = spark.read.parquet(spark_uri(layout.labels)).select("image_id", *want_attrs)
    return feats.join(labels, "image_id", "inner").select("image_id", "split", "embedding",
                                                           *want_attrs)


def read_arrow(path: str | os.PathLike[str], name: str, *,
               splits: Sequence[str] | None = None,
               attributes: Sequence[str] | None = None) -> pa.Table:
    """The same rows as :func:`read_spark`, as a pyarrow Table (no Spark), sorted by image_id."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    manifest = check_feature_set(path, name)
    want_splits, want_attrs = _check_selection(path, name, manifest, splits, attributes)
    layout = Layout(path)
    dataset = ds.dataset(layout.features(name), format="parquet", partitioning="hive",
                         ignore_prefixes=["_", "."])
    feats = dataset.to_table(columns=["image_id", "split", "embedding"],
                             filter=ds.field("split").isin(want_splits))
    feats = feats.sort_by("image_id")
    if want_attrs:
        labels = pq.read_table(layout.labels, columns=["image_id", *want_attrs])
        # take() by position instead of a hash join: Acero cannot carry list columns
        idx = pc.index_in(feats["image_id"], value_set=labels["image_id"])
        if idx.null_count:
            raise StoreError(f"{layout.labels}: {idx.null_count} images of {name!r} have no "
                             "labels; re-run ingest")
        taken = labels.take(idx)
        for a in want_attrs:
            feats = feats.append_column(a, taken[a])
    split_type = feats.schema.field("split").type
    if split_type != pa.string():
        feats = feats.set_column(feats.schema.get_field_index("split"), "split",
                                 feats["split"].cast(pa.string()))
    return feats


def read_pandas(path: str | os.PathLike[str], name: str, **kw: Any) -> Any:
    """:func:`read_arrow` as a pandas DataFrame (embedding as a column of numpy arrays)."""
    return read_arrow(path, name, **kw).to_pandas()


def embedding_matrix(table: pa.Table, dim: int, name: str) -> Any:
    """The ``embedding`` list column as float32 ``(rows, dim)``, from its flat buffer (one copy).

    Raises :class:`StoreError` unless every row has exactly ``dim`` values (the manifest's
    width): a total that merely divides evenly would reshape into wrong rows."""
    import numpy as np
    import pyarrow.compute as pc

    emb = table["embedding"].combine_chunks()
    if table.num_rows:
        lengths = pc.list_value_length(emb)
        if pc.min(lengths).as_py() != dim or pc.max(lengths).as_py() != dim:
            raise StoreError(f"feature set {name!r}: embeddings are not all {dim} long")
    values = emb.flatten().to_numpy(zero_copy_only=False)
    return values.astype(np.float32, copy=False).reshape(table.num_rows, dim)


def load_xy(path: str | os.PathLike[str], name: str, attribute: str,
            split: str) -> tuple[Any, Any, list[str]]:
    """``X`` float32 (n, dim), ``y`` int8 (n,) of one attribute and split, and the image ids.

    One copy: the embedding list column's flat buffer is reshaped, not rebuilt row by row."""
    import numpy as np

    table = read_arrow(path, name, splits=[split], attributes=[attribute])
    x = embedding_matrix(table, int(feature_set_manifest(path, name)["dim"]), name)
    y = table[attribute].to_numpy(zero_copy_only=False).astype(np.int8)
    return x, y, table["image_id"].to_pylist()

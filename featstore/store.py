"""The feature store: layout, the one declaration of every table's schema, manifests, the one
writer every table goes through, readers.

Layout 2 (``<store>/``)::

    images/split=<s>/part-*.parquet                    image_id, split, content, width, height, source_path
    labels/part-*.parquet                              image_id, split, one bool column per attribute
    features/feature_set=<name>/split=<s>/part-*.parquet   image_id, split, embedding
                                                       (fixed_size_list<float32, dim>)
    results/part-*.parquet                             one row per fit (RESULTS_SCHEMA)
    errors/images/part-*.parquet                       image_id, split, source_path, stage, error
    errors/features/feature_set=<name>/part-*.parquet
    models/<cell key>/<attribute>.joblib               saved fits (train.save_models)
    _featstore/                                        everything that is not a table's data:
        store.json                                     layout version
        tables/<table id>/manifest.json                (+ sidecars, e.g. a PCA set's pca.npz)
        cells/<cell key>.parquet                       finished fits of the grid (its resume state)
        staging/  journal/  locks/

Every data folder holds only its table's Parquet data files, so any reader that globs a table
(``features/**/*.parquet``, with or without hive partitioning; ``polars.scan_parquet(folder)``;
``spark.read.parquet(folder)``) gets exactly the committed rows. One hive root holds all feature
sets, so ``features/**/*.parquet`` with hive partitioning reads every set with its name as the
``feature_set`` column. Table ids: ``images``, ``labels``, ``results``, ``features/<name>``,
``retrieval/<name>`` (``retrieval/feature_set=<name>/part-*.parquet``, RETRIEVAL_SCHEMA: the
retrieval evaluation of feature set ``<name>``, featstore/retrieval.py).

One writer (:class:`TableWriter`) for every table: it takes the table's lock (a lock file with
owner, host, pid and a heartbeat; a stale one is broken with a message, a live one makes a
second writer stop with one line naming the holder), rolls forward a commit that a killed writer
left half done, stages the new table under ``_featstore/staging/`` (a resumable writer keeps its
staging across failures, others drop it), restores the Spark settings it changed, and commits:
the manifest (rows per file and split, a sha256 per data file, a content fingerprint) is staged
beside the data, a journal names the renames, and the renames then put data, errors and metadata
in place (old versions moved aside, deleted last). A table is committed when its manifest
exists; until a re-write commits, the old table stays readable. A killed commit is finished by
the next writer or reader of that table (the journal makes every step idempotent), and what a
killed job left (a journal temporary, staging no re-run can use, a dead holder's lock) is
removed by the next writer or reader of that table (:func:`tidy`).

Damage stays where it happened: a stage verifies the table it derives from (every file's sha256
against the manifest, :func:`verify_table`), a table a stage would rebuild or skip as done is
verified the same way (:func:`existing_output`), and ``featstore ls`` checks every table's files
by a listing and stats (:func:`check_files` with ``footers=False``) and marks a derived table
whose input changed since (:func:`stale_inputs`).

Where the store lives: a directory of a POSIX file system that the driver and every executor see
at the same path (local disk in local mode; NFS, Lustre, EFS, a FUSE mount of object storage on a
cluster), because commits are renames and manifests are written by the driver. ``file://`` URIs
are accepted; other schemes (``hdfs://``, ``s3a://``, ``gs://``) are refused with one line, not
misread as relative local paths. Spark is always handed ``file:`` URIs (:func:`spark_uri`), so a
cluster whose ``fs.defaultFS`` is HDFS still reads and writes the store where the driver does.

Schemas are declared once here as Arrow schemas; Spark schemas are derived from them.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import getpass
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from featstore import __version__
from featstore.errors import ConfigError, StoreError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2
LAYOUT_VERSION = 2
META_DIR = "_featstore"
MANIFEST = "manifest.json"
V1_MANIFEST = "_manifest.json"  # layout 1 kept manifests inside the data folders
PARTITION = "feature_set"
#: tables with one instance per feature set, ``<kind>/<set>``, under one hive root each
#: (``<kind>/feature_set=<set>/``): the feature sets themselves, and what is derived per set
PER_SET_TABLES = ("features", "retrieval")

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


def embedding_type(dim: int) -> pa.DataType:
    """The ``embedding`` column of a committed feature set's files: ``fixed_size_list<float32,
    dim>`` (one width per set), so readers that honour the Arrow schema pyarrow stores in the
    Parquet footer see the width without a cast: polars ``Array(Float32, dim)``, pyarrow and
    pandas through pyarrow. Parquet has no fixed-size list type: the column is a plain Parquet
    LIST, so Spark reads ``array<float>`` and DuckDB's ``read_parquet`` ``FLOAT[]`` (DuckDB sees
    ``FLOAT[dim]`` through pyarrow: README, "Querying the store"). Spark writes variable lists
    (:data:`FEATURES_SCHEMA`, what Spark reads and writes); :meth:`TableWriter.commit` rewrites
    a feature set's staged files to this type. Sets written before (variable lists) stay
    readable: every reader here accepts both."""
    return pa.list_(pa.field("element", pa.float32()), dim)


def is_embedding_type(tp: pa.DataType) -> bool:
    """A list of floats, variable (old stores, Spark's side) or fixed-size (committed sets)."""
    return (
        pa.types.is_list(tp) or pa.types.is_large_list(tp) or pa.types.is_fixed_size_list(tp)
    ) and pa.types.is_floating(tp.value_type)


def features_file_schema(dim: int) -> pa.Schema:
    """:data:`FEATURES_SCHEMA` as a committed feature set's files hold it (``embedding`` of
    :func:`embedding_type`)."""
    return pa.schema(
        [
            pa.field("embedding", embedding_type(dim), nullable=False)
            if f.name == "embedding"
            else f
            for f in FEATURES_SCHEMA
        ]
    )


#: Options of every Spark write of a feature set's files (extract's chunks, reduce's sets): no
#: Parquet dictionary, since an embedding's floats (and the image ids) are all distinct and the
#: writer would hash each one until it gives up on the dictionary (seen in thread dumps of the
#: extract's tasks: the write fell behind the model; bench/RESULTS.md).
FEATURES_WRITE_OPTIONS = {"parquet.enable.dictionary": "false"}
#: The same for pyarrow's rewrite of those files to the fixed width (:func:`fix_embedding_width`)
FEATURES_PYARROW_OPTIONS = {"use_dictionary": False, "compression": "snappy"}

RESULTS_SCHEMA = pa.schema(
    [
        pa.field("attribute", pa.string()),
        pa.field("feature_set", pa.string()),
        pa.field("model", pa.string()),
        pa.field("train_size", pa.int64()),  # requested; 0 = the whole train split
        pa.field("seed", pa.int64()),
        pa.field("status", pa.string()),  # ok | error
        pa.field("reason", pa.string()),
        pa.field("n_train", pa.int64()),
        pa.field("n_val", pa.int64()),
        pa.field("n_test", pa.int64()),
        pa.field("dim", pa.int64()),
        pa.field("accuracy", pa.float64()),
        pa.field("balanced_accuracy", pa.float64()),
        pa.field("f1", pa.float64()),
        pa.field("roc_auc", pa.float64()),
        pa.field("tn", pa.int64()),
        pa.field("fp", pa.int64()),
        pa.field("fn", pa.int64()),
        pa.field("tp", pa.int64()),
        pa.field("majority_baseline", pa.float64()),
        pa.field("ci_low", pa.float64()),
        pa.field("ci_high", pa.float64()),
        pa.field("params", pa.string()),  # JSON: chosen hyper-parameters
        pa.field("history", pa.string()),  # JSON: dense training curves
        pa.field("fit_seconds", pa.float64()),
        pa.field("y_true", pa.list_(pa.int8())),  # test labels, in image_id order
        pa.field("y_pred", pa.list_(pa.int8())),  # test predictions, same order (for McNemar)
        # the test ROC curve (featstore.evaluate.roc_points): false / true positive rates of its
        # vertices from (0, 0) to (1, 1), at most evaluate.ROC_POINTS of them; null when the test
        # labels have one class. Absent from results written before them: read as null
        # (RESULTS_ADDED_COLUMNS)
        pa.field("roc_fpr", pa.list_(pa.float32())),
        pa.field("roc_tpr", pa.list_(pa.float32())),
        pa.field("cell", pa.string()),
        pa.field("created", pa.string()),
        # the saved model, relative to the store root (train.save_models); null when not saved
        pa.field("model_path", pa.string()),
        # the feature set's committed content the fit saw (its manifest's content_fingerprint)
        pa.field("feature_set_content", pa.string()),
        # what the fit was chosen by, off the test split: its score on the validation split (every
        # "best" in featstore is the argmax of it; the test accuracy is then the estimate)
        pa.field("selection_score", pa.float64()),
        pa.field("selection_metric", pa.string()),  # "validation accuracy"
        # the positive-class score of every test image, in the order of y_true (probability)
        pa.field("y_score", pa.list_(pa.float32())),
        # the person in every test image (same order; null where the store has no identities):
        # intervals and paired differences resample people, not images
        pa.field("groups", pa.list_(pa.int64())),
        pa.field("ci_method", pa.string()),  # how ci_low/ci_high were made ("wilson, by identity")
        pa.field("ba_ci_low", pa.float64()),  # balanced accuracy, bootstrap (by identity) 95% CI
        pa.field("ba_ci_high", pa.float64()),
        pa.field("auc_ci_low", pa.float64()),  # ROC AUC, bootstrap (by identity) 95% CI
        pa.field("auc_ci_high", pa.float64()),
        pa.field("brier", pa.float64()),  # Brier score of y_score
        # multi-class targets (train.target: class; featstore.multiclass): the number of classes,
        # their names (y_true / y_pred hold indices into this list), the K x K test confusion
        # matrix (rows: true class, columns: predicted, in the order of ``classes``) and the
        # macro-averaged F1. Null for the binary attribute fits.
        pa.field("n_classes", pa.int64()),
        pa.field("classes", pa.list_(pa.string())),
        pa.field("confusion", pa.list_(pa.list_(pa.int64()))),
        pa.field("macro_f1", pa.float64()),
    ]
)

#: Columns of RESULTS_SCHEMA that results tables (and grid cells) written by an earlier
#: featstore lack; :func:`read_results` reads them as null, so old stores stay readable.
RESULTS_ADDED_COLUMNS = (
    "roc_fpr",
    "roc_tpr",
    "selection_score",
    "selection_metric",
    "y_score",
    "groups",
    "ci_method",
    "ba_ci_low",
    "ba_ci_high",
    "auc_ci_low",
    "auc_ci_high",
    "brier",
    "n_classes",
    "classes",
    "confusion",
    "macro_f1",
)

#: retrieval/feature_set=<set>/: one row per (queries, items, metric, k, target, attribute)
#: (featstore/retrieval.py defines the metrics). ``feature_set`` is not a column of the files:
#: it is the hive partition (``retrieval/**/*.parquet`` with hive partitioning), like features.
RETRIEVAL_SCHEMA = pa.schema(
    [
        pa.field("queries", pa.string()),  # split of the query images
        pa.field("items", pa.string()),  # split searched
        pa.field("metric", pa.string()),  # cosine | l2
        pa.field("k", pa.int64()),
        # attribute: one attribute (attribute = its name); mean: the mean of the attribute rows;
        # exact / jaccard: the multi-label variants over all the run's attributes; class: a
        # class-per-folder source (attribute = a class: its queries; "*": every query)
        pa.field("target", pa.string()),
        pa.field("attribute", pa.string()),  # "*" for mean, exact, jaccard and the all-class row
        pa.field("n_queries", pa.int64()),
        pa.field("n_items", pa.int64()),
        pa.field("n_relevant_queries", pa.int64()),  # queries with >= 1 relevant item (mAP's)
        pa.field("top_k_accuracy", pa.float64()),
        pa.field("top_k_precision", pa.float64()),
        pa.field("map_at_k", pa.float64()),  # null for jaccard (graded relevance)
        pa.field(
            "chance_precision", pa.float64()
        ),  # top-k precision of random items; null: jaccard
        pa.field("dim", pa.int64()),
        pa.field("feature_set_content", pa.string()),  # store.fs_fingerprint of the searched set
        pa.field("created", pa.string()),
    ]
)


#: The labels table's column of the person in each image (CelebA's identity_CelebA.txt; null
#: where the source has none). Bootstrap intervals and custom splits go by it: ~20 images of one
#: person are not 20 independent draws. Labels tables written before it lack it (read as null).
IDENTITY = "identity"


#: The labels table's column of the class of each image (a class-per-folder source: the folder
#: name; null where the source has none, e.g. CelebA). ``train.target: class`` fits it. Labels
#: tables written before it lack it (read as null).
CLASS = "class"


def labels_schema(
    attributes: Sequence[str], *, identity: bool = False, klass: bool = False
) -> pa.Schema:
    """The labels table: image_id, split, [identity,] [class,] one bool column per attribute.
    ingest always writes ``identity`` and ``class`` (null where the source has none)."""
    return pa.schema(
        [
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            *([pa.field(IDENTITY, pa.int64(), nullable=True)] if identity else []),
            *([pa.field(CLASS, pa.string(), nullable=True)] if klass else []),
            *[pa.field(a, pa.bool_(), nullable=False) for a in attributes],
        ]
    )


def _optional_label(path: str | os.PathLike[str], column: str) -> dict[str, Any] | None:
    """``{image_id: value}`` of an optional column of the labels table, or None where the table
    has no value in it (a source without one, or a store ingested before the column existed)."""
    import pyarrow.parquet as pq

    table = find_table(path, "labels")
    files = _data_files(Layout(path), table["id"], table["manifest"])
    if not files or column not in pq.read_schema(files[0]).names:
        return None
    t = read_table(path, "labels", columns=["image_id", column])
    if t[column].null_count == t.num_rows:
        return None
    return {i: v for i, v in zip(t["image_id"].to_pylist(), t[column].to_pylist()) if v is not None}


def read_identities(path: str | os.PathLike[str]) -> dict[str, int] | None:
    """``{image_id: identity}`` of the labels table, or None where it has no identity."""
    return _optional_label(path, IDENTITY)


def read_classes(path: str | os.PathLike[str]) -> dict[str, str] | None:
    """``{image_id: class}`` of the labels table, or None where it has no class."""
    return _optional_label(path, CLASS)


def spark_schema(schema: pa.Schema) -> Any:
    """The Spark StructType of an Arrow schema (pyspark imported here only)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


# ---------------------------------------------------------------- paths and names

_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(//)?")
_GLOB_CHARS = set("*?[]{}\\")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")


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
                "executor (local disk, NFS, Lustre, EFS, a FUSE mount of a bucket)"
            )
        from urllib.parse import unquote, urlparse

        parsed = urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise StoreError(
                f"store location {text!r}: file URIs on another host are not supported"
            )
        text = unquote(parsed.path)
    return Path(text).expanduser().resolve()


def spark_uri(path: str | os.PathLike[str]) -> str:
    """``file:///...`` for a local path: what Spark reads and writes, whatever ``fs.defaultFS``
    says (a bare ``/data/store`` would mean ``hdfs:///data/store`` on a YARN cluster).

    The path is *not* percent-encoded: Hadoop's ``Path`` takes the text literally, so an encoded
    ``%20`` would become a folder named ``%20`` (spaces, ``%``, ``#`` and unicode round-trip this
    way). Spark expands glob characters in read paths, so a path holding any is refused."""
    p = local_path(path)
    bad = sorted(_GLOB_CHARS & set(str(p)))
    if bad:
        raise StoreError(
            f"{p}: Spark reads {' '.join(bad)} in a path as a glob pattern; move "
            "the store to a path without them"
        )
    return "file://" + str(p)


def check_name(name: str, what: str = "feature set") -> str:
    """A table or feature-set name: letters, digits and ``._+-``, not starting with ``.``/``_``
    (names are folder names and hive partition values)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"invalid {what} name {name!r}: use letters, digits and ._+- "
            "(starting with a letter or digit, at most 200 characters)"
        )
    return name


def features_id(name: str) -> str:
    return f"features/{check_name(name)}"


def _safe(tid: str) -> str:
    return tid.replace("/", "__")


class Layout:
    """Paths inside a store (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = local_path(root)

    # data (what analysts read)
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
        return self.features_root / f"{PARTITION}={check_name(name)}"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def errors_root(self) -> Path:
        return self.root / "errors"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def data(self, tid: str) -> Path:
        kind, _, name = tid.partition("/")
        if kind in PER_SET_TABLES and name:
            return self.root / kind / f"{PARTITION}={check_name(name)}"
        if tid in ("images", "labels", "results"):
            return self.root / tid
        raise StoreError(f"unknown table {tid!r}")

    def errors(self, tid: str) -> Path:
        kind, _, name = tid.partition("/")
        if kind in PER_SET_TABLES and name:
            return self.errors_root / kind / f"{PARTITION}={check_name(name)}"
        return self.errors_root / tid

    # metadata (featstore's own)
    @property
    def meta(self) -> Path:
        return self.root / META_DIR

    def table_meta(self, tid: str) -> Path:
        return self.meta / "tables" / tid

    def manifest_path(self, tid: str) -> Path:
        return self.table_meta(tid) / MANIFEST

    @property
    def cells(self) -> Path:
        return self.meta / "cells"

    @property
    def staging(self) -> Path:
        return self.meta / "staging"

    def journal(self, tid: str) -> Path:
        return self.meta / "journal" / f"{_safe(tid)}.json"

    def lock_path(self, tid: str) -> Path:
        return self.meta / "locks" / f"{_safe(tid)}.lock"

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


# ---------------------------------------------------------------- small file helpers


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def write_json(path: Path, obj: Any) -> Path:
    """Write JSON atomically (temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w") as fh:
        fh.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


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


def base_manifest(table: str, **fields: Any) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "table": table,
        "code_version": __version__,
        "created": now_iso(),
        **fields,
    }


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
        tmp = f.with_name(f".{f.name}.tmp")
        with pq.ParquetWriter(tmp, target, **FEATURES_PYARROW_OPTIONS) as out:
            for g in range(pf.num_row_groups):
                part = pf.read_row_group(g)
                try:
                    part = part.cast(target)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    tmp.unlink()
                    raise StoreError(f"{f}: embeddings are not all {dim} long") from None
                out.write_table(part, row_group_size=max(1, part.num_rows))
        os.replace(tmp, f)
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


class LockedError(StoreError):
    """Another live featstore job holds the table's lock."""


HEARTBEAT_S = 5.0
STALE_S = 120.0  # a lock whose heartbeat is older than this is stale (its holder is gone)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TableLock:
    """An exclusive lock on one table: ``_featstore/locks/<table>.lock`` created with O_EXCL
    (which NFS v3+ honours), holding owner, host, pid and start time; its mtime is the heartbeat,
    touched every few seconds. A lock whose holder is a dead process on this host, or whose
    heartbeat stopped for :data:`STALE_S` seconds, is broken with a warning."""

    def __init__(self, layout: Layout, tid: str, *, wait_s: float = 0.0) -> None:
        self.layout, self.tid, self.wait_s = layout, tid, wait_s
        self.path = layout.lock_path(tid)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.info = {
            "table": tid,
            "owner": _user(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": now_iso(),
        }

    def _holder(self) -> dict[str, Any] | None:
        try:
            text = self.path.read_text()
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(text)
        except json.JSONDecodeError:
            holder = {}
        holder["_age"] = age
        return holder

    def _stale(self, holder: dict[str, Any]) -> str | None:
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            if not _pid_alive(holder["pid"]):
                return f"its process {holder['pid']} is gone"
        if holder["_age"] > STALE_S:
            return f"no heartbeat for {holder['_age']:.0f} s"
        if not holder.get("pid") and holder["_age"] > HEARTBEAT_S * 2:
            return "the lock file is unreadable"
        return None

    def acquire(self) -> TableLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue  # released in between
                why = self._stale(holder)
                if why:
                    logger.warning(
                        "breaking the stale lock of table %s held by %s@%s pid %s since %s (%s)",
                        self.tid,
                        holder.get("owner"),
                        holder.get("host"),
                        holder.get("pid"),
                        holder.get("started"),
                        why,
                    )
                    # renamed aside, not unlinked; still, two jobs breaking the same stale lock
                    # at the same moment can race (the second may move the first's fresh lock):
                    # a window of microseconds, accepted for a lock that NFS honours
                    aside = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex[:8]}")
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(self.path, aside)
                        aside.unlink()
                    continue
                if time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
                raise LockedError(
                    f"table {self.tid} is being written by another featstore job: "
                    f"{holder.get('owner')}@{holder.get('host')} pid {holder.get('pid')} since "
                    f"{holder.get('started')} (lock {self.path}); wait for it to finish, or "
                    "delete the lock file if that job is gone"
                ) from None
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(self.info) + "\n")
            break
        self._thread = threading.Thread(
            target=self._beat, daemon=True, name=f"featstore-lock-{self.tid}"
        )
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        holder = self._holder()
        if (
            holder
            and holder.get("pid") == os.getpid()
            and holder.get("started") == self.info["started"]
        ):
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> TableLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this container
        return str(os.getuid())


# ---------------------------------------------------------------- commits


def _roll_forward(layout: Layout, journal: Path) -> None:
    """Finish the commit a journal describes. Every step checks what is already done, so a
    commit killed at any point is finished by running this again."""
    entry = json.loads(journal.read_text())
    staging = layout.root / entry["staging"]
    for i, (src_rel, dst_rel) in enumerate(entry["moves"]):
        src, dst = layout.root / src_rel, layout.root / dst_rel
        if not src.exists():
            continue  # moved already
        if dst.exists():
            aside = staging / f"old-{i}"
            if aside.exists():
                shutil.rmtree(aside)
            os.replace(dst, aside)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    journal.unlink()
    shutil.rmtree(staging, ignore_errors=True)
    for _, dst_rel in entry["moves"]:  # a removed table leaves no empty partition folders
        dst = layout.root / dst_rel
        if not dst.exists():
            _prune_empty(dst.parent, layout.root)


def _prune_empty(folder: Path, stop: Path) -> None:
    while folder != stop and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def recover(layout: Layout, tid: str, *, locked: bool = False) -> bool:
    """Finish a commit of ``tid`` that a killed writer left half done. Returns True if one was
    finished. Without ``locked``, it waits for a live writer instead (whose commit finishes
    within moments)."""
    journal = layout.journal(tid)
    if not journal.is_file():
        if not locked:
            tidy(layout, tid)
        return False
    if locked:
        logger.warning("table %s: finishing a commit that an interrupted job left half done", tid)
        _roll_forward(layout, journal)
        return True
    try:
        lock = TableLock(layout, tid, wait_s=10.0).acquire()
    except (LockedError, OSError):
        return False  # read-only store or a live writer: the reader sees the previous commit
    try:
        return recover(layout, tid, locked=True)
    finally:
        lock.release()


#: marks the staging folder of a resumable writer (extract): kept across a failure
RESUMABLE = ".resumable"


def _debris(layout: Layout, tid: str, keep: Path | None = None) -> list[Path]:
    """What dead jobs left of table ``tid``: journal temporaries (a kill inside
    :func:`write_json`) and staging folders that no commit or resume can use: those whose
    ``meta`` folder is gone (a commit that finished its renames but was killed before its
    cleanup, a removal), and those of a killed writer that does not resume. A killed resumable
    writer's staging (marked :data:`RESUMABLE`, its ``meta`` in place) stays for its re-run."""
    out: list[Path] = []
    journals = layout.meta / "journal"
    if journals.is_dir():
        out += sorted(journals.glob(f".{_safe(tid)}.json.*.tmp"))
    if layout.staging.is_dir():
        mine = re.compile(rf"^{re.escape(_safe(tid))}-[0-9a-f]{{12}}$")
        out += [
            e
            for e in sorted(layout.staging.iterdir())
            if mine.match(e.name)
            and e != keep
            and not ((e / "meta").is_dir() and (e / RESUMABLE).is_file())
        ]
    return out


def _remove(paths: Iterable[Path]) -> None:
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def tidy(layout: Layout, tid: str) -> bool:
    """Clean what dead jobs left of table ``tid`` (:func:`_debris`, a stale lock), under the
    table's lock; a reader calls it (through :func:`read_manifest`), so a table that is only
    read again, never rewritten, is cleaned too. Does nothing (cheaply: a listing and a stat)
    when there is nothing to clean, when a live job holds the lock, or on a read-only store.
    Returns True if it cleaned something."""
    debris = _debris(layout, tid)
    if not debris and not layout.lock_path(tid).exists():
        return False
    try:
        lock = TableLock(layout, tid).acquire()  # breaks a dead holder's lock, with a warning
    except (LockedError, OSError):
        return False
    try:
        debris = _debris(layout, tid)
        if debris:
            logger.warning(
                "table %s: removing what an interrupted job left: %s",
                tid,
                ", ".join(layout.rel(p) for p in debris),
            )
            _remove(debris)
        return True
    finally:
        lock.release()


class TableWriter:
    """The one way a table is written (see the module docstring).

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
        self.committed: dict[str, Any] | None = None
        self._journalled = False  # the commit's journal exists: its staging must stay
        self._conf: dict[str, str | None] = {}
        token = resume_key[:12] if resume_key else uuid.uuid4().hex[:12]
        self.staging = layout.staging / f"{_safe(tid)}-{token}"

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
            mine = re.compile(rf"^{re.escape(_safe(self.tid))}-[0-9a-f]{{12}}$")
            if self.layout.staging.is_dir():
                for entry in self.layout.staging.iterdir():
                    if mine.match(entry.name) and entry != self.staging:
                        shutil.rmtree(entry, ignore_errors=True)
            _remove(_debris(self.layout, self.tid, keep=self.staging))  # journal temporaries
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
        manifest: dict[str, Any],
        *,
        has_errors: bool = True,
        extra_moves: Sequence[tuple[Path, Path]] = (),
    ) -> dict[str, Any]:
        """Describe the staged files in the manifest and commit data, errors and metadata.

        Checks before anything moves: the manifest's ``counts.rows`` (or, without it,
        ``counts.ok``) equals the rows of the data files, ``counts.errors`` the rows of the errors files."""
        layout = self.layout
        for folder in (self.data, self.errors):  # Spark's _SUCCESS and .crc files: not data
            keep = set(parquet_files(folder))
            for p in folder.rglob("*") if folder.is_dir() else []:
                if p.is_file() and p not in keep:
                    p.unlink()
        if self.tid.startswith("features/") and manifest.get("dim"):
            t0 = time.perf_counter()
            n = fix_embedding_width(self.data, int(manifest["dim"]))
            if n:
                logger.info(
                    "%s: %d files rewritten with fixed-size embeddings in %.2f s",
                    self.tid,
                    n,
                    time.perf_counter() - t0,
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
        _roll_forward(layout, layout.journal(self.tid))
        self.committed = manifest
        return manifest


def write_errors(folder: Path, rows: Sequence[dict[str, Any]], name: str = "part-00000") -> int:
    """Write an errors table file into ``folder`` (a writer's ``errors``; always, even empty, so
    readers find the schema)."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(list(rows), schema=ERRORS_SCHEMA)
    tmp = folder / f".{name}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, folder / f"{name}.parquet")
    return table.num_rows


def remove_table(layout: Layout, tid: str) -> None:
    """Drop a committed table (data, errors, metadata) through a journalled commit."""
    with TableLock(layout, tid):
        recover(layout, tid, locked=True)
        staging = layout.staging / f"{_safe(tid)}-{uuid.uuid4().hex[:12]}"
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
        _roll_forward(layout, layout.journal(tid))


# ---------------------------------------------------------------- the store itself


def _v1_tables(root: Path) -> list[Path]:
    found = [root / t / V1_MANIFEST for t in ("images", "labels", "results")]
    if (root / "features").is_dir():
        found += [p / V1_MANIFEST for p in (root / "features").iterdir() if p.is_dir()]
    return [p for p in found if p.is_file()]


def check_layout(layout: Layout) -> None:
    """Refuse a store written by layout 1 (manifests inside data folders), naming the fix."""
    marker = layout.meta / "store.json"
    if marker.is_file():
        try:
            version = json.loads(marker.read_text()).get("layout_version")
        except json.JSONDecodeError:
            version = None
        if version != LAYOUT_VERSION:
            raise StoreError(
                f"{marker}: store layout {version!r} is not supported by featstore "
                f"{__version__} (expects {LAYOUT_VERSION})"
            )
        return
    if _v1_tables(layout.root):
        raise StoreError(
            f"{layout.root}: this store was written by an older featstore (layout 1: "
            "manifests inside the data folders); run `featstore migrate "
            f"{layout.root}` once to convert it in place"
        )


def ensure_layout(layout: Layout) -> None:
    """Create the store folder and its layout marker if new; refuse an old layout."""
    check_layout(layout)
    marker = layout.meta / "store.json"
    if not marker.is_file():
        write_json(
            marker,
            {"layout_version": LAYOUT_VERSION, "created": now_iso(), "code_version": __version__},
        )


def open_store(path: str | os.PathLike[str], *, strict: bool = False) -> Layout:
    """The layout of an existing store. ``strict``: the folder must be a featstore store (its
    ``_featstore/store.json`` marker), not merely a folder (``featstore ls``)."""
    layout = Layout(path)
    if not layout.root.is_dir():
        raise StoreError(f"{layout.root}: no such store folder")
    check_layout(layout)
    if strict and not (layout.meta / "store.json").is_file():
        raise StoreError(
            f"{layout.root}: not a featstore store (no {META_DIR}/store.json; "
            "`featstore ingest --store` makes one)"
        )
    return layout


def check_writable(
    path: str | os.PathLike[str], need_bytes: int = 0, *, what: str = "the job"
) -> None:
    """Before Spark starts: the store (or, for a new store, the folder it will be made in)
    accepts a new file, and its file system has ``need_bytes`` free (with 10% to spare).
    Raises StoreError with one line naming the path and the cause."""
    root = local_path(path)
    probe_dir = root / META_DIR if (root / META_DIR).is_dir() else root
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    probe = probe_dir / f".featstore-probe-{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise StoreError(
            f"{probe_dir}: the store is not writable ({exc.strerror}); "
            f"{what} would write there: nothing was started"
        ) from None
    if need_bytes > 0:
        st = os.statvfs(probe_dir)
        free = st.f_bavail * st.f_frsize
        if free < need_bytes * 1.1:
            raise StoreError(
                f"{probe_dir}: No space left on device: {_size(free)} free, "
                f"{what} needs about {_size(need_bytes)}; free some space: "
                "nothing was started"
            )


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TB"


# ---------------------------------------------------------------- manifests


def read_manifest(layout: Layout, tid: str) -> dict[str, Any] | None:
    """The committed manifest of a table, or None if it is not committed. A commit a killed
    writer left half done is finished first. Raises StoreError (naming the file) for a damaged
    manifest or one of a schema_version this code does not know."""
    recover(layout, tid)
    path = layout.manifest_path(tid)
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(
            f"{path}: damaged manifest of table {tid} (not valid JSON: {exc}); "
            "rebuild the table with --overwrite"
        ) from None
    if not isinstance(manifest, dict):
        raise StoreError(f"{path}: damaged manifest of table {tid} (not a JSON object)")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise StoreError(
            f"{path}: schema_version {version!r} is not supported by featstore {__version__} "
            f"(expects {SCHEMA_VERSION}); upgrade featstore or rebuild the table"
        )
    return manifest


def existing_output(layout: Layout, tid: str, *, overwrite: bool) -> dict[str, Any] | None:
    """The committed manifest of a table a stage is asked to (re)build, or None. Without
    ``overwrite`` a damaged table (its manifest, or its files against the manifest's sha256)
    stops the stage with one line ending "rebuild it with --overwrite": never "already done",
    never a silent rebuild over it. With ``overwrite`` a damaged one counts as absent (the
    stage repairs it)."""
    try:
        manifest = read_manifest(layout, tid)
        if manifest is not None and not overwrite:
            verify_table(layout, tid, manifest)
        return manifest
    except StoreError:
        if not overwrite:
            raise
        logger.warning("table %s is damaged; --overwrite rebuilds it", tid)
        return None


def require_committed(layout: Layout, tid: str) -> dict[str, Any]:
    manifest = read_manifest(layout, tid)
    if manifest is None:
        hint = " (run `featstore ingest` first)" if tid in ("images", "labels") else ""
        raise StoreError(f"{layout.root}: no committed {tid} table{hint}")
    return manifest


def check_files(
    layout: Layout,
    tid: str,
    manifest: dict[str, Any],
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
    checksums = checksums or deep
    footers = footers or checksums
    import pyarrow.parquet as pq

    damaged = f"table {tid} is damaged"
    fix = "rebuild it with --overwrite"
    for key, folder in (("files", layout.data(tid)), ("errors_files", layout.errors(tid))):
        listed = manifest.get(key)
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
    counts = manifest.get("counts", {})
    rows = sum(int(f["rows"]) for f in manifest["files"])
    declared = counts.get("rows", counts.get("ok"))
    if declared is not None and int(declared) != rows:
        raise StoreError(
            f"{layout.manifest_path(tid)}: {damaged}: counts say {declared} rows, "
            f"its files hold {rows}; {fix}"
        )
    splits = rows_per_split(manifest["files"])
    if splits and {k: int(v) for k, v in counts.get("splits", {}).items() if v} != splits:
        raise StoreError(
            f"{layout.manifest_path(tid)}: {damaged}: counts.splits "
            f"{counts.get('splits')} disagree with its files {splits}; {fix}"
        )
    if manifest.get("errors_files") is not None and counts.get("errors") is not None:
        err_rows = sum(int(f["rows"]) for f in manifest["errors_files"])
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


def verify_table(layout: Layout, tid: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """A verified read: the table's files against its manifest, every byte against the
    manifest's sha256 (see bench/RESULTS.md for what it costs). What every stage does to the
    table it derives another from, and to a table it would otherwise skip as already done.
    Raises StoreError naming the file and what differs."""
    check_files(layout, tid, manifest, checksums=True)
    return manifest


def table_ids(layout: Layout) -> list[str]:
    """Ids of every table with a manifest (committed or damaged), in a stable order."""
    tables = layout.meta / "tables"
    out = [t for t in ("images", "labels", "results") if (tables / t / MANIFEST).is_file()]
    for kind in PER_SET_TABLES:
        if (tables / kind).is_dir():
            out += [
                f"{kind}/{p.name}"
                for p in sorted((tables / kind).iterdir())
                if (p / MANIFEST).is_file()
            ]
    for journal in (
        sorted((layout.meta / "journal").glob("*.json"))
        if (layout.meta / "journal").is_dir()
        else []
    ):
        tid = journal.stem.replace("__", "/")  # a commit in flight or interrupted
        if tid not in out:
            out.append(tid)
    return out


def _entry(
    layout: Layout, tid: str, manifest: dict[str, Any] | None, damage: str | None = None
) -> dict[str, Any]:
    prefix = tid.partition("/")[0]
    kind = prefix if prefix in PER_SET_TABLES and "/" in tid else "table"
    name = tid.split("/", 1)[1] if kind == "features" else tid  # "retrieval/<set>" stays whole
    return {
        "name": name,
        "id": tid,
        "kind": kind,
        "path": str(layout.data(tid)),
        "errors_path": str(layout.errors(tid)) if manifest and "errors_path" in manifest else None,
        "manifest": manifest,
        "damaged": damage,
    }


def list_tables(path: str | os.PathLike[str], *, damaged: bool = False) -> list[dict[str, Any]]:
    """Committed tables and feature sets of a store: name, id, kind, paths, manifest. A table
    whose manifest is damaged is left out (``damaged=True``: listed with the reason in
    ``damaged``, and so is a table whose files disagree with its manifest, found by a listing
    and stats only: :func:`check_files` with ``footers=False``), and the others stay readable.
    Uncommitted ones (a run in progress or killed) are not listed."""
    layout = open_store(path)
    out: list[dict[str, Any]] = []
    for tid in table_ids(layout):
        try:
            manifest = read_manifest(layout, tid)
        except StoreError as exc:
            if damaged:
                out.append(_entry(layout, tid, None, str(exc)))
            continue
        if manifest is None:
            continue
        if damaged:
            try:
                check_files(layout, tid, manifest, footers=False)
            except StoreError as exc:
                out.append(_entry(layout, tid, manifest, str(exc)))
                continue
        out.append(_entry(layout, tid, manifest))
    return out


def stale_inputs(layout: Layout, tid: str, manifest: dict[str, Any]) -> list[str]:
    """What a derived table was derived from that has changed since (manifests only): a PCA
    set's source, a retrieval table's feature set, the feature sets of the results table. One
    line per changed input (``"<set> (replaced since)"``, ``"<set> (gone)"``); empty if none."""
    if tid == "results":
        derived_from = dict(manifest.get("feature_sets") or {})
    elif tid.startswith("retrieval/"):
        derived_from = {
            manifest.get("feature_set") or tid.split("/", 1)[1]: manifest.get("feature_set_content")
        }
    elif isinstance(manifest.get("source"), dict) and manifest["source"].get("name"):
        src = manifest["source"]
        derived_from = {src["name"]: src.get("content_fingerprint")}
    else:
        return []
    out = []
    for name, content in sorted(derived_from.items()):
        if not content:
            continue
        try:
            current = read_manifest(layout, features_id(name))
        except (StoreError, ConfigError):
            current = None
        if current is None:
            out.append(f"{name} (gone)")
        elif fs_fingerprint(current) != content:
            out.append(f"{name} (replaced since)")
    return out


def find_table(path: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """The table ``images``/``labels``/``results``, a per-set table ``retrieval/<set>``, or the
    feature set ``name``."""
    layout = open_store(path)
    if name in ("images", "labels", "results"):
        tid = name
    elif "/" in name and name.partition("/")[0] in PER_SET_TABLES:
        tid = f"{name.partition('/')[0]}/{check_name(name.partition('/')[2])}"
    else:
        tid = features_id(name)
    manifest = read_manifest(layout, tid)  # a damaged one raises its own line
    if manifest is None:
        names = [t["name"] for t in list_tables(layout.root)]
        raise StoreError(
            f"{layout.root}: no committed table or feature set {name!r}"
            f"{_did_you_mean(name, names)} (committed: {', '.join(names) or 'none'})"
        )
    return _entry(layout, tid, manifest)


def _did_you_mean(name: str, known: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def feature_set_names(path: str | os.PathLike[str]) -> list[str]:
    return [t["name"] for t in list_tables(path) if t["kind"] == "features"]


def feature_set_manifest(path: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """The manifest of a committed feature set (StoreError if unknown or uncommitted)."""
    layout = open_store(path)
    manifest = read_manifest(layout, features_id(name))
    if manifest is None:
        names = feature_set_names(layout.root)
        raise StoreError(
            f"{layout.root}: no committed feature set {name!r}"
            f"{_did_you_mean(name, names)} (committed: {', '.join(names) or 'none'})"
        )
    return manifest


def check_table(
    path: str | os.PathLike[str], name: str, *, checksums: bool = False, deep: bool = False
) -> dict[str, Any]:
    """The manifest of table or feature set ``name`` after :func:`check_files`."""
    table = find_table(path, name)
    check_files(Layout(path), table["id"], table["manifest"], checksums=checksums, deep=deep)
    return table["manifest"]


def check_feature_set(
    path: str | os.PathLike[str], name: str, *, checksums: bool = False, deep: bool = False
) -> dict[str, Any]:
    """Manifest of feature set ``name`` after checking its files (see :func:`check_files`;
    ``checksums=True``: a verified read, what a stage does to its input)."""
    manifest = feature_set_manifest(path, name)
    check_files(Layout(path), features_id(name), manifest, checksums=checksums, deep=deep)
    return manifest


# ---------------------------------------------------------------- readers


def read_errors(path: str | os.PathLike[str], name: str) -> pa.Table:
    """The errors table of ``images`` or of feature set ``name`` (empty if it has none)."""
    import pyarrow.parquet as pq

    table = find_table(path, name)
    layout = Layout(path)
    files = [
        layout.errors(table["id"]) / f["path"] for f in table["manifest"].get("errors_files") or []
    ]
    if not files:
        return ERRORS_SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(f, schema=ERRORS_SCHEMA) for f in files])


def _check_selection(
    path: str | os.PathLike[str],
    name: str,
    manifest: dict[str, Any],
    splits: Sequence[str] | None,
    attributes: Sequence[str] | None,
) -> tuple[list[str], list[str]]:
    have_splits = sorted(manifest["counts"]["splits"])
    want_splits = list(splits) if splits else have_splits
    for s in want_splits:
        if s not in have_splits:
            raise StoreError(
                f"feature set {name!r} has no split {s!r} (it has {', '.join(have_splits)})"
            )
    labels_manifest = require_committed(Layout(path), "labels")
    known = labels_manifest["attributes"]
    want_attrs = list(known) if attributes is None else list(attributes)
    for a in want_attrs:
        if a not in known:
            raise StoreError(
                f"unknown attribute {a!r}; the labels table has {len(known)}: "
                f"{', '.join(known[:8])}{', ...' if len(known) > 8 else ''}"
            )
    return want_splits, want_attrs


def data_files(
    layout: Layout, tid: str, manifest: dict[str, Any], splits: Sequence[str] | None = None
) -> list[Path]:
    """The committed data files of table ``tid`` that its manifest lists (of ``splits``)."""
    return _data_files(layout, tid, manifest, splits)


def _data_files(
    layout: Layout, tid: str, manifest: dict[str, Any], splits: Sequence[str] | None = None
) -> list[Path]:
    folder = layout.data(tid)
    out = []
    for f in manifest["files"]:
        split = next(
            (p.split("=", 1)[1] for p in f["path"].split("/")[:-1] if p.startswith("split=")), None
        )
        if splits is None or split in splits:
            out.append(folder / f["path"])
    return out


def read_spark(
    spark: Any,
    path: str | os.PathLike[str],
    name: str,
    *,
    splits: Sequence[str] | None = None,
    attributes: Sequence[str] | None = None,
) -> Any:
    """A feature set joined with its labels, as a Spark DataFrame:
    ``image_id, split, embedding, <attributes...>`` (attributes=None: all; [] : none)."""
    from pyspark.sql import functions as F

    manifest = check_feature_set(path, name)
    want_splits, want_attrs = _check_selection(path, name, manifest, splits, attributes)
    layout = Layout(path)
    feats = spark.read.parquet(spark_uri(layout.features(name))).filter(
        F.col("split").isin(want_splits)
    )
    if not want_attrs:
        return feats.select("image_id", "split", "embedding")
    labels = spark.read.parquet(spark_uri(layout.labels)).select("image_id", *want_attrs)
    return feats.join(labels, "image_id", "inner").select(
        "image_id", "split", "embedding", *want_attrs
    )


def read_table(
    path: str | os.PathLike[str], name: str, columns: Sequence[str] | None = None
) -> pa.Table:
    """A committed table (images, labels, results, retrieval/<set>) as pyarrow, after the cheap
    file check."""
    import pyarrow.dataset as ds

    layout = Layout(path)
    table = find_table(path, name)
    check_files(layout, table["id"], table["manifest"])
    manifest, tid = table["manifest"], table["id"]
    files = [str(p) for p in _data_files(layout, tid, manifest)]
    dataset = ds.dataset(
        files,
        format="parquet",
        partitioning=ds.partitioning(flavor="hive"),
        partition_base_dir=str(layout.data(tid)),
    )
    return dataset.to_table(columns=list(columns) if columns is not None else None)


def read_arrow(
    path: str | os.PathLike[str],
    name: str,
    *,
    splits: Sequence[str] | None = None,
    attributes: Sequence[str] | None = None,
) -> pa.Table:
    """The same rows as :func:`read_spark`, as a pyarrow Table (no Spark), sorted by image_id."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    manifest = check_feature_set(path, name)
    want_splits, want_attrs = _check_selection(path, name, manifest, splits, attributes)
    layout = Layout(path)
    tid = features_id(name)
    files = [str(p) for p in _data_files(layout, tid, manifest, want_splits)]
    try:
        dataset = ds.dataset(
            files,
            format="parquet",
            partitioning=ds.partitioning(flavor="hive"),
            partition_base_dir=str(layout.data(tid)),
        )
        feats = dataset.to_table(columns=["image_id", "split", "embedding"])
    except (pa.ArrowException, OSError) as exc:
        raise StoreError(
            f"{layout.data(tid)}: table {tid} is damaged: "
            f"{str(exc).splitlines()[0]}; rebuild it with --overwrite"
        ) from None
    feats = feats.sort_by("image_id")
    if want_attrs:
        labels = read_table(path, "labels", columns=["image_id", *want_attrs])
        # take() by position instead of a hash join: Acero cannot carry list columns
        idx = pc.index_in(feats["image_id"], value_set=labels["image_id"])
        if idx.null_count:
            raise StoreError(
                f"{layout.labels}: {idx.null_count} images of {name!r} have no "
                "labels; re-run ingest"
            )
        taken = labels.take(idx)
        for a in want_attrs:
            feats = feats.append_column(a, taken[a])
    split_type = feats.schema.field("split").type
    if split_type != pa.string():
        feats = feats.set_column(
            feats.schema.get_field_index("split"), "split", feats["split"].cast(pa.string())
        )
    return feats


def read_pandas(path: str | os.PathLike[str], name: str, **kw: Any) -> Any:
    """:func:`read_arrow` as a pandas DataFrame (embedding as a column of numpy arrays)."""
    return read_arrow(path, name, **kw).to_pandas()


def embedding_matrix(table: pa.Table, dim: int, name: str) -> Any:
    """The ``embedding`` list column (fixed-size or, in older stores, variable) as float32
    ``(rows, dim)``, from its flat buffer (one copy).

    Raises :class:`StoreError` unless every row has exactly ``dim`` values (the manifest's
    width): a total that merely divides evenly would reshape into wrong rows."""
    import numpy as np
    import pyarrow.compute as pc

    emb = table["embedding"].combine_chunks()
    if pa.types.is_fixed_size_list(emb.type) and emb.type.list_size != dim:
        raise StoreError(f"feature set {name!r}: embeddings are not all {dim} long")
    if table.num_rows and not pa.types.is_fixed_size_list(emb.type):
        lengths = pc.list_value_length(emb)
        if pc.min(lengths).as_py() != dim or pc.max(lengths).as_py() != dim:
            raise StoreError(f"feature set {name!r}: embeddings are not all {dim} long")
    values = emb.flatten().to_numpy(zero_copy_only=False)
    return values.astype(np.float32, copy=False).reshape(table.num_rows, dim)


def load_xy(
    path: str | os.PathLike[str], name: str, attribute: str, split: str
) -> tuple[Any, Any, list[str]]:
    """``X`` float32 (n, dim), ``y`` int8 (n,) of one attribute and split, and the image ids.

    One copy: the embedding list column's flat buffer is reshaped, not rebuilt row by row."""
    import numpy as np

    table = read_arrow(path, name, splits=[split], attributes=[attribute])
    x = embedding_matrix(table, int(feature_set_manifest(path, name)["dim"]), name)
    y = table[attribute].to_numpy(zero_copy_only=False).astype(np.int8)
    return x, y, table["image_id"].to_pylist()


def read_results(path: str | os.PathLike[str]) -> Any:
    """The committed results table as pandas (``y_true``/``y_pred`` as int8 arrays,
    ``roc_fpr``/``roc_tpr`` as float32 arrays). A table written before the
    :data:`RESULTS_ADDED_COLUMNS` existed reads with those columns null."""
    import numpy as np

    table = read_table(path, "results")
    for name in RESULTS_ADDED_COLUMNS:
        if name not in table.column_names:
            f = RESULTS_SCHEMA.field(name)
            table = table.append_column(f, pa.nulls(table.num_rows, f.type))
    df = table.select(RESULTS_SCHEMA.names).cast(RESULTS_SCHEMA).to_pandas()
    df["classes"] = [list(v) if v is not None else None for v in df["classes"]]
    df["confusion"] = [
        np.asarray([list(r) for r in v], dtype=np.int64) if v is not None else None
        for v in df["confusion"]
    ]
    for col, dtype in (
        ("y_true", np.int8),
        ("y_pred", np.int8),
        ("roc_fpr", np.float32),
        ("roc_tpr", np.float32),
        ("y_score", np.float32),
        ("groups", np.int64),
    ):
        df[col] = [np.asarray(v, dtype=dtype) if v is not None else None for v in df[col]]
    return df


def fs_fingerprint(manifest: dict[str, Any]) -> str:
    """What a result derived from a table depends on: the exact committed content."""
    return manifest.get("content_fingerprint") or fingerprint(
        [str(manifest.get("created")), json.dumps(manifest.get("counts"), sort_keys=True)]
    )

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

Schemas are declared once (:mod:`featstore.store.schema`) as Arrow schemas; Spark schemas are
derived from them.

The package: :mod:`~featstore.store.schema` (schemas), :mod:`~featstore.store.layout` (names,
paths, the layout marker), :mod:`~featstore.store.manifest` (manifests),
:mod:`~featstore.store.checks` (files against manifests), :mod:`~featstore.store.lock` (locks,
recovery), :mod:`~featstore.store.writer` (the writer and its commit),
:mod:`~featstore.store.catalog` (the tables of a store), :mod:`~featstore.store.readers`
(reading tables). Everything public is importable from ``featstore.store``.
"""

from __future__ import annotations

from featstore.errors import ConfigError, StoreError
from featstore.store.catalog import (
    check_feature_set,
    check_table,
    existing_output,
    feature_set_manifest,
    feature_set_names,
    find_table,
    list_tables,
    read_manifest,
    require_committed,
    stale_inputs,
    table_ids,
)
from featstore.store.checks import (
    _SHA_SEEN,
    check_files,
    describe_files,
    fix_embedding_width,
    parquet_files,
    rows_per_split,
    sha256_file,
    verify_table,
)
from featstore.store.layout import (
    LAYOUT_VERSION,
    MANIFEST,
    META_DIR,
    PARTITION,
    PER_SET_TABLES,
    V1_MANIFEST,
    Layout,
    check_layout,
    check_name,
    check_writable,
    ensure_layout,
    features_id,
    local_path,
    now_iso,
    open_store,
    safe_tid,
    spark_uri,
    write_json,
)
from featstore.store.lock import (
    HEARTBEAT_S,
    RESUMABLE,
    STALE_S,
    LockedError,
    TableLock,
    find_debris,
    recover,
    remove_paths,
    roll_forward,
    tidy,
)
from featstore.store.manifest import (
    SCHEMA_VERSION,
    Manifest,
    base_manifest,
    fingerprint,
    fs_fingerprint,
)
from featstore.store.readers import (
    check_selection,
    data_files,
    embedding_matrix,
    load_xy,
    read_arrow,
    read_classes,
    read_errors,
    read_identities,
    read_pandas,
    read_results,
    read_retrieval,
    read_spark,
    read_table,
)
from featstore.store.schema import (
    CLASS,
    ERRORS_SCHEMA,
    FEATURES_PYARROW_OPTIONS,
    FEATURES_SCHEMA,
    FEATURES_WRITE_OPTIONS,
    IDENTITY,
    IMAGES_SCHEMA,
    RESULTS_ADDED_COLUMNS,
    RESULTS_SCHEMA,
    RETRIEVAL_SCHEMA,
    embedding_type,
    features_file_schema,
    is_embedding_type,
    labels_schema,
    spark_schema,
)
from featstore.store.writer import (
    TableWriter,
    remove_table,
    write_errors,
)

__all__ = [
    "CLASS",
    "ERRORS_SCHEMA",
    "FEATURES_PYARROW_OPTIONS",
    "FEATURES_SCHEMA",
    "FEATURES_WRITE_OPTIONS",
    "HEARTBEAT_S",
    "IDENTITY",
    "IMAGES_SCHEMA",
    "LAYOUT_VERSION",
    "MANIFEST",
    "META_DIR",
    "PARTITION",
    "PER_SET_TABLES",
    "RESULTS_ADDED_COLUMNS",
    "RESULTS_SCHEMA",
    "RESUMABLE",
    "RETRIEVAL_SCHEMA",
    "SCHEMA_VERSION",
    "STALE_S",
    "V1_MANIFEST",
    "_SHA_SEEN",
    "ConfigError",
    "Layout",
    "LockedError",
    "Manifest",
    "StoreError",
    "TableLock",
    "TableWriter",
    "base_manifest",
    "check_feature_set",
    "check_files",
    "check_layout",
    "check_name",
    "check_selection",
    "check_table",
    "check_writable",
    "data_files",
    "describe_files",
    "embedding_matrix",
    "embedding_type",
    "ensure_layout",
    "existing_output",
    "feature_set_manifest",
    "feature_set_names",
    "features_file_schema",
    "features_id",
    "find_debris",
    "find_table",
    "fingerprint",
    "fix_embedding_width",
    "fs_fingerprint",
    "is_embedding_type",
    "labels_schema",
    "list_tables",
    "load_xy",
    "local_path",
    "now_iso",
    "open_store",
    "parquet_files",
    "read_arrow",
    "read_classes",
    "read_errors",
    "read_identities",
    "read_manifest",
    "read_pandas",
    "read_results",
    "read_retrieval",
    "read_spark",
    "read_table",
    "recover",
    "remove_paths",
    "remove_table",
    "require_committed",
    "roll_forward",
    "rows_per_split",
    "safe_tid",
    "sha256_file",
    "spark_schema",
    "spark_uri",
    "stale_inputs",
    "table_ids",
    "tidy",
    "verify_table",
    "write_errors",
    "write_json",
]

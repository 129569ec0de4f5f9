"""Reading committed tables and feature sets: pyarrow, pandas, numpy, Spark."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from featstore.errors import StoreError
from featstore.store.catalog import (
    check_feature_set,
    feature_set_manifest,
    find_table,
    require_committed,
)
from featstore.store.checks import check_files
from featstore.store.layout import Layout, check_name, features_id, spark_uri
from featstore.store.manifest import Manifest
from featstore.store.schema import (
    CLASS,
    ERRORS_SCHEMA,
    IDENTITY,
    RESULTS_ADDED_COLUMNS,
    RESULTS_SCHEMA,
    RETRIEVAL_SCHEMA,
)


def _optional_label(path: str | os.PathLike[str], column: str) -> dict[str, Any] | None:
    """``{image_id: value}`` of an optional column of the labels table, or None where the table
    has no value in it (a source without one, or a store ingested before the column existed)."""
    import pyarrow.parquet as pq

    table = find_table(path, "labels")
    files = data_files(Layout(path), table["id"], table["manifest"])
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


def read_errors(path: str | os.PathLike[str], name: str) -> pa.Table:
    """The errors table of ``images`` or of feature set ``name`` (empty if it has none)."""
    import pyarrow.parquet as pq

    table = find_table(path, name)
    layout = Layout(path)
    files = [layout.errors(table["id"]) / f["path"] for f in table["manifest"].errors_files or []]
    if not files:
        return ERRORS_SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(f, schema=ERRORS_SCHEMA) for f in files])


def check_selection(
    path: str | os.PathLike[str],
    name: str,
    manifest: Mapping[str, Any],
    splits: Sequence[str] | None,
    attributes: Sequence[str] | None,
) -> tuple[list[str], list[str]]:
    have_splits = sorted(Manifest.from_dict(manifest).counts["splits"])
    want_splits = list(splits) if splits else have_splits
    for s in want_splits:
        if s not in have_splits:
            raise StoreError(
                f"feature set {name!r} has no split {s!r} (it has {', '.join(have_splits)})"
            )
    labels_manifest = require_committed(Layout(path), "labels")
    known = labels_manifest.extra["attributes"]
    want_attrs = list(known) if attributes is None else list(attributes)
    for a in want_attrs:
        if a not in known:
            raise StoreError(
                f"unknown attribute {a!r}; the labels table has {len(known)}: "
                f"{', '.join(known[:8])}{', ...' if len(known) > 8 else ''}"
            )
    return want_splits, want_attrs


def data_files(
    layout: Layout, tid: str, manifest: Mapping[str, Any], splits: Sequence[str] | None = None
) -> list[Path]:
    """The committed data files of table ``tid`` that its manifest lists (of ``splits``)."""
    folder = layout.data(tid)
    out = []
    for f in Manifest.from_dict(manifest).files:
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
    want_splits, want_attrs = check_selection(path, name, manifest, splits, attributes)
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
    files = [str(p) for p in data_files(layout, tid, manifest)]
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
    want_splits, want_attrs = check_selection(path, name, manifest, splits, attributes)
    layout = Layout(path)
    tid = features_id(name)
    files = [str(p) for p in data_files(layout, tid, manifest, want_splits)]
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
    x = embedding_matrix(table, int(feature_set_manifest(path, name).extra["dim"]), name)
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


def read_retrieval(path: str | os.PathLike[str], name: str) -> Any:
    """The committed retrieval table of feature set ``name`` as pandas, with ``feature_set``."""
    table = (
        read_table(path, f"retrieval/{check_name(name)}")
        .select(RETRIEVAL_SCHEMA.names)
        .cast(RETRIEVAL_SCHEMA)
    )
    df = table.to_pandas()
    df.insert(0, "feature_set", name)
    return df

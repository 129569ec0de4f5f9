"""Ingest: a source listing -> the store's ``images`` and ``labels`` tables, on Spark.

The driver reads the annotation files (a bad one stops the job before anything is written);
executors read and validate the image files in parallel (a bad image goes to ``images/_errors``
and the rest go on). Output is built in ``_staging`` and committed with its manifest; re-running on
the same input is a no-op, and ``overwrite`` rebuilds.

Counts always add up: ``ok + errors == images listed + images present but not listed``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from featstore import decode, store
from featstore.config import IngestConfig
from featstore.errors import ConfigError, InputError
from featstore.progress import Progress, spark_feed
from featstore.sources.base import SPLITS, STAGE_DECODE, Listing
from featstore.timing import Phases, Stopwatch

logger = logging.getLogger(__name__)

# Columns the validating UDF returns: the images schema plus the error, if any.
_STATUS_FIELDS = [*store.IMAGES_SCHEMA.names, "error"]


@dataclass(frozen=True)
class IngestSummary:
    store: str
    ok: int
    errors: int
    split_counts: dict[str, int]
    skipped: bool = False  # True when the store already held this exact input
    error_examples: list[str] = field(default_factory=list)
    timing: Phases | None = None

    @property
    def seen(self) -> int:
        return self.ok + self.errors


def read_source(cfg: IngestConfig) -> Listing:
    """Read the annotation files / folder listing of the configured source (driver side)."""
    if not cfg.path:
        raise ConfigError("ingest needs a source path (--path DIR or --set ingest.path=DIR)")
    if cfg.source == "celeba":
        from featstore.sources.celeba import read_celeba

        return read_celeba(cfg.path)
    if cfg.source == "folder":
        from featstore.sources.folder import read_folder

        return read_folder(cfg.path, seed=cfg.split_seed, fractions=tuple(cfg.split_fractions))
    raise ConfigError(f"unknown source {cfg.source!r}; expected celeba or folder")


def listing_fingerprint(
    listing: Listing, cfg: IngestConfig, file_hashes: dict[str, str] | None = None
) -> str:
    hashes = file_hashes if file_hashes is not None else annotation_hashes(listing)
    parts: list[str | bytes] = [listing.source, str(cfg.rows_per_file)]
    parts += [hashes[Path(f).name] for f in listing.files]
    images = listing.images
    parts += (images["image_id"] + "|" + images["split"] + "|" + images["source_path"]).tolist()
    parts += [f"{p.image_id}|{p.stage}|{p.error}" for p in listing.problems]
    return store.fingerprint(parts)


def annotation_hashes(listing: Listing) -> dict[str, str]:
    """sha256 of each annotation file read, by file name."""
    return {Path(f).name: store.sha256_file(f) for f in listing.files}


def check_image(data: bytes) -> tuple[int, int, str | None]:
    """(width, height, error) of one file's bytes, by the rule ingest stores images with
    (:func:`featstore.decode.ingest_image`): error is None for anything Pillow decodes."""
    _, width, height, error = decode.ingest_image(data)
    return width, height, error


def _validate_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """mapInPandas body: read each listed file and validate it; the content stored is what
    :func:`featstore.decode.ingest_image` makes of it (a JPEG unchanged, another format that
    decodes re-encoded as JPEG)."""
    for pdf in batches:
        rows: dict[str, list[Any]] = {k: [] for k in _STATUS_FIELDS}
        for image_id, split, path in zip(pdf["image_id"], pdf["split"], pdf["source_path"]):
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                content, width, height, error = None, 0, 0, f"cannot read file ({exc.strerror})"
            else:
                content, width, height, error = decode.ingest_image(data)
            rows["image_id"].append(image_id)
            rows["split"].append(split)
            rows["content"].append(content)
            rows["width"].append(width)
            rows["height"].append(height)
            rows["source_path"].append(path)
            rows["error"].append(error)
        yield pd.DataFrame(rows)


def _status_schema() -> Any:
    from pyspark.sql.types import StringType, StructField, StructType

    base = store.spark_schema(store.IMAGES_SCHEMA)
    fields = [StructField(f.name, f.dataType, True) for f in base.fields]
    return StructType([*fields, StructField("error", StringType(), True)])


@dataclass(frozen=True)
class IngestPlan:
    """What :func:`run_ingest` will do, from the settings, the source's annotation files and
    the store's manifests: no Spark, nothing written. ``done``: the store already holds this
    exact input (the run does nothing)."""

    cfg: IngestConfig
    store: str
    listing: Listing = field(repr=False, compare=False)
    file_hashes: dict[str, str] = field(repr=False)  # hashed once: fingerprint and manifest
    fingerprint: str = ""
    done: dict[str, Any] | None = field(default=None, repr=False)  # the images manifest
    seconds: float = 0.0  # the planning's time (the run's "read listing" phase counts it)

    @property
    def layout(self) -> store.Layout:
        return store.Layout(self.store)

    @property
    def images(self) -> int:
        """Images listed (the problems aside)."""
        return len(self.listing.images)


def plan_ingest(cfg: IngestConfig, store_path: str) -> IngestPlan:
    """Read the source's listing and check everything that can be checked before Spark: the
    settings, the annotation files (InputError, nothing written), the store's layout and, when
    it holds an images table, whether that was built from this exact input."""
    clock = Stopwatch()
    if cfg.rows_per_file < 1:
        raise ConfigError(f"ingest.rows_per_file must be >= 1, got {cfg.rows_per_file}")
    listing = read_source(cfg)
    if listing.images.empty:
        raise InputError(
            f"{cfg.path}: no usable images listed (all {len(listing.problems)} missing)"
        )
    layout = store.Layout(store_path)
    file_hashes = annotation_hashes(listing)
    fp = listing_fingerprint(listing, cfg, file_hashes)
    done = None
    if layout.root.exists():
        store.check_layout(layout)  # an older store: say how to migrate
        current = store.existing_output(layout, "images", overwrite=cfg.overwrite)
        if current is not None and current.get("input_fingerprint") == fp and not cfg.overwrite:
            if store.existing_output(layout, "labels", overwrite=False) is not None:
                done = current
    store.spark_uri(layout.root)  # a path Spark cannot take as it is: before Spark starts
    return IngestPlan(
        cfg, str(layout.root), listing, file_hashes, fp, done=done, seconds=clock.seconds
    )


def ingest(spark: Any, cfg: IngestConfig, store_path: str) -> IngestSummary:
    """Plan and run the ingest. Raises InputError (nothing written) for bad annotation files or
    config."""
    return run_ingest(spark, plan_ingest(cfg, store_path))


def run_ingest(spark: Any, plan: IngestPlan) -> IngestSummary:
    """Run what ``plan`` says: nothing when the store holds this input; else the images read
    and validated on the executors and written, then the labels, the errors and the commit
    (labels first: the images manifest is what marks the ingest as done)."""
    if plan.done is not None:
        logger.info(
            "store %s already holds this input (fingerprint %s); nothing to do",
            plan.store,
            plan.fingerprint[:12],
        )
        counts = plan.done["counts"]
        return IngestSummary(
            store=plan.store,
            ok=int(counts["ok"]),
            errors=int(counts["errors"]),
            split_counts=dict(counts["splits"]),
            skipped=True,
        )
    phases = Phases()
    phases.add({"read listing": plan.seconds})
    phases.lap("read listing")
    layout = plan.layout
    with (
        store.TableWriter(layout, "labels") as w_labels,
        store.TableWriter(layout, "images") as w_images,
    ):
        bad = _write_images(spark, plan, w_images, phases)
        error_rows = _error_rows(plan.listing, bad)
        phases.lap("labels+errors+commit")
        # the images that made it: the listed ones but the failures (the driver holds the
        # listing anyway: it read the annotation files)
        ok_mask = ~plan.listing.images["image_id"].isin(set(bad["image_id"]))
        counts = _counts(plan, ok_mask, error_rows, w_images)
        labels = _labels_of(plan.listing, ok_mask)
        _write_labels(labels, plan.listing.attributes, w_labels.data)
        store.write_errors(w_images.errors, error_rows)
        _commit_tables(spark, plan, w_labels, w_images, counts, len(labels))
    phases.lap(None)
    return IngestSummary(
        store=plan.store,
        ok=counts["ok"],
        errors=counts["errors"],
        split_counts=counts["splits"],
        error_examples=[f"{r['image_id']}: {r['error']}" for r in error_rows[:5]],
        timing=phases,
    )


def _write_images(
    spark: Any, plan: IngestPlan, w_images: store.TableWriter, phases: Phases
) -> pd.DataFrame:
    """The Spark part: the executors read and validate every listed file; the valid ones are
    written to the staged images table. Returns the failures (``image_id, split, source_path,
    error``): only they come back to the driver, never the list of every id."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    cfg, n = plan.cfg, plan.images
    n_parts = max(1, math.ceil(n / cfg.rows_per_file), spark.sparkContext.defaultParallelism)
    # The listing reaches the executors as a Parquet file in the staging folder (the store
    # is on storage they share), not inside the tasks: 202,599 paths are ~13 MB of task.
    listed = spark.read.parquet(
        store.spark_uri(_stage_listing(plan.listing, w_images))
    ).repartitionByRange(n_parts, "image_id")
    validated = spark.sparkContext.accumulator(0)  # files read and checked: the progress

    def validate(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for out in _validate_partition(batches):
            yield out
            validated.add(len(out))

    checked = listed.mapInPandas(validate, schema=_status_schema()).persist(StorageLevel.DISK_ONLY)
    phases.lap("read+validate+write images (Spark)")
    progress = contextlib.ExitStack()
    progress.enter_context(
        spark_feed(
            spark,
            progress.enter_context(Progress("ingest", n, "images")),
            accumulator=validated,
        )
    )
    try:
        ok_df = checked.filter(F.col("error").isNull()).select(*store.IMAGES_SCHEMA.names)
        (
            ok_df.sortWithinPartitions("image_id")
            .write.option("parquet.block.size", cfg.row_group_mb * 1024 * 1024)
            .option("maxRecordsPerFile", cfg.rows_per_file)
            .partitionBy("split")
            .parquet(store.spark_uri(w_images.data), mode="overwrite")
        )
        return (
            checked.filter(F.col("error").isNotNull())
            .select("image_id", "split", "source_path", "error")
            .toPandas()
        )
    finally:
        progress.close()
        checked.unpersist()


def _error_rows(listing: Listing, bad: pd.DataFrame) -> list[dict[str, Any]]:
    """The errors table's rows: the listing's problems, then the files that failed validation
    (each logged)."""
    error_rows = [
        {
            "image_id": p.image_id,
            "split": p.split,
            "source_path": p.source_path,
            "stage": p.stage,
            "error": p.error,
        }
        for p in listing.problems
    ] + [
        {
            "image_id": r.image_id,
            "split": r.split,
            "source_path": r.source_path,
            "stage": STAGE_DECODE,
            "error": r.error,
        }
        for r in bad.itertuples(index=False)
    ]
    for row in error_rows:
        logger.warning("image %s (%s): %s", row["image_id"], row["source_path"], row["error"])
    return error_rows


def _counts(
    plan: IngestPlan, ok_mask: pd.Series, error_rows: list[dict[str, Any]], w: store.TableWriter
) -> dict[str, Any]:
    """The images manifest's counts, checked: they add up, and the staged table holds the
    valid images."""
    listing, n = plan.listing, plan.images
    ok_split = listing.images.loc[ok_mask, "split"]
    split_counts = {s: int((ok_split == s).sum()) for s in SPLITS}
    split_counts = {s: c for s, c in split_counts.items() if c} or split_counts
    counts = {
        "ok": int(ok_mask.sum()),
        "errors": len(error_rows),
        "splits": split_counts,
        "listed": n,
        "unlisted_or_missing": len(listing.problems),
    }
    if counts["ok"] + counts["errors"] != n + len(listing.problems):
        raise AssertionError(f"ingest counts do not add up: {counts}")
    written = sum(f["rows"] for f in store.describe_files(w.data, checksums=False))
    if written != counts["ok"]:
        raise AssertionError(f"ingest wrote {written} images but {counts['ok']} were valid")
    return counts


def _labels_of(listing: Listing, ok_mask: pd.Series) -> pd.DataFrame:
    """Labels of the images that made it, same ids as the images table; the identity and
    class columns null for a source without them."""
    labels = listing.labels[
        listing.labels["image_id"].isin(set(listing.images.loc[ok_mask, "image_id"]))
    ]
    if store.IDENTITY not in labels.columns:  # a source without identities: null
        labels = labels.assign(**{store.IDENTITY: pd.array([None] * len(labels), dtype="Int64")})
    if store.CLASS not in labels.columns:  # a source without classes: null
        labels = labels.assign(**{store.CLASS: pd.array([None] * len(labels), dtype="string")})
    labels = labels[["image_id", "split", store.IDENTITY, store.CLASS, *listing.attributes]]
    return labels.reset_index(drop=True)


def _commit_tables(
    spark: Any,
    plan: IngestPlan,
    w_labels: store.TableWriter,
    w_images: store.TableWriter,
    counts: dict[str, Any],
    label_rows: int,
) -> None:
    """Both manifests; labels first: the images manifest is what marks the ingest as done."""
    listing = plan.listing
    common = {
        "source": listing.source,
        "source_path": str(Path(plan.cfg.path).resolve()),
        "input_fingerprint": plan.fingerprint,
        "annotation_files": plan.file_hashes,
        "attributes": list(listing.attributes),
        "spark": {"master": spark.sparkContext.master, "version": spark.version},
    }
    w_labels.commit(
        store.base_manifest(
            "labels", counts={"rows": label_rows, "splits": counts["splits"]}, **common
        ),
        has_errors=False,
    )
    w_images.commit(
        store.base_manifest("images", counts=counts, rows_per_file=plan.cfg.rows_per_file, **common)
    )


def _stage_listing(listing: Listing, w: store.TableWriter) -> Path:
    """The listing's ``image_id, split, source_path`` as one Parquet file beside the staged
    images table (``listing.parquet``: not part of the table, dropped with the staging)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = w.staging / "listing.parquet"  # no leading _: Spark skips such files
    table = pa.Table.from_pandas(
        listing.images[["image_id", "split", "source_path"]].astype(str), preserve_index=False
    )
    pq.write_table(table, path, row_group_size=50_000)
    return path


def _write_labels(labels: pd.DataFrame, attributes: list[str], out: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(
        labels,
        schema=store.labels_schema(attributes, identity=True, klass=True),
        preserve_index=False,
    )
    pq.write_table(table, out / "part-00000.parquet", row_group_size=250_000)

"""Extract: the store's ``images`` table -> ``features/feature_set=<name>/``, on Spark.

The work is cut into *chunks* of consecutive image ids (the images table is sorted by image id, so
Parquet statistics let each chunk read only its row groups). Everything goes through the store's
writer (:class:`featstore.store.TableWriter`, resumable: its staging folder is named by the run
key, ``_featstore/staging/features__<name>-<key>/``). Each chunk is one Spark write into
``chunks/chunk-<k>/`` whose ``_SUCCESS`` marks it done; a killed run leaves only staged chunks,
and a re-run with the same settings skips the finished ones (resume). When every chunk is done
the files are moved into the staged table (restartable: a kill during that step is finished by
the re-run), the errors merged, and the writer commits. ``overwrite`` discards staged chunks
and recomputes.

Counts add up: ``ok + errors == images in the images table``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from featstore import store
from featstore.config import ExtractConfig
from featstore.embed import EmbedConfig, base_cost, check_config, validate_config
from featstore.errors import ConfigError, StoreError
from featstore.progress import Progress, spark_feed

logger = logging.getLogger(__name__)

STAGE_EMBED = "embed"
PLAN = "_plan.json"


@dataclass(frozen=True)
class ExtractSummary:
    store: str
    feature_set: str
    ok: int
    errors: int
    dim: int
    seconds: float
    skipped: bool = False
    chunks_done: int = 0
    chunks_resumed: int = 0

    @property
    def images_per_second(self) -> float:
        return (self.ok + self.errors) / self.seconds if self.seconds > 0 else float("nan")


def embed_config(cfg: ExtractConfig) -> EmbedConfig:
    """The embedder's part of the job's settings (the cache key of the per-worker model)."""
    return EmbedConfig(**{f.name: getattr(cfg, f.name) for f in fields(EmbedConfig)})


def default_name(info: dict[str, Any], cfg: ExtractConfig) -> str:
    parts = [info["model"], "+".join(info["layers"]), info["pooling"]]
    if cfg.input_size != "default":
        h, w = info["input_hw"]
        parts.append(f"{h}x{w}")
    if cfg.precision != "float32":
        parts.append({"bfloat16": "bf16", "float16": "fp16"}.get(cfg.precision, cfg.precision))
    source = info["weights_source"]
    if source == "random":
        parts.append(f"random{cfg.seed}")
    elif source == "file":
        parts.append("w" + (info["weights_sha256"] or "")[:8])
    return "-".join(parts)


def _plan_chunks(images: Any, chunk_rows: int) -> list[tuple[str, str, int]]:
    """[(first_id, last_id, rows)] over the sorted image ids, ~chunk_rows each."""
    ids = images.column("image_id").to_pylist()
    ids.sort()
    if not ids:
        return []
    n_chunks = max(1, math.ceil(len(ids) / chunk_rows))
    size = math.ceil(len(ids) / n_chunks)
    return [(ids[i], ids[min(i + size, len(ids)) - 1], min(size, len(ids) - i))
            for i in range(0, len(ids), size)]


def preflight(cfg: ExtractConfig, store_path: str
              ) -> tuple[store.Layout, dict[str, Any], dict[str, Any], str]:
    """Everything that can be checked without Spark or Keras: the settings, the store and its
    images table, the model, layers and weights (:func:`featstore.embed.check_config`), the
    feature-set name. Returns (layout, the images manifest, the model's settings without
    ``dim``, the feature-set name); raises one InputError line."""
    if cfg.chunk_rows < 1:
        raise ConfigError(f"extract.chunk_rows must be >= 1, got {cfg.chunk_rows}")
    if cfg.feature_set:
        store.check_name(cfg.feature_set)
    layout = store.open_store(store_path)
    images_manifest = store.require_committed(layout, "images")
    info = check_config(embed_config(cfg))  # one clear line for bad model / layer / weights
    name = store.check_name(cfg.feature_set or default_name(info, cfg))
    return layout, images_manifest, info, name


@dataclass(frozen=True)
class ExtractPlan:
    """What :func:`extract` would do (``featstore extract --dry-run``), from the settings and
    the store's manifests only: no Spark, no Keras, nothing written."""

    store: str
    feature_set: str
    model: str
    layers: tuple[str, ...]
    input_hw: tuple[int, int]
    weights: str
    images: int
    splits: dict[str, int]
    chunks: list[tuple[str, str, int]]
    committed: str | None  # created time of the committed feature set of that name, if any
    staged_chunks: int  # finished chunks staged by earlier runs of that name (resumed when the
    #                     settings are the same)


def plan_extract(cfg: ExtractConfig, store_path: str) -> ExtractPlan:
    """:func:`preflight`, then the chunks the images table would be cut into (the same
    :func:`_plan_chunks`) and what the store already holds under that feature-set name."""
    layout, images_manifest, info, name = preflight(cfg, store_path)
    chunks = _plan_chunks(store.read_table(layout.root, "images", ["image_id"]), cfg.chunk_rows)
    existing = store.read_manifest(layout, store.features_id(name))
    prefix = store.features_id(name).replace("/", "__")
    staged = sum(len(list(d.glob("chunks/chunk-*/_SUCCESS")))
                 for d in layout.staging.glob(f"{prefix}-*") if d.is_dir()) \
        if layout.staging.is_dir() else 0
    counts = images_manifest.get("counts", {})
    order = {"train": 0, "val": 1, "test": 2}
    splits = dict(sorted(counts.get("splits", {}).items(), key=lambda kv: order.get(kv[0], 3)))
    return ExtractPlan(
        str(layout.root), name, info["model"], tuple(info["layers"]),
        (int(info["input_hw"][0]), int(info["input_hw"][1])),
        info["weights_source"] if info["weights_source"] == "random"
        else str(info["weights_path"]),
        int(counts.get("ok", sum(c[2] for c in chunks))), splits,
        chunks, existing.get("created", "?") if existing else None, staged)


def extract(spark: Any, cfg: ExtractConfig, store_path: str) -> ExtractSummary:
    """Run the extraction (see the module docstring). Raises InputError before any Spark work
    for an unknown model or layer, missing weights, or a store without a committed images table."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from featstore.udf import make_embed_udf

    t0 = time.perf_counter()
    layout, images_manifest, _, name = preflight(cfg, store_path)
    ecfg = embed_config(cfg)
    info = validate_config(ecfg)  # builds the base (Keras): the embedding width, the backend
    cost = base_cost(ecfg)  # the same (cached) base: parameters and FLOPs per image
    tid = store.features_id(name)

    settings = {k: info[k] for k in ("model", "layers", "pooling", "input_hw", "preprocessing",
                                     "precision", "dim")}
    settings["weights_sha256"] = info["weights_sha256"]
    settings["weights_source"] = info["weights_source"]
    settings["seed"] = cfg.seed
    run_key = store.fingerprint([images_manifest["input_fingerprint"],
                                 json.dumps(settings, sort_keys=True, default=str)])

    existing = store.read_manifest(layout, tid)
    if existing is not None and existing.get("run_key") == run_key and not cfg.overwrite:
        logger.info("feature set %s is already committed with these settings; nothing to do", name)
        c = existing["counts"]
        return ExtractSummary(str(layout.root), name, c["ok"], c["errors"], existing["dim"],
                              time.perf_counter() - t0, skipped=True)

    with store.TableWriter(layout, tid, resume_key=run_key, overwrite=cfg.overwrite,
                           spark=spark) as w:
        plan_path = w.staging / PLAN
        if plan_path.is_file():
            chunks = [tuple(c) for c in json.loads(plan_path.read_text())["chunks"]]
        else:
            chunks = _plan_chunks(store.read_table(layout.root, "images", ["image_id"]),
                                  cfg.chunk_rows)
            store.write_json(plan_path, {"run_key": run_key, "chunks": chunks})

        w.set_spark_conf("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.arrow_batch_rows))
        cpu_threads = int(spark.conf.get("spark.task.cpus", "1"))
        embedded = spark.sparkContext.accumulator(0)  # rows through the model: the progress
        embed_udf = make_embed_udf(ecfg, cpu_threads=cpu_threads, backend=info["backend"],
                                   weights_sha256=info["weights_sha256"], counter=embedded)
        images = spark.read.parquet(store.spark_uri(layout.images))
        parallelism = spark.sparkContext.defaultParallelism
        resumed = resumed_rows = 0
        bar = Progress("extract", sum(c[2] for c in chunks), "images")
        for k, (first, last, rows) in enumerate(chunks):
            chunk_dir = w.chunk(k)
            if (chunk_dir / "_SUCCESS").is_file():
                resumed += 1
                resumed_rows += rows
                logger.info("chunk %d/%d already done (resumed)", k + 1, len(chunks))
                continue
            tc = time.perf_counter()
            df = images.filter((F.col("image_id") >= first) & (F.col("image_id") <= last))
            # Even tasks, a multiple of the cores: the images table's files follow the splits
            # (train is 80%), so reading them as they are leaves cores idle at the end of a
            # chunk. The shuffle moves only JPEG bytes (~10 KB an image), cheap next to the
            # forward pass.
            df = df.repartition(cfg.partitions
                                or parallelism * math.ceil(rows / (parallelism * 4096)))
            out = df.select("image_id", "split", embed_udf("content").alias("r")).select(
                "image_id", "split", "r.embedding", "r.error"
            ).persist(StorageLevel.MEMORY_AND_DISK)
            try:  # progress: rows embedded by the finished tasks (accumulator) + resumed chunks
                with spark_feed(spark, bar, accumulator=embedded, offset=resumed_rows):
                    bad = out.filter(F.col("error").isNotNull()).select(
                        "image_id", "split", "error").toPandas()
                    _write_chunk_errors(_chunk_errors(w, k), bad)
                    (out.filter(F.col("error").isNull()).select("image_id", "split", "embedding")
                     .write.partitionBy("split").parquet(store.spark_uri(chunk_dir),
                                                         mode="overwrite"))
            except BaseException:
                bar.close()
                raise
            finally:
                out.unpersist()
            dt = time.perf_counter() - tc
            logger.info("chunk %d/%d: %d images in %.1f s (%.1f img/s), %d errors", k + 1,
                        len(chunks), rows, dt, rows / dt if dt else 0.0, len(bad))

        bar.close()
        ok, errors = _assemble(w, len(chunks), images_manifest)
        seconds = time.perf_counter() - t0
        w.commit(_manifest(spark, info, cfg, name, run_key, images_manifest, ok, errors,
                           len(chunks), seconds, cost))
    return ExtractSummary(str(layout.root), name, ok, errors, info["dim"],
                          time.perf_counter() - t0, chunks_done=len(chunks) - resumed,
                          chunks_resumed=resumed)


def _chunk_errors(w: store.TableWriter, k: int) -> Path:
    return w.staging / "chunk-errors" / f"errors-{k:05d}.parquet"


def _write_chunk_errors(path: Path, bad: Any) -> None:
    rows = [{"image_id": r.image_id, "split": r.split, "source_path": None,
             "stage": STAGE_EMBED, "error": r.error} for r in bad.itertuples(index=False)]
    for r in rows:
        logger.warning("image %s: %s", r["image_id"], r["error"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=store.ERRORS_SCHEMA), tmp)
    os.replace(tmp, path)


def _assemble(w: store.TableWriter, n_chunks: int,
              images_manifest: dict[str, Any]) -> tuple[int, int]:
    """Move every chunk's files into the staged table and merge the chunk errors. Restartable:
    a file already moved by a killed earlier run stays where it went; the counts are taken
    from the assembled files, so they are right whichever run moved what."""
    for k in range(n_chunks):
        chunk_dir = w.chunk(k)
        for part in sorted(chunk_dir.glob("split=*/*.parquet")):
            dest = w.data / part.parent.name
            dest.mkdir(exist_ok=True)
            os.replace(part, dest / f"c{k:05d}-{part.name}")
    error_tables = [pq.read_table(_chunk_errors(w, k), schema=store.ERRORS_SCHEMA)
                    for k in range(n_chunks)]
    errors = pa.concat_tables(error_tables) if error_tables else store.ERRORS_SCHEMA.empty_table()
    store.write_errors(w.errors, errors.to_pylist())
    ok = sum(f["rows"] for f in store.describe_files(w.data, checksums=False))
    expected = int(images_manifest["counts"]["ok"])
    if ok + errors.num_rows != expected:
        raise StoreError(f"{w.staging}: {ok} embeddings + {errors.num_rows} errors != {expected} "
                         "images; staged chunks are inconsistent, rerun with --overwrite")
    return ok, errors.num_rows


def _manifest(spark: Any, info: dict[str, Any], cfg: ExtractConfig, name: str, run_key: str,
              images_manifest: dict[str, Any], ok: int, errors: int, chunks: int,
              seconds: float, cost: dict[str, int] | None = None) -> dict[str, Any]:
    conf = spark.sparkContext.getConf()
    spark_conf = {k: conf.get(k) for k in (
        "spark.executor.resource.gpu.amount", "spark.task.resource.gpu.amount",
        "spark.executor.cores", "spark.task.cpus", "spark.python.worker.reuse",
        "spark.sql.execution.arrow.maxRecordsPerBatch") if conf.contains(k)}
    spark_conf["spark.sql.execution.arrow.maxRecordsPerBatch"] = str(cfg.arrow_batch_rows)
    expected = int(images_manifest["counts"]["ok"])
    return store.base_manifest(
        "features",
        name=name,
        run_key=run_key,
        model=info["model"],
        layers=list(info["layers"]),
        pooling=info["pooling"],
        input_size=cfg.input_size,
        input_hw=list(info["input_hw"]),
        backend=info["backend"],
        keras_version=info.get("keras_version"),
        weights={"source": info["weights_source"], "path": info["weights_path"],
                 "sha256": info["weights_sha256"]},
        preprocessing=info["preprocessing"],
        precision=info["precision"],
        dim=info["dim"],
        # the conv base at this input size: parameters, FLOPs per image (featstore.models)
        base={"params": (cost or {}).get("params"), "flops": (cost or {}).get("flops")},
        counts={"ok": ok, "errors": errors},
        input={"table": "images", "fingerprint": images_manifest["input_fingerprint"],
               "content_fingerprint": images_manifest.get("content_fingerprint"),
               "created": images_manifest.get("created"), "rows": expected},
        attributes=images_manifest.get("attributes", []),
        spark={"master": spark.sparkContext.master, "version": spark.version,
               "conf": spark_conf},
        timing={"seconds": round(seconds, 2),
                "images_per_second": round(expected / seconds, 2) if seconds else None},
        chunks=chunks,
    )


def with_overrides(cfg: ExtractConfig, **kw: Any) -> ExtractConfig:
    return replace(cfg, **{k: v for k, v in kw.items() if v is not None})

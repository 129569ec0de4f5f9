"""Extract: the store's ``images`` table -> ``features/feature_set=<name>/``, on Spark.

The work is cut into *chunks* of consecutive image ids (the images table is sorted by image id, so
Parquet statistics let each chunk read only its row groups). Everything goes through the store's
writer (:class:`featstore.store.TableWriter`, resumable: its staging folder is named by the run
key, ``_featstore/staging/features__<name>-<key>/``). Each chunk is one Spark job that embeds
and writes in one pass into ``chunks/chunk-<k>/``; the images that failed come back to the driver
in an accumulator and go to ``chunk-errors/errors-<k>.parquet``. Spark's ``_SUCCESS`` and that
file together mark the chunk done; a killed run leaves only staged chunks, and a re-run with the
same settings skips the finished ones (resume). When every chunk is done
the files are moved into the staged table (restartable: a kill during that step is finished by
the re-run), the errors merged, and the writer commits. ``overwrite`` discards staged chunks
and recomputes.

Counts add up: ``ok + errors == images in the images table``.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from featstore import modelspecs, spread, store
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
    timing: Timing | None = None

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


def _plan_chunks(
    layout: store.Layout, manifest: dict[str, Any], chunk_rows: int
) -> list[tuple[str, str, int]]:
    """[(first_id, last_id, rows)] over the sorted image ids, ~chunk_rows each.

    Streams: the images table's files are each sorted by image id (ingest sorts within its
    tasks), so a k-way merge of their id columns, read in batches, finds the boundaries without
    holding every id on the driver. A file that is not sorted (a table written by another tool)
    makes it sort the ids in memory instead."""
    store.check_files(layout, "images", manifest)
    files = store.data_files(layout, "images", manifest)
    total = sum(int(f["rows"]) for f in manifest["files"])
    if not total:
        return []
    n_chunks = max(1, math.ceil(total / chunk_rows))
    size = math.ceil(total / n_chunks)

    def ids(path: Path) -> Iterator[str]:
        last = None
        for batch in pq.ParquetFile(path).iter_batches(batch_size=8192, columns=["image_id"]):
            for v in batch.column(0).to_pylist():
                if last is not None and v < last:
                    raise _Unsorted
                last = v
                yield v

    try:
        merged: Iterable[str] = list(_boundaries(heapq.merge(*(ids(f) for f in files)), size))
    except _Unsorted:
        every = sorted(
            v for f in files for v in pq.read_table(f, columns=["image_id"]).column(0).to_pylist()
        )
        merged = list(_boundaries(iter(every), size))
    return list(merged)  # type: ignore[arg-type]


class _Unsorted(Exception):
    pass


def _boundaries(ids: Iterator[str], size: int) -> Iterator[tuple[str, str, int]]:
    first = last = None
    rows = 0
    for v in ids:
        if rows == 0:
            first = v
        last, rows = v, rows + 1
        if rows == size:
            yield first, last, rows  # type: ignore[misc]
            rows = 0
    if rows:
        yield first, last, rows  # type: ignore[misc]


def preflight(
    cfg: ExtractConfig, store_path: str
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
    images_manifest = store.verify_table(
        layout, "images", store.require_committed(layout, "images")
    )
    info = check_config(embed_config(cfg))  # one clear line for bad model / layer / weights
    name = store.check_name(cfg.feature_set or default_name(info, cfg))
    # a damaged feature set of that name stops the run (or is repaired, with --overwrite)
    store.existing_output(layout, store.features_id(name), overwrite=cfg.overwrite)
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
    chunks = _plan_chunks(layout, images_manifest, cfg.chunk_rows)
    existing = store.existing_output(layout, store.features_id(name), overwrite=cfg.overwrite)
    prefix = store.features_id(name).replace("/", "__")
    staged = (
        sum(
            1
            for d in layout.staging.glob(f"{prefix}-*")
            if d.is_dir()
            for done in d.glob("chunks/chunk-*/_SUCCESS")
            if (d / "chunk-errors" / f"errors-{done.parent.name[6:]}.parquet").is_file()
        )
        if layout.staging.is_dir()
        else 0
    )
    counts = images_manifest.get("counts", {})
    order = {"train": 0, "val": 1, "test": 2}
    splits = dict(sorted(counts.get("splits", {}).items(), key=lambda kv: order.get(kv[0], 3)))
    return ExtractPlan(
        str(layout.root),
        name,
        info["model"],
        tuple(info["layers"]),
        (int(info["input_hw"][0]), int(info["input_hw"][1])),
        info["weights_source"] if info["weights_source"] == "random" else str(info["weights_path"]),
        int(counts.get("ok", sum(c[2] for c in chunks))),
        splits,
        chunks,
        existing.get("created", "?") if existing else None,
        staged,
    )


def extract(spark: Any, cfg: ExtractConfig, store_path: str) -> ExtractSummary:
    """Run the extraction (see the module docstring). Raises InputError before any Spark work
    for an unknown model or layer, missing weights, or a store without a committed images table."""

    from pyspark.sql import functions as F

    from featstore.udf import ErrorsParam, StatsParam, make_embed_udf

    t0 = time.perf_counter()
    layout, images_manifest, info, name = preflight(cfg, store_path)
    ecfg = embed_config(cfg)
    info["backend"] = modelspecs.keras_backend()
    cpu_threads = task_cpu_threads(spark, cfg.cpu_threads)
    tid = store.features_id(name)
    run_key = _run_key(images_manifest, info, cfg.seed)
    existing = store.existing_output(layout, tid, overwrite=cfg.overwrite)
    if (
        existing is not None
        and not cfg.overwrite
        and existing.get("run_key")
        in (run_key, _run_key(images_manifest, info, cfg.seed, existing.get("dim")))
    ):
        logger.info("feature set %s is already committed with these settings; nothing to do", name)
        c = existing["counts"]
        return ExtractSummary(
            str(layout.root),
            name,
            c["ok"],
            c["errors"],
            existing["dim"],
            time.perf_counter() - t0,
            skipped=True,
        )
    warm_stats = spark.sparkContext.accumulator({}, StatsParam())  # the warm-up tasks' time
    with contextlib.ExitStack() as stack:
        # first: the workers' backend import and model build overlap all that follows; none of
        # its tasks outlives the extract (a task still loading the weights file: on leaving)
        warmup = (
            stack.enter_context(_start_warmup(spark, ecfg, cpu_threads, info, warm_stats))
            if cfg.warmup
            else None
        )
        # No model on the driver: the layer names were checked against the generated table, and
        # the workers report the width, parameters and FLOPs of the model they built. Only when
        # the table cannot say (another Keras version) is the base built here to check the names.
        if not info.pop("layers_checked", False):
            validate_config(ecfg)
        w = stack.enter_context(
            store.TableWriter(layout, tid, resume_key=run_key, overwrite=cfg.overwrite, spark=spark)
        )
        plan_path = w.staging / PLAN
        if plan_path.is_file():
            chunks = [tuple(c) for c in json.loads(plan_path.read_text())["chunks"]]
        else:
            chunks = _plan_chunks(layout, images_manifest, cfg.chunk_rows)
            store.write_json(plan_path, {"run_key": run_key, "chunks": chunks})

        w.set_spark_conf("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.arrow_batch_rows))
        # A chunk's query is a fixed repartition (not coalesced by AQE) and a write: adaptive
        # execution would only cut it in two jobs, re-planned in between (0.4-0.7 s a chunk
        # on 2 cores, from the event log: bench/spark_timeline.py)
        w.set_spark_conf("spark.sql.adaptive.enabled", "false")
        embedded = spark.sparkContext.accumulator(0)  # rows through the model: the progress
        worker_stats = spark.sparkContext.accumulator({}, StatsParam())  # timings, base facts
        # the store's own schema: no Spark job to read a footer and infer it
        images = spark.read.schema(store.spark_schema(store.IMAGES_SCHEMA)).parquet(
            store.spark_uri(layout.images)
        )
        parallelism = spark.sparkContext.defaultParallelism
        resumed = resumed_rows = 0
        bar = Progress("extract", sum(c[2] for c in chunks), "images")
        t_pass = time.perf_counter()
        for k, (first, last, rows) in enumerate(chunks):
            chunk_dir = w.chunk(k)
            if _chunk_done(w, k):
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
            df = df.repartition(
                cfg.partitions or parallelism * math.ceil(rows / (parallelism * 4096))
            )
            # One pass: the embeddings are written as the tasks make them; the images that
            # failed reach the driver in an accumulator keyed by image id (a re-run task adds
            # the same keys again), and the chunk counts as done only once its errors file is
            # written too (_chunk_done); the assembly checks that the counts add up.
            errors = spark.sparkContext.accumulator({}, ErrorsParam())
            embed_udf = make_embed_udf(
                ecfg,
                cpu_threads=cpu_threads,
                backend=info["backend"],
                weights_sha256=info["weights_sha256"],
                counter=embedded,
                stats=worker_stats,
                errors=errors,
            )
            out = df.select(
                "image_id", "split", embed_udf("image_id", "split", "content").alias("r")
            )
            try:  # progress: rows embedded by the finished tasks (accumulator) + resumed chunks
                with spark_feed(spark, bar, accumulator=embedded, offset=resumed_rows):
                    (
                        out.filter(F.col("r.error").isNull())
                        .select("image_id", "split", F.col("r.embedding").alias("embedding"))
                        .write.options(**store.FEATURES_WRITE_OPTIONS)
                        .partitionBy("split")
                        .parquet(store.spark_uri(chunk_dir), mode="overwrite")
                    )
            except BaseException:
                bar.close()
                raise
            bad = [
                (image_id, split, reason)
                for image_id, (split, reason) in sorted(errors.value.items())
            ]
            _write_chunk_errors(_chunk_errors(w, k), bad)
            _save_facts(w, worker_stats.value.get("base"))
            dt = time.perf_counter() - tc
            logger.info(
                "chunk %d/%d: %d images in %.1f s (%.1f img/s), %d errors",
                k + 1,
                len(chunks),
                rows,
                dt,
                rows / dt if dt else 0.0,
                len(bad),
            )

        bar.close()
        if warmup is not None:  # the pass is done: a warm-up task still running only costs
            warmup.stop()
        t_commit = time.perf_counter()
        facts = _load_facts(w) or _driver_facts(ecfg)
        info.update(dim=facts["dim"], keras_version=facts.get("keras_version"))
        ok, errors = _assemble(w, len(chunks), images_manifest)
        timing = Timing(
            driver={"plan": t_pass - t0, "pass": t_commit - t_pass},
            workers={
                k: v for k, v in {**worker_stats.value, **warm_stats.value}.items() if k != "base"
            },
        )
        timing.driver["commit"] = time.perf_counter() - t_commit  # all but the final rename
        sp = spread.spread_of_files(sorted(w.data.glob("split=*/*.parquet")), int(info["dim"]))
        spread.warn(name, sp)
        seconds = time.perf_counter() - t0
        w.commit(
            _manifest(
                spark,
                info,
                cfg,
                name,
                run_key,
                images_manifest,
                ok,
                errors,
                len(chunks),
                seconds,
                facts,
                timing,
                sp,
            )
        )
    timing.driver["commit"] = time.perf_counter() - t_commit
    return ExtractSummary(
        str(layout.root),
        name,
        ok,
        errors,
        info["dim"],
        time.perf_counter() - t0,
        chunks_done=len(chunks) - resumed,
        chunks_resumed=resumed,
        timing=timing,
    )


def task_cpu_threads(spark: Any, configured: int = 0) -> int:
    """The backend's CPU threads per extract task: ``configured`` (``extract.cpu_threads``),
    else twice the task's cores (``spark.task.cpus``), at most the executor's cores
    (``spark.executor.cores``; in local mode, the master's). Twice, because a forward pass
    leaves its cores idle between ops and while its batch is handed over: measured on 2 cores
    (bench/RESULTS.md), two threads per task were as fast on a quiet machine as one and about
    10% faster while another job loaded it (its threads no longer get most of the CPU)."""
    if configured > 0:
        return configured
    sc = spark.sparkContext
    conf = sc.getConf()
    task_cpus = max(1, int(conf.get("spark.task.cpus", "1")))
    cores = conf.get("spark.executor.cores", None)
    if cores is None and sc.master.startswith("local"):
        cores = sc.defaultParallelism
    return max(1, min(2 * task_cpus, int(cores))) if cores is not None else 2 * task_cpus


def _start_warmup(
    spark: Any, ecfg: EmbedConfig, cpu_threads: int, info: dict[str, Any], stats: Any = None
) -> Any:
    """One warm-up task per task slot (:func:`featstore.udf.start_warm_workers`) on a background
    thread: the workers import the backend, build the model and run its first pass while the
    driver plans the extract's jobs and Spark reads the first chunk's images."""
    from featstore.udf import start_warm_workers

    slots = max(
        1,
        spark.sparkContext.defaultParallelism
        // max(1, int(spark.conf.get("spark.task.cpus", "1"))),
    )
    return start_warm_workers(
        spark,
        slots,
        ecfg,
        cpu_threads=cpu_threads,
        backend=info["backend"],
        weights_sha256=info["weights_sha256"],
        stats=stats,
    )


def _run_key(
    images_manifest: dict[str, Any], info: dict[str, Any], seed: int, dim: int | None = None
) -> str:
    """The settings' fingerprint: a committed set with the same key is not extracted again.
    Keys written before the width was measured by the workers also held ``dim`` (a function
    of the other settings): ``dim`` = the committed set's recomputes such a key."""
    settings = {
        k: info[k] for k in ("model", "layers", "pooling", "input_hw", "preprocessing", "precision")
    }
    if dim is not None:
        settings["dim"] = dim
    settings["weights_sha256"] = info["weights_sha256"]
    settings["weights_source"] = info["weights_source"]
    settings["seed"] = seed
    return store.fingerprint(
        [images_manifest["input_fingerprint"], json.dumps(settings, sort_keys=True, default=str)]
    )


FACTS = "_base.json"


def _save_facts(w: store.TableWriter, facts: dict[str, Any] | None) -> None:
    """Keep what the workers measured of the network beside the staged chunks (a resumed run
    whose chunks are all done runs no task)."""
    if facts and not (w.staging / FACTS).is_file():
        store.write_json(w.staging / FACTS, facts)


def _load_facts(w: store.TableWriter) -> dict[str, Any] | None:
    path = w.staging / FACTS
    return json.loads(path.read_text()) if path.is_file() else None


def _driver_facts(ecfg: EmbedConfig) -> dict[str, Any]:
    """The same facts measured on the driver (builds the base): only when no task ran, i.e. an
    images table with no images."""
    import keras

    d = validate_config(ecfg)
    return {"dim": d["dim"], "keras_version": keras.version(), **base_cost(ecfg)}


@dataclass
class Timing:
    """Where an extract's time went: the driver's wall clock per phase (``plan``: checks, the
    plan, the UDF; ``pass``: the Spark jobs of every chunk; ``commit``) and the workers' summed
    timings (:data:`featstore.udf.TIMINGS`, ``tasks``)."""

    driver: dict[str, float]
    workers: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "driver": {k: round(v, 3) for k, v in self.driver.items()},
            "workers": {k: round(v, 3) for k, v in self.workers.items()},
        }

    def line(self) -> str:
        """``workers: model 84%, decode wait 3%, ... of 61.2 task-s; driver: plan 1.1 s, ...``"""
        wk = self.workers
        total = wk.get("task_s", 0.0)
        parts = []
        if total > 0:
            shares = {
                "model": wk.get("model_s", 0.0),
                "decode wait": wk.get("decode_wait_s", 0.0),
                "Spark input": wk.get("input_s", 0.0),
                "Spark output": wk.get("output_s", 0.0),
                "worker start": wk.get("start_s", 0.0),
            }
            shares["other"] = max(0.0, total - sum(shares.values()))
            parts.append(
                "workers: "
                + ", ".join(f"{k} {v / total:.0%}" for k, v in shares.items())
                + f" of {total:.1f} task-s in {int(wk.get('tasks', 0))} tasks"
                + " ("
                + (
                    f"{int(wk['model_reused'])} found the model built; "
                    if "model_reused" in wk
                    else ""
                )
                + f"decode {wk.get('decode_s', 0.0):.1f} s on its own thread)"
            )
        if wk.get("warmup_tasks"):
            parts.append(
                f"warm-up: {int(wk['warmup_tasks'])} workers imported the backend, built "
                f"the model and ran its first pass in {wk.get('warmup_s', 0.0):.1f} "
                "task-s before the tasks"
            )
        parts.append("driver: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.driver.items()))
        return "; ".join(parts)


def _chunk_errors(w: store.TableWriter, k: int) -> Path:
    return w.staging / "chunk-errors" / f"errors-{k:05d}.parquet"


def _chunk_done(w: store.TableWriter, k: int) -> bool:
    """A chunk is done when Spark committed its files (``_SUCCESS``) and the driver then wrote
    its errors file: a kill between the two redoes the chunk."""
    return (w.chunk(k) / "_SUCCESS").is_file() and _chunk_errors(w, k).is_file()


def _write_chunk_errors(path: Path, bad: list[tuple[str, str | None, str]]) -> None:
    rows = [
        {
            "image_id": image_id,
            "split": split,
            "source_path": None,
            "stage": STAGE_EMBED,
            "error": reason,
        }
        for image_id, split, reason in bad
    ]
    for r in rows:
        logger.warning("image %s: %s", r["image_id"], r["error"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=store.ERRORS_SCHEMA), tmp)
    os.replace(tmp, path)


def _assemble(
    w: store.TableWriter, n_chunks: int, images_manifest: dict[str, Any]
) -> tuple[int, int]:
    """Move every chunk's files into the staged table and merge the chunk errors. Restartable:
    a file already moved by a killed earlier run stays where it went; the counts are taken
    from the assembled files, so they are right whichever run moved what."""
    for k in range(n_chunks):
        chunk_dir = w.chunk(k)
        for part in sorted(chunk_dir.glob("split=*/*.parquet")):
            dest = w.data / part.parent.name
            dest.mkdir(exist_ok=True)
            os.replace(part, dest / f"c{k:05d}-{part.name}")
    error_tables = [
        pq.read_table(_chunk_errors(w, k), schema=store.ERRORS_SCHEMA) for k in range(n_chunks)
    ]
    errors = pa.concat_tables(error_tables) if error_tables else store.ERRORS_SCHEMA.empty_table()
    store.write_errors(w.errors, errors.to_pylist())
    ok = sum(f["rows"] for f in store.describe_files(w.data, checksums=False))
    expected = int(images_manifest["counts"]["ok"])
    if ok + errors.num_rows != expected:
        raise StoreError(
            f"{w.staging}: {ok} embeddings + {errors.num_rows} errors != {expected} "
            "images; staged chunks are inconsistent, rerun with --overwrite"
        )
    return ok, errors.num_rows


def _manifest(
    spark: Any,
    info: dict[str, Any],
    cfg: ExtractConfig,
    name: str,
    run_key: str,
    images_manifest: dict[str, Any],
    ok: int,
    errors: int,
    chunks: int,
    seconds: float,
    cost: dict[str, Any] | None = None,
    timing: Timing | None = None,
    spread_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    conf = spark.sparkContext.getConf()
    spark_conf = {
        k: conf.get(k)
        for k in (
            "spark.executor.resource.gpu.amount",
            "spark.task.resource.gpu.amount",
            "spark.executor.cores",
            "spark.task.cpus",
            "spark.python.worker.reuse",
            "spark.sql.execution.arrow.maxRecordsPerBatch",
        )
        if conf.contains(k)
    }
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
        weights={
            "source": info["weights_source"],
            "path": info["weights_path"],
            "sha256": info["weights_sha256"],
        },
        preprocessing=info["preprocessing"],
        precision=info["precision"],
        dim=info["dim"],
        # the conv base at this input size, as the workers built it (up to the extracted
        # layers): parameters, FLOPs per image (featstore.models.count_flops)
        base={"params": (cost or {}).get("params"), "flops": (cost or {}).get("flops")},
        counts={"ok": ok, "errors": errors},
        input={
            "table": "images",
            "fingerprint": images_manifest["input_fingerprint"],
            "content_fingerprint": images_manifest.get("content_fingerprint"),
            "created": images_manifest.get("created"),
            "rows": expected,
        },
        attributes=images_manifest.get("attributes", []),
        spark={"master": spark.sparkContext.master, "version": spark.version, "conf": spark_conf},
        timing={
            "seconds": round(seconds, 2),
            "images_per_second": round(expected / seconds, 2) if seconds else None,
            **(timing.as_dict() if timing else {}),
        },
        chunks=chunks,
        # featstore.spread: is every dimension's spread (almost) nil? (flagged, not refused)
        spread=spread_info,
    )


def with_overrides(cfg: ExtractConfig, **kw: Any) -> ExtractConfig:
    return replace(cfg, **{k: v for k, v in kw.items() if v is not None})

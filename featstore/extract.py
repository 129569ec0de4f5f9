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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from featstore import fsio, modelspecs, spread, store
from featstore.config import ExtractConfig
from featstore.embed import EmbedConfig, base_cost, check_config, validate_config
from featstore.errors import ConfigError, StoreError
from featstore.progress import Progress, spark_feed
from featstore.timing import Phases, Stopwatch, Timing

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
    layout: store.Layout, manifest: store.Manifest, chunk_rows: int
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
    """What :func:`run_extract` will do (``featstore extract --dry-run`` prints it), from the
    settings and the store's manifests only: no Spark, no Keras, nothing written."""

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
    staged_chunks: int  # finished chunks staged by an earlier run with these settings (resumed)
    cfg: ExtractConfig = field(repr=False)
    images_manifest: store.Manifest = field(repr=False)
    info: dict[str, Any] = field(repr=False)  # the model's settings (check_config), no ``dim``
    run_key: str = ""  # the settings' fingerprint: names the resumable staging
    #: the committed manifest when it holds these settings already: the run does nothing
    done: dict[str, Any] | None = field(default=None, repr=False)
    seconds: float = 0.0  # the planning's time (the run's driver ``plan`` phase counts it)

    @property
    def layout(self) -> store.Layout:
        return store.Layout(self.store)

    def writer(self, spark: Any = None) -> store.TableWriter:
        """The store's writer of this feature set (its staging is named by the run key)."""
        return store.TableWriter(
            self.layout,
            store.features_id(self.feature_set),
            resume_key=self.run_key,
            overwrite=self.cfg.overwrite,
            spark=spark,
        )


def plan_extract(cfg: ExtractConfig, store_path: str) -> ExtractPlan:
    """:func:`preflight`, then the chunks the images table would be cut into
    (:func:`_plan_chunks`), the run key, and what the store already holds under that
    feature-set name: committed with these settings (nothing to do), finished chunks staged by
    an earlier run with these settings (resumed)."""
    clock = Stopwatch()
    layout, images_manifest, info, name = preflight(cfg, store_path)
    chunks = _plan_chunks(layout, images_manifest, cfg.chunk_rows)
    existing = store.existing_output(layout, store.features_id(name), overwrite=cfg.overwrite)
    run_key = _extract_run_key(images_manifest, info, cfg.seed)
    same = existing is not None and existing.get("run_key") in (
        run_key,
        _extract_run_key(images_manifest, info, cfg.seed, existing.get("dim")),
    )
    counts = images_manifest.get("counts", {})
    order = {"train": 0, "val": 1, "test": 2}
    splits = dict(sorted(counts.get("splits", {}).items(), key=lambda kv: order.get(kv[0], 3)))
    source = info["weights_source"]
    plan = ExtractPlan(
        store=str(layout.root),
        feature_set=name,
        model=info["model"],
        layers=tuple(info["layers"]),
        input_hw=(int(info["input_hw"][0]), int(info["input_hw"][1])),
        weights=source if source == "random" else str(info["weights_path"]),
        images=int(counts.get("ok", sum(c[2] for c in chunks))),
        splits=splits,
        chunks=chunks,
        committed=existing.get("created", "?") if existing else None,
        staged_chunks=0,
        cfg=cfg,
        images_manifest=images_manifest,
        info=info,
        run_key=run_key,
        done=existing if same and not cfg.overwrite else None,
    )
    w = plan.writer()  # not entered: only its paths
    staged = sum(_chunk_done(w, k) for k in range(len(_staged_chunks(w) or chunks)))
    return replace(plan, staged_chunks=staged, seconds=clock.seconds)


def extract(spark: Any, cfg: ExtractConfig, store_path: str) -> ExtractSummary:
    """Plan and run the extraction (see the module docstring). Raises InputError before any
    Spark work for an unknown model or layer, missing weights, or a store without a committed
    images table."""
    return run_extract(spark, plan_extract(cfg, store_path))


def run_extract(spark: Any, plan: ExtractPlan) -> ExtractSummary:
    """Run what ``plan`` says: nothing when the feature set is committed with these settings;
    else every chunk not staged yet (one Spark job each), the assembly and the commit."""
    from featstore.udf import StatsParam

    clock = Stopwatch(offset=plan.seconds)
    if plan.done is not None:
        logger.info(
            "feature set %s is already committed with these settings; nothing to do",
            plan.feature_set,
        )
        c = plan.done["counts"]
        return ExtractSummary(
            plan.store,
            plan.feature_set,
            c["ok"],
            c["errors"],
            plan.done["dim"],
            clock.seconds,
            skipped=True,
        )
    phases = Phases()
    phases.add({"plan": plan.seconds})
    phases.lap("plan")
    ecfg = embed_config(plan.cfg)
    info = {**plan.info, "backend": modelspecs.keras_backend()}
    cpu_threads = task_cpu_threads(spark, plan.cfg.cpu_threads)
    warm_stats = spark.sparkContext.accumulator({}, StatsParam())  # the warm-up tasks' time
    with contextlib.ExitStack() as stack:
        # first: the workers' backend import and model build overlap all that follows; none of
        # its tasks outlives the extract (a task still loading the weights file: on leaving)
        warmup = (
            stack.enter_context(_start_warmup(spark, ecfg, cpu_threads, info, warm_stats))
            if plan.cfg.warmup
            else None
        )
        # No model on the driver: the layer names were checked against the generated table, and
        # the workers report the width, parameters and FLOPs of the model they built. Only when
        # the table cannot say (another Keras version) is the base built here to check the names.
        if not info.pop("layers_checked", False):
            validate_config(ecfg)
        w = stack.enter_context(plan.writer(spark))
        chunks = _staged_chunks(w)
        if chunks is None:  # a resumed run keeps the chunks it was cut into
            chunks = plan.chunks
            store.write_json(w.staging / PLAN, {"run_key": plan.run_key, "chunks": chunks})
        chunk_pass = _ChunkPass.start(spark, plan, w, info, cpu_threads, chunks)
        phases.lap("pass")
        resumed = chunk_pass.run(chunks)
        if warmup is not None:  # the pass is done: a warm-up task still running only costs
            warmup.stop()
        phases.lap("commit")
        workers = {**chunk_pass.stats.value, **warm_stats.value}
        timing = Timing(driver=phases, workers={k: v for k, v in workers.items() if k != "base"})
        ok, errors = _commit_features(spark, plan, w, info, len(chunks), timing, clock)
    phases.lap(None)
    return ExtractSummary(
        plan.store,
        plan.feature_set,
        ok,
        errors,
        info["dim"],
        clock.seconds,
        chunks_done=len(chunks) - resumed,
        chunks_resumed=resumed,
        timing=timing,
    )


def _staged_chunks(w: store.TableWriter) -> list[tuple[str, str, int]] | None:
    """The chunks a resumable run staged (its :data:`PLAN`), or None."""
    path = w.staging / PLAN
    if not path.is_file():
        return None
    return [tuple(c) for c in json.loads(path.read_text())["chunks"]]  # type: ignore[misc]


@dataclass
class _ChunkPass:
    """What the Spark job of every chunk shares: the images table, the embed UDF's settings,
    the accumulators (rows embedded: the progress; the workers' timings and base facts) and
    the progress bar."""

    spark: Any
    plan: ExtractPlan
    w: store.TableWriter
    info: dict[str, Any]
    cpu_threads: int
    images: Any  # the images table, a DataFrame
    embedded: Any
    stats: Any
    bar: Progress

    @classmethod
    def start(
        cls,
        spark: Any,
        plan: ExtractPlan,
        w: store.TableWriter,
        info: dict[str, Any],
        cpu_threads: int,
        chunks: list[tuple[str, str, int]],
    ) -> _ChunkPass:
        from featstore.udf import StatsParam

        w.set_spark_conf(
            "spark.sql.execution.arrow.maxRecordsPerBatch", str(plan.cfg.arrow_batch_rows)
        )
        # A chunk's query is a fixed repartition (not coalesced by AQE) and a write: adaptive
        # execution would only cut it in two jobs, re-planned in between (0.4-0.7 s a chunk
        # on 2 cores, from the event log: bench/spark_timeline.py)
        w.set_spark_conf("spark.sql.adaptive.enabled", "false")
        embedded = spark.sparkContext.accumulator(0)  # rows through the model: the progress
        stats = spark.sparkContext.accumulator({}, StatsParam())  # timings, base facts
        # the store's own schema: no Spark job to read a footer and infer it
        images = spark.read.schema(store.spark_schema(store.IMAGES_SCHEMA)).parquet(
            store.spark_uri(plan.layout.images)
        )
        bar = Progress("extract", sum(c[2] for c in chunks), "images")
        return cls(spark, plan, w, info, cpu_threads, images, embedded, stats, bar)

    def run(self, chunks: list[tuple[str, str, int]]) -> int:
        """Embed every chunk not done yet; returns how many were (resumed)."""
        parallelism = self.spark.sparkContext.defaultParallelism
        resumed = resumed_rows = 0
        try:
            for k, chunk in enumerate(chunks):
                if _chunk_done(self.w, k):
                    resumed += 1
                    resumed_rows += chunk[2]
                    logger.info("chunk %d/%d already done (resumed)", k + 1, len(chunks))
                    continue
                self.embed_chunk(k, chunk, len(chunks), parallelism, resumed_rows)
        finally:
            self.bar.close()
        return resumed

    def embed_chunk(
        self, k: int, chunk: tuple[str, str, int], n: int, parallelism: int, resumed_rows: int
    ) -> None:
        """One chunk's Spark job: its images embedded and written to ``w.chunk(k)``, then its
        errors file (which marks it done)."""
        from pyspark.sql import functions as F

        from featstore.udf import ErrorsParam, make_embed_udf

        first, last, rows = chunk
        clock = Stopwatch()
        df = self.images.filter((F.col("image_id") >= first) & (F.col("image_id") <= last))
        # Even tasks, a multiple of the cores: the images table's files follow the splits
        # (train is 80%), so reading them as they are leaves cores idle at the end of a
        # chunk. The shuffle moves only JPEG bytes (~10 KB an image), cheap next to the
        # forward pass.
        df = df.repartition(
            self.plan.cfg.partitions or parallelism * math.ceil(rows / (parallelism * 4096))
        )
        # One pass: the embeddings are written as the tasks make them; the images that
        # failed reach the driver in an accumulator keyed by image id (a re-run task adds
        # the same keys again), and the chunk counts as done only once its errors file is
        # written too (_chunk_done); the assembly checks that the counts add up.
        errors = self.spark.sparkContext.accumulator({}, ErrorsParam())
        embed_udf = make_embed_udf(
            embed_config(self.plan.cfg),
            cpu_threads=self.cpu_threads,
            backend=self.info["backend"],
            weights_sha256=self.info["weights_sha256"],
            counter=self.embedded,
            stats=self.stats,
            errors=errors,
        )
        out = df.select("image_id", "split", embed_udf("image_id", "split", "content").alias("r"))
        # progress: rows embedded by the finished tasks (accumulator) + resumed chunks
        with spark_feed(self.spark, self.bar, accumulator=self.embedded, offset=resumed_rows):
            (
                out.filter(F.col("r.error").isNull())
                .select("image_id", "split", F.col("r.embedding").alias("embedding"))
                .write.options(**store.FEATURES_WRITE_OPTIONS)
                .partitionBy("split")
                .parquet(store.spark_uri(self.w.chunk(k)), mode="overwrite")
            )
        bad = [
            (image_id, split, reason) for image_id, (split, reason) in sorted(errors.value.items())
        ]
        _write_chunk_errors(_chunk_errors(self.w, k), bad)
        _save_facts(self.w, self.stats.value.get("base"))
        dt = clock.seconds
        logger.info(
            "chunk %d/%d: %d images in %.1f s (%.1f img/s), %d errors",
            k + 1,
            n,
            rows,
            dt,
            rows / dt if dt else 0.0,
            len(bad),
        )


def _commit_features(
    spark: Any,
    plan: ExtractPlan,
    w: store.TableWriter,
    info: dict[str, Any],
    n_chunks: int,
    timing: Timing,
    clock: Stopwatch,
) -> tuple[int, int]:
    """The chunks assembled into the staged table, its manifest, the commit; (ok, errors)."""
    facts = _load_facts(w) or _driver_facts(embed_config(plan.cfg))
    info.update(dim=facts["dim"], keras_version=facts.get("keras_version"))
    ok, errors = _assemble(w, n_chunks, plan.images_manifest)
    timing.driver.lap("commit")  # the manifest's: all but the final rename
    sp = spread.spread_of_files(sorted(w.data.glob("split=*/*.parquet")), int(info["dim"]))
    spread.warn(plan.feature_set, sp)
    w.commit(
        _extract_manifest(
            spark,
            info,
            plan.cfg,
            plan.feature_set,
            plan.run_key,
            plan.images_manifest,
            ok,
            errors,
            n_chunks,
            clock.seconds,
            facts,
            timing,
            sp,
        )
    )
    return ok, errors


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


def _extract_run_key(
    images_manifest: store.Manifest, info: dict[str, Any], seed: int, dim: int | None = None
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
    with fsio.atomic_path(path) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=store.ERRORS_SCHEMA), tmp)


def _assemble(
    w: store.TableWriter, n_chunks: int, images_manifest: store.Manifest
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


def _extract_manifest(
    spark: Any,
    info: dict[str, Any],
    cfg: ExtractConfig,
    name: str,
    run_key: str,
    images_manifest: store.Manifest,
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

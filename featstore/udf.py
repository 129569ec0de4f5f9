"""The Spark side of embedding: a pandas UDF around :class:`featstore.embed.Embedder`.

- The model is built once per Python worker (``spark.python.worker.reuse=true`` keeps the worker,
  :func:`featstore.embed.get_embedder` caches the Embedder in it), not once per Arrow batch.
- It is an *iterator* UDF, so the next Arrow batch is decoded while the current one is in the
  model (``Embedder.embed_iter``).
- Each task is pinned to the GPU Spark assigned it: ``TaskContext.resources()["gpu"]`` →
  ``CUDA_VISIBLE_DEVICES``, set before the Keras backend starts, with memory growth on.

- Executors run Keras on the driver's backend (the one the manifest records): the driver passes
  its backend name and each worker sets ``KERAS_BACKEND`` before Keras starts, so a cluster
  needs ``KERAS_BACKEND=jax`` only where ``spark-submit`` runs. A worker whose Keras already
  runs another backend fails the task with one line instead of writing mislabelled features.

Nothing here imports Keras at module level: the executor imports this module when it unpickles
the UDF, before the GPU is pinned.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import pandas as pd
from pyspark.accumulators import AccumulatorParam

from featstore.embed import EmbedConfig
from featstore.errors import ConfigError
from featstore.timing import Stopwatch

logger = logging.getLogger(__name__)

_PINNED: dict[str, str | None] = {}


def task_gpu_addresses() -> list[str]:
    """GPU addresses Spark assigned to the running task (empty when it assigned none)."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if ctx is None:
        return []
    resources = ctx.resources() or {}
    gpu = resources.get("gpu")
    return list(gpu.addresses) if gpu is not None else []


def pin_gpu() -> str | None:
    """Make the GPU(s) Spark gave this task the only visible ones, before Keras starts.

    The first task in a Python worker decides (a CUDA context cannot move afterwards); with
    ``spark.executor.resource.gpu.amount=1`` every task of an executor gets the same GPU, which is
    the setting conf/cluster-gpu/ uses. Returns the value of CUDA_VISIBLE_DEVICES in use."""
    addresses = task_gpu_addresses()
    if "visible" in _PINNED:
        wanted = ",".join(addresses) if addresses else None
        if wanted is not None and wanted != _PINNED["visible"]:
            logger.warning(
                "task was given GPU %s but this Python worker is bound to GPU %s; "
                "use one GPU per executor (see conf/cluster-gpu/)",
                wanted,
                _PINNED["visible"],
            )
        return _PINNED["visible"]
    if addresses:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(addresses)
        os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")  # TF: no grabbing all memory
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX: same
    _PINNED["visible"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    return _PINNED["visible"]


def limit_cpu_threads(threads: int) -> None:
    """Cap the backend's CPU thread pools so N Spark tasks on N cores do not oversubscribe them.

    Only effective before the backend is imported in this worker."""
    if threads > 0:
        for var in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
            os.environ.setdefault(var, str(threads))
        os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


def use_backend(backend: str | None) -> None:
    """Make this process run Keras on ``backend`` (None: leave it to ``KERAS_BACKEND``).

    Sets ``KERAS_BACKEND`` when Keras is not imported yet; otherwise checks that the running
    backend is that one and raises :class:`ConfigError` (one line) if not."""
    if not backend:
        return
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = backend
        return
    import keras

    running = keras.backend.backend()
    if running != backend:
        raise ConfigError(
            f"this Python worker runs Keras on {running!r} but the driver chose {backend!r} "
            f"(recorded in the manifest); set KERAS_BACKEND={backend} before the workers start, "
            "or run the driver with the workers' backend"
        )


#: The workers' timings an extract task adds to the job's stats accumulator (seconds, summed
#: over tasks): ``start`` (backend import and model build, once per Python worker), ``input``
#: (waiting for Spark's next Arrow batch), ``decode_wait`` (the model side waiting for decoded
#: images), ``model`` (forward passes), ``output`` (Spark taking a result batch), ``task`` (the
#: whole UDF). ``decode`` is the decoder's busy time, on its own thread (overlaps the model).
#: (Also counted: ``tasks``, and ``model_reused``: the tasks whose worker had the model built
#: already, by the warm-up or an earlier task.)
TIMINGS = ("start_s", "input_s", "decode_s", "decode_wait_s", "model_s", "output_s", "task_s")


class StatsParam(AccumulatorParam):
    """A Spark accumulator of dicts: numbers are summed; other values (``base``: what the
    workers measured of the network, the same in every task) keep the first one seen."""

    def zero(self, value: dict[str, Any]) -> dict[str, Any]:
        return {}

    def addInPlace(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        for k, v in (b or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                a[k] = a.get(k, 0) + v
            elif v is not None:
                a.setdefault(k, v)
        return a


class ErrorsParam(AccumulatorParam):
    """A Spark accumulator of the images a task could not embed: ``{image_id: [split,
    reason]}``. Keyed by image id, so a task that Spark runs twice (a retried stage, a
    speculative copy) adds the same entries again, not new ones."""

    def zero(self, value: dict[str, list[str | None]]) -> dict[str, list[str | None]]:
        return {}

    def addInPlace(
        self, a: dict[str, list[str | None]], b: dict[str, list[str | None]]
    ) -> dict[str, list[str | None]]:
        a.update(b or {})
        return a


def embed_batches(
    cfg: EmbedConfig,
    batches: Iterator[pd.Series | tuple[pd.Series, ...]],
    cpu_threads: int = 0,
    backend: str | None = None,
    weights_sha256: str | None = None,
    counter: Any = None,
    stats: Any = None,
    errors: Any = None,
) -> Iterator[pd.DataFrame]:
    """The UDF body, runnable without Spark: Series of JPEG bytes -> DataFrame(embedding, error).

    A batch may also be a tuple ``(image_id, split, content)`` of Series (the UDF called on
    three columns): then each image that fails is also added to ``errors``, an
    :class:`ErrorsParam` accumulator, as ``{image_id: [split, reason]}``, so that the job can
    write the embeddings and learn the errors in one pass over the images.

    ``backend``: the Keras backend to run on (the driver's; see :func:`use_backend`).
    ``weights_sha256``: the weights file's content hash the driver recorded; it keys the
    worker's embedder cache, so a weights file rewritten between two runs is loaded again.
    ``counter``: a Spark accumulator that gets the rows of each batch done (the driver's
    progress bar). ``stats``: a :class:`StatsParam` accumulator that gets this task's
    :data:`TIMINGS`, ``tasks`` and ``base`` (:attr:`featstore.embed.Embedder.facts`)."""
    task_clock = Stopwatch()
    use_backend(backend)
    pin_gpu()
    limit_cpu_threads(cpu_threads)
    from featstore.embed import get_embedder

    embedder = get_embedder(cfg, weights_sha256)
    start_s = task_clock.seconds
    found_built = embedder.users > 1  # a warm-up or an earlier task of this worker built it
    before = embedder.stats.as_dict()
    pending: list[tuple[int, Any, Any]] = []  # per batch: rows, its image ids and splits
    waited = {"input_s": 0.0, "output_s": 0.0}

    def contents() -> Iterator[list[bytes | None]]:
        it = iter(batches)
        while True:
            wait = Stopwatch()
            batch = next(it, None)
            waited["input_s"] += wait.seconds
            if batch is None:
                return
            ids = splits = None
            if isinstance(batch, tuple):
                ids, splits, batch = batch
            pending.append((len(batch), ids, splits))
            yield [None if v is None else bytes(v) for v in batch]

    try:
        for result in embedder.embed_iter(contents()):
            n, ids, splits = pending.pop(0)
            emb: list[Any] = [None] * n
            err: list[Any] = [None] * n
            for row, pos in enumerate(result.ok_index):
                emb[int(pos)] = result.embeddings[row]
            for pos, reason in result.errors:
                err[int(pos)] = reason
            if errors is not None and ids is not None and result.errors:
                errors.add(
                    {
                        str(ids.iat[int(pos)]): [
                            None if splits is None else splits.iat[int(pos)],
                            reason,
                        ]
                        for pos, reason in result.errors
                    }
                )
            wait = Stopwatch()
            yield pd.DataFrame({"embedding": emb, "error": err})
            waited["output_s"] += wait.seconds
            if counter is not None:
                counter.add(n)
    finally:
        if stats is not None:
            after = embedder.stats.as_dict()
            # the input wait happens inside the decoder's read-ahead: not the decoder's fault
            decode_wait = after["decode_wait_s"] - before["decode_wait_s"] - waited["input_s"]
            stats.add(
                {
                    "tasks": 1,
                    "start_s": start_s,
                    "model_reused": int(found_built),
                    **waited,
                    "decode_s": after["decode_s"] - before["decode_s"],
                    "decode_wait_s": max(0.0, decode_wait),
                    "model_s": after["model_s"] - before["model_s"],
                    "task_s": task_clock.seconds,
                    "base": embedder.facts,
                }
            )


def warm_worker(
    cfg: EmbedConfig,
    cpu_threads: int = 0,
    backend: str | None = None,
    weights_sha256: str | None = None,
    stats: Any = None,
) -> int:
    """A warm-up task: build this Python worker's embedder and run its first forward pass
    (where the backend traces and compiles), then return the worker's pid. The worker is
    reused (``spark.python.worker.reuse``) by the extract tasks that follow, which find the
    model built (:func:`featstore.embed.get_embedder`). A build that fails here is only
    logged; the extract task builds again and reports the error itself. ``stats`` (a
    :class:`StatsParam` accumulator) gets ``warmup_tasks`` and ``warmup_s``, this task's time.

    The build runs in the task itself, not on a background thread: a thread still importing
    the backend when the worker's next task arrives can deadlock that task's own imports
    (seen: pyspark's ``to_arrow_type`` imports ``distutils``; setuptools' ``_distutils_hack``
    then imports ``urllib.request`` inside the import system's global lock, while the thread,
    importing TensorFlow, held that module's lock and waited for the global one)."""
    build = Stopwatch()
    use_backend(backend)
    pin_gpu()
    limit_cpu_threads(cpu_threads)
    from featstore.embed import get_embedder

    try:
        get_embedder(cfg, weights_sha256, warm=True)
    except Exception as exc:  # the extract task reports it
        logger.debug("warm-up build failed: %s", exc)
    if stats is not None:
        stats.add({"warmup_tasks": 1, "warmup_s": build.seconds})
    return os.getpid()


class BackgroundJob:
    """A Spark job that only helps (a head start), run on a background thread under its own job
    group. :meth:`stop` cancels what of it is still running and returns once none of its tasks
    is left, so nothing of it outlives its caller: a warm-up task still loading a weights file
    when the extract returns holds that file (HDF5 locks it: the user's next ``save_weights`` to
    the same path fails with ``BlockingIOError``) and takes a core from the session's next job.
    A cancelled Python task ends when its worker finishes or Spark kills it
    (``spark.python.task.killTimeout``, 2 s after a 2 s check), a few seconds at most."""

    def __init__(self, sc: Any, rdd: Any, name: str) -> None:
        import threading
        import uuid

        from pyspark import InheritableThread

        self._sc = sc
        self.name = name
        self.group = f"featstore-{name}-{uuid.uuid4().hex[:12]}"
        self.result: list[Any] | None = None
        self.error: BaseException | None = None
        self._stopping = threading.Event()
        self._thread = InheritableThread(
            target=self._run, args=(rdd,), name=f"featstore-{name}", daemon=True
        )
        self._thread.start()

    def _run(self, rdd: Any) -> None:
        # the job group is the thread's (pinned threads): it names only this job's tasks
        self._sc.setJobGroup(self.group, f"featstore {self.name}", interruptOnCancel=True)
        if self._stopping.is_set():
            return
        try:
            self.result = rdd.collect()
            logger.debug("%s: done (%s)", self.name, self.result)
        except Exception as exc:  # only a head start: the work it helps reports failures itself
            self.error = exc
            logger.debug("%s: %s", self.name, "cancelled" if self._stopping.is_set() else exc)

    def active_tasks(self) -> int:
        """The job's tasks still running (Spark's status tracker)."""
        tracker = self._sc.statusTracker()
        n = 0
        for job_id in tracker.getJobIdsForGroup(self.group):
            job = tracker.getJobInfo(job_id)
            for stage_id in job.stageIds if job is not None else ():
                stage = tracker.getStageInfo(stage_id)
                n += stage.numActiveTasks if stage is not None else 0
        return n

    def stop(self, timeout: float = 30.0) -> bool:
        """Cancel the job if it runs and wait until none of its tasks is left; True when none
        is (False after ``timeout`` seconds, logged). Idempotent."""
        deadline = time.monotonic() + timeout
        self._stopping.set()
        # cancelled again while the thread lives: a cancel before its job was submitted misses it
        while self._thread.is_alive() and time.monotonic() < deadline:
            self._sc.cancelJobGroup(self.group)
            self._thread.join(0.5)
        while time.monotonic() < deadline:
            if not self._thread.is_alive() and self.active_tasks() == 0:
                return True
            time.sleep(0.1)
        logger.warning("%s: tasks still running %.0f s after it was cancelled", self.name, timeout)
        return False

    def __enter__(self) -> BackgroundJob:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_warm_workers(
    spark: Any,
    slots: int,
    cfg: EmbedConfig,
    *,
    cpu_threads: int = 0,
    backend: str | None = None,
    weights_sha256: str | None = None,
    stats: Any = None,
) -> BackgroundJob:
    """Run :func:`warm_worker` once per task slot, as an RDD job on a background thread (the
    returned :class:`BackgroundJob`: ``stop()`` it when the work it helps is done). An RDD
    job, not a SQL query: it needs no Catalyst planning (about 1.5 s on a cold driver), so its
    tasks reach the slots before the extract's own first stage, and each holds its slot (one
    task per worker) until its model is built; the driver plans the extract meanwhile.

    Spark keeps a pool of Python workers per environment, and the SQL runner adds
    ``SPARK_SIMPLIFIED_TRACEBACK=1`` to that environment (while
    ``spark.sql.execution.pyspark.udf.simplifiedTraceback.enabled``, the default); the warm-up
    job's function carries the same variable, so its workers are the ones the embed UDF's tasks
    reuse. Where they are not (another Spark), the extract tasks build their own: slower to start,
    the same values."""
    sc = spark.sparkContext
    env = dict(sc.environment)
    simplified = spark.conf.get(
        "spark.sql.execution.pyspark.udf.simplifiedTraceback.enabled", "true"
    )
    if str(simplified).lower() == "true":
        sc.environment["SPARK_SIMPLIFIED_TRACEBACK"] = "1"

    def task(_: Any) -> Iterator[int]:
        yield warm_worker(cfg, cpu_threads, backend, weights_sha256, stats)

    try:  # the function (and its environment) is fixed when the Java RDD is made
        rdd = sc.parallelize(range(slots), slots).mapPartitions(task)
        rdd._jrdd
    finally:
        sc.environment.clear()
        sc.environment.update(env)
    return BackgroundJob(sc, rdd, "warm-up")


def embed_result_type() -> Any:
    """The embed UDF's result, ``struct<embedding array<float>, error string>``, built in
    Python (a DDL string is parsed by the JVM, a round trip of ~0.4 s on a cold driver)."""
    from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

    return StructType(
        [StructField("embedding", ArrayType(FloatType())), StructField("error", StringType())]
    )


def make_embed_udf(
    cfg: EmbedConfig,
    *,
    cpu_threads: int = 0,
    backend: str | None = None,
    weights_sha256: str | None = None,
    counter: Any = None,
    stats: Any = None,
    errors: Any = None,
) -> Any:
    """A pandas UDF ``content binary -> struct<embedding array<float>, error string>``.

    ``df.withColumn("out", make_embed_udf(cfg)("content"))``; rows whose image cannot be decoded
    get ``embedding = null`` and the reason in ``error``. With ``errors`` (an
    :class:`ErrorsParam` accumulator) the UDF takes three columns,
    ``make_embed_udf(cfg, errors=acc)("image_id", "split", "content")``, and also adds the
    failed rows to ``errors`` (see :func:`embed_batches`).

    The UDF is marked non-deterministic: for a deterministic one Spark's optimizer inlines
    ``out`` into every expression that uses it, so ``filter(out.error is null)
    .select(out.embedding)`` would run the model twice (once for the filter, pushed below a
    repartition, once for the column)."""
    from pyspark.sql.functions import pandas_udf

    if errors is None:

        @pandas_udf(embed_result_type())  # type: ignore[call-overload]
        def embed_udf(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
            yield from embed_batches(
                cfg, batches, cpu_threads, backend, weights_sha256, counter, stats
            )

        return embed_udf.asNondeterministic()

    @pandas_udf(embed_result_type())  # type: ignore[call-overload]
    def embed_ids_udf(
        batches: Iterator[tuple[pd.Series, pd.Series, pd.Series]],
    ) -> Iterator[pd.DataFrame]:
        yield from embed_batches(
            cfg, batches, cpu_threads, backend, weights_sha256, counter, stats, errors
        )

    return embed_ids_udf.asNondeterministic()

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
from collections.abc import Iterator
from typing import Any

import pandas as pd

from featstore.embed import EmbedConfig
from featstore.errors import ConfigError

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
            logger.warning("task was given GPU %s but this Python worker is bound to GPU %s; "
                           "use one GPU per executor (see conf/cluster-gpu/)", wanted,
                           _PINNED["visible"])
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
            "or run the driver with the workers' backend")


def embed_batches(cfg: EmbedConfig, batches: Iterator[pd.Series],
                  cpu_threads: int = 0, backend: str | None = None,
                  weights_sha256: str | None = None, counter: Any = None
                  ) -> Iterator[pd.DataFrame]:
    """The UDF body, runnable without Spark: Series of JPEG bytes -> DataFrame(embedding, error).

    ``backend``: the Keras backend to run on (the driver's; see :func:`use_backend`).
    ``weights_sha256``: the weights file's content hash the driver recorded; it keys the
    worker's embedder cache, so a weights file rewritten between two runs is loaded again.
    ``counter``: a Spark accumulator that gets the rows of each batch done (the driver's
    progress bar)."""
    use_backend(backend)
    pin_gpu()
    limit_cpu_threads(cpu_threads)
    from featstore.embed import get_embedder

    embedder = get_embedder(cfg, weights_sha256)
    pending: list[int] = []

    def contents() -> Iterator[list[bytes | None]]:
        for series in batches:
            pending.append(len(series))
            yield [None if v is None else bytes(v) for v in series]

    for result in embedder.embed_iter(contents()):
        n = pending.pop(0)
        emb: list[Any] = [None] * n
        err: list[Any] = [None] * n
        for row, pos in enumerate(result.ok_index):
            emb[int(pos)] = result.embeddings[row]
        for pos, reason in result.errors:
            err[int(pos)] = reason
        yield pd.DataFrame({"embedding": emb, "error": err})
        if counter is not None:
            counter.add(n)


EMBED_RESULT_DDL = "embedding array<float>, error string"


def make_embed_udf(cfg: EmbedConfig, *, cpu_threads: int = 0,
                   backend: str | None = None, weights_sha256: str | None = None,
                   counter: Any = None) -> Any:
    """A pandas UDF ``content binary -> struct<embedding array<float>, error string>``.

    ``df.withColumn("out", make_embed_udf(cfg)("content"))``; rows whose image cannot be decoded
    get ``embedding = null`` and the reason in ``error``."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(EMBED_RESULT_DDL)  # type: ignore[call-overload]
    def embed_udf(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        yield from embed_batches(cfg, batches, cpu_threads, backend, weights_sha256, counter)

    return embed_udf

"""The petastorm feed: (features, labels) batches of a feature set for Keras ``model.fit``.

Every petastorm import lives in this module. petastorm 0.13.1 is the last release and is
unmaintained (its maintainer says so in petastorm issue #805); it pins the stack to pyarrow < 15 and
NumPy 1. Keeping it behind this one module means it can be replaced (e.g. by a tf.data reader over
``featstore.store.read_arrow``) without touching the training code.

    with feed.tf_dataset(spark, store, "vgg16-block5_pool-avg-pca64", ["Smiling"], "train",
                         batch_size=256) as (ds, n):
        model.fit(ds, epochs=1)
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from featstore import store

logger = logging.getLogger(__name__)


@functools.cache
def _race_free_thread_pool() -> type:
    """petastorm's ``ThreadPool`` with its end-of-data check made race-free (one class a process).

    ``ThreadPool.get_results`` ends the epoch when ``all_workers_done()`` and then
    ``ventilator.completed()`` are both true. The two are read one after the other while the
    ventilator thread keeps ventilating: if it ventilates the last row groups and marks itself
    completed between the two reads, the pool sees "nothing pending" from before and "completed"
    from after, and ends the epoch early, up to an empty one (a one-row-group split read as zero
    batches; seen in CI). Reading ``completed()`` first closes the window: once it is true every item
    that will ever be ventilated has been counted, so the pending-work check after it is exact.
    (petastorm issue #71 describes the same blind spot; upstream is unmaintained.)
    """
    from petastorm.workers_pool.thread_pool import ThreadPool

    class RaceFreeThreadPool(ThreadPool):  # type: ignore[misc]
        def all_workers_done(self) -> bool:
            ventilator = self._ventilator
            if ventilator is not None and not ventilator.completed():
                return False
            return bool(super().all_workers_done())

    return RaceFreeThreadPool


def _patch_petastorm() -> None:
    """Make every petastorm reader of this process use :func:`_race_free_thread_pool`'s pool
    (``make_batch_reader`` builds its ``'thread'`` pool from ``petastorm.reader.ThreadPool``)."""
    import petastorm.reader as reader

    reader.ThreadPool = _race_free_thread_pool()


def _cache_url(path: str | os.PathLike[str], cache_dir: str | None) -> str:
    if cache_dir:
        return cache_dir if "://" in cache_dir else Path(cache_dir).resolve().as_uri()
    cache = store.Layout(path).meta / "cache" / "petastorm"
    cache.mkdir(parents=True, exist_ok=True)
    return cache.as_uri()


def training_frame(spark: Any, path: str | os.PathLike[str], feature_set: str,
                   attributes: Sequence[str], split: str) -> Any:
    """Spark DataFrame ``features array<float>, <attribute> float...`` for the feed."""
    from pyspark.sql import functions as F

    if not attributes:
        raise store.StoreError("the feed needs at least one attribute")
    df = store.read_spark(spark, path, feature_set, splits=[split], attributes=attributes)
    return df.select(F.col("embedding").alias("features"),
                     *[F.col(a).cast("float").alias(a) for a in attributes])


@contextmanager
def converter(spark: Any, path: str | os.PathLike[str], feature_set: str,
              attributes: Sequence[str], split: str, *,
              cache_dir: str | None = None) -> Iterator[Any]:
    """A petastorm ``SparkDatasetConverter`` of one split, deleted (cache and all) on exit."""
    from petastorm.spark import SparkDatasetConverter, make_spark_converter

    _patch_petastorm()
    df = training_frame(spark, path, feature_set, attributes, split)
    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, _cache_url(path, cache_dir))
    conv = make_spark_converter(df)
    logger.info("petastorm feed %s/%s: %d rows, attributes %s", feature_set, split, len(conv),
                list(attributes))
    try:
        yield conv
    finally:
        conv.delete()


@contextmanager
def tf_dataset(spark: Any, path: str | os.PathLike[str], feature_set: str,
               attributes: Sequence[str], split: str, *, batch_size: int = 256,
               num_epochs: int | None = 1, shuffle: bool = True, workers: int = 2,
               cache_dir: str | None = None) -> Iterator[tuple[Any, int]]:
    """``(dataset, rows)``: a tf.data.Dataset of ``(x float32 (b, dim), y float32 (b, k))`` with
    k = len(attributes), and the number of rows in the split. ``num_epochs=None`` repeats forever
    (pass ``steps_per_epoch = ceil(rows / batch_size)`` to ``fit`` then)."""
    import tensorflow as tf

    names = list(attributes)
    with converter(spark, path, feature_set, names, split, cache_dir=cache_dir) as conv:
        with conv.make_tf_dataset(batch_size=batch_size, num_epochs=num_epochs,
                                  workers_count=workers,
                                  shuffling_queue_capacity=4 * batch_size if shuffle else 0
                                  ) as ds:

            def to_xy(batch: Any) -> tuple[Any, Any]:
                y = tf.stack([tf.cast(getattr(batch, a), tf.float32) for a in names], axis=1)
                return tf.cast(batch.features, tf.float32), y

            yield ds.map(to_xy), len(conv)


@contextmanager
def numpy_batches(spark: Any, path: str | os.PathLike[str], feature_set: str,
                  attributes: Sequence[str], split: str, *, batch_size: int = 1024,
                  cache_dir: str | None = None) -> Iterator[Iterator[tuple[Any, Any]]]:
    """The same feed without TensorFlow: ``(x, y)`` numpy batches through
    ``petastorm.make_batch_reader`` over the converter's cached Parquet (one epoch)."""
    import numpy as np
    from petastorm import make_batch_reader

    names = list(attributes)
    with converter(spark, path, feature_set, names, split, cache_dir=cache_dir) as conv:
        urls = conv.file_urls
        with make_batch_reader(urls, num_epochs=1, workers_count=1) as reader:

            def gen() -> Iterator[tuple[Any, Any]]:
                buf_x: list[Any] = []
                buf_y: list[Any] = []
                n = 0
                for batch in reader:
                    x = np.stack(batch.features).astype(np.float32, copy=False)
                    y = np.stack([getattr(batch, a) for a in names], axis=1).astype(np.float32)
                    buf_x.append(x)
                    buf_y.append(y)
                    n += len(x)
                    while n >= batch_size:
                        xs, ys = np.concatenate(buf_x), np.concatenate(buf_y)
                        yield xs[:batch_size], ys[:batch_size]
                        buf_x, buf_y = [xs[batch_size:]], [ys[batch_size:]]
                        n -= batch_size
                if n:
                    yield np.concatenate(buf_x), np.concatenate(buf_y)

            yield gen()

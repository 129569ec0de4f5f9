"""The feed: (features, labels) batches of a feature set for Keras ``model.fit`` and numpy.

Two engines give the same batches (the same rows with the same labels, tested):

- ``"native"``: pyarrow reads the feature set's data files (from its manifest) record batch by
  record batch, joins the labels (the small labels table, loaded once and indexed by image id)
  and yields float32 ``(x, y)`` batches, to ``tf.data`` or as numpy. It streams: in memory are
  the row group being read (in record batches of about 16 MiB) and the shuffle buffer
  (``shuffle_buffer`` rows; default 4 batches or 64 MiB of rows, whichever is more), never the
  whole split. It needs neither Spark nor petastorm, and is deterministic given ``seed``: each
  epoch shuffles the order of the row groups, then draws every batch at random from the buffer.
  Batches never span two epochs (each epoch ends with its own short batch); petastorm's may.
  ``bench/bench_feed.py`` times both engines.
- ``"petastorm"``: Spark writes the split to a petastorm cache and petastorm reads it back.
  Every petastorm import lives in this module and happens only on this path, so
  ``import featstore.feed`` works without petastorm. petastorm 0.13.1 is the last release and is
  unmaintained (its maintainer says so in petastorm issue #805); it pins the stack to
  pyarrow < 15 and NumPy 1, hence the optional extra ``featstore[petastorm]``.

``engine="native"`` is the default: on the demo's store it answers in well under a second where
petastorm spends seconds writing its cache and prints its warnings. petastorm is opt-in
(``engine="petastorm"``); ``engine="auto"`` takes petastorm when it imports and the native feed
otherwise. The native feed needs no Spark: ``spark`` may be None; the petastorm feed refuses
None with one line.

    with feed.tf_dataset(spark, store, "vgg16-block5_pool-avg-pca64", ["Smiling"], "train",
                         batch_size=256) as (ds, n):
        model.fit(ds, epochs=1)
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from featstore import store
from featstore.errors import ConfigError, StoreError

logger = logging.getLogger(__name__)

ENGINES = ("auto", "native", "petastorm")


def petastorm_available() -> bool:
    """Whether petastorm imports here: False when it is not installed, and when it is but fails
    to import (on pyarrow >= 16 it misses ``pyarrow.filesystem``; on NumPy 2, ``np.string_``)."""
    try:
        import petastorm  # noqa: F401
    except Exception as exc:  # ImportError, or AttributeError from a NumPy 2 environment
        logger.debug("petastorm does not import (%s: %s)", type(exc).__name__, exc)
        return False
    return True


def resolve_engine(engine: str) -> str:
    """``"native"`` or ``"petastorm"`` for ``engine`` (``"auto"``: petastorm if it imports)."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown feed engine {engine!r}; use one of {', '.join(ENGINES)}")
    if engine == "auto":
        return "petastorm" if petastorm_available() else "native"
    if engine == "petastorm" and not petastorm_available():
        raise ConfigError(
            "the petastorm feed needs petastorm (pip install 'featstore[petastorm]'"
            ", Spark 3.5 / pyarrow < 15 only); engine='native' needs nothing more"
        )
    return engine


def _check_spark(spark: Any) -> None:
    """The petastorm feed writes its cache with Spark: refuse a missing session in one line."""
    if spark is None or not hasattr(spark, "createDataFrame"):
        raise ConfigError(
            "the petastorm feed needs a SparkSession as its first argument (got "
            f"{type(spark).__name__}); engine='native' needs none"
        )


# ---------------------------------------------------------------- the petastorm feed


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


def training_frame(
    spark: Any,
    path: str | os.PathLike[str],
    feature_set: str,
    attributes: Sequence[str],
    split: str,
) -> Any:
    """Spark DataFrame ``features array<float>, <attribute> float...`` for the feed."""
    from pyspark.sql import functions as F

    if not attributes:
        raise store.StoreError("the feed needs at least one attribute")
    df = store.read_spark(spark, path, feature_set, splits=[split], attributes=attributes)
    return df.select(
        F.col("embedding").alias("features"), *[F.col(a).cast("float").alias(a) for a in attributes]
    )


@contextmanager
def converter(
    spark: Any,
    path: str | os.PathLike[str],
    feature_set: str,
    attributes: Sequence[str],
    split: str,
    *,
    cache_dir: str | None = None,
) -> Iterator[Any]:
    """A petastorm ``SparkDatasetConverter`` of one split, deleted (cache and all) on exit."""
    from petastorm.spark import SparkDatasetConverter, make_spark_converter

    _patch_petastorm()
    df = training_frame(spark, path, feature_set, attributes, split)
    spark.conf.set(SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF, _cache_url(path, cache_dir))
    conv = make_spark_converter(df)
    logger.info(
        "petastorm feed %s/%s: %d rows, attributes %s",
        feature_set,
        split,
        len(conv),
        list(attributes),
    )
    try:
        yield conv
    finally:
        conv.delete()


@contextmanager
def _petastorm_tf_dataset(
    spark: Any,
    path: str | os.PathLike[str],
    feature_set: str,
    attributes: Sequence[str],
    split: str,
    *,
    batch_size: int,
    num_epochs: int | None,
    shuffle: bool,
    workers: int,
    cache_dir: str | None,
) -> Iterator[tuple[Any, int]]:
    """:func:`tf_dataset` through petastorm."""
    import tensorflow as tf

    names = list(attributes)
    with converter(spark, path, feature_set, names, split, cache_dir=cache_dir) as conv:
        with conv.make_tf_dataset(
            batch_size=batch_size,
            num_epochs=num_epochs,
            workers_count=workers,
            shuffling_queue_capacity=4 * batch_size if shuffle else 0,
        ) as ds:

            def to_xy(batch: Any) -> tuple[Any, Any]:
                y = tf.stack([tf.cast(getattr(batch, a), tf.float32) for a in names], axis=1)
                return tf.cast(batch.features, tf.float32), y

            yield ds.map(to_xy), len(conv)


@contextmanager
def _petastorm_numpy_batches(
    spark: Any,
    path: str | os.PathLike[str],
    feature_set: str,
    attributes: Sequence[str],
    split: str,
    *,
    batch_size: int,
    num_epochs: int | None,
    cache_dir: str | None,
) -> Iterator[Iterator[tuple[Any, Any]]]:
    """:func:`numpy_batches` through ``petastorm.make_batch_reader`` over the converter's cached
    Parquet (row groups in petastorm's shuffled order)."""
    import numpy as np
    from petastorm import make_batch_reader

    names = list(attributes)
    with converter(spark, path, feature_set, names, split, cache_dir=cache_dir) as conv:
        urls = conv.file_urls
        with make_batch_reader(urls, num_epochs=num_epochs, workers_count=1) as reader:

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


# ---------------------------------------------------------------- the native feed


def _check_feed_args(batch_size: int, num_epochs: int | None, shuffle_buffer: int | None) -> None:
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, not {batch_size}")
    if num_epochs is not None and num_epochs < 1:
        raise ConfigError(f"num_epochs must be at least 1 (or None: repeat), not {num_epochs}")
    if shuffle_buffer is not None and shuffle_buffer < 1:
        raise ConfigError(f"shuffle_buffer must be at least 1 row, not {shuffle_buffer}")


class _NativeSplit:
    """One split of a feature set, ready to stream: its row groups (from the manifest's data
    files) and its labels, a float32 ``(label rows, k)`` matrix indexed by the labels' image ids."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        feature_set: str,
        attributes: Sequence[str],
        split: str,
        *,
        read_rows: int | None = None,
    ) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not attributes:
            raise StoreError("the feed needs at least one attribute")
        manifest = store.check_feature_set(path, feature_set)
        _, names = store.check_selection(path, feature_set, manifest, [split], attributes)
        layout = store.Layout(path)
        self.name, self.split, self.data = (
            feature_set,
            split,
            layout.data(store.features_id(feature_set)),
        )
        self.dim = int(manifest.extra["dim"])
        self.rows = int(manifest.counts["splits"][split])
        # rows per read: about 16 MiB of float32 embeddings, never fewer than one
        self.read_rows = read_rows or max(1, min(65536, (16 << 20) // (4 * max(self.dim, 1))))
        labels = store.read_table(path, "labels", columns=["image_id", *names])
        self.label_ids = labels["image_id"].combine_chunks()
        self.y = (
            np.stack([labels[a].to_numpy(zero_copy_only=False) for a in names], axis=1)
            .astype(np.float32)
            .reshape(labels.num_rows, len(names))
        )
        self.units: list[tuple[Path, int]] = []
        # label rows of each record batch, found once (a hash lookup) and reused every epoch
        self._label_rows: dict[tuple[tuple[Path, int], int], Any] = {}
        for f in store.data_files(layout, store.features_id(feature_set), manifest, [split]):
            try:
                groups = pq.ParquetFile(f).metadata.num_row_groups
            except (pa.ArrowException, OSError) as exc:
                raise self._damaged(exc) from None
            self.units.extend((f, g) for g in range(groups))

    def _damaged(self, exc: BaseException) -> StoreError:
        return StoreError(
            f"{self.data}: feature set {self.name!r} is damaged: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
            "rebuild it with --overwrite"
        )

    def read(self, unit: tuple[Path, int]) -> Iterator[tuple[Any, Any]]:
        """``(x float32 (n, dim), y float32 (n, k))`` record batches of one row group."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        path, group = unit
        try:
            batches = pq.ParquetFile(path).iter_batches(
                batch_size=self.read_rows, row_groups=[group], columns=["image_id", "embedding"]
            )
            for k, rb in enumerate(batches):
                rows = self._label_rows.get((unit, k))
                if rows is None or len(rows) != rb.num_rows:
                    idx = pc.index_in(rb.column("image_id"), value_set=self.label_ids)
                    if idx.null_count:
                        raise StoreError(
                            f"{path}: {idx.null_count} images of {self.name!r} have "
                            "no labels; re-run ingest"
                        )
                    rows = self._label_rows[(unit, k)] = idx.to_numpy(zero_copy_only=False)
                x = store.embedding_matrix(pa.Table.from_batches([rb]), self.dim, self.name)
                yield x, self.y[rows]
        except (pa.ArrowException, OSError) as exc:
            raise self._damaged(exc) from None


def _in_order(
    src: _NativeSplit, units: Sequence[tuple[Path, int]], batch_size: int
) -> Iterator[tuple[Any, Any]]:
    """The rows of ``units`` in their order, in batches (the last may be short)."""
    import numpy as np

    pool_x: list[Any] = []
    pool_y: list[Any] = []
    n = 0
    for unit in units:
        for x, y in src.read(unit):
            pool_x.append(x)
            pool_y.append(y)
            n += len(x)
            if n >= batch_size:
                xs, ys = np.concatenate(pool_x), np.concatenate(pool_y)
                full = n - n % batch_size
                for b in range(0, full, batch_size):
                    yield xs[b : b + batch_size], ys[b : b + batch_size]
                pool_x, pool_y, n = [xs[full:]], [ys[full:]], n - full
    if n:
        yield np.concatenate(pool_x), np.concatenate(pool_y)


def _shuffled(
    src: _NativeSplit, units: Sequence[tuple[Path, int]], rng: Any, batch_size: int, buffer: int
) -> Iterator[tuple[Any, Any]]:
    """The rows of ``units`` through a shuffle buffer: a pool of ``buffer`` rows (at least one
    batch) is filled in read order; each time it is full, a batch is drawn from it at random and
    the pool's last rows fill the holes (so a batch costs a batch of copying, not a pool). At the
    end the rest comes out in a random order; the last batch may be short."""
    import numpy as np

    cap = max(buffer, batch_size)
    pool_x = np.empty((cap, src.dim), np.float32)
    pool_y = np.empty((cap, src.y.shape[1]), np.float32)
    n = 0
    for unit in units:
        for x, y in src.read(unit):
            i = 0
            while i < len(x):
                take = min(len(x) - i, cap - n)
                pool_x[n : n + take], pool_y[n : n + take] = x[i : i + take], y[i : i + take]
                n, i = n + take, i + take
                if n == cap:
                    idx = rng.choice(n, size=batch_size, replace=False)
                    yield pool_x[idx], pool_y[idx]
                    tail = n - batch_size
                    holes = idx[idx < tail]
                    movers = np.setdiff1d(np.arange(tail, n), idx, assume_unique=True)
                    pool_x[holes], pool_y[holes] = pool_x[movers], pool_y[movers]
                    n = tail
    perm = rng.permutation(n)
    for b in range(0, n, batch_size):
        rows = perm[b : b + batch_size]
        yield pool_x[rows], pool_y[rows]


def _native_epoch(
    src: _NativeSplit, rng: Any, batch_size: int, buffer: int
) -> Iterator[tuple[Any, Any]]:
    """One pass over ``src``: row groups in ``rng``'s order and rows through a shuffle buffer of
    ``buffer`` rows (without ``rng``: file order)."""
    if rng is None:
        yield from _in_order(src, src.units, batch_size)
        return
    units = [src.units[i] for i in rng.permutation(len(src.units))]
    yield from _shuffled(src, units, rng, batch_size, buffer)


def _native_batches(
    src: _NativeSplit,
    *,
    batch_size: int,
    num_epochs: int | None,
    shuffle: bool,
    buffer: int,
    seed: int,
    epoch_numbers: Iterator[int],
) -> Iterator[tuple[Any, Any]]:
    """``num_epochs`` epochs (None: forever) of :func:`_native_epoch`; epoch ``e`` (numbered by
    ``epoch_numbers``, shared by every pass over one feed) shuffles with ``rng([seed, e])``."""
    import numpy as np

    for _ in itertools.count() if num_epochs is None else range(num_epochs):
        rng = np.random.default_rng([seed, next(epoch_numbers)]) if shuffle else None
        empty = True
        for batch in _native_epoch(src, rng, batch_size, buffer):
            empty = False
            yield batch
        if empty:  # an empty split: end instead of spinning forever
            return


def _native_feed(
    path: str | os.PathLike[str],
    feature_set: str,
    attributes: Sequence[str],
    split: str,
    *,
    batch_size: int,
    num_epochs: int | None,
    shuffle: bool,
    seed: int | None,
    shuffle_buffer: int | None,
) -> tuple[_NativeSplit, Callable[[], Iterator[tuple[Any, Any]]]]:
    """The split and a factory of batch iterators (each call: ``num_epochs`` more epochs)."""
    import numpy as np

    _check_feed_args(batch_size, num_epochs, shuffle_buffer)
    src = _NativeSplit(path, feature_set, attributes, split)
    if seed is None:
        seed = int(np.random.SeedSequence().entropy)
    # default buffer: 4 batches (petastorm's shuffling queue), or 64 MiB of rows if that is more
    buffer = shuffle_buffer or max(4 * batch_size, (64 << 20) // (4 * max(src.dim, 1)))
    epoch_numbers = itertools.count()
    logger.info(
        "native feed %s/%s: %d rows in %d row groups, attributes %s",
        feature_set,
        split,
        src.rows,
        len(src.units),
        list(attributes),
    )

    def batches() -> Iterator[tuple[Any, Any]]:
        return _native_batches(
            src,
            batch_size=batch_size,
            num_epochs=num_epochs,
            shuffle=shuffle,
            buffer=buffer,
            seed=seed,
            epoch_numbers=epoch_numbers,
        )

    return src, batches


def _grouped(batches: Iterator[tuple[Any, Any]], most: int) -> Iterator[tuple[Any, Any]]:
    """Runs of up to ``most`` consecutive equal-sized batches, stacked: ``(g, b, dim), (g, b, k)``."""
    import numpy as np

    run: list[tuple[Any, Any]] = []
    for x, y in batches:
        if run and (len(run) == most or len(x) != len(run[0][0])):
            yield np.stack([r[0] for r in run]), np.stack([r[1] for r in run])
            run = []
        run.append((x, y))
    if run:
        yield np.stack([r[0] for r in run]), np.stack([r[1] for r in run])


# ---------------------------------------------------------------- the public feeds


@contextmanager
def tf_dataset(
    spark: Any,
    path: str | os.PathLike[str],
    feature_set: str,
    attributes: Sequence[str],
    split: str,
    *,
    batch_size: int = 256,
    num_epochs: int | None = 1,
    shuffle: bool = True,
    workers: int = 2,
    cache_dir: str | None = None,
    engine: str = "native",
    seed: int | None = None,
    shuffle_buffer: int | None = None,
) -> Iterator[tuple[Any, int]]:
    """``(dataset, rows)``: a tf.data.Dataset of ``(x float32 (b, dim), y float32 (b, k))`` with
    k = len(attributes), and the number of rows in the split. ``num_epochs=None`` repeats forever
    (pass ``steps_per_epoch = ceil(rows / batch_size)`` to ``fit`` then).

    ``engine``: ``"native"`` (the default), ``"petastorm"`` or ``"auto"`` (petastorm if it
    imports, else native; module doc). The native feed ignores ``spark`` (None is fine), ``workers``
    and ``cache_dir``; ``seed`` and ``shuffle_buffer`` (rows; default module doc) are its own.
    Each pass over its dataset (each Keras epoch when ``num_epochs=1``) is a new shuffle."""
    chosen = resolve_engine(engine)
    if chosen == "petastorm":
        _check_spark(spark)
        with _petastorm_tf_dataset(
            spark,
            path,
            feature_set,
            attributes,
            split,
            batch_size=batch_size,
            num_epochs=num_epochs,
            shuffle=shuffle,
            workers=workers,
            cache_dir=cache_dir,
        ) as out:
            yield out
        return
    import tensorflow as tf

    src, batches = _native_feed(
        path,
        feature_set,
        attributes,
        split,
        batch_size=batch_size,
        num_epochs=num_epochs,
        shuffle=shuffle,
        seed=seed,
        shuffle_buffer=shuffle_buffer,
    )
    signature = (
        tf.TensorSpec((None, None, src.dim), tf.float32),
        tf.TensorSpec((None, None, len(attributes)), tf.float32),
    )
    # groups of batches (up to 16, about 16 MiB) cross from Python to tf.data at once (each
    # element of a generator costs a Python round trip), then ``unbatch`` gives the batches back
    most = max(1, min(16, (16 << 20) // (4 * batch_size * max(src.dim, 1))))
    ds = tf.data.Dataset.from_generator(
        lambda: _grouped(batches(), most), output_signature=signature
    )
    yield ds.unbatch().prefetch(2), src.rows


@contextmanager
def numpy_batches(
    spark: Any,
    path: str | os.PathLike[str],
    feature_set: str,
    attributes: Sequence[str],
    split: str,
    *,
    batch_size: int = 1024,
    num_epochs: int | None = 1,
    shuffle: bool = False,
    cache_dir: str | None = None,
    engine: str = "native",
    seed: int | None = None,
    shuffle_buffer: int | None = None,
) -> Iterator[Iterator[tuple[Any, Any]]]:
    """The same feed without TensorFlow: an iterator of ``(x, y)`` numpy float32 batches
    (``num_epochs`` epochs, one by default). ``engine`` and the native feed's settings as in
    :func:`tf_dataset`; ``shuffle`` applies to the native feed (petastorm's reader shuffles its
    row groups whatever it is)."""
    chosen = resolve_engine(engine)
    if chosen == "petastorm":
        _check_spark(spark)
        with _petastorm_numpy_batches(
            spark,
            path,
            feature_set,
            attributes,
            split,
            batch_size=batch_size,
            num_epochs=num_epochs,
            cache_dir=cache_dir,
        ) as out:
            yield out
        return
    _, batches = _native_feed(
        path,
        feature_set,
        attributes,
        split,
        batch_size=batch_size,
        num_epochs=num_epochs,
        shuffle=shuffle,
        seed=seed,
        shuffle_buffer=shuffle_buffer,
    )
    gen = batches()
    try:
        yield gen
    finally:
        gen.close()

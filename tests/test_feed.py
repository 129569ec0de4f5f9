"""The feeds (petastorm and native): batches of a feature set and its labels, and a Keras head
fed by them; the two feeds give the same rows. The petastorm tests run on the Spark 3.5 lock
(where petastorm must import: tests/test_locks.py) and skip only on a lock without petastorm."""

from __future__ import annotations

import importlib
import itertools
import sys

import numpy as np
import pytest

import featstore
from featstore import feed, store
from featstore.errors import ConfigError, StoreError
from tests.locks import needs_petastorm
from tests.storefakes import make_store, write_feature_set


@pytest.fixture()
def toy(tmp_path):
    data = make_store(tmp_path / "store", n=48, dim=6)
    data["root"] = tmp_path / "store"
    return data


def test_numpy_batches_hold_every_train_row_once(spark, toy):
    train = [i for i, s in enumerate(toy["splits"]) if s == "train"]
    with feed.numpy_batches(
        spark, toy["root"], "toy-avg", ["Smiling", "Male"], "train", batch_size=10
    ) as batches:
        got = list(batches)
    assert [len(x) for x, _ in got] == [10, 10, 10, 2]
    x = np.concatenate([b[0] for b in got])
    y = np.concatenate([b[1] for b in got])
    # rows come back in any order: match them by their (unique, random) feature vectors
    order = np.lexsort(x.T[::-1])
    want_x = toy["x"][train]
    want_order = np.lexsort(want_x.T[::-1])
    np.testing.assert_array_equal(x[order], want_x[want_order])
    want_y = np.stack([toy["labels"]["Smiling"][train], toy["labels"]["Male"][train]], 1)
    np.testing.assert_array_equal(y[order], want_y[want_order].astype(np.float32))


def test_keras_head_trains_one_epoch_from_the_feed(spark, toy):
    import keras

    with feed.tf_dataset(spark, toy["root"], "toy-avg", ["Smiling"], "train", batch_size=8) as (
        ds,
        rows,
    ):
        assert rows == 32
        model = keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(4, activation="relu"),
                keras.layers.Dense(1, activation="sigmoid"),
            ]
        )
        model.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["accuracy"])
        history = model.fit(ds, epochs=1, verbose=0)
    assert len(history.history["loss"]) == 1 and np.isfinite(history.history["loss"][0])
    cache = store.Layout(toy["root"]).meta / "cache" / "petastorm"
    assert not cache.exists()  # the default engine is the native one: it writes nothing


@needs_petastorm
def test_petastorm_feed_without_a_session_is_refused_in_one_line(toy):
    with pytest.raises(ConfigError, match="needs a SparkSession") as err:
        with feed.numpy_batches(
            None, toy["root"], "toy-avg", ["Smiling"], "train", engine="petastorm"
        ):
            pass
    assert "\n" not in str(err.value)


def test_numpy_batches_with_no_session_uses_the_native_feed(toy):
    with feed.numpy_batches(None, toy["root"], "toy-avg", ["Smiling"], "train") as batches:
        assert sum(len(x) for x, _ in batches) == 32


class _LateVentilator:
    """Ventilates every item at the moment the pool first asks whether ventilation is complete:
    the interleaving in which the stock petastorm ThreadPool ends the epoch with nothing read."""

    def __init__(self, items):
        self.items, self.pool, self.done = items, None, False

    def start(self):
        pass

    def processed_item(self):
        pass

    def completed(self):
        if not self.done:
            for item in self.items:
                self.pool.ventilate(x=item)
            self.done = True
        return True

    def stop(self):
        pass


@needs_petastorm
def test_reader_pool_reads_items_ventilated_while_it_checks_for_the_end():
    from petastorm.workers_pool import EmptyResultError
    from petastorm.workers_pool.worker_base import WorkerBase

    class Echo(WorkerBase):
        def process(self, x):
            self.publish_func(x)

    pool = feed._race_free_thread_pool()(1)
    ventilator = _LateVentilator([1, 2, 3])
    ventilator.pool = pool
    pool.start(Echo, None, ventilator=ventilator)
    got = []
    try:
        while True:
            got.append(pool.get_results())
    except EmptyResultError:
        pass
    finally:
        pool.stop()
        pool.join()
    assert got == [1, 2, 3]


@needs_petastorm
def test_opening_a_feed_makes_petastorm_readers_use_the_race_free_pool(spark, toy):
    import petastorm.reader

    with feed.numpy_batches(
        spark, toy["root"], "toy-avg", ["Smiling"], "test", engine="petastorm"
    ) as batches:
        rows = sum(len(x) for x, _ in batches)
    assert rows == toy["splits"].count("test") == 8
    assert petastorm.reader.ThreadPool is feed._race_free_thread_pool()


@pytest.mark.parametrize("engine", [pytest.param("petastorm", marks=needs_petastorm), "native"])
def test_feed_without_attributes_is_refused(spark, toy, engine):
    with pytest.raises(StoreError, match="at least one attribute"):
        with feed.numpy_batches(spark, toy["root"], "toy-avg", [], "train", engine=engine):
            pass


@needs_petastorm
def test_dense_probe_fit_from_the_petastorm_feed(spark, toy):
    """The dense probe of featstore.train trains from the feed (driver-side training path)."""
    from featstore.train.dense import fit_dense

    x_val, y_val, _ = store.load_xy(toy["root"], "toy-avg", "Smiling", "val")
    x_test, _, _ = store.load_xy(toy["root"], "toy-avg", "Smiling", "test")
    with feed.tf_dataset(
        spark,
        toy["root"],
        "toy-avg",
        ["Smiling"],
        "train",
        batch_size=8,
        num_epochs=None,
        engine="petastorm",
    ) as (ds, rows):
        result = fit_dense(
            None,
            None,
            x_val,
            y_val,
            x_test,
            train_data=ds,
            steps_per_epoch=rows // 8,
            hidden=(4,),
            epochs=3,
            patience=2,
        )
    assert result.y_pred.shape == (len(x_test),)
    assert set(np.unique(result.y_pred)) <= {0, 1}
    assert len(result.history["loss"]) >= 1 and "val_loss" in result.history


# ---------------------------------------------------------------- the native feed


def _rows(batches):
    """(x, y) of a list of batches, as one matrix each."""
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def _sorted_rows(x, y):
    """(x | y) rows sorted by their (unique, random) feature vectors: a multiset to compare."""
    xy = np.concatenate([x, y], axis=1)
    return xy[np.lexsort(x.T[::-1])]


def _expected(root, name, attributes, split):
    """What the store holds for the split (read_arrow, not the fixture's inputs)."""
    table = store.read_arrow(root, name, splits=[split], attributes=attributes)
    x = store.embedding_matrix(table, int(store.feature_set_manifest(root, name)["dim"]), name)
    y = np.stack([table[a].to_numpy(zero_copy_only=False) for a in attributes], 1)
    return x, y.astype(np.float32)


@pytest.fixture()
def grouped(tmp_path):
    """The toy store plus a feature set whose train split has 8 row groups of 4 rows."""
    data = make_store(tmp_path / "store", n=48, dim=6)
    write_feature_set(
        tmp_path / "store", "toy-rg", data["ids"], data["splits"], data["x"], row_group_size=4
    )
    data["root"] = tmp_path / "store"
    return data


def _epochs(root, name, *, num_epochs, batch_size=3, **kw):
    with feed.numpy_batches(
        None,
        root,
        name,
        ["Smiling", "Male"],
        "train",
        engine="native",
        batch_size=batch_size,
        num_epochs=num_epochs,
        **kw,
    ) as batches:
        got = list(batches)
    per_epoch = -(-32 // batch_size)
    assert len(got) == per_epoch * num_epochs
    return [_rows(got[e * per_epoch : (e + 1) * per_epoch]) for e in range(num_epochs)]


@pytest.mark.parametrize("name", ["toy-avg", "toy-rg"])
def test_native_feed_yields_every_row_once_with_its_labels(grouped, name):
    with feed.numpy_batches(
        None,
        grouped["root"],
        name,
        ["Smiling", "Male"],
        "train",
        engine="native",
        batch_size=10,
        shuffle=True,
        seed=3,
        shuffle_buffer=5,
    ) as batches:
        got = list(batches)
    assert [len(x) for x, _ in got] == [10, 10, 10, 2]
    assert all(x.dtype == np.float32 and y.dtype == np.float32 for x, y in got)
    np.testing.assert_array_equal(
        _sorted_rows(*_rows(got)),
        _sorted_rows(*_expected(grouped["root"], name, ["Smiling", "Male"], "train")),
    )


@needs_petastorm
def test_native_and_petastorm_feeds_give_the_same_rows(spark, toy):
    got = {}
    for engine in ("petastorm", "native"):
        with feed.numpy_batches(
            spark,
            toy["root"],
            "toy-avg",
            ["Smiling", "Male"],
            "train",
            batch_size=10,
            engine=engine,
        ) as batches:
            got[engine] = _sorted_rows(*_rows(list(batches)))
    np.testing.assert_array_equal(got["native"], got["petastorm"])


@needs_petastorm
def test_native_and_petastorm_tf_datasets_give_the_same_rows(spark, toy):
    got = {}
    for engine in ("petastorm", "native"):
        with feed.tf_dataset(
            spark, toy["root"], "toy-avg", ["Smiling", "Male"], "val", batch_size=3, engine=engine
        ) as (ds, rows):
            batches = [(x.numpy(), y.numpy()) for x, y in ds]
        assert rows == 8 and [len(x) for x, _ in batches] == [3, 3, 2]
        got[engine] = _sorted_rows(*_rows(batches))
    np.testing.assert_array_equal(got["native"], got["petastorm"])


def test_native_shuffle_changes_the_order_between_epochs_not_the_content(grouped):
    epochs = _epochs(
        grouped["root"], "toy-rg", num_epochs=3, shuffle=True, seed=7, shuffle_buffer=6
    )
    want = _sorted_rows(*_expected(grouped["root"], "toy-rg", ["Smiling", "Male"], "train"))
    for x, y in epochs:
        np.testing.assert_array_equal(_sorted_rows(x, y), want)
    orders = [x[:, 0].tobytes() for x, _ in epochs]
    assert len(set(orders)) == 3


def test_native_shuffle_is_deterministic_given_a_seed(grouped):
    def order(seed):
        return [
            x.tobytes()
            for x, _ in _epochs(
                grouped["root"], "toy-rg", num_epochs=2, shuffle=True, seed=seed, shuffle_buffer=6
            )
        ]

    assert order(11) == order(11)
    assert order(11) != order(12)


def test_native_without_shuffle_reads_in_file_order(grouped):
    [(x, _)] = _epochs(grouped["root"], "toy-rg", num_epochs=1, shuffle=False)
    want_x, _ = _expected(grouped["root"], "toy-rg", ["Smiling", "Male"], "train")
    np.testing.assert_array_equal(x, want_x)  # written sorted by image id, read back so


def test_native_tf_dataset_repeats_when_num_epochs_is_none(toy):
    with feed.tf_dataset(
        None,
        toy["root"],
        "toy-avg",
        ["Smiling", "Male"],
        "train",
        batch_size=8,
        num_epochs=None,
        engine="native",
        seed=0,
    ) as (ds, rows):
        assert rows == 32
        batches = [(x.numpy(), y.numpy()) for x, y in itertools.islice(iter(ds), 13)]
    assert [len(x) for x, _ in batches] == [8] * 13
    want = _sorted_rows(*_expected(toy["root"], "toy-avg", ["Smiling", "Male"], "train"))
    for e in range(3):  # 4 batches an epoch: three whole epochs, each every row once
        np.testing.assert_array_equal(_sorted_rows(*_rows(batches[4 * e : 4 * e + 4])), want)


def test_dense_probe_fit_from_the_native_feed(toy):
    from featstore.train.dense import fit_dense

    x_val, y_val, _ = store.load_xy(toy["root"], "toy-avg", "Smiling", "val")
    x_test, _, _ = store.load_xy(toy["root"], "toy-avg", "Smiling", "test")
    with feed.tf_dataset(
        None,
        toy["root"],
        "toy-avg",
        ["Smiling"],
        "train",
        batch_size=8,
        num_epochs=None,
        engine="native",
        seed=0,
    ) as (ds, rows):
        result = fit_dense(
            None,
            None,
            x_val,
            y_val,
            x_test,
            train_data=ds,
            steps_per_epoch=rows // 8,
            hidden=(4,),
            epochs=3,
            patience=2,
        )
    assert result.y_pred.shape == (len(x_test),)
    assert len(result.history["loss"]) >= 1 and "val_loss" in result.history


def test_feed_works_without_petastorm(monkeypatch, toy):
    """petastorm not installed: the module imports, auto picks native, asking for petastorm is
    refused with one line."""
    monkeypatch.setitem(sys.modules, "petastorm", None)
    monkeypatch.delitem(sys.modules, "featstore.feed")
    monkeypatch.delattr(featstore, "feed")
    fresh = importlib.import_module("featstore.feed")
    assert fresh is not feed
    assert fresh.resolve_engine("auto") == "native"
    with fresh.numpy_batches(None, toy["root"], "toy-avg", ["Smiling"], "test") as batches:
        assert sum(len(x) for x, _ in batches) == 8
    with pytest.raises(ConfigError, match=r"featstore\[petastorm\]"):
        fresh.resolve_engine("petastorm")


def test_unknown_engine_is_refused(toy):
    with pytest.raises(ConfigError, match="unknown feed engine"):
        with feed.numpy_batches(None, toy["root"], "toy-avg", ["Smiling"], "test", engine="arrow"):
            pass


def test_native_feed_refuses_an_unknown_split(toy):
    with pytest.raises(StoreError, match="no split 'dev'"):
        with feed.numpy_batches(None, toy["root"], "toy-avg", ["Smiling"], "dev", engine="native"):
            pass


def test_native_feed_streams_row_groups_without_reading_the_whole_split(grouped, monkeypatch):
    import pyarrow.parquet as pq

    def refuse(*a, **k):
        raise AssertionError("the native feed read a whole table")

    for name in ("read_arrow", "read_pandas", "load_xy"):
        monkeypatch.setattr(store, name, refuse)
    monkeypatch.setattr(pq, "read_table", refuse)
    monkeypatch.setattr(pq.ParquetFile, "read", refuse)
    reads = []
    iter_batches = pq.ParquetFile.iter_batches

    def spy(self, *a, **k):
        reads.append(k["row_groups"])
        return iter_batches(self, *a, **k)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    with feed.numpy_batches(
        None,
        grouped["root"],
        "toy-rg",
        ["Smiling"],
        "train",
        engine="native",
        batch_size=4,
        shuffle=True,
        seed=0,
        shuffle_buffer=8,
    ) as batches:
        assert sum(len(x) for x, _ in batches) == 32
    assert sorted(map(tuple, reads)) == [(g,) for g in range(8)]  # one row group at a time

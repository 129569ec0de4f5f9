"""The petastorm feed: batches of a feature set and its labels, and a Keras head fed by it."""

from __future__ import annotations

import numpy as np
import pytest

from featstore import feed, store
from featstore.errors import StoreError
from tests.storefakes import make_store


@pytest.fixture()
def toy(tmp_path):
    data = make_store(tmp_path / "store", n=48, dim=6)
    data["root"] = tmp_path / "store"
    return data


def test_numpy_batches_hold_every_train_row_once(spark, toy):
    train = [i for i, s in enumerate(toy["splits"]) if s == "train"]
    with feed.numpy_batches(spark, toy["root"], "toy-avg", ["Smiling", "Male"], "train",
                            batch_size=10) as batches:
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

    with feed.tf_dataset(spark, toy["root"], "toy-avg", ["Smiling"], "train",
                         batch_size=8) as (ds, rows):
        assert rows == 32
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="relu"),
                                  keras.layers.Dense(1, activation="sigmoid")])
        model.compile(optimizer="rmsprop", loss="binary_crossentropy", metrics=["accuracy"])
        history = model.fit(ds, epochs=1, verbose=0)
    assert len(history.history["loss"]) == 1 and np.isfinite(history.history["loss"][0])
    # the petastorm cache (in the store's metadata tree) is removed when the feed closes
    assert not any((store.Layout(toy["root"]).meta / "cache" / "petastorm").iterdir())


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


def test_opening_a_feed_makes_petastorm_readers_use_the_race_free_pool(spark, toy):
    import petastorm.reader

    with feed.numpy_batches(spark, toy["root"], "toy-avg", ["Smiling"], "test") as batches:
        rows = sum(len(x) for x, _ in batches)
    assert rows == toy["splits"].count("test") == 8
    assert petastorm.reader.ThreadPool is feed._race_free_thread_pool()


def test_feed_without_attributes_is_refused(spark, toy):
    with pytest.raises(StoreError, match="at least one attribute"):
        with feed.numpy_batches(spark, toy["root"], "toy-avg", [], "train"):
            pass


def test_dense_probe_fit_from_the_petastorm_feed(spark, toy):
    """The dense probe of featstore.train trains from the feed (driver-side training path)."""
    from featstore.train.dense import fit_dense

    x_val, y_val, _ = store.load_xy(toy["root"], "toy-avg", "Smiling", "val")
    x_test, _, _ = store.load_xy(toy["root"], "toy-avg", "Smiling", "test")
    with feed.tf_dataset(spark, toy["root"], "toy-avg", ["Smiling"], "train",
                         batch_size=8, num_epochs=None) as (ds, rows):
        result = fit_dense(None, None, x_val, y_val, x_test, train_data=ds,
                           steps_per_epoch=rows // 8, hidden=(4,), epochs=3, patience=2)
    assert result.y_pred.shape == (len(x_test),)
    assert set(np.unique(result.y_pred)) <= {0, 1}
    assert len(result.history["loss"]) >= 1 and "val_loss" in result.history

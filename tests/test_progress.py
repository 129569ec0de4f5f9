"""featstore.progress: plain lines off a terminal at most every 30 s (a fake clock, no sleeping),
a live bar on one, and counts fed from Spark (status tracker, accumulator)."""

from __future__ import annotations

import io
import logging

from featstore.progress import Progress, finished_tasks, spark_feed


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_off_a_terminal_a_line_at_most_every_30_s(caplog):
    clock = Clock()
    bar = Progress("extract", 1000, "images", stream=io.StringIO(), clock=clock)
    assert not bar.tty
    with caplog.at_level(logging.INFO, logger="featstore.progress"):
        for t, done in ((10, 50), (29.9, 100), (30, 150), (45, 200), (59.9, 250), (61, 305)):
            clock.t = 1000.0 + t
            bar.update(done)
        bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "extract: 150/1,000 images (15%), 5.0 images/s, 2:50 left",
        "extract: 305/1,000 images (30%), 5.0 images/s, 2:19 left",
    ]


def test_counts_never_go_back_nor_past_the_total():
    clock = Clock()
    bar = Progress("train", 10, "fits", stream=io.StringIO(), clock=clock)
    clock.t += 5
    bar.update(7)
    bar.update(3)
    assert bar.done == 7
    bar.update(12)
    assert bar.done == 10 and bar.eta == 0.0


def test_on_a_terminal_a_live_bar_with_counts_rate_and_time_left():
    clock = Clock()
    out = io.StringIO()
    out.isatty = lambda: True  # type: ignore[method-assign]
    bar = Progress("train", 108, "fits", stream=out, clock=clock)
    assert bar.tty
    clock.t += 20
    bar.update(27)
    bar._bar.refresh()
    shown = out.getvalue()
    bar.close()
    assert "train" in shown and "27/108" in shown and "fits" in shown and "1.4/s" in shown


def test_fed_from_the_status_tracker_and_from_an_accumulator(spark):
    sc = spark.sparkContext
    bar = Progress("train", 6, "fits", stream=io.StringIO())
    with spark_feed(spark, bar, poll_s=0.05) as group:
        sc.parallelize(range(6), 6).map(lambda x: x * x).collect()
    assert finished_tasks(sc, group) == (6, 6)
    assert bar.done == 6
    assert sc.getLocalProperty("spark.jobGroup.id") is None  # the group was the block's only

    acc = sc.accumulator(0)

    def count(rows):
        n = 0
        for _ in rows:
            n += 1
        acc.add(n)
        return [n]

    images = Progress("extract", 100, "images", stream=io.StringIO())
    with spark_feed(spark, images, accumulator=acc, offset=40, poll_s=0.05):
        sc.parallelize(range(60), 3).mapPartitions(count).collect()
    assert images.done == 100  # 40 resumed + 60 counted by the tasks

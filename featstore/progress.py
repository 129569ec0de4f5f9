"""Progress of a long stage: images or fits done / total, rate, time left.

On a terminal a live bar (rich) on stderr; otherwise (a log file, CI, ``spark-submit`` on a
cluster) a plain log line at most every ``interval`` seconds (30 by default). The counts come
from Spark, never from the driver guessing: an accumulator the tasks add their rows to (ingest,
extract: exact counts of finished tasks) or the status tracker's finished tasks of the stage's
jobs (train: one task per fit; reduce: tasks). The stage's final summary line stays the job's.

    with Progress("extract", total=n, unit="images") as bar, spark_feed(spark, bar, acc=acc):
        ...  # Spark work
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TextIO

logger = logging.getLogger("featstore.progress")

#: Seconds between two plain progress lines off a terminal.
INTERVAL_S = 30.0


def _hms(seconds: float) -> str:
    s = round(seconds)
    return (
        f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


class Progress:
    """``done`` of ``total`` ``unit`` for one stage. ``tty=None``: a bar when ``stream`` (stderr)
    is a terminal. ``clock`` and ``log`` are injectable for tests."""

    def __init__(
        self,
        stage: str,
        total: int,
        unit: str = "images",
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval: float = INTERVAL_S,
        log: logging.Logger | None = None,
    ) -> None:
        self.stage, self.total, self.unit = stage, int(total), unit
        self.done = 0
        self._clock, self._interval = clock, float(interval)
        self._log = log or logger
        self._start = self._last = clock()
        self._lock = threading.Lock()
        stream = stream if stream is not None else sys.stderr
        self.tty = bool(tty if tty is not None else getattr(stream, "isatty", lambda: False)())
        self._bar: Any = None
        if self.tty:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TaskProgressColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as _Rich

            self._bar = _Rich(
                TextColumn("[bold]{task.description:<8}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(unit),
                TaskProgressColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=Console(file=stream),
                transient=True,
                redirect_stderr=True,
                redirect_stdout=False,
            )
            self._task = self._bar.add_task(stage, total=self.total or None, rate="")
            self._bar.start()

    # ------------------------------------------------------------------ numbers

    @property
    def elapsed(self) -> float:
        return self._clock() - self._start

    @property
    def rate(self) -> float:
        """``unit`` per second since the start."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far; None before the first unit is done."""
        if self.done <= 0 or self.total <= 0:
            return None
        return max(0.0, (self.total - self.done) / self.rate) if self.rate > 0 else None

    def line(self) -> str:
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        eta = self.eta
        left = f", {_hms(eta)} left" if eta is not None and self.done < self.total else ""
        return (
            f"{self.stage}: {self.done:,}/{self.total:,} {self.unit}{pct}, "
            f"{self.rate:,.1f} {self.unit}/s{left}"
        )

    # ------------------------------------------------------------------ updates

    def update(self, done: int, total: int | None = None) -> None:
        """Set the count (never backwards, never above the total)."""
        with self._lock:
            if total is not None:
                self.total = int(total)
            self.done = max(self.done, min(int(done), self.total) if self.total else int(done))
            if self._bar is not None:
                self._bar.update(
                    self._task,
                    completed=self.done,
                    total=self.total or None,
                    rate=f"{self.rate:,.1f}/s",
                )
                return
            now = self._clock()
            if now - self._last >= self._interval:
                self._last = now
                self._log.info("%s", self.line())

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------- fed from Spark


def finished_tasks(sc: Any, group: str) -> tuple[int, int]:
    """(finished, total) tasks of every stage of the jobs of job group ``group``, from
    ``sc.statusTracker()`` (total counts the stages Spark has planned so far)."""
    tracker = sc.statusTracker()
    done = total = 0
    for job_id in tracker.getJobIdsForGroup(group):
        job = tracker.getJobInfo(job_id)
        for stage_id in job.stageIds if job else []:
            stage = tracker.getStageInfo(stage_id)
            if stage is not None:
                done += stage.numCompletedTasks
                total += stage.numTasks
    return done, total


@contextlib.contextmanager
def spark_feed(
    spark: Any,
    progress: Progress,
    *,
    accumulator: Any = None,
    offset: int = 0,
    tasks_total: bool = False,
    poll_s: float = 0.5,
) -> Iterator[str]:
    """While the block runs Spark jobs (from this thread), update ``progress`` from Spark every
    ``poll_s``: ``offset`` + the ``accumulator``'s value when given (rows the finished tasks
    added), else the finished tasks of the block's jobs (``tasks_total``: their task count is
    the total). The block's jobs run in a job group of their own (restored afterwards); yields
    its id."""
    sc = spark.sparkContext
    group = f"featstore-{progress.stage}-{uuid.uuid4().hex[:8]}"
    previous = sc.getLocalProperty("spark.jobGroup.id")
    previous_desc = sc.getLocalProperty("spark.job.description")
    sc.setJobGroup(group, f"featstore {progress.stage}", interruptOnCancel=False)
    stop = threading.Event()

    def poll() -> None:
        if accumulator is not None:
            progress.update(offset + int(accumulator.value))
            return
        done, total = finished_tasks(sc, group)
        progress.update(offset + done, offset + total if tasks_total and total else None)

    def loop() -> None:
        while not stop.wait(poll_s):
            with contextlib.suppress(Exception):  # a tracker hiccup must not break the job
                poll()

    thread = threading.Thread(target=loop, name=f"progress-{progress.stage}", daemon=True)
    thread.start()
    try:
        yield group
    finally:
        stop.set()
        thread.join(timeout=5)
        with contextlib.suppress(Exception):
            poll()
        if previous is not None:
            sc.setJobGroup(previous, previous_desc or "", interruptOnCancel=False)
        else:
            sc.setLocalProperty("spark.jobGroup.id", None)
            sc.setLocalProperty("spark.job.description", previous_desc)

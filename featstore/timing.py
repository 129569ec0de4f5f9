"""Where a job's time went: wall-clock seconds per named phase, for the job's summary line.

    phases = Phases()
    with phases("read listing"):   # or phases.lap("read listing") ... phases.lap(None)
        ...
    print(phases.line("ingest"))  # ingest time: read listing 0.4 s (2%), validate+write ...

The extract job adds its workers' own timings (:class:`Timing`): a driver's clock alone
cannot say whether the model or the decoder was busy. :class:`Stopwatch`: the seconds since a
start, for one measurement that is not a phase (a chunk, a task, a wait).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


class Stopwatch:
    """Seconds since it was made (``offset``: seconds already spent before, elsewhere)."""

    def __init__(self, offset: float = 0.0) -> None:
        self._start = time.perf_counter() - offset

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self._start


class Phases:
    """Seconds per phase, in the order the phases first ran (a phase may run several times)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._running: tuple[str, float] | None = None

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t

    def lap(self, name: str | None) -> None:
        """End the phase started by the last ``lap`` (if any) and start ``name`` (None: stop)."""
        now = time.perf_counter()
        running = self._running
        if running is not None:
            self.seconds[running[0]] = self.seconds.get(running[0], 0.0) + now - running[1]
        self._running = (name, now) if name is not None else None

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.seconds.items()}

    def add(self, seconds: dict[str, float]) -> None:
        """Add another clock's seconds per phase (e.g. one Spark task's, sent to the driver)."""
        for k, v in seconds.items():
            self.seconds[k] = self.seconds.get(k, 0.0) + float(v)

    def shares(self) -> str:
        """``"fit 80%, evaluate 15%, ..."``: each phase's share of the total."""
        total = self.total
        return ", ".join(
            f"{k} {v / total:.0%}" if total > 0 else f"{k} {v:.1f} s"
            for k, v in self.seconds.items()
        )

    def line(self, stage: str) -> str:
        total = self.total
        parts = [
            f"{k} {v:.1f} s ({v / total:.0%})" if total > 0 else f"{k} {v:.1f} s"
            for k, v in self.seconds.items()
        ]
        return f"{stage} time: {', '.join(parts)} of {total:.1f} s"


@dataclass
class Timing:
    """Where an extract's time went: the driver's wall clock per phase (``plan``: checks, the
    plan, the UDF; ``pass``: the Spark jobs of every chunk; ``commit``) and the workers' summed
    timings (:data:`featstore.udf.TIMINGS`, ``tasks``)."""

    driver: Phases
    workers: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {
            "driver": self.driver.as_dict(),
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
        parts.append(
            "driver: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.driver.seconds.items())
        )
        return "; ".join(parts)

"""Where a job's time went: wall-clock seconds per named phase, for the job's summary line.

    phases = Phases()
    with phases("read listing"):   # or phases.lap("read listing") ... phases.lap(None)
        ...
    print(phases.line("ingest"))  # ingest time: read listing 0.4 s (2%), validate+write ...

The extract job adds its workers' own timings (featstore.extract.Timing): a driver's clock
alone cannot say whether the model or the decoder was busy.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


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

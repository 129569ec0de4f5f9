"""The lock files and which one this environment was built from.

Two locks, each a complete ``pip freeze``: ``requirements.lock`` (Spark 3.5, pyarrow 14, NumPy 1,
petastorm) and ``requirements-spark4.lock`` (Spark 4.x, pyarrow 26, NumPy 2, no petastorm).
The environment's lock is the one whose pins of the stack's core packages are what is installed,
so ``.venv-spark4/bin/python -m pytest`` knows its lock without being told. Tests that need
petastorm run where the lock pins it (and fail there when it does not import) and skip only
where the lock leaves it out.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOCKS = ("requirements.lock", "requirements-spark4.lock")
CORE = ("pyspark", "pyarrow", "numpy", "pandas")  # the packages that tell the locks apart


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: str | Path) -> dict[str, str]:
    """``{canonical name: version}`` of a lock file's ``name==version`` lines."""
    path = lock if isinstance(lock, Path) else REPO / lock
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[canonical(name)] = version.strip()
    return out


def installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def current_lock() -> Path | None:
    """The lock whose core pins (pyspark, pyarrow, numpy, pandas) are installed here; None when
    the environment matches neither."""
    for name in LOCKS:
        p = pins(name)
        if all(installed(pkg) == p.get(pkg) for pkg in CORE):
            return REPO / name
    return None


def lock_pins_petastorm() -> bool:
    """Whether this environment's lock has petastorm. An environment that matches no lock is
    held to the default lock's rule (petastorm expected), so it fails rather than skips."""
    lock = current_lock()
    return lock is None or "petastorm" in pins(lock)


needs_petastorm = pytest.mark.skipif(
    not lock_pins_petastorm(),
    reason="petastorm is not in this environment's lock (Spark 4: pyarrow >= 15, NumPy 2); "
    "the Spark 3.5 lock runs these tests",
)

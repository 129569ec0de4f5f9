"""One way to write a file so that readers see the old file or the new one, never half of one.

Every writer in featstore goes through :func:`atomic_path`: the content is written to a hidden
temporary file next to the target (same folder, so the rename cannot cross file systems), made
durable with ``fsync`` when asked, and renamed over the target with ``os.replace``. A failure
before the rename removes the temporary file and leaves the target as it was. An interruption
(``SystemExit``, ``KeyboardInterrupt``) leaves it, as a kill does: the store's next writer or
reader removes what a killed job left (:func:`featstore.store.tidy`).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def temp_name(path: Path) -> Path:
    """A hidden, unique temporary name next to ``path`` (``.name.<hex>.tmp``)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` in one rename.

    >>> with atomic_path(target) as tmp:          # doctest: +SKIP
    ...     pq.write_table(table, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        if fsync:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except Exception:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes, *, fsync: bool = False) -> Path:
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(
    path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8", fsync: bool = False
) -> Path:
    return write_bytes(path, text.encode(encoding), fsync=fsync)


def write_json(path: str | os.PathLike[str], obj: Any, *, fsync: bool = True) -> Path:
    """JSON (indented, sorted keys, trailing newline), durable by default: manifests and
    journal entries are what recovery reads after a crash."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    return write_text(path, text, fsync=fsync)

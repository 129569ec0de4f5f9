"""A ring of batch-sized slots in one shared-memory segment: how decoded pixels get from the
decode worker processes to the process that runs the model without travelling through a pipe.

Numpy and the standard library only (the decode workers import it). The consumer owns the
segment (:class:`SlotRing`): it names a free slot in each decode request, a worker writes the
decoded ``uint8`` images straight into that slot (:func:`worker_slot`) and returns only the
positions and errors, and the consumer reads the slot as a numpy view until it releases it.

Nothing outlives its owner: the segment is unlinked by :meth:`SlotRing.close`, by a finalizer
when the ring is garbage collected, and -- when the owning process is killed -- by
multiprocessing's resource tracker, with which the owner (only the owner) registered it.
Workers attach without registering: a worker's registration would be dropped again when it
detaches, taking the owner's with it (Python < 3.13 registers every attach).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import uuid
import weakref
from collections import deque
from multiprocessing import shared_memory

import numpy as np

logger = logging.getLogger(__name__)

#: Every segment's name starts with this (``/dev/shm/featstore_<pid>_<hex>`` on Linux).
PREFIX = "featstore_"
SHM_DIR = "/dev/shm"


def shm_free_bytes() -> int | None:
    """Free bytes of the shared-memory file system (None where there is no /dev/shm)."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return None
    return int(st.f_bavail) * int(st.f_frsize)


def segments(pid: int | None = None) -> list[str]:
    """featstore's segments present in /dev/shm (of the process ``pid`` only, when given)."""
    head = PREFIX if pid is None else f"{PREFIX}{pid}_"
    try:
        return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(head))
    except OSError:
        return []


def _unlink(shm: shared_memory.SharedMemory) -> None:
    try:
        shm.close()
    except BufferError:  # a view is still alive: the mapping goes with it, the name goes now
        pass
    try:
        shm.unlink()  # also unregisters it from the resource tracker
    except FileNotFoundError:
        pass


class SlotRing:
    """``slots`` slots of ``capacity`` images of ``(h, w, 3)`` uint8 each, in one segment.

    :meth:`acquire` and :meth:`release` are thread-safe (a slot can be released from a
    future's done-callback)."""

    def __init__(self, slots: int, capacity: int, hw: tuple[int, int]) -> None:
        h, w = int(hw[0]), int(hw[1])
        self.slots, self.capacity, self.hw = int(slots), int(capacity), (h, w)
        self.slot_bytes = self.capacity * h * w * 3
        name = f"{PREFIX}{os.getpid()}_{uuid.uuid4().hex[:12]}"
        self.shm = shared_memory.SharedMemory(
            name=name, create=True, size=max(1, self.slots * self.slot_bytes)
        )
        self.name = self.shm.name
        self._free: deque[int] = deque(range(self.slots))
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _unlink, self.shm)

    @classmethod
    def create(cls, slots: int, capacity: int, hw: tuple[int, int]) -> SlotRing | None:
        """A ring, or None (logged once) where /dev/shm has too little room for it: writing
        past a full tmpfs would kill the writer with SIGBUS."""
        need = slots * capacity * int(hw[0]) * int(hw[1]) * 3
        free = shm_free_bytes()
        if free is None or free < need + need // 4:
            logger.warning(
                "decoded images go through pipes: /dev/shm has %s free, the ring needs %.0f MB",
                "no" if free is None else f"{free / 1e6:.0f} MB",
                need / 1e6,
            )
            return None
        return cls(slots, capacity, hw)

    def acquire(self) -> int | None:
        with self._lock:
            return self._free.popleft() if self._free else None

    def release(self, slot: int) -> None:
        with self._lock:
            if slot not in self._free:
                self._free.append(slot)

    @property
    def free(self) -> int:
        with self._lock:
            return len(self._free)

    def view(self, slot: int, n: int) -> np.ndarray:
        """The first ``n`` images of ``slot``: a view into the segment, valid until released."""
        h, w = self.hw
        return np.ndarray(
            (n, h, w, 3), dtype=np.uint8, buffer=self.shm.buf, offset=slot * self.slot_bytes
        )

    def close(self) -> None:
        self._finalizer()  # unlinks once


# --------------------------------------------------------------------------- worker side

_ATTACHED: dict[str, shared_memory.SharedMemory] = {}


def _attach(name: str) -> shared_memory.SharedMemory:
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name, track=False)  # type: ignore[call-arg]
    from multiprocessing import resource_tracker

    register = resource_tracker.register
    resource_tracker.register = lambda *a, **k: None  # type: ignore[assignment]
    try:
        return shared_memory.SharedMemory(name)
    finally:
        resource_tracker.register = register  # type: ignore[assignment]


def worker_slot(name: str, offset: int, capacity: int, hw: tuple[int, int]) -> np.ndarray:
    """In a decode worker: the slot at byte ``offset`` of segment ``name`` as a writable
    ``(capacity, h, w, 3)`` view. A worker keeps one segment attached (a new ring replaces it)."""
    shm = _ATTACHED.get(name)
    if shm is None:
        for old in _ATTACHED.values():
            try:
                old.close()
            except BufferError:
                pass
        _ATTACHED.clear()
        shm = _ATTACHED[name] = _attach(name)
    h, w = int(hw[0]), int(hw[1])
    return np.ndarray((capacity, h, w, 3), dtype=np.uint8, buffer=shm.buf, offset=offset)


def exit_with_parent(parent_pid: int, interval: float = 0.5) -> None:
    """In a worker process: exit as soon as ``parent_pid`` is no longer its parent (the
    consumer was killed), so that no orphan keeps the resource tracker, and the segment, alive."""

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            threading.Event().wait(interval)

    threading.Thread(target=watch, name="featstore-parent-watch", daemon=True).start()

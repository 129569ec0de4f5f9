"""Decoding a batch of image bytes to the model's ``uint8`` input, off the calling thread.

:func:`decode_image` / :func:`decode_batch` decode (Pillow, through
:func:`featstore.decode.open_rgb`); :class:`DecodePool` runs them on one background thread or a
pool of spawned worker processes that write the pixels into shared memory
(:mod:`featstore.shmring`). numpy and Pillow only: this is all a decode worker process imports.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from featstore.decode import MAX_PIXELS, DecodeError, open_rgb
from featstore.decode import one_line as _one_line
from featstore.errors import ConfigError, FeatstoreError
from featstore.shmring import SlotRing
from featstore.timing import Stopwatch

logger = logging.getLogger(__name__)


def decode_image(
    data: bytes | None, hw: tuple[int, int], *, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Image bytes -> ``uint8 (h, w, 3)`` RGB at the model input size ``hw = (h, w)``.

    Decoding is :func:`featstore.decode.open_rgb`, the decoder ingest validates with: any format
    Pillow reads (a PNG named .jpg too); grayscale, CMYK, palette, RGBA, ... are converted to
    RGB. Resized (bilinear) only when the size differs; a JPEG much larger than the target is
    first decoded at a reduced DCT scale (``Image.draft``). Raises :class:`DecodeError` for
    empty, truncated, undecodable or too large (> ``max_pixels``) data. Truncated images are
    never patched up (``LOAD_TRUNCATED_IMAGES`` stays off).
    """
    th, tw = int(hw[0]), int(hw[1])
    with open_rgb(data, max_pixels=max_pixels, draft=(tw, th)) as rgb:
        try:
            img = rgb if rgb.size == (tw, th) else rgb.resize((tw, th), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
        except Exception as exc:
            raise DecodeError(
                _one_line(f"cannot convert {rgb.format or 'image'} {rgb.mode}: {exc}")
            ) from None
    if arr.shape != (th, tw, 3):
        raise DecodeError(f"decoded to unexpected shape {arr.shape}")
    return arr


@dataclass
class DecodedBatch:
    """Decoded sub-batch: ``images[i]`` is input position ``ok_index[i]`` (within the chunk).

    From a :class:`DecodePool` of processes, ``images`` is a view into a shared-memory slot:
    call :meth:`release` once the pixels have been taken (the forward pass has read them); the
    slot is then written again. Releasing twice, or a batch that owns its array, is a no-op."""

    images: np.ndarray
    ok_index: np.ndarray
    errors: list[tuple[int, str]]
    seconds: float
    on_release: Callable[[], None] | None = None

    def release(self) -> None:
        fn, self.on_release = self.on_release, None
        if fn is not None:
            fn()


def decode_batch(
    contents: Sequence[bytes | None],
    hw: tuple[int, int],
    *,
    max_pixels: int = MAX_PIXELS,
    out: np.ndarray | None = None,
) -> DecodedBatch:
    """Decode a list of image bytes; failures become ``(position, reason)`` entries. ``out``:
    where to write the pixels (at least ``len(contents)`` images; the ok ones first)."""
    t0 = Stopwatch()
    h, w = hw
    if out is None:
        out = np.empty((len(contents), h, w, 3), dtype=np.uint8)
    ok: list[int] = []
    errors: list[tuple[int, str]] = []
    for i, data in enumerate(contents):
        try:
            out[len(ok)] = decode_image(data, hw, max_pixels=max_pixels)
        except DecodeError as exc:
            errors.append((i, exc.reason))
            continue
        except Exception as exc:  # never let one image kill the batch
            errors.append((i, _one_line(f"decode failed: {type(exc).__name__}: {exc}")))
            continue
        ok.append(i)
    images = out[: len(ok)] if len(ok) < len(out) else out
    return DecodedBatch(images, np.asarray(ok, dtype=np.int64), errors, t0.seconds)


def _decode_to_slot(
    shm_name: str,
    offset: int,
    contents: Sequence[bytes | None],
    hw: tuple[int, int],
    max_pixels: int,
) -> tuple[np.ndarray, list[tuple[int, str]], float]:
    """In a decode worker: decode into a shared-memory slot; only positions and errors return."""
    from featstore import shmring

    out = shmring.worker_slot(shm_name, offset, len(contents), hw)
    b = decode_batch(contents, hw, max_pixels=max_pixels, out=out)
    return b.ok_index, b.errors, b.seconds


def _decode_worker_init(parent_pid: int) -> None:
    from featstore import shmring

    shmring.exit_with_parent(parent_pid)


class DecodePoolError(FeatstoreError):
    """A decode worker process died (killed, out of memory); the pool is reset, usable again."""


class DecodePool:
    """Decodes chunks off the calling thread: one background thread (``workers=0``) or a pool
    of ``workers`` spawned processes (which import numpy and Pillow only).

    The processes write the pixels into a ring of shared-memory slots (:mod:`featstore.shmring`)
    and return only positions and errors, so the consumer pays next to nothing per image; each
    batch :meth:`map` yields then holds a slot until :meth:`DecodedBatch.release`. ``capacity``:
    the images a slot holds (the largest chunk expected; default: the first chunk's length).
    Where no slot is free, or /dev/shm is too small, a chunk's pixels come back through the
    pipe instead (slower, the same values). A worker that dies makes :meth:`map` raise
    :class:`DecodePoolError` (one line); the pool then starts afresh on its next use. The
    segment is unlinked by :meth:`close`, and by the resource tracker if this process is killed
    (the workers exit with their parent)."""

    def __init__(
        self,
        hw: tuple[int, int],
        workers: int = 0,
        *,
        max_pixels: int = MAX_PIXELS,
        capacity: int | None = None,
        shared: bool = True,
    ):
        if workers < 0:
            raise ConfigError(f"decode_workers must be >= 0, got {workers}")
        self.hw = (int(hw[0]), int(hw[1]))
        self.workers = int(workers)
        self.max_pixels = max_pixels
        self.capacity = capacity
        self.shared = shared and self.workers > 0
        self._executor: Executor | None = None
        self._ring: SlotRing | None = None
        self._no_ring = False  # /dev/shm too small: said once
        self._lock = threading.Lock()

    @property
    def depth(self) -> int:
        """How many chunks to keep in flight to keep every decoder busy."""
        return 2 if self.workers == 0 else self.workers + 2

    @property
    def slots(self) -> int:
        """Slots in the ring: the chunks in flight plus two held by the consumer (the batch
        in the model and the one whose results are fetched one batch late)."""
        return self.depth + 2

    def _get_executor(self) -> Executor:
        with self._lock:
            if self._executor is None:
                if self.workers == 0:
                    # Pillow imports its format plugins on the first open (all of them for a
                    # file it cannot identify): do it here, on the calling thread, so the decode
                    # thread never imports while the worker's main thread does (two threads
                    # importing at once can deadlock on the import locks; see bench/RESULTS.md,
                    # "The hang").
                    Image.init()
                    self._executor = ThreadPoolExecutor(1, thread_name_prefix="featstore-decode")
                else:
                    # spawn, not fork: the parent holds framework threads (TF/JAX) that a
                    # forked child would inherit in an undefined state.
                    ctx = multiprocessing.get_context("spawn")
                    self._executor = ProcessPoolExecutor(
                        self.workers,
                        mp_context=ctx,
                        initializer=_decode_worker_init,
                        initargs=(os.getpid(),),
                    )
                    # In a process started by multiprocessing, exit first runs the finalizers of
                    # priority >= 0 (which close the pool's queue feeders: exitpriority 10) and
                    # then joins the children, so a pool never closed left its workers waiting
                    # for a stop they never got, and the exit hung (seen in bench/gpu's layout
                    # processes). Shut the pool down before the feeders close (a no-op if
                    # already closed).
                    multiprocessing.util.Finalize(
                        self._executor,
                        self._executor.shutdown,
                        kwargs={"wait": True, "cancel_futures": True},
                        exitpriority=100,
                    )
                    logger.info("started %d decode processes", self.workers)
            return self._executor

    def _get_ring(self, n: int) -> SlotRing | None:
        """The ring, made (or remade bigger, when no slot is out) for chunks of ``n`` images."""
        if not self.shared or self._no_ring:
            return None
        ring = self._ring
        if ring is not None and (ring.capacity >= n or ring.free < ring.slots):
            return ring if ring.capacity >= n else None
        if ring is not None:
            ring.close()
        self._ring = SlotRing.create(self.slots, max(n, self.capacity or 0), self.hw)
        self._no_ring = self._ring is None
        return self._ring

    def submit(self, contents: Sequence[bytes | None]) -> Future[DecodedBatch]:
        """One chunk through the pipe (its pixels pickled back)."""
        return self._pool_submit(decode_batch, list(contents), self.hw, max_pixels=self.max_pixels)

    def _pool_submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        executor = self._get_executor()
        try:
            return executor.submit(fn, *args, **kwargs)
        except BrokenProcessPool:
            raise
        except (OSError, ValueError, RuntimeError) as exc:
            # A worker died while this submit replaced an idle one: the pool's manager thread
            # marks the pool broken and closes its pipes while submit spawns the replacement
            # with them (CPython 3.11: "bad value(s) in fds_to_keep"). Same cause, same answer.
            if _pool_broken(executor):
                raise BrokenProcessPool(f"{type(exc).__name__}: {exc}") from exc
            raise

    def _submit(self, contents: Sequence[bytes | None]) -> tuple[Future[Any], int | None]:
        ring = self._get_ring(len(contents))
        slot = ring.acquire() if ring is not None else None
        if ring is None or slot is None:
            return self.submit(contents), None
        try:
            fut = self._pool_submit(
                _decode_to_slot,
                ring.name,
                slot * ring.slot_bytes,
                list(contents),
                self.hw,
                self.max_pixels,
            )
        except BaseException:
            ring.release(slot)
            raise
        return fut, slot

    def _collect(self, fut: Future[Any], slot: int | None) -> DecodedBatch:
        if slot is None:
            return fut.result()
        ring = self._ring
        assert ring is not None
        ok, errors, seconds = fut.result()
        return DecodedBatch(
            ring.view(slot, len(ok)), ok, errors, seconds, functools.partial(ring.release, slot)
        )

    def map(self, chunks: Iterable[Sequence[bytes | None]]) -> Iterator[DecodedBatch]:
        """Decode chunks in order, keeping :attr:`depth` of them in flight."""
        pending: deque[tuple[Future[Any], int | None]] = deque()
        it = iter(chunks)
        try:
            for chunk in it:
                pending.append(self._submit(chunk))
                if len(pending) >= self.depth:
                    yield self._collect(*pending.popleft())
            while pending:
                yield self._collect(*pending.popleft())
        except BrokenProcessPool:
            pending.clear()
            self.close()
            raise DecodePoolError(
                "a decode worker process died (killed or out of memory); the decode pool was reset"
            ) from None
        finally:
            ring = self._ring
            for fut, slot in pending:
                fut.cancel()
                if slot is not None and ring is not None:  # given back once the worker is done
                    fut.add_done_callback(functools.partial(_release_later, ring, slot))

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                if _pool_broken(self._executor):
                    _kill_workers(self._executor)
                self._executor.shutdown(wait=True, cancel_futures=True)
                self._executor = None
            if self._ring is not None:
                self._ring.close()
                self._ring = None

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pool_broken(executor: Executor) -> bool:
    """Whether a process pool lost a worker (CPython marks it ``_broken`` before closing its
    pipes; a dead worker not yet noticed by the pool counts too)."""
    if not isinstance(executor, ProcessPoolExecutor):
        return False
    if getattr(executor, "_broken", False):
        return True
    procs = dict(getattr(executor, "_processes", None) or {})
    return any(p.exitcode not in (None, 0) for p in procs.values())


def _kill_workers(executor: Executor) -> None:
    """Kill every worker process of a broken pool before it is shut down.

    CPython's pool manager (3.11) terminates the workers it knows of when one dies, then joins
    them all; a replacement that a concurrent ``submit`` spawned in between is never terminated
    and waits for work forever, and the join (so ``shutdown``) never returns: the decode of a
    task whose worker was OOM-killed would hang instead of failing. Killing them here lets the
    manager's join finish."""
    procs = dict(getattr(executor, "_processes", None) or {})
    for proc in procs.values():
        try:
            proc.kill()  # SIGKILL; nothing happens to one already gone
        except (OSError, ValueError):  # reaped meanwhile, or its handle closed
            pass


def _release_later(ring: SlotRing, slot: int, _fut: Future[Any]) -> None:
    ring.release(slot)

"""Table locks, and the recovery of what a killed writer left: a half-done commit (rolled
forward from its journal), journal temporaries, unusable staging, a dead holder's lock."""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from featstore.errors import StoreError
from featstore.store.layout import Layout, now_iso, safe_tid

logger = logging.getLogger("featstore.store")


class LockedError(StoreError):
    """Another live featstore job holds the table's lock."""


HEARTBEAT_S = 5.0
STALE_S = 120.0  # a lock whose heartbeat is older than this is stale (its holder is gone)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TableLock:
    """An exclusive lock on one table: ``_featstore/locks/<table>.lock`` created with O_EXCL
    (which NFS v3+ honours), holding owner, host, pid and start time; its mtime is the heartbeat,
    touched every few seconds. A lock whose holder is a dead process on this host, or whose
    heartbeat stopped for :data:`STALE_S` seconds, is broken with a warning."""

    def __init__(self, layout: Layout, tid: str, *, wait_s: float = 0.0) -> None:
        self.layout, self.tid, self.wait_s = layout, tid, wait_s
        self.path = layout.lock_path(tid)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.info = {
            "table": tid,
            "owner": _user(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": now_iso(),
        }

    def _holder(self) -> dict[str, Any] | None:
        try:
            text = self.path.read_text()
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(text)
        except json.JSONDecodeError:
            holder = {}
        holder["_age"] = age
        return holder

    def _stale(self, holder: dict[str, Any]) -> str | None:
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            if not _pid_alive(holder["pid"]):
                return f"its process {holder['pid']} is gone"
        if holder["_age"] > STALE_S:
            return f"no heartbeat for {holder['_age']:.0f} s"
        if not holder.get("pid") and holder["_age"] > HEARTBEAT_S * 2:
            return "the lock file is unreadable"
        return None

    def acquire(self) -> TableLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue  # released in between
                why = self._stale(holder)
                if why:
                    logger.warning(
                        "breaking the stale lock of table %s held by %s@%s pid %s since %s (%s)",
                        self.tid,
                        holder.get("owner"),
                        holder.get("host"),
                        holder.get("pid"),
                        holder.get("started"),
                        why,
                    )
                    # renamed aside, not unlinked; still, two jobs breaking the same stale lock
                    # at the same moment can race (the second may move the first's fresh lock):
                    # a window of microseconds, accepted for a lock that NFS honours
                    aside = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex[:8]}")
                    with contextlib.suppress(FileNotFoundError):
                        os.replace(self.path, aside)
                        aside.unlink()
                    continue
                if time.monotonic() < deadline:
                    time.sleep(0.5)
                    continue
                raise LockedError(
                    f"table {self.tid} is being written by another featstore job: "
                    f"{holder.get('owner')}@{holder.get('host')} pid {holder.get('pid')} since "
                    f"{holder.get('started')} (lock {self.path}); wait for it to finish, or "
                    "delete the lock file if that job is gone"
                ) from None
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(self.info) + "\n")
            break
        self._thread = threading.Thread(
            target=self._beat, daemon=True, name=f"featstore-lock-{self.tid}"
        )
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        holder = self._holder()
        if (
            holder
            and holder.get("pid") == os.getpid()
            and holder.get("started") == self.info["started"]
        ):
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> TableLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this container
        return str(os.getuid())


# ---------------------------------------------------------------- commits


def roll_forward(layout: Layout, journal: Path) -> None:
    """Finish the commit a journal describes. Every step checks what is already done, so a
    commit killed at any point is finished by running this again."""
    entry = json.loads(journal.read_text())
    staging = layout.root / entry["staging"]
    for i, (src_rel, dst_rel) in enumerate(entry["moves"]):
        src, dst = layout.root / src_rel, layout.root / dst_rel
        if not src.exists():
            continue  # moved already
        if dst.exists():
            aside = staging / f"old-{i}"
            if aside.exists():
                shutil.rmtree(aside)
            os.replace(dst, aside)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    journal.unlink()
    shutil.rmtree(staging, ignore_errors=True)
    for _, dst_rel in entry["moves"]:  # a removed table leaves no empty partition folders
        dst = layout.root / dst_rel
        if not dst.exists():
            _prune_empty(dst.parent, layout.root)


def _prune_empty(folder: Path, stop: Path) -> None:
    while folder != stop and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def recover(layout: Layout, tid: str, *, locked: bool = False) -> bool:
    """Finish a commit of ``tid`` that a killed writer left half done. Returns True if one was
    finished. Without ``locked``, it waits for a live writer instead (whose commit finishes
    within moments)."""
    journal = layout.journal(tid)
    if not journal.is_file():
        if not locked:
            tidy(layout, tid)
        return False
    if locked:
        logger.warning("table %s: finishing a commit that an interrupted job left half done", tid)
        roll_forward(layout, journal)
        return True
    try:
        lock = TableLock(layout, tid, wait_s=10.0).acquire()
    except (LockedError, OSError):
        return False  # read-only store or a live writer: the reader sees the previous commit
    try:
        return recover(layout, tid, locked=True)
    finally:
        lock.release()


#: marks the staging folder of a resumable writer (extract): kept across a failure
RESUMABLE = ".resumable"


def find_debris(layout: Layout, tid: str, keep: Path | None = None) -> list[Path]:
    """What dead jobs left of table ``tid``: journal temporaries (a kill inside
    :func:`write_json`) and staging folders that no commit or resume can use: those whose
    ``meta`` folder is gone (a commit that finished its renames but was killed before its
    cleanup, a removal), and those of a killed writer that does not resume. A killed resumable
    writer's staging (marked :data:`RESUMABLE`, its ``meta`` in place) stays for its re-run."""
    out: list[Path] = []
    journals = layout.meta / "journal"
    if journals.is_dir():
        out += sorted(journals.glob(f".{safe_tid(tid)}.json.*.tmp"))
    if layout.staging.is_dir():
        mine = re.compile(rf"^{re.escape(safe_tid(tid))}-[0-9a-f]{{12}}$")
        out += [
            e
            for e in sorted(layout.staging.iterdir())
            if mine.match(e.name)
            and e != keep
            and not ((e / "meta").is_dir() and (e / RESUMABLE).is_file())
        ]
    return out


def remove_paths(paths: Iterable[Path]) -> None:
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def tidy(layout: Layout, tid: str) -> bool:
    """Clean what dead jobs left of table ``tid`` (:func:`find_debris`, a stale lock), under the
    table's lock; a reader calls it (through :func:`read_manifest`), so a table that is only
    read again, never rewritten, is cleaned too. Does nothing (cheaply: a listing and a stat)
    when there is nothing to clean, when a live job holds the lock, or on a read-only store.
    Returns True if it cleaned something."""
    debris = find_debris(layout, tid)
    if not debris and not layout.lock_path(tid).exists():
        return False
    try:
        lock = TableLock(layout, tid).acquire()  # breaks a dead holder's lock, with a warning
    except (LockedError, OSError):
        return False
    try:
        debris = find_debris(layout, tid)
        if debris:
            logger.warning(
                "table %s: removing what an interrupted job left: %s",
                tid,
                ", ".join(layout.rel(p) for p in debris),
            )
            remove_paths(debris)
        return True
    finally:
        lock.release()

"""Where things are in a store: names, paths (:class:`Layout`), the layout marker, and the
checks a job makes before it starts (:func:`check_writable`)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

from featstore import __version__, fsio
from featstore.errors import ConfigError, StoreError

LAYOUT_VERSION = 2
META_DIR = "_featstore"
MANIFEST = "manifest.json"
V1_MANIFEST = "_manifest.json"  # layout 1 kept manifests inside the data folders
PARTITION = "feature_set"
#: tables with one instance per feature set, ``<kind>/<set>``, under one hive root each
#: (``<kind>/feature_set=<set>/``): the feature sets themselves, and what is derived per set
PER_SET_TABLES = ("features", "retrieval")


# ---------------------------------------------------------------- paths and names

_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(//)?")
_GLOB_CHARS = set("*?[]{}\\")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")


def local_path(path: str | os.PathLike[str]) -> Path:
    """The absolute local path of a store location: a path or a ``file:`` URI.

    Raises :class:`StoreError` for any other URI scheme (``hdfs://``, ``s3a://``...): the store
    needs a POSIX file system shared by driver and executors (see :mod:`featstore.store`)."""
    text = os.fspath(path)
    m = _URI.match(text)
    if m and len(m.group(1)) > 1:  # one letter is a Windows drive ("C:")
        if m.group(1).lower() != "file":
            raise StoreError(
                f"store location {text!r}: {m.group(1)}:// is not supported; the store must be a "
                "directory on a file system mounted at the same path on the driver and every "
                "executor (local disk, NFS, Lustre, EFS, a FUSE mount of a bucket)"
            )
        from urllib.parse import unquote, urlparse

        parsed = urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise StoreError(
                f"store location {text!r}: file URIs on another host are not supported"
            )
        text = unquote(parsed.path)
    return Path(text).expanduser().resolve()


def spark_uri(path: str | os.PathLike[str]) -> str:
    """``file:///...`` for a local path: what Spark reads and writes, whatever ``fs.defaultFS``
    says (a bare ``/data/store`` would mean ``hdfs:///data/store`` on a YARN cluster).

    The path is *not* percent-encoded: Hadoop's ``Path`` takes the text literally, so an encoded
    ``%20`` would become a folder named ``%20`` (spaces, ``%``, ``#`` and unicode round-trip this
    way). Spark expands glob characters in read paths, so a path holding any is refused."""
    p = local_path(path)
    bad = sorted(_GLOB_CHARS & set(str(p)))
    if bad:
        raise StoreError(
            f"{p}: Spark reads {' '.join(bad)} in a path as a glob pattern; move "
            "the store to a path without them"
        )
    return "file://" + str(p)


def check_name(name: str, what: str = "feature set") -> str:
    """A table or feature-set name: letters, digits and ``._+-``, not starting with ``.``/``_``
    (names are folder names and hive partition values)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"invalid {what} name {name!r}: use letters, digits and ._+- "
            "(starting with a letter or digit, at most 200 characters)"
        )
    return name


def features_id(name: str) -> str:
    return f"features/{check_name(name)}"


def safe_tid(tid: str) -> str:
    return tid.replace("/", "__")


class Layout:
    """Paths inside a store (see :mod:`featstore.store`)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = local_path(root)

    # data (what analysts read)
    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def labels(self) -> Path:
        return self.root / "labels"

    @property
    def features_root(self) -> Path:
        return self.root / "features"

    def features(self, name: str) -> Path:
        return self.features_root / f"{PARTITION}={check_name(name)}"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def errors_root(self) -> Path:
        return self.root / "errors"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def data(self, tid: str) -> Path:
        kind, _, name = tid.partition("/")
        if kind in PER_SET_TABLES and name:
            return self.root / kind / f"{PARTITION}={check_name(name)}"
        if tid in ("images", "labels", "results"):
            return self.root / tid
        raise StoreError(f"unknown table {tid!r}")

    def errors(self, tid: str) -> Path:
        kind, _, name = tid.partition("/")
        if kind in PER_SET_TABLES and name:
            return self.errors_root / kind / f"{PARTITION}={check_name(name)}"
        return self.errors_root / tid

    # metadata (featstore's own)
    @property
    def meta(self) -> Path:
        return self.root / META_DIR

    def table_meta(self, tid: str) -> Path:
        return self.meta / "tables" / tid

    def manifest_path(self, tid: str) -> Path:
        return self.table_meta(tid) / MANIFEST

    @property
    def cells(self) -> Path:
        return self.meta / "cells"

    @property
    def staging(self) -> Path:
        return self.meta / "staging"

    def journal(self, tid: str) -> Path:
        return self.meta / "journal" / f"{safe_tid(tid)}.json"

    def lock_path(self, tid: str) -> Path:
        return self.meta / "locks" / f"{safe_tid(tid)}.lock"

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


# ---------------------------------------------------------------- small file helpers


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def write_json(path: Path, obj: Any) -> Path:
    """Write JSON atomically (temp file, fsync, rename): :func:`featstore.fsio.write_json`."""
    return fsio.write_json(path, obj, fsync=True)


def _v1_tables(root: Path) -> list[Path]:
    found = [root / t / V1_MANIFEST for t in ("images", "labels", "results")]
    if (root / "features").is_dir():
        found += [p / V1_MANIFEST for p in (root / "features").iterdir() if p.is_dir()]
    return [p for p in found if p.is_file()]


def check_layout(layout: Layout) -> None:
    """Refuse a store written by layout 1 (manifests inside data folders), naming the fix."""
    marker = layout.meta / "store.json"
    if marker.is_file():
        try:
            version = json.loads(marker.read_text()).get("layout_version")
        except json.JSONDecodeError:
            version = None
        if version != LAYOUT_VERSION:
            raise StoreError(
                f"{marker}: store layout {version!r} is not supported by featstore "
                f"{__version__} (expects {LAYOUT_VERSION})"
            )
        return
    if _v1_tables(layout.root):
        raise StoreError(
            f"{layout.root}: this store was written by an older featstore (layout 1: "
            "manifests inside the data folders); run `featstore migrate "
            f"{layout.root}` once to convert it in place"
        )


def ensure_layout(layout: Layout) -> None:
    """Create the store folder and its layout marker if new; refuse an old layout."""
    check_layout(layout)
    marker = layout.meta / "store.json"
    if not marker.is_file():
        write_json(
            marker,
            {"layout_version": LAYOUT_VERSION, "created": now_iso(), "code_version": __version__},
        )


def open_store(path: str | os.PathLike[str], *, strict: bool = False) -> Layout:
    """The layout of an existing store. ``strict``: the folder must be a featstore store (its
    ``_featstore/store.json`` marker), not merely a folder (``featstore ls``)."""
    layout = Layout(path)
    if not layout.root.is_dir():
        raise StoreError(f"{layout.root}: no such store folder")
    check_layout(layout)
    if strict and not (layout.meta / "store.json").is_file():
        raise StoreError(
            f"{layout.root}: not a featstore store (no {META_DIR}/store.json; "
            "`featstore ingest --store` makes one)"
        )
    return layout


def check_writable(
    path: str | os.PathLike[str], need_bytes: int = 0, *, what: str = "the job"
) -> None:
    """Before Spark starts: the store (or, for a new store, the folder it will be made in)
    accepts a new file, and its file system has ``need_bytes`` free (with 10% to spare).
    Raises StoreError with one line naming the path and the cause."""
    root = local_path(path)
    probe_dir = root / META_DIR if (root / META_DIR).is_dir() else root
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    probe = probe_dir / f".featstore-probe-{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise StoreError(
            f"{probe_dir}: the store is not writable ({exc.strerror}); "
            f"{what} would write there: nothing was started"
        ) from None
    if need_bytes > 0:
        st = os.statvfs(probe_dir)
        free = st.f_bavail * st.f_frsize
        if free < need_bytes * 1.1:
            raise StoreError(
                f"{probe_dir}: No space left on device: {_size(free)} free, "
                f"{what} needs about {_size(need_bytes)}; free some space: "
                "nothing was started"
            )


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TB"


# ---------------------------------------------------------------- manifests

"""The tables of a store: reading a table's manifest, listing and finding tables, and what a
derived table was derived from."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from featstore import __version__
from featstore.errors import ConfigError, StoreError
from featstore.store.checks import check_files, verify_table
from featstore.store.layout import (
    MANIFEST,
    PER_SET_TABLES,
    Layout,
    check_name,
    features_id,
    open_store,
)
from featstore.store.lock import recover
from featstore.store.manifest import SCHEMA_VERSION, Manifest, fs_fingerprint

logger = logging.getLogger("featstore.store")


def read_manifest(layout: Layout, tid: str) -> Manifest | None:
    """The committed manifest of a table, or None if it is not committed. A commit a killed
    writer left half done is finished first. Raises StoreError (naming the file) for a damaged
    manifest or one of a schema_version this code does not know."""
    recover(layout, tid)
    path = layout.manifest_path(tid)
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(
            f"{path}: damaged manifest of table {tid} (not valid JSON: {exc}); "
            "rebuild the table with --overwrite"
        ) from None
    if not isinstance(manifest, dict):
        raise StoreError(f"{path}: damaged manifest of table {tid} (not a JSON object)")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise StoreError(
            f"{path}: schema_version {version!r} is not supported by featstore {__version__} "
            f"(expects {SCHEMA_VERSION}); upgrade featstore or rebuild the table"
        )
    return Manifest.from_dict(manifest)


def existing_output(layout: Layout, tid: str, *, overwrite: bool) -> Manifest | None:
    """The committed manifest of a table a stage is asked to (re)build, or None. Without
    ``overwrite`` a damaged table (its manifest, or its files against the manifest's sha256)
    stops the stage with one line ending "rebuild it with --overwrite": never "already done",
    never a silent rebuild over it. With ``overwrite`` a damaged one counts as absent (the
    stage repairs it)."""
    try:
        manifest = read_manifest(layout, tid)
        if manifest is not None and not overwrite:
            verify_table(layout, tid, manifest)
        return manifest
    except StoreError:
        if not overwrite:
            raise
        logger.warning("table %s is damaged; --overwrite rebuilds it", tid)
        return None


def require_committed(layout: Layout, tid: str) -> Manifest:
    manifest = read_manifest(layout, tid)
    if manifest is None:
        hint = " (run `featstore ingest` first)" if tid in ("images", "labels") else ""
        raise StoreError(f"{layout.root}: no committed {tid} table{hint}")
    return manifest


def table_ids(layout: Layout) -> list[str]:
    """Ids of every table with a manifest (committed or damaged), in a stable order."""
    tables = layout.meta / "tables"
    out = [t for t in ("images", "labels", "results") if (tables / t / MANIFEST).is_file()]
    for kind in PER_SET_TABLES:
        if (tables / kind).is_dir():
            out += [
                f"{kind}/{p.name}"
                for p in sorted((tables / kind).iterdir())
                if (p / MANIFEST).is_file()
            ]
    for journal in (
        sorted((layout.meta / "journal").glob("*.json"))
        if (layout.meta / "journal").is_dir()
        else []
    ):
        tid = journal.stem.replace("__", "/")  # a commit in flight or interrupted
        if tid not in out:
            out.append(tid)
    return out


def _entry(
    layout: Layout, tid: str, manifest: Manifest | None, damage: str | None = None
) -> dict[str, Any]:
    prefix = tid.partition("/")[0]
    kind = prefix if prefix in PER_SET_TABLES and "/" in tid else "table"
    name = tid.split("/", 1)[1] if kind == "features" else tid  # "retrieval/<set>" stays whole
    return {
        "name": name,
        "id": tid,
        "kind": kind,
        "path": str(layout.data(tid)),
        "errors_path": str(layout.errors(tid)) if manifest and "errors_path" in manifest else None,
        "manifest": manifest,
        "damaged": damage,
    }


def list_tables(path: str | os.PathLike[str], *, damaged: bool = False) -> list[dict[str, Any]]:
    """Committed tables and feature sets of a store: name, id, kind, paths, manifest. A table
    whose manifest is damaged is left out (``damaged=True``: listed with the reason in
    ``damaged``, and so is a table whose files disagree with its manifest, found by a listing
    and stats only: :func:`check_files` with ``footers=False``), and the others stay readable.
    Uncommitted ones (a run in progress or killed) are not listed."""
    layout = open_store(path)
    out: list[dict[str, Any]] = []
    for tid in table_ids(layout):
        try:
            manifest = read_manifest(layout, tid)
        except StoreError as exc:
            if damaged:
                out.append(_entry(layout, tid, None, str(exc)))
            continue
        if manifest is None:
            continue
        if damaged:
            try:
                check_files(layout, tid, manifest, footers=False)
            except StoreError as exc:
                out.append(_entry(layout, tid, manifest, str(exc)))
                continue
        out.append(_entry(layout, tid, manifest))
    return out


def stale_inputs(layout: Layout, tid: str, manifest: Mapping[str, Any]) -> list[str]:
    """What a derived table was derived from that has changed since (manifests only): a PCA
    set's source, a retrieval table's feature set, the feature sets of the results table. One
    line per changed input (``"<set> (replaced since)"``, ``"<set> (gone)"``); empty if none."""
    extra = Manifest.from_dict(manifest).extra
    if tid == "results":
        derived_from = dict(extra.get("feature_sets") or {})
    elif tid.startswith("retrieval/"):
        derived_from = {
            extra.get("feature_set") or tid.split("/", 1)[1]: extra.get("feature_set_content")
        }
    elif isinstance(extra.get("source"), dict) and extra["source"].get("name"):
        src = extra["source"]
        derived_from = {src["name"]: src.get("content_fingerprint")}
    else:
        return []
    out = []
    for name, content in sorted(derived_from.items()):
        if not content:
            continue
        try:
            current = read_manifest(layout, features_id(name))
        except (StoreError, ConfigError):
            current = None
        if current is None:
            out.append(f"{name} (gone)")
        elif fs_fingerprint(current) != content:
            out.append(f"{name} (replaced since)")
    return out


def find_table(path: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """The table ``images``/``labels``/``results``, a per-set table ``retrieval/<set>``, or the
    feature set ``name``."""
    layout = open_store(path)
    if name in ("images", "labels", "results"):
        tid = name
    elif "/" in name and name.partition("/")[0] in PER_SET_TABLES:
        tid = f"{name.partition('/')[0]}/{check_name(name.partition('/')[2])}"
    else:
        tid = features_id(name)
    manifest = read_manifest(layout, tid)  # a damaged one raises its own line
    if manifest is None:
        names = [t["name"] for t in list_tables(layout.root)]
        raise StoreError(
            f"{layout.root}: no committed table or feature set {name!r}"
            f"{_did_you_mean(name, names)} (committed: {', '.join(names) or 'none'})"
        )
    return _entry(layout, tid, manifest)


def _did_you_mean(name: str, known: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def feature_set_names(path: str | os.PathLike[str]) -> list[str]:
    return [t["name"] for t in list_tables(path) if t["kind"] == "features"]


def feature_set_manifest(path: str | os.PathLike[str], name: str) -> Manifest:
    """The manifest of a committed feature set (StoreError if unknown or uncommitted)."""
    layout = open_store(path)
    manifest = read_manifest(layout, features_id(name))
    if manifest is None:
        names = feature_set_names(layout.root)
        raise StoreError(
            f"{layout.root}: no committed feature set {name!r}"
            f"{_did_you_mean(name, names)} (committed: {', '.join(names) or 'none'})"
        )
    return manifest


def check_table(
    path: str | os.PathLike[str], name: str, *, checksums: bool = False, deep: bool = False
) -> Manifest:
    """The manifest of table or feature set ``name`` after :func:`check_files`."""
    table = find_table(path, name)
    check_files(Layout(path), table["id"], table["manifest"], checksums=checksums, deep=deep)
    return table["manifest"]


def check_feature_set(
    path: str | os.PathLike[str], name: str, *, checksums: bool = False, deep: bool = False
) -> Manifest:
    """Manifest of feature set ``name`` after checking its files (see :func:`check_files`;
    ``checksums=True``: a verified read, what a stage does to its input)."""
    manifest = feature_set_manifest(path, name)
    check_files(Layout(path), features_id(name), manifest, checksums=checksums, deep=deep)
    return manifest


# ---------------------------------------------------------------- readers

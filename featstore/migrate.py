"""``featstore migrate STORE``: convert a store of layout 1 to layout 2 in place (no Spark).

Layout 1 kept manifests (``_manifest.json``), errors tables (``_errors/``), PCA projections
(``_pca.npz``), the grid's cells (``results/_cells/``) and saved models (``results/_models/``)
inside the data folders, and one folder per feature set (``features/<name>/``). Layout 2 (see
:mod:`featstore.store`) keeps data folders pure and everything else in ``_featstore/``.

Each table is converted on its own and the layout-1 manifest is removed last, so a migration
that is interrupted is finished by running it again. No data file is rewritten except the
results table and the cells (their ``model_path`` now points at ``models/``); the data files of
images, labels and feature sets are moved, never copied, and their checksums are recorded in
the new manifests. Cell keys changed in layout 2 (they hold the feature set's content), so the
next ``train`` fits its cells again; the migrated rows stay in the results table until then.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from featstore import fsio, store
from featstore.errors import StoreError

logger = logging.getLogger(__name__)

V1 = store.V1_MANIFEST


def _read_v1(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(
            f"{path}: cannot read this layout-1 manifest ({exc}); rebuild that "
            "table instead of migrating it"
        ) from None
    if manifest.get("schema_version") != 1:
        raise StoreError(f"{path}: schema_version {manifest.get('schema_version')!r}, expected 1")
    return manifest


def _strip(folder: Path) -> None:
    """Remove what is not table data from a layout-1 data folder: Spark's _SUCCESS and .crc."""
    for p in list(folder.rglob("*")):
        if p.is_file() and (p.name == "_SUCCESS" or p.name.endswith(".crc")):
            p.unlink()


def _move_into(src: Path, dst: Path) -> None:
    """Move the files of ``src`` under ``dst`` (merging with what an earlier try moved)."""
    if not src.exists():
        return
    for p in sorted(src.rglob("*")):
        if p.is_file():
            target = dst / p.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(p, target)
    shutil.rmtree(src)


def _commit_v2(
    layout: store.Layout,
    tid: str,
    manifest: dict[str, Any],
    v1_path: Path,
    *,
    has_errors: bool,
    sidecars: dict[str, Path] | None = None,
) -> None:
    meta = layout.table_meta(tid)
    meta.mkdir(parents=True, exist_ok=True)
    for name, src in (sidecars or {}).items():
        if src.exists():
            os.replace(src, meta / name)
    files = store.describe_files(layout.data(tid))
    manifest = {
        **manifest,
        "schema_version": store.SCHEMA_VERSION,
        "files": files,
        "data_path": layout.rel(layout.data(tid)),
        "content_fingerprint": store.fingerprint([f"{f['path']}:{f['sha256']}" for f in files]),
        "sidecars": sorted(p.name for p in meta.iterdir() if p.name != store.MANIFEST),
        "migrated_from": {"layout": 1, "created": manifest.get("created")},
    }
    if has_errors:
        manifest["errors_files"] = store.describe_files(layout.errors(tid))
        manifest["errors_path"] = layout.rel(layout.errors(tid))
    counts = manifest.setdefault("counts", {})
    splits = store.rows_per_split(files)
    if splits:
        counts["splits"] = splits
    store.write_json(meta / store.MANIFEST, manifest)
    store.check_files(layout, tid, manifest)  # the converted table reads back consistent
    v1_path.unlink()


def _fix_model_paths(path: Path) -> None:
    """Rewrite a results or cell file: model_path into models/, the layout-2 columns added."""
    table = pq.read_table(path)
    rows = table.to_pylist()
    for r in rows:
        mp = r.get("model_path")
        if isinstance(mp, str) and mp.startswith("results/_models/"):
            r["model_path"] = "models/" + mp[len("results/_models/") :]
    out = pa.Table.from_pylist(rows, schema=store.RESULTS_SCHEMA)
    with fsio.atomic_path(path) as tmp:
        pq.write_table(out, tmp)


def _v1_feature_sets(layout: store.Layout) -> list[tuple[str, Path]]:
    out = []
    if layout.features_root.is_dir():
        for entry in sorted(layout.features_root.iterdir()):
            if entry.is_dir() and (entry / V1).is_file():
                name = (
                    entry.name.split("=", 1)[1]
                    if entry.name.startswith(f"{store.PARTITION}=")
                    else entry.name
                )
                out.append((name, entry))
    return out


def plan(path: str | os.PathLike[str]) -> list[str]:
    """Table ids a migration of ``path`` would convert."""
    layout = store.Layout(path)
    if not layout.root.is_dir():
        raise StoreError(f"{layout.root}: no such store folder")
    out = [t for t in ("images", "labels", "results") if (layout.root / t / V1).is_file()]
    return out + [store.features_id(name) for name, _ in _v1_feature_sets(layout)]


def migrate(path: str | os.PathLike[str], *, dry_run: bool = False) -> list[str]:
    """Convert every layout-1 table of the store; returns the ids converted."""
    layout = store.Layout(path)
    todo = plan(path)
    if dry_run or not todo:
        if not todo:
            store.check_layout(layout)
        return todo
    for tid in ("images", "labels"):
        if tid in todo:
            with store.TableLock(layout, tid):
                folder = layout.data(tid)
                manifest = _read_v1(folder / V1)
                _strip(folder)
                if tid == "images":
                    _move_into(folder / "_errors", layout.errors(tid))
                else:
                    shutil.rmtree(folder / "_errors", ignore_errors=True)
                _commit_v2(layout, tid, manifest, folder / V1, has_errors=tid == "images")
            logger.info("migrated %s", tid)
    for name, entry in _v1_feature_sets(layout):
        tid = store.features_id(name)
        with store.TableLock(layout, tid):
            target = layout.features(name)
            if entry != target:
                if target.exists():
                    raise StoreError(f"{target}: exists beside {entry}; remove one of them")
                os.replace(entry, target)
            manifest = _read_v1(target / V1)
            _strip(target)
            _move_into(target / "_errors", layout.errors(tid))
            sidecars = {}
            if (target / "_pca.npz").exists():
                sidecars["pca.npz"] = target / "_pca.npz"
                manifest["pca_file"] = "pca.npz"
            _commit_v2(layout, tid, manifest, target / V1, has_errors=True, sidecars=sidecars)
        logger.info("migrated feature set %s", name)
    if "results" in todo:
        with store.TableLock(layout, "results"):
            folder = layout.results
            manifest = _read_v1(folder / V1)
            _move_into(folder / "_models", layout.models)
            cells = folder / "_cells"
            if cells.is_dir():
                for f in sorted(cells.glob("*.parquet")):
                    _fix_model_paths(f)
                _move_into(cells, layout.cells)
            for f in store.parquet_files(folder):
                _fix_model_paths(f)
            _strip(folder)
            _commit_v2(layout, "results", manifest, folder / V1, has_errors=False)
        logger.info("migrated results")
    store.ensure_layout(layout)
    return todo

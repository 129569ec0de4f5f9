"""Manifests: what every table's ``manifest.json`` holds."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

from featstore import __version__
from featstore.store.layout import now_iso

SCHEMA_VERSION = 2


def fingerprint(parts: Iterable[str | bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def base_manifest(table: str, **fields: Any) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "table": table,
        "code_version": __version__,
        "created": now_iso(),
        **fields,
    }


def fs_fingerprint(manifest: dict[str, Any]) -> str:
    """What a result derived from a table depends on: the exact committed content."""
    return manifest.get("content_fingerprint") or fingerprint(
        [str(manifest.get("created")), json.dumps(manifest.get("counts"), sort_keys=True)]
    )

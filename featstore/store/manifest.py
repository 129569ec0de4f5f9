"""Manifests: what every table's ``manifest.json`` holds (:class:`Manifest`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from featstore import __version__
from featstore.store.layout import now_iso

SCHEMA_VERSION = 2


@dataclass(eq=False)
class Manifest(Mapping[str, Any]):
    """A table's committed manifest: the fields every table's manifest has, and ``extra``, the
    fields of its stage (``name``, ``dim``, ``model``, ``attributes``, ``pca_file``...).

    :meth:`from_dict` / :meth:`to_dict` round-trip the JSON on disk exactly: a common field
    absent from an older manifest stays absent (its attribute reads as None, ``counts`` as
    ``{}``) and is not written back. For the code that still reads manifests as dicts, a
    Manifest is also a read-only mapping of the same keys (``m["dim"]``, ``m.get("files")``,
    ``"errors_path" in m``) and compares equal to the dict it was made from."""

    table: str | None = None
    schema_version: int | None = SCHEMA_VERSION
    code_version: str | None = None
    created: str | None = None
    #: rows: ``rows`` or ``ok`` (and ``errors``), ``splits`` (rows per split, from the files)
    counts: dict[str, Any] = field(default_factory=dict)
    files: list[dict[str, Any]] | None = None  # path, rows, bytes, sha256 per data file
    data_path: str | None = None  # relative to the store root
    content_fingerprint: str | None = None
    sidecars: list[str] | None = None  # files beside the manifest (a PCA set's pca.npz)
    errors_files: list[dict[str, Any]] | None = None
    errors_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: the common fields the manifest on disk holds (None: made here, every field not None)
    _keys: frozenset[str] | None = field(default=None, repr=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        if isinstance(data, Manifest):
            return data
        common = {k: data[k] for k in COMMON_FIELDS if k in data}
        extra = {k: v for k, v in data.items() if k not in COMMON_FIELDS}
        return cls(**common, extra=extra, _keys=frozenset(common))

    def to_dict(self) -> dict[str, Any]:
        """The manifest as its JSON holds it (what :func:`featstore.store.write_json` writes)."""
        out = {k: getattr(self, k) for k in COMMON_FIELDS if self._has(k)}
        return {**out, **self.extra}

    def _has(self, key: str) -> bool:
        if self._keys is not None:
            return key in self._keys
        return getattr(self, key) is not None

    def __getitem__(self, key: str) -> Any:
        if key in COMMON_FIELDS:
            if self._has(key):
                return getattr(self, key)
            raise KeyError(key)
        return self.extra[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


#: the fields of :class:`Manifest` that are keys of the JSON (all but ``extra``)
COMMON_FIELDS = tuple(
    f.name for f in dataclasses.fields(Manifest) if f.name not in ("extra", "_keys")
)


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


def fs_fingerprint(manifest: Mapping[str, Any]) -> str:
    """What a result derived from a table depends on: the exact committed content."""
    m = Manifest.from_dict(manifest)
    return m.content_fingerprint or fingerprint(
        [str(m.created), json.dumps(m.counts if "counts" in m else None, sort_keys=True)]
    )

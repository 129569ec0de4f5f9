"""Is a feature set's spread usable? The check extract and reduce run before they commit.

Random-weight MobileNetV2 embeddings were ~1e-12 in scale, every dimension spanning <= 1e-7:
scikit-learn's trees took each one for a constant and Keras' ``Normalization`` divided by
``max(std, 1e-7)``, so two of the three probes silently predicted one class. The probes now
standardize whatever the scale; a set whose every dimension has (almost) no spread is still
worth a loud word: the layer, pooling or weights are probably not what the user meant. The
result goes into the feature set's manifest (``spread``), ``featstore describe`` and the report,
with one warning line at extract/reduce time. The test is on the standard deviation of each
dimension over a sample of rows (the train split first), no reads beyond ``max_rows``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: A dimension whose standard deviation is below this is "tiny": float32 arithmetic and
#: scikit-learn's constant-feature test (1e-7) start to eat it.
TINY_STD = 1e-6
#: Rows read for the check (a sample: the first rows of the train split's files).
MAX_ROWS = 20_000


def spread_of_std(std: Any, rows: int) -> dict[str, Any]:
    """The manifest's ``spread`` from per-dimension standard deviations over ``rows`` rows."""
    s = np.asarray(std, dtype=np.float64).reshape(-1)
    zero = int(np.sum(s == 0))
    tiny = int(np.sum(s < TINY_STD))
    degenerate = s.size == 0 or tiny == s.size
    reason = None
    if s.size == 0:
        reason = "no dimensions"
    elif zero == s.size:
        reason = f"every one of the {s.size} dimensions is constant over {rows} rows"
    elif degenerate:
        reason = (
            f"every one of the {s.size} dimensions spans less than {TINY_STD:g} "
            f"(largest standard deviation {float(s.max()):.3g} over {rows} rows)"
        )
    return {
        "rows": int(rows),
        "max_std": float(s.max()) if s.size else 0.0,
        "median_std": float(np.median(s)) if s.size else 0.0,
        "zero_dims": zero,
        "tiny_dims": tiny,
        "degenerate": bool(degenerate),
        "reason": reason,
    }


def spread_of(x: Any) -> dict[str, Any]:
    """The manifest's ``spread`` of a matrix ``(rows, dim)``."""
    arr = np.asarray(x)
    std = arr.std(axis=0, dtype=np.float64) if arr.shape[0] else np.zeros(arr.shape[1])
    return spread_of_std(std, arr.shape[0])


def spread_of_files(files: Sequence[Path], dim: int, *, max_rows: int = MAX_ROWS) -> dict[str, Any]:
    """``spread`` of the first ``max_rows`` embeddings of ``files`` (train split files first)."""
    import pyarrow.parquet as pq

    ordered = sorted(files, key=lambda p: ("split=train" not in str(p), str(p)))
    parts, rows = [], 0
    for f in ordered:
        col = pq.read_table(f, columns=["embedding"])["embedding"].combine_chunks()
        flat = np.asarray(
            col.flatten() if hasattr(col, "flatten") else col.values, dtype=np.float32
        )
        if col.null_count or flat.size != len(col) * dim:
            raise ValueError(f"{f}: embeddings are not {dim} wide")
        parts.append(flat.reshape(len(col), dim)[: max_rows - rows])
        rows += len(parts[-1])
        if rows >= max_rows:
            break
    x = np.concatenate(parts) if parts else np.zeros((0, dim), dtype=np.float32)
    return spread_of(x)


def warn(name: str, spread: dict[str, Any]) -> None:
    """One warning line for a degenerate set (nothing otherwise)."""
    if spread.get("degenerate"):
        logger.warning(
            "feature set %s is DEGENERATE: %s; the probes standardize it, but check "
            "the layer, pooling and weights",
            name,
            spread.get("reason"),
        )


def note(manifest: dict[str, Any]) -> str | None:
    """The one-line flag of a committed set's manifest (``describe``, ``ls``, the report), or
    None when the set is fine or was written before the check existed."""
    spread = manifest.get("spread") or {}
    if spread.get("degenerate"):
        return f"degenerate: {spread.get('reason')}"
    return None

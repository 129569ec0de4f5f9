"""Input checks shared by the evaluation functions: labels and predictions as 0/1 arrays,
scores as finite floats, lengths that agree; anything else is one precise ``ValueError``."""

from __future__ import annotations

from typing import Any

import numpy as np


def _binary(name: str, values: Any) -> np.ndarray:
    """``values`` as a 1-D int8 array of 0/1, or one precise ValueError."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if arr.dtype == np.bool_:
        return arr.astype(np.int8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must hold 0/1 labels, got dtype {arr.dtype}")
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        first = arr[np.argmax(bad)]
        raise ValueError(f"{name} must hold only 0 and 1, found {first!r}")
    return arr.astype(np.int8)


def _same_length(**arrays: np.ndarray) -> int:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"arrays differ in length: {lengths}")
    return next(iter(lengths.values()))


def _score_array(name: str, values: Any, n: int) -> np.ndarray:
    """``values`` as a 1-D finite float64 array of length ``n``, or one precise ValueError."""
    if values is None:
        raise ValueError(f"{name} is required for roc_auc")
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if len(arr) != n:
        raise ValueError(f"arrays differ in length: {{'y_true': {n}, '{name}': {len(arr)}}}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return arr

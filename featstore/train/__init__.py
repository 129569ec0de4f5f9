"""Pure fitting functions on numpy arrays (no Spark): each returns a :class:`FitResult` for the
test rows (``fit_multilabel``: one per attribute, a :class:`FitError` for an attribute whose
training labels have one class only). ``featstore.train.grid`` runs them, one Spark task per fit.

    from featstore.train import fit_lasso, fit_forest, fit_dense, fit_bottleneck, fit_multilabel

The fit functions are imported lazily: ``fit_lasso`` does not pay for importing Keras.
"""

from __future__ import annotations

import importlib
from typing import Any

from featstore.train.base import FitError, FitResult, SingleClassError, check_binary

__all__ = [
    "FitError",
    "FitResult",
    "SingleClassError",
    "check_binary",
    "fit_bottleneck",
    "fit_dense",
    "fit_forest",
    "fit_lasso",
    "fit_multilabel",
]

_LAZY = {
    "fit_lasso": "featstore.train.lasso",
    "fit_forest": "featstore.train.forest",
    "fit_dense": "featstore.train.dense",
    "fit_bottleneck": "featstore.train.dense",
    "fit_multilabel": "featstore.train.dense",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

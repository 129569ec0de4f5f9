"""The fitted models the training grid saves (``train.save_models: true``), and how to use them.

Layout (beside the tables, not inside one, so no Parquet glob meets them)::

    <store>/models/<cell key>/<attribute>.joblib   one per ok fit (lasso, forest, dense,
                                                   bottleneck<k>-lasso|forest)
    <store>/models/<cell key>/_multilabel.joblib   one per multilabel cell: the one head of all
                                                   its attributes
    <store>/models/<cell key>/class.joblib         one per multi-class cell (train.target:
                                                   class: lasso, forest, dense)

The results row of a saved fit names its file in ``model_path`` (relative to the store root,
``/``-separated; null when no model was saved). Each file is written by the Spark task that
fitted the model (:func:`featstore.fsio.atomic_path`) before the cell's row; a fit run again replaces
its cell's files. Attribute names are percent-quoted in file names
(:func:`urllib.parse.quote`, nothing kept but letters, digits and ``_.-~``).

A file holds a plain dict (``joblib.load`` reads it without featstore's help, though unpickling a
dense head needs featstore and Keras importable)::

    {"featstore_model": 1, "model": "lasso", "cell": key, "feature_set": ..., "dim": ...,
     "attributes": [...], "estimator": <the fitted estimator>}

plus ``"classes": [...]`` (the class names, the order of the estimator's outputs) for a
multi-class fit; :func:`load_model` then gives a :class:`ClassModel`.

``estimator`` is what the fit returned (:attr:`featstore.train.base.FitResult.estimator`): a
scikit-learn ``Pipeline`` (lasso: scaler + logistic regression) or ``RandomForestClassifier``,
a :class:`featstore.train.dense.DenseHead`, or a :class:`featstore.train.dense.Bottleneck`
(head + the lasso/forest on its k units); a multi-class dense fit's softmax model
(:func:`featstore.train.multiclass.fit_dense`) is saved as a ``DenseHead`` of K outputs.
Dense heads are pickled as they are: a Keras 3 model
pickles through its own ``.keras`` serialisation (architecture, the standardisation layer's
statistics and the weights, in memory), which works with any Keras backend. The heads' cached
activation extractors are dropped before saving (they are rebuilt on first use).

    from featstore.train.saved import load_model, predict_scores, saved_models
    from featstore.store import load_xy

    listing = saved_models(store)                     # one row per saved fit
    row = listing.iloc[0]
    model = load_model(store, row)                    # or load_model(store, cell_key, attribute)
    x, y, ids = load_xy(store, row.feature_set, row.attribute, "test")
    p = predict_scores(model, x)                      # P(attribute) per row, float32
    y_pred = (p > THRESHOLD).astype("int8")           # featstore.train.base.THRESHOLD

A multi-class fit (its row's attribute is ``class``) loads as a :class:`ClassModel`:
``predict_proba(model, x)`` gives one column per class, in the order of the row's ``classes``,
and ``model.predict(x)`` their argmax, the row's ``y_pred`` (indices into ``classes``).
:func:`predict_proba` serves every kind (a binary fit's two columns: P(not), P(attribute)).

Models are large on disk for big forests (every tree is kept): files are zlib-compressed
(level 3).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from featstore import fsio, store
from featstore.errors import StoreError
from featstore.train.base import as_features

MULTILABEL_FILE = "_multilabel.joblib"
FORMAT = 1
LISTING_COLUMNS = ["attribute", "feature_set", "model", "train_size", "seed", "cell", "path"]


# ------------------------------------------------------------------ paths


def cell_dir(root: str | os.PathLike[str], cell_key: str) -> Path:
    """``<store>/models/<cell key>``."""
    return store.Layout(root).models / cell_key


def model_relpath(cell_key: str, model: str, attribute: str) -> str:
    """Where the fit of ``attribute`` in cell ``cell_key`` (of ``model``) is saved, relative to
    the store root: a multilabel cell keeps one file for all its attributes."""
    name = MULTILABEL_FILE if model == "multilabel" else f"{quote(attribute, safe='')}.joblib"
    return f"models/{cell_key}/{name}"


# ------------------------------------------------------------------ saving (in the Spark task)


def _portable(estimator: Any) -> Any:
    """The estimator without caches that need not be saved (a dense head's extractors)."""
    from featstore.train.dense import Bottleneck, DenseHead

    if isinstance(estimator, DenseHead):
        return dataclasses.replace(estimator)  # ``_extractors`` is init=False: a fresh cache
    if isinstance(estimator, Bottleneck):
        return Bottleneck(head=_portable(estimator.head), second=estimator.second)
    return estimator


def _class_estimator(fit: Any, model: str, n_classes: int) -> Any:
    """The estimator of a multi-class fit (:class:`featstore.train.multiclass.MultiFit`) as it is
    saved: the dense probe's bare Keras model becomes a ``DenseHead`` (unpickling it then
    imports featstore.train.dense, which registers the Keras layers the model needs)."""
    if model != "dense":  # scikit-learn pipelines, saved as they are
        return fit.estimator
    from featstore.train.dense import DenseHead

    return DenseHead(
        model=fit.estimator,
        hidden=tuple(int(u) for u in fit.params["hidden"]),
        outputs=n_classes,
        history=fit.history or {},
        epochs_run=int(fit.params["epochs_run"]),
        best_epoch=int(fit.params["best_epoch"]),
    )


def _dump(obj: Any, target: Path) -> None:
    import joblib

    with fsio.atomic_path(target) as tmp:
        joblib.dump(obj, tmp, compress=3)


def clear_cell(root: str | os.PathLike[str], cell_key: str) -> None:
    """Remove the saved models of one cell (before it is fitted again)."""
    folder = cell_dir(root, cell_key)
    if folder.exists():
        shutil.rmtree(folder)


def save_fits(
    root: str | os.PathLike[str],
    cell_key: str,
    model: str,
    feature_set: str,
    dim: int,
    fits: Mapping[str, Any],
    classes: Sequence[str] | None = None,
) -> dict[str, str]:
    """Save the estimators of one cell's fits (``{attribute: FitResult}``, or for a multi-class
    cell ``{"class": MultiFit}`` with its ``classes``); returns ``{attribute: model_path}``
    (relative to the store root). Earlier files of the cell go."""
    clear_cell(root, cell_key)
    folder = cell_dir(root, cell_key)
    folder.mkdir(parents=True, exist_ok=True)
    attributes = list(fits)
    base = {
        "featstore_model": FORMAT,
        "model": model,
        "cell": cell_key,
        "feature_set": feature_set,
        "dim": int(dim),
        **({"classes": [str(c) for c in classes]} if classes is not None else {}),
    }
    root_path = store.Layout(root).root
    out: dict[str, str] = {}
    if model == "multilabel":
        rel = model_relpath(cell_key, model, "*")
        estimator = next(iter(fits.values())).estimator
        _dump(
            {**base, "attributes": attributes, "estimator": _portable(estimator)}, root_path / rel
        )
        return dict.fromkeys(attributes, rel)
    for attribute, fit in fits.items():
        rel = model_relpath(cell_key, model, attribute)
        estimator = fit.estimator if classes is None else _class_estimator(fit, model, len(classes))
        _dump(
            {**base, "attributes": [attribute], "estimator": _portable(estimator)},
            root_path / rel,
        )
        out[attribute] = rel
    return out


def cell_lacks_models(root: str | os.PathLike[str], cell_file: Path) -> bool:
    """True when one of the ok rows of a finished cell (its ``_featstore/cells`` file) has no saved
    model: no ``model_path`` (fitted with ``save_models`` off) or a file that is gone."""
    import pyarrow.parquet as pq

    table = pq.read_table(cell_file, columns=["status", "model_path"])
    root_path = store.Layout(root).root
    for status, rel in zip(table["status"].to_pylist(), table["model_path"].to_pylist()):
        if status == "ok" and (not rel or not (root_path / rel).is_file()):
            return True
    return False


# ------------------------------------------------------------------ loading


@dataclass
class MultilabelOutput:
    """One attribute's output of a multilabel head (what :func:`load_model` returns for a
    multilabel fit): ``predict_proba(x)`` is that output's column."""

    head: Any  # featstore.train.dense.DenseHead
    attributes: tuple[str, ...]
    attribute: str

    @property
    def index(self) -> int:
        return self.attributes.index(self.attribute)

    def predict_proba(self, x: Any) -> np.ndarray:
        return self.head.predict_proba(x)[:, self.index]


@dataclass
class ClassModel:
    """A multi-class fit (``train.target: class``) as :func:`load_model` returns it: the fitted
    estimator and the class names, the order of its outputs (the results row's ``classes``)."""

    estimator: Any
    classes: tuple[str, ...]

    def predict_proba(self, x: Any) -> np.ndarray:
        """``(n, K)`` float32 class probabilities (:func:`predict_proba`)."""
        return predict_proba(self, x)

    def predict(self, x: Any) -> np.ndarray:
        """The most probable class of each row (index into ``classes``; ties: the lower), int8:
        the grid's ``y_pred``."""
        return np.argmax(predict_proba(self, x), axis=1).astype(np.int8)


def _is_row(obj: Any) -> bool:
    return not isinstance(obj, (str, bytes, os.PathLike)) and hasattr(obj, "__getitem__")


def _resolve(root: Path, cell_key_or_row: Any, attribute: str | None) -> tuple[Path, str]:
    if _is_row(cell_key_or_row):
        row = cell_key_or_row
        attribute = attribute or row["attribute"]
        key, model = row["cell"], row["model"]
        rel = row["model_path"] if "model_path" in row else None
        if not isinstance(rel, str) or not rel:  # null / NaN: derive it from the cell
            rel = model_relpath(key, model, str(attribute))
        return root / rel, str(attribute)
    if attribute is None:
        raise ValueError("load_model(store, cell_key, attribute): name the attribute")
    key = str(cell_key_or_row)
    single = root / model_relpath(key, "", attribute)
    multi = root / model_relpath(key, "multilabel", attribute)
    return (multi if not single.is_file() and multi.is_file() else single), attribute


def load_model(
    root: str | os.PathLike[str], cell_key_or_row: Any, attribute: str | None = None
) -> Any:
    """The saved estimator of one fit: ``cell_key_or_row`` is a results row (a pandas row or a
    dict with cell, model, attribute and model_path; ``attribute`` defaults to the row's) or a
    cell key with ``attribute``. A multilabel fit gives a :class:`MultilabelOutput`, a
    multi-class fit a :class:`ClassModel`. Raises
    :class:`StoreError` when the file is missing or unreadable or lacks the attribute."""
    root_path = store.Layout(root).root
    path, attribute = _resolve(root_path, cell_key_or_row, attribute)
    if not path.is_file():
        raise StoreError(
            f"{path}: no saved model for attribute {attribute!r} (train with "
            "--set train.save_models=true to save the fitted models)"
        )
    import joblib

    try:
        saved = joblib.load(path)
    except Exception as exc:  # a truncated or foreign file
        raise StoreError(
            f"{path}: cannot read the saved model: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from exc
    if not isinstance(saved, dict) or saved.get("featstore_model") != FORMAT:
        raise StoreError(f"{path}: not a featstore model file (format {FORMAT})")
    attributes = tuple(saved["attributes"])
    if attribute not in attributes:
        raise StoreError(f"{path}: holds {', '.join(attributes)}, not {attribute!r}")
    if saved["model"] == "multilabel":
        return MultilabelOutput(head=saved["estimator"], attributes=attributes, attribute=attribute)
    if saved.get("classes") is not None:
        return ClassModel(estimator=saved["estimator"], classes=tuple(saved["classes"]))
    return saved["estimator"]


def predict_proba(model: Any, x: Any) -> np.ndarray:
    """Class probabilities per row, float32 ``(n, K)``, for float32 embeddings ``x`` ``(n, dim)``;
    one path for every model kind. A binary fit (what :func:`load_model` gives for an
    attribute) has K = 2 columns, P(not the attribute) and P(attribute); a
    :class:`ClassModel` has its K classes, in the order of its ``classes``."""
    xs = as_features(x, "embeddings")
    estimator = model.estimator if isinstance(model, ClassModel) else model
    from featstore.train.dense import DenseHead

    if isinstance(model, DenseHead) and model.outputs != 1:
        raise ValueError(
            f"a head with {model.outputs} outputs: load it with "
            "load_model(store, row) to pick one attribute"
        )
    if not hasattr(estimator, "predict_proba"):
        raise TypeError(f"cannot score with a {type(estimator).__name__}")
    # scikit-learn, dense heads (a ClassModel's: K softmax outputs), bottlenecks, one output
    proba = np.asarray(estimator.predict_proba(xs), dtype=np.float32)
    if proba.ndim == 1 or proba.shape[1] == 1:  # P(attribute) alone: a binary fit
        p = proba.reshape(-1)
        proba = np.stack([1.0 - p, p], axis=1)
    return proba


def predict_scores(model: Any, x: Any) -> np.ndarray:
    """P(positive) per row, float32 ``(n,)``, for float32 embeddings ``x`` ``(n, dim)``: the
    second column of :func:`predict_proba`, the same for every binary model kind (the grid's
    ``y_pred`` is ``scores > THRESHOLD``). A multi-class fit has no positive class: use
    :func:`predict_proba` (or :meth:`ClassModel.predict`)."""
    proba = predict_proba(model, x)
    if proba.shape[1] != 2:
        raise ValueError(
            f"a {proba.shape[1]}-class model has no positive class: predict_proba(model, x) "
            "gives its class probabilities, model.predict(x) the most probable class"
        )
    return np.ascontiguousarray(proba[:, 1])


def saved_models(root: str | os.PathLike[str]) -> Any:
    """The saved fits of the store's results table: a pandas frame with attribute, feature_set,
    model, train_size, seed, cell and path (absolute) for each ok row that has a
    ``model_path`` (the file itself is not opened; :func:`load_model` checks it)."""
    import pandas as pd

    res = store.read_results(root)
    if "model_path" not in res.columns:  # a results table from before models were saved
        return pd.DataFrame(columns=LISTING_COLUMNS)
    ok = res[(res["status"] == "ok") & res["model_path"].notna()].reset_index(drop=True)
    root_path = store.Layout(root).root
    out = ok[LISTING_COLUMNS[:-1]].copy()
    out["path"] = [str(root_path / p) for p in ok["model_path"]]
    return out

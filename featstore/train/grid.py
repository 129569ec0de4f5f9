"""The training grid: attributes x feature sets x models x training sizes x seeds, on Spark.

One Spark task per fit (a *cell*). Each task reads its data from the store (pyarrow, cached per
Python worker), fits, evaluates on the test split, and writes its result row straight to
``_featstore/cells/<key>.parquet`` (temp file + rename), so results stream to the store as fits
finish and an interrupted grid resumes where it stopped: a re-run skips cells whose rows are all
``ok`` and fits again those that ended in an error. At the end the driver merges the cells into
the ``results`` table and commits it through :class:`featstore.store.TableWriter`.

Problems of one cell (a single-class training sample, a training size larger than the split)
give a row with ``status = "error"`` and the reason; the rest of the grid
runs.

With ``save_models`` on, each ok fit's estimator is saved too, under
``models/<key>/<attribute>.joblib`` (a multilabel cell: ``_multilabel.joblib``), by the
task that fitted it and before the cell's row (whose ``model_path`` names the file); a finished
cell whose model files are missing is run again. See :mod:`featstore.train.saved`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from featstore import store
from featstore.errors import ConfigError, FeatstoreError
from featstore.progress import Progress, spark_feed
from featstore.timing import Phases

logger = logging.getLogger(__name__)

ALL_ATTRIBUTES = "*"  # attribute of a multilabel cell (one fit for all attributes)
BASE_MODELS = ("lasso", "forest", "dense", "multilabel")
TARGETS = ("attributes", "class")
CLASS_TARGET = "class"  # attribute of a multi-class cell: the labels table's class column
CLASS_MODELS = ("lasso", "forest", "dense")  # featstore.train.multiclass.MODELS
FOREST_SELECTIONS = ("oob", "cv")  # featstore.train.forest.SELECTIONS (not imported: sklearn)

RESULTS_SCHEMA = store.RESULTS_SCHEMA  # declared once, in the store
read_results = store.read_results


@dataclass(frozen=True)
class GridConfig:
    feature_sets: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()  # empty: every attribute of the labels table
    models: tuple[str, ...] = (
        "lasso",
        "forest",
        "dense",
    )  # + bottleneck<k>-lasso|forest, multilabel
    train_sizes: tuple[int, ...] = (0,)  # 0: the whole train split
    seeds: tuple[int, ...] = (0,)
    folds: int = 10
    lasso_cs: int = 10
    lasso_max_iter: int = 1000  # solver iterations per lasso fit (liblinear / saga)
    forest_trees: int = 200
    forest_max_features: tuple[str, ...] = ("sqrt", "0.1", "0.3")
    # max_features chosen by out-of-bag score ("oob": one forest per candidate on all rows,
    # kept; 3 forests) or by CV ("cv": forest_folds x candidates on cv_max_rows rows + a refit)
    forest_selection: str = "oob"
    forest_folds: int = 5  # "cv" only; forests cost ~100x a lasso fit: fewer folds
    forest_max_samples: int = 20_000  # rows per tree (bootstrap sample size cap)
    dense_hidden: tuple[int, ...] = (20,)
    dense_epochs: int = 50
    dense_patience: int = 5
    dense_batch_size: int = 256
    cv_max_rows: int = 20_000  # CV on at most this many rows, then refit on all
    bootstrap: int = 1000
    # none | balanced: every probe weighs the classes by n / (2 n_class) (imbalanced attributes)
    class_weight: str = "none"
    # fixed: a row is positive when its score is > 0.5; val: the threshold that maximises the
    # balanced accuracy on the validation split (chosen there, applied to the test split)
    threshold: str = "fixed"
    # the original study's protocol: the first N images, split train/val/test by these counts
    first_n: int = 0
    custom_split: tuple[int, ...] = ()  # (train, val, test) counts within the first N
    overwrite: bool = False
    # keep every ok fit's model under results/_models (featstore.train.saved); not part of the
    # cell keys: with it on, finished cells without their model files are run again
    save_models: bool = False
    # attributes: one binary probe per attribute (CelebA, or a folder's one-hot classes);
    # class: one multi-class probe of the labels table's class column (a class-per-folder set)
    target: str = "attributes"

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ConfigError(f"train.target: expected attributes or class, got {self.target!r}")
        if self.forest_selection not in FOREST_SELECTIONS:
            raise ConfigError(
                f"train.forest_selection: expected one of "
                f"{', '.join(FOREST_SELECTIONS)}, got {self.forest_selection!r}"
            )
        if self.class_weight not in ("none", "balanced"):
            raise ConfigError(
                f"train.class_weight: expected none or balanced, got {self.class_weight!r}"
            )
        if self.threshold not in ("fixed", "val"):
            raise ConfigError(f"train.threshold: expected fixed or val, got {self.threshold!r}")


@dataclass(frozen=True)
class Cell:
    attribute: str
    feature_set: str
    model: str
    train_size: int
    seed: int
    #: the feature set's committed content (store.fs_fingerprint): a rebuilt set re-fits
    feature_set_content: str = ""

    def key(self, cfg: GridConfig) -> str:
        """The cell's identity for resume: the cell, the exact content of its feature set and
        the settings its fit depends on (:func:`cell_settings`), so changing ``dense_epochs``
        re-fits dense heads, not lassos, and a rebuilt feature set re-fits its cells."""
        raw = json.dumps(
            [asdict(self), cell_settings(cfg, self.model)], sort_keys=True, default=str
        )
        return hashlib.sha256(raw.encode()).hexdigest()[:20]


#: GridConfig fields that say which cells exist (in the cell itself, not in its key).
#: ``save_models`` is here too: it changes what is kept of a fit, not what the fit computes.
GRID_AXES = (
    "feature_sets",
    "attributes",
    "models",
    "train_sizes",
    "seeds",
    "overwrite",
    "save_models",
    "target",
)
#: Fields every cell depends on: which rows it sees and its confidence interval.
DATA_SETTINGS = ("first_n", "custom_split", "bootstrap", "class_weight", "threshold")
LASSO_SETTINGS = ("folds", "lasso_cs", "lasso_max_iter", "cv_max_rows")
FOREST_SETTINGS = ("forest_trees", "forest_max_features", "forest_selection", "forest_max_samples")
FOREST_CV_SETTINGS = ("forest_folds", "cv_max_rows")  # only with forest_selection = "cv"
DENSE_SETTINGS = ("dense_hidden", "dense_epochs", "dense_patience", "dense_batch_size")


def cell_settings(cfg: GridConfig, model: str) -> dict[str, Any]:
    """The GridConfig settings a fit of ``model`` depends on (every field of GridConfig is in
    :data:`GRID_AXES` or one of the ``*_SETTINGS`` groups; a test keeps it so)."""
    kind, _, second = parse_model(model)
    names = list(DATA_SETTINGS)
    if kind in ("dense", "multilabel"):
        names += DENSE_SETTINGS
    elif kind == "bottleneck":  # its head is one k-unit layer: dense_hidden is not used
        names += [n for n in DENSE_SETTINGS if n != "dense_hidden"]
    for m in (kind, second):
        if m == "lasso":
            names += LASSO_SETTINGS
        elif m == "forest":
            names += FOREST_SETTINGS
            if cfg.forest_selection == "cv":
                names += FOREST_CV_SETTINGS
    return {n: getattr(cfg, n) for n in dict.fromkeys(names)}


def parse_model(name: str) -> tuple[str, int | None, str | None]:
    """``lasso`` -> (lasso, None, None); ``bottleneck20-forest`` -> (bottleneck, 20, forest)."""
    if name in BASE_MODELS:
        return name, None, None
    if name.startswith("bottleneck"):
        head, _, second = name.partition("-")
        k = head[len("bottleneck") :]
        if k.isdigit() and second in ("lasso", "forest"):
            return "bottleneck", int(k), second
    raise ConfigError(
        f"unknown model {name!r}; expected lasso, forest, dense, multilabel or "
        "bottleneck<k>-lasso|forest (e.g. bottleneck20-lasso)"
    )


def plan(path: str | os.PathLike[str], cfg: GridConfig) -> list[Cell]:
    """Every cell of the grid, in a stable order. Raises ConfigError for a bad grid."""
    if not cfg.feature_sets:
        raise ConfigError(
            "train needs at least one feature set (--feature-sets A,B or "
            "train.feature_sets in the config)"
        )
    for m in cfg.models:
        parse_model(m)
    layout = store.open_store(path)
    labels = store.require_committed(layout, "labels")
    known = list(labels["attributes"])
    contents = {}
    for fs in cfg.feature_sets:  # every named set committed, before Spark starts
        contents[fs] = store.fs_fingerprint(  # a verified read of every input
            store.check_feature_set(layout.root, fs, checksums=True)
        )
    if cfg.target == CLASS_TARGET:
        _check_class_target(path, cfg)
    attributes = [CLASS_TARGET] if cfg.target == CLASS_TARGET else list(cfg.attributes) or known
    for a in attributes if cfg.target != CLASS_TARGET else ():
        if a not in known:
            raise ConfigError(
                f"unknown attribute {a!r}; the labels table has {', '.join(known[:6])}, ..."
            )
    if cfg.custom_split and (
        len(cfg.custom_split) != 3 or not cfg.first_n or sum(cfg.custom_split) > cfg.first_n
    ):
        raise ConfigError(
            "custom_split needs first_n and 3 counts (train, val, test) whose sum "
            "is at most first_n"
        )
    cells = []
    for fs in cfg.feature_sets:
        for size in cfg.train_sizes:
            for seed in cfg.seeds:
                for model in cfg.models:
                    if model == "multilabel":
                        cells.append(
                            Cell(ALL_ATTRIBUTES, fs, model, int(size), int(seed), contents[fs])
                        )
                        continue
                    for a in attributes:
                        cells.append(Cell(a, fs, model, int(size), int(seed), contents[fs]))
    return cells


def _check_class_target(path: str | os.PathLike[str], cfg: GridConfig) -> None:
    bad = [m for m in cfg.models if m not in CLASS_MODELS]
    if bad:
        raise ConfigError(
            f"train.target: class fits the multi-class probes "
            f"{', '.join(CLASS_MODELS)}; not {', '.join(bad)}"
        )
    classes = store.read_classes(path)
    if classes is None:
        raise ConfigError(
            "train.target: class needs a labels table with a class column (a "
            "class-per-folder set: featstore ingest --source folder)"
        )
    if not 2 <= len(set(classes.values())) <= 127:  # y_true / y_pred are int8 class indices
        raise ConfigError(
            f"train.target: class needs 2 to 127 classes; the labels table has "
            f"{len(set(classes.values()))}"
        )


# ------------------------------------------------------------------ data, cached per worker


@lru_cache(maxsize=4)
def _split_arrays(
    path: str,
    feature_set: str,
    content: str,
    dim: int,
    first_n: int,
    custom: tuple[int, ...],
    seed: int,
) -> dict[str, Any]:
    """{split: (X float32, ids)} plus the label table, for one feature set (cached per worker;
    ``content`` is in the key so a rebuilt feature set is re-read). With ``custom``, the first
    ``first_n`` images are shuffled by ``seed`` (the cell's seed: every model of one seed sees
    the same split, so McNemar pairs them; each seed is a new draw) and cut by the counts."""
    table = store.read_arrow(path, feature_set)
    ids = np.asarray(table["image_id"].to_pylist())
    split = np.asarray(table["split"].to_pylist())
    x = store.embedding_matrix(table, dim, feature_set)
    labels = {
        c: table[c].to_numpy(zero_copy_only=False).astype(np.int8)
        for c in table.column_names
        if c not in ("image_id", "split", "embedding")
    }
    names = store.read_classes(path)
    class_names = sorted(set(names.values())) if names else []
    index = {c: k for k, c in enumerate(class_names)}
    # the class of each image as an index into class_names (-1: none)
    klass = np.asarray(
        [index.get(names.get(i), -1) for i in ids] if names else [-1] * len(ids), dtype=np.int16
    )
    persons = store.read_identities(path)
    # an image without a known person is a person of its own (a unique negative id)
    groups = (
        np.asarray([persons.get(i, -1 - k) for k, i in enumerate(ids)], dtype=np.int64)
        if persons is not None
        else None
    )
    if first_n:
        order = np.argsort(ids, kind="stable")[:first_n]  # the first N images by id
        if custom:
            split, keep = _custom_split(
                order, len(ids), custom, seed, None if groups is None else groups[order]
            )
        else:
            keep = np.sort(order)
        ids, split, x = ids[keep], split[keep], x[keep]
        labels = {k: v[keep] for k, v in labels.items()}
        groups = None if groups is None else groups[keep]
        klass = klass[keep]
    out: dict[str, Any] = {
        "labels": {},
        "dim": dim,
        "groups": {},
        "class": {},
        "class_names": class_names,
    }
    for s in ("train", "val", "test"):
        m = split == s
        out[s] = (x[m], ids[m])
        out["labels"][s] = {k: v[m] for k, v in labels.items()}
        out["groups"][s] = None if groups is None else groups[m]
        out["class"][s] = klass[m]
    return out


def _custom_split(
    order: np.ndarray, n: int, counts: tuple[int, ...], seed: int, groups: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The split of the first N images (``order``) by ``counts`` (train, val, test), drawn by
    ``seed``: ``(split per image, sorted indices kept)``. With identities (``groups``, in the
    order of ``order``), whole identities are drawn: every image of one person lands in one
    split (a person in train and test would leak), so a split reaches its count or exceeds it
    by the last person's images, and the test split takes what is left up to its count."""
    rng = np.random.default_rng(seed)
    tr, va, te = counts
    split = np.empty(n, dtype=object)
    if groups is None:
        order = order[rng.permutation(len(order))]
        split[order[:tr]] = "train"
        split[order[tr : tr + va]] = "val"
        split[order[tr + va : tr + va + te]] = "test"
        return split, np.sort(order[: tr + va + te])
    people = np.unique(groups)
    people = people[rng.permutation(len(people))]
    taken = {"train": 0, "val": 0, "test": 0}
    target = {"train": tr, "val": va, "test": te}
    which: dict[int, str] = {}
    by_person = {p: order[groups == p] for p in people}
    for p in people:
        name = next((k for k in ("train", "val", "test") if taken[k] < target[k]), None)
        if name is None:
            break
        rows = by_person[p]
        if name == "test" and taken[name] + len(rows) > target[name]:
            continue  # the test split stays within its count
        which[int(p)] = name
        taken[name] += len(rows)
    kept = [by_person[p] for p in people if int(p) in which]
    for p in people:
        if int(p) in which:
            split[by_person[p]] = which[int(p)]
    keep = np.sort(np.concatenate(kept)) if kept else np.empty(0, dtype=np.intp)
    return split, keep


def _subsample(n_avail: int, size: int, seed: int) -> np.ndarray:
    if size <= 0 or size == n_avail:
        return np.arange(n_avail)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_avail, size=size, replace=False))


# ------------------------------------------------------------------ one fit


def _empty_row(cell: Cell, key: str) -> dict[str, Any]:
    row = {f.name: None for f in RESULTS_SCHEMA}
    row.update(asdict(cell))
    row.update(cell=key, created=store.now_iso(), status="error")
    return row


def run_cell(
    path: str, cell: Cell, cfg: GridConfig, phases: Phases | None = None
) -> list[dict[str, Any]]:
    """Fit and evaluate one cell; never raises for a problem of the cell itself. ``phases``
    (optional) gets the cell's seconds in read features / fit / save models / evaluate."""

    lap = phases.lap if phases is not None else (lambda name: None)
    key = cell.key(cfg)
    lap("read features")
    try:
        manifest = store.feature_set_manifest(path, cell.feature_set)
        data = _split_arrays(
            path,
            cell.feature_set,
            store.fs_fingerprint(manifest),
            int(manifest["dim"]),
            cfg.first_n,
            tuple(cfg.custom_split),
            cell.seed if cfg.custom_split else 0,
        )
        x_tr_all, _ = data["train"]
        x_va, _ = data["val"]
        x_te, _ = data["test"]
        if cell.train_size > len(x_tr_all):
            raise FeatstoreError(
                f"training size {cell.train_size} is larger than the train "
                f"split ({len(x_tr_all)} rows)"
            )
        if len(x_te) == 0:
            raise FeatstoreError("the test split is empty")
        pick = _subsample(len(x_tr_all), cell.train_size, cell.seed)
        x_tr = x_tr_all[pick]
        attrs = (
            sorted(data["labels"]["train"])
            if cell.attribute == ALL_ATTRIBUTES
            else [cell.attribute]
        )
        lap("fit")
        if cell.attribute == CLASS_TARGET and cfg.target == CLASS_TARGET:
            row = _class_row(cell, cfg, key, x_tr, x_va, x_te, data, pick)
            lap(None)
            return [row]
        fits = _fit(cell, cfg, x_tr, x_va, x_te, data, pick, attrs)
    except Exception as exc:  # a problem of this cell: record it, let the grid go on
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if not isinstance(exc, (FeatstoreError, ValueError)):
            logger.warning("cell %s failed: %s", cell, traceback.format_exc())
        row = _empty_row(cell, key)
        row["reason"] = reason
        lap(None)
        return [row]

    # an attribute a multilabel fit could not fit (one class only) gets the error row a
    # single-attribute cell of it gets; only the fitted attributes have a model to save
    failed = {a: f.reason for a, f in fits.items() if f.status == "error"}
    fitted = {a: f for a, f in fits.items() if a not in failed}
    lap("save models")
    model_paths, note = _save_models(path, cell, cfg, key, fitted, int(x_tr.shape[1]))
    lap("evaluate")
    rows = []
    for attribute, fit in fits.items():
        row = _empty_row(
            Cell(
                attribute,
                cell.feature_set,
                cell.model,
                cell.train_size,
                cell.seed,
                cell.feature_set_content,
            ),
            key,
        )
        if attribute in failed:
            row["reason"] = failed[attribute]
            rows.append(row)
            continue
        y_tr = data["labels"]["train"][attribute][pick]
        y_va = data["labels"]["val"][attribute]
        row.update(
            _evaluated(
                fit,
                y_tr,
                y_va,
                data["labels"]["test"][attribute],
                data["groups"]["test"],
                cfg,
                cell.seed,
            )
        )
        row.update(
            n_train=len(x_tr),
            n_val=len(x_va),
            n_test=len(x_te),
            dim=int(x_tr.shape[1]),
            history=json.dumps(fit.history) if fit.history else None,
            fit_seconds=fit.fit_seconds,
            model_path=model_paths.get(attribute),
            reason=note,
        )
        rows.append(row)
    lap(None)
    return rows


#: What ``selection_score`` is: the score every "best" in featstore is the argmax of.
SELECTION_METRIC = "validation accuracy"


def _evaluated(
    fit: Any,
    y_tr: np.ndarray,
    y_va: np.ndarray,
    y_te: np.ndarray,
    groups: np.ndarray | None,
    cfg: GridConfig,
    seed: int,
) -> dict[str, Any]:
    """One fit's results columns. ``fit`` scored the validation rows, then the test rows (one
    matrix): the validation part gives ``selection_score`` (and the threshold, with
    ``train.threshold: val``), the test part the estimate, touched once. Intervals resample by
    person where the store knows identities (``groups``)."""
    from featstore import evaluate
    from featstore.train.base import THRESHOLD

    n_va = len(y_va)
    score_va, y_score = fit.y_score[:n_va], fit.y_score[n_va:]
    threshold = THRESHOLD
    if cfg.threshold == "val" and n_va and 0 < int(y_va.sum()) < n_va:
        threshold = _val_threshold(y_va, score_va)
    y_pred = (y_score > threshold).astype(np.int8)
    selection = float(np.mean((score_va > threshold) == y_va)) if n_va else None
    m = evaluate.metrics(y_te, y_pred, y_score, y_train=y_tr)
    if groups is not None and np.unique(groups).size < 2:
        groups = None  # one person in the whole test split: nothing to resample by
    lo, hi = evaluate.accuracy_ci(y_te, y_pred, groups=groups)
    both = 0 < int(y_te.sum()) < len(y_te)
    boot = {"n_boot": cfg.bootstrap, "seed": seed, "groups": groups}
    ba = evaluate.bootstrap_ci(y_te, y_pred, stat="balanced_accuracy", **boot) if both else None
    auc = (
        evaluate.bootstrap_ci(y_te, y_pred, stat="roc_auc", y_score=y_score, **boot)
        if both
        else None
    )
    roc = evaluate.roc_points(y_te, y_score)
    params = {**fit.params, "threshold": threshold}
    return {
        "status": "ok",
        "ci_low": lo,
        "ci_high": hi,
        "params": json.dumps(params, sort_keys=True, default=str),
        "y_true": y_te.astype(np.int8).tolist(),
        "y_pred": y_pred.tolist(),
        "y_score": y_score.astype(np.float32).tolist(),
        "groups": groups.tolist() if groups is not None else None,
        "roc_fpr": roc[0].tolist() if roc else None,
        "roc_tpr": roc[1].tolist() if roc else None,
        "selection_score": selection,
        "selection_metric": SELECTION_METRIC if n_va else None,
        "ba_ci_low": ba[0] if ba else None,
        "ba_ci_high": ba[1] if ba else None,
        "auc_ci_low": auc[0] if auc else None,
        "auc_ci_high": auc[1] if auc else None,
        "brier": evaluate.brier_score(y_te, y_score),
        "ci_method": "wilson, by identity" if groups is not None else "wilson",
        **{
            k: m[k]
            for k in (
                "accuracy",
                "balanced_accuracy",
                "f1",
                "roc_auc",
                "tn",
                "fp",
                "fn",
                "tp",
                "majority_baseline",
            )
        },
    }


def _class_row(
    cell: Cell,
    cfg: GridConfig,
    key: str,
    x_tr: np.ndarray,
    x_va: np.ndarray,
    x_te: np.ndarray,
    data: dict[str, Any],
    pick: np.ndarray,
) -> dict[str, Any]:
    """The results row of one multi-class cell (``train.target: class``): the probe is fitted
    and tuned on the training rows, scored on the validation rows for ``selection_score``
    (validation accuracy) and on the test rows for the estimate, in one call. ``y_true`` and
    ``y_pred`` hold class indices into ``classes``; ``y_score`` stays null (no positive class).
    Models are not saved for multi-class cells (``train.save_models`` is ignored there)."""
    from featstore import multiclass
    from featstore.train.multiclass import fit_multiclass

    names = data["class_names"]
    k = len(names)
    y_tr = data["class"]["train"][pick].astype(np.int64)
    y_va, y_te = data["class"]["val"].astype(np.int64), data["class"]["test"].astype(np.int64)
    if (y_tr < 0).any() or (y_va < 0).any() or (y_te < 0).any():
        raise FeatstoreError("some images of this feature set have no class in the labels table")
    weight = None if cfg.class_weight == "none" else cfg.class_weight
    settings = {
        "lasso": {
            "folds": cfg.folds,
            "cs": cfg.lasso_cs,
            "max_iter": cfg.lasso_max_iter,
            "cv_max_rows": cfg.cv_max_rows,
        },
        "forest": {
            "n_estimators": cfg.forest_trees,
            "selection": cfg.forest_selection,
            "max_features": tuple(_num(v) for v in cfg.forest_max_features),
            "folds": cfg.forest_folds,
            "max_samples": cfg.forest_max_samples or None,
            "cv_max_rows": cfg.cv_max_rows,
        },
        "dense": {
            "hidden": tuple(cfg.dense_hidden),
            "epochs": cfg.dense_epochs,
            "patience": cfg.dense_patience,
            "batch_size": cfg.dense_batch_size,
        },
    }[cell.model]
    fit = fit_multiclass(
        cell.model,
        x_tr,
        y_tr,
        np.concatenate([x_va, x_te]),
        n_classes=k,
        seed=cell.seed,
        class_weight=weight,
        **settings,
    )
    pred = fit.y_pred
    pred_va, y_pred = pred[: len(x_va)], pred[len(x_va) :]
    m = multiclass.metrics(y_te, y_pred, k, y_train=y_tr)
    groups = data["groups"]["test"]
    if groups is not None and np.unique(groups).size < 2:
        groups = None
    lo, hi = multiclass.accuracy_interval(y_te, y_pred, groups=groups)
    params = {
        **fit.params,
        "majority_class": m["majority_class"],
        **{
            k2: [None if np.isnan(v) else float(v) for v in m[k2]] for k2 in ("precision", "recall")
        },
    }
    row = _empty_row(cell, key)
    row.update(
        status="ok",
        ci_low=lo,
        ci_high=hi,
        n_train=len(x_tr),
        n_val=len(x_va),
        n_test=len(x_te),
        dim=int(x_tr.shape[1]),
        fit_seconds=fit.fit_seconds,
        params=json.dumps(params, sort_keys=True, default=str),
        history=json.dumps(fit.history) if fit.history else None,
        y_true=y_te.astype(np.int8).tolist(),
        y_pred=y_pred.astype(np.int8).tolist(),
        groups=groups.tolist() if groups is not None else None,
        selection_score=float(np.mean(pred_va == y_va)) if len(y_va) else None,
        selection_metric=SELECTION_METRIC if len(y_va) else None,
        ci_method="wilson, by identity" if groups is not None else "wilson",
        accuracy=m["accuracy"],
        balanced_accuracy=m["balanced_accuracy"],
        majority_baseline=m["majority_baseline"],
        macro_f1=m["macro_f1"],
        n_classes=k,
        classes=list(names),
        confusion=m["confusion"].tolist(),
        reason="model not saved: multi-class fits are not saved" if cfg.save_models else None,
    )
    return row


def _val_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """The score threshold (predict positive above it) that maximises the balanced accuracy on
    the validation rows; candidates are the midpoints between distinct scores (ties: the one
    nearest 0.5)."""
    u = np.unique(score.astype(np.float64))
    cands = np.concatenate([[u[0] - 1e-6], (u[:-1] + u[1:]) / 2.0]) if u.size > 1 else u
    pos, neg = y == 1, y == 0
    pred = score[None, :] > cands[:, None]
    ba = (pred[:, pos].mean(axis=1) + (~pred[:, neg]).mean(axis=1)) / 2.0
    best = np.flatnonzero(ba >= ba.max() - 1e-12)
    return float(cands[best[np.argmin(np.abs(cands[best] - 0.5))]])


def _save_models(
    path: str, cell: Cell, cfg: GridConfig, key: str, fits: dict[str, Any], dim: int
) -> tuple[dict[str, str], str | None]:
    """Save the cell's estimators when ``cfg.save_models`` (else drop files an earlier fit of
    this cell left). Returns ``({attribute: model_path}, None)``, or ``({}, note)`` when saving
    failed: the fits stay ok (the note goes to ``reason``) and a later run with
    ``save_models`` on fits the cell again."""
    from featstore.train import saved

    if not cfg.save_models:
        saved.clear_cell(path, key)
        return {}, None
    try:
        return saved.save_fits(path, key, cell.model, cell.feature_set, dim, fits), None
    except Exception as exc:
        logger.warning("cell %s: saving the model failed: %s", cell, traceback.format_exc())
        return (
            {},
            f"model not saved: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
        )


def _fit(
    cell: Cell,
    cfg: GridConfig,
    x_tr: np.ndarray,
    x_va: np.ndarray,
    x_te: np.ndarray,
    data: dict[str, Any],
    pick: np.ndarray,
    attrs: list[str],
) -> dict[str, Any]:
    """``{attribute: FitResult | FitError}`` of one cell. One rule for every model: training
    labels of one class only raise :class:`~featstore.train.base.SingleClassError` for a
    single-attribute model (the cell's error row), and give that attribute a
    :class:`~featstore.train.base.FitError` with the same message in a multilabel cell (its
    other attributes are fitted; all of them of one class: the error is raised)."""
    from featstore.train import dense, forest, lasso
    from featstore.train.base import check_binary

    # every probe sees the same labelled data: the training rows to fit and tune itself (CV,
    # out-of-bag, the dense heads' early stopping on a held-out tenth of them), the validation
    # rows only to be scored for selection_score, then the test rows: both scored in one call
    x_te = np.concatenate([x_va, x_te]) if len(x_va) else x_te
    x_va = None
    kind, k, second = parse_model(cell.model)
    lab_tr = {a: data["labels"]["train"][a][pick] for a in attrs}
    weight = None if cfg.class_weight == "none" else cfg.class_weight
    dense_kw = {
        "hidden": tuple(cfg.dense_hidden),
        "epochs": cfg.dense_epochs,
        "patience": cfg.dense_patience,
        "batch_size": cfg.dense_batch_size,
        "seed": cell.seed,
    }
    if kind == "multilabel":
        y_tr = np.stack([lab_tr[a] for a in attrs], axis=1)
        return dense.fit_multilabel(x_tr, y_tr, None, None, x_te, attributes=attrs, **dense_kw)
    dense_kw["class_weight"] = weight
    a = attrs[0]
    y_tr, y_va = lab_tr[a], None
    check_binary(y_tr)
    lasso_kw = {
        "folds": cfg.folds,
        "cs": cfg.lasso_cs,
        "seed": cell.seed,
        "cv_max_rows": cfg.cv_max_rows,
        "max_iter": cfg.lasso_max_iter,
        "what": f"{a} on {cell.feature_set}",
        "class_weight": weight,
    }
    forest_kw = {
        "folds": cfg.forest_folds,
        "n_estimators": cfg.forest_trees,
        "seed": cell.seed,
        "max_features": tuple(_num(v) for v in cfg.forest_max_features),
        "cv_max_rows": cfg.cv_max_rows,
        "max_samples": cfg.forest_max_samples or None,
        "selection": cfg.forest_selection,
        "class_weight": weight,
    }
    if kind == "lasso":
        return {a: lasso.fit_lasso(x_tr, y_tr, x_te, **lasso_kw)}
    if kind == "forest":
        return {a: forest.fit_forest(x_tr, y_tr, x_te, **forest_kw)}
    if kind == "dense":
        return {a: dense.fit_dense(x_tr, y_tr, x_va, y_va, x_te, **dense_kw)}
    second_kw = lasso_kw if second == "lasso" else forest_kw
    kw = {
        **{k2: v for k2, v in dense_kw.items() if k2 != "hidden"},
        **{k2: v for k2, v in second_kw.items() if k2 != "seed"},
    }
    return {a: dense.fit_bottleneck(x_tr, y_tr, x_va, y_va, x_te, k=k, second=second, **kw)}


def _num(v: str) -> str | float:
    try:
        return float(v)
    except ValueError:
        return v


# ------------------------------------------------------------------ the Spark side


def _write_cell(cells_dir: Path, key: str, rows: list[dict[str, Any]]) -> None:
    table = pa.Table.from_pylist(rows, schema=RESULTS_SCHEMA)
    tmp = cells_dir / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, cells_dir / f"{key}.parquet")


def _task(path: str, cfg: GridConfig, cells_dir: str, cpu_threads: int) -> Any:
    """The grid's task: fit each cell, write its file. Yields per cell (key, model, attribute,
    status, seconds, seconds per phase)."""

    def run(items: Iterator[Cell]) -> Iterator[tuple[str, str, str, str, float, dict[str, float]]]:
        if cpu_threads > 0:
            for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "OPENBLAS_NUM_THREADS"):
                os.environ.setdefault(var, str(cpu_threads))
            os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
        for cell in items:
            t = time.perf_counter()
            phases = Phases()
            rows = run_cell(path, cell, cfg, phases)
            with phases("write"):
                _write_cell(Path(cells_dir), cell.key(cfg), rows)
            yield (
                cell.key(cfg),
                cell.model,
                cell.attribute,
                rows[0]["status"],
                time.perf_counter() - t,
                phases.seconds,
            )

    return run


@dataclass(frozen=True)
class GridSummary:
    store: str
    cells: int
    ran: int
    resumed: int
    ok_rows: int
    error_rows: int
    seconds: float
    timing: Phases | None = None  # the driver's: plan, fits, merge and commit
    fit_timing: Phases | None = None  # the fits' own, summed over the tasks

    @property
    def ran_plus_resumed(self) -> int:
        return self.ran + self.resumed

    def timing_line(self) -> str:
        """``train time: plan 0.1 s (0%), fits 30.2 s (97%), ...; fits: read features 5%,
        fit 80%, ... of 58.3 task-s in 40 fits``."""
        line = self.timing.line("train") if self.timing is not None else "train time: -"
        if self.fit_timing is not None and self.fit_timing.total > 0:
            line += (
                f"; fits: {self.fit_timing.shares()} of {self.fit_timing.total:.1f} task-s "
                f"in {self.ran} fits"
            )
        return line


def run_grid(spark: Any, path: str, cfg: GridConfig, *, parallel: bool = True) -> GridSummary:
    """Run the grid (one Spark task per cell; ``parallel=False`` runs the same cells in this
    process, one after another — the baseline of the speed-up benchmark).

    Resume: a cell whose file holds an ``ok`` row is kept; a cell that ended in an error is
    fitted again (its cause may be gone). ``overwrite`` fits every cell into a fresh cells
    folder that replaces the old one only when the new results table commits, so the old
    results stay readable and complete until then. The results table is written through the
    store's one writer, which also locks it against a second train."""
    t0 = time.perf_counter()
    phases, fit_phases = Phases(), Phases()
    phases.lap("plan")
    layout = store.open_store(path)
    cells = plan(path, cfg)
    with store.TableWriter(layout, "results", spark=spark) as w:
        cells_dir = w.staging / "cells" if cfg.overwrite else layout.cells
        cells_dir.mkdir(parents=True, exist_ok=True)
        done, lacking, retried = _resume_state(layout.root, cells, cfg, cells_dir)
        if lacking:
            logger.info("%d finished fits have no saved model: running them again", lacking)
        todo = [c for c in cells if c.key(cfg) not in done]
        resumed = len(cells) - len(todo)
        if resumed:
            logger.info("%d of %d fits already in the results table (resumed)", resumed, len(cells))
        if retried:
            logger.info("%d fits that ended in an error run again", retried)
        if todo:
            logger.info("running %d fits", len(todo))
            phases.lap("fits")
            if parallel:
                cpu_threads = int(spark.conf.get("spark.task.cpus", "1")) if spark else 1
                fn = _task(str(layout.root), cfg, str(cells_dir), cpu_threads)
                rdd = spark.sparkContext.parallelize(todo, len(todo))
                # one task per fit: the status tracker's finished tasks are the fits done
                with Progress("train", len(todo), "fits") as bar, spark_feed(spark, bar):
                    spark.sparkContext.setJobDescription(f"featstore train: {len(todo)} fits")
                    done_fits = rdd.mapPartitions(fn).collect()
            else:
                fn = _task(str(layout.root), cfg, str(cells_dir), 0)
                done_fits = list(fn(iter(todo)))
            for key, model, attribute, status, secs, seconds in done_fits:
                logger.debug("fit %s %s %s: %s in %.1f s", key, model, attribute, status, secs)
                fit_phases.add(seconds)
        phases.lap("merge and commit")
        merged = _merge_cells(cells_dir)
        ok = int(sum(1 for s in merged["status"].to_pylist() if s == "ok"))
        pq.write_table(merged, w.data / "part-00000.parquet")
        w.commit(
            store.base_manifest(
                "results",
                counts={"ok": ok, "errors": merged.num_rows - ok, "rows": merged.num_rows},
                feature_sets={c.feature_set: c.feature_set_content for c in cells},
                last_grid={
                    "cells": len(cells),
                    "ran": len(todo),
                    "resumed": resumed,
                    **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
                },
                seconds=round(time.perf_counter() - t0, 2),
                timing={"driver": phases.as_dict(), "fits": fit_phases.as_dict()},
            ),
            has_errors=False,
            extra_moves=[(cells_dir, layout.cells)] if cfg.overwrite else (),
        )
    phases.lap(None)
    return GridSummary(
        str(layout.root),
        len(cells),
        len(todo),
        resumed,
        ok,
        merged.num_rows - ok,
        time.perf_counter() - t0,
        phases,
        fit_phases,
    )


def _resume_state(
    root: Path, cells: list[Cell], cfg: GridConfig, cells_dir: Path
) -> tuple[set[str], int, int]:
    """(keys of the cells already done, how many finished cells lack their saved models and run
    again, how many cells that ended in an error run again): the resume state of
    :func:`run_grid` and :func:`plan_run`."""
    keys = {c.key(cfg) for c in cells}
    done = {k for k in keys if _cell_ok(cells_dir / f"{k}.parquet")}
    lacking: set[str] = set()
    if cfg.save_models:  # a finished cell whose model files are missing runs again
        from featstore.train.saved import cell_lacks_models

        lacking = {k for k in done if cell_lacks_models(root, cells_dir / f"{k}.parquet")}
        done -= lacking
    retried = sum(1 for k in keys - done - lacking if (cells_dir / f"{k}.parquet").is_file())
    return done, len(lacking), retried


@dataclass(frozen=True)
class GridPlan:
    """What :func:`run_grid` would do now (``featstore train --dry-run``): every cell, and which
    of them it would fit (``todo``) and skip as already done (``done``)."""

    cells: list[Cell]
    todo: list[Cell]
    done: list[Cell]
    retried: int  # of todo: cells that ended in an error and run again
    lacking_models: int  # of todo: finished cells whose saved models are missing


def plan_run(path: str | os.PathLike[str], cfg: GridConfig) -> GridPlan:
    """:func:`plan` plus the resume state in the store, as :func:`run_grid` would see it now;
    no Spark, nothing written, no lock taken."""
    layout = store.open_store(path)
    cells = plan(path, cfg)
    if cfg.overwrite:  # a fresh cells folder: every fit runs
        return GridPlan(cells, list(cells), [], 0, 0)
    done, lacking, retried = _resume_state(layout.root, cells, cfg, layout.cells)
    return GridPlan(
        cells,
        [c for c in cells if c.key(cfg) not in done],
        [c for c in cells if c.key(cfg) in done],
        retried,
        lacking,
    )


def _cell_ok(cell_file: Path) -> bool:
    """True when a finished cell's file exists and holds an ``ok`` row: a cell that ended in an
    error is fitted again. (A multilabel cell's rows are ok except for attributes with one class
    only, which its next fit on the same data would give again.)"""
    if not cell_file.is_file():
        return False
    try:
        status = pq.read_table(cell_file, columns=["status"])["status"].to_pylist()
    except Exception:  # a damaged cell file: fit the cell again
        return False
    return any(s == "ok" for s in status)


def _merge_cells(cells_dir: Path) -> pa.Table:
    """Every fit ever run in this store, one row per (attribute, feature set, model, training
    size, seed): when a cell was re-run with other settings, the newest row wins."""
    files = sorted(cells_dir.glob("*.parquet"))
    if not files:
        return RESULTS_SCHEMA.empty_table()
    table = pa.concat_tables([pq.read_table(f, schema=RESULTS_SCHEMA) for f in files])
    keys = ["attribute", "feature_set", "model", "train_size", "seed"]
    cols = {k: table[k].to_pylist() for k in [*keys, "created"]}
    newest: dict[tuple[Any, ...], int] = {}
    for i in range(table.num_rows):
        k = tuple(cols[c][i] for c in keys)
        if k not in newest or cols["created"][i] >= cols["created"][newest[k]]:
            newest[k] = i
    keep = sorted(newest.values(), key=lambda i: tuple(str(cols[c][i]) for c in keys))
    return table.take(pa.array(keep, type=pa.int64()))

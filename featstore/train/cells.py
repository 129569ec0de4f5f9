"""One cell of the training grid (featstore.train.grid): what it is (:class:`Cell`, its key for
resume), its data (read from the store, cached per Python worker) and its fit and evaluation
(:func:`run_cell`: the cell's results rows). No Spark here; the grid runs one cell per task.
"""

from __future__ import annotations

import hashlib
import json
import logging
import traceback
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from featstore import store
from featstore.config import GridConfig
from featstore.errors import ConfigError, FeatstoreError
from featstore.timing import Phases

logger = logging.getLogger(__name__)

ALL_ATTRIBUTES = "*"  # attribute of a multilabel cell (one fit for all attributes)
BASE_MODELS = ("lasso", "forest", "dense", "multilabel")
CLASS_TARGET = "class"  # attribute of a multi-class cell: the labels table's class column

RESULTS_SCHEMA = store.RESULTS_SCHEMA  # declared once, in the store


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


def _draw_train_rows(n_avail: int, size: int, seed: int) -> np.ndarray:
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


def _cell_arrays(
    path: str, cell: Cell, cfg: GridConfig
) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The cell's data (:func:`_split_arrays`), its training rows ``pick`` and its train (those
    rows), validation and test matrices. Raises FeatstoreError for a training size larger than
    the train split and an empty test split."""
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
            f"training size {cell.train_size} is larger than the train split ({len(x_tr_all)} rows)"
        )
    if len(x_te) == 0:
        raise FeatstoreError("the test split is empty")
    pick = _draw_train_rows(len(x_tr_all), cell.train_size, cell.seed)
    x_tr = x_tr_all[pick]
    return data, pick, x_tr, x_va, x_te


def run_cell(
    path: str, cell: Cell, cfg: GridConfig, phases: Phases | None = None
) -> list[dict[str, Any]]:
    """Fit and evaluate one cell; never raises for a problem of the cell itself. ``phases``
    (optional) gets the cell's seconds in read features / fit / save models / evaluate."""

    lap = phases.lap if phases is not None else (lambda name: None)
    key = cell.key(cfg)
    lap("read features")
    try:
        data, pick, x_tr, x_va, x_te = _cell_arrays(path, cell, cfg)
        attrs = (
            sorted(data["labels"]["train"])
            if cell.attribute == ALL_ATTRIBUTES
            else [cell.attribute]
        )
        lap("fit")
        if cell.attribute == CLASS_TARGET and cfg.target == CLASS_TARGET:
            row = _class_row(path, cell, cfg, key, (x_tr, x_va, x_te), data, pick, lap)
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
    path: str,
    cell: Cell,
    cfg: GridConfig,
    key: str,
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray],
    data: dict[str, Any],
    pick: np.ndarray,
    lap: Any,
) -> dict[str, Any]:
    """The results row of one multi-class cell (``train.target: class``): the probe is fitted
    and tuned on the training rows, scored on the validation rows for ``selection_score``
    (validation accuracy) and on the test rows for the estimate, in one call. ``y_true`` and
    ``y_pred`` hold class indices into ``classes``; ``y_score`` stays null (no positive class).
    With ``train.save_models`` the fit is saved as a binary fit is (:func:`_save_models`)."""
    from featstore import multiclass
    from featstore.train.multiclass import fit_multiclass

    x_tr, x_va, x_te = arrays
    names = data["class_names"]
    k = len(names)
    y_tr = data["class"]["train"][pick].astype(np.int64)
    y_va, y_te = data["class"]["val"].astype(np.int64), data["class"]["test"].astype(np.int64)
    if (y_tr < 0).any() or (y_va < 0).any() or (y_te < 0).any():
        raise FeatstoreError("some images of this feature set have no class in the labels table")
    weight = None if cfg.class_weight == "none" else cfg.class_weight
    fit = fit_multiclass(
        cell.model,
        x_tr,
        y_tr,
        np.concatenate([x_va, x_te]),
        n_classes=k,
        seed=cell.seed,
        class_weight=weight,
        **_multiclass_settings(cfg, cell.model),
    )
    lap("save models")
    model_paths, note = _save_models(
        path, cell, cfg, key, {CLASS_TARGET: fit}, int(x_tr.shape[1]), classes=names
    )
    lap("evaluate")
    pred = fit.y_pred
    pred_va, y_pred = pred[: len(x_va)], pred[len(x_va) :]
    m = multiclass.metrics(y_te, y_pred, k, y_train=y_tr)
    groups = data["groups"]["test"]
    if groups is not None and np.unique(groups).size < 2:
        groups = None  # one person in the whole test split: nothing to resample by
    lo, hi = multiclass.accuracy_interval(y_te, y_pred, groups=groups)
    boot = multiclass.bootstrap_intervals(
        y_te, y_pred, k, groups=groups, n_boot=cfg.bootstrap, seed=cell.seed
    )
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
        **boot,
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
        model_path=model_paths.get(CLASS_TARGET),
        reason=note,
    )
    return row


def _multiclass_settings(cfg: GridConfig, model: str) -> dict[str, Any]:
    """The keyword arguments of :func:`featstore.train.multiclass.fit_multiclass` for ``model``."""
    return {
        "lasso": {
            "folds": cfg.folds,
            "cs": cfg.lasso_cs,
            "max_iter": cfg.lasso_max_iter,
            "cv_max_rows": cfg.cv_max_rows,
        },
        "forest": {
            "n_estimators": cfg.forest_trees,
            "selection": cfg.forest_selection,
            "max_features": tuple(_max_features_value(v) for v in cfg.forest_max_features),
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
    }[model]


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
    path: str,
    cell: Cell,
    cfg: GridConfig,
    key: str,
    fits: dict[str, Any],
    dim: int,
    classes: list[str] | None = None,
) -> tuple[dict[str, str], str | None]:
    """Save the cell's estimators when ``cfg.save_models`` (else drop files an earlier fit of
    this cell left; ``classes``: a multi-class cell's class names). Returns
    ``({attribute: model_path}, None)``, or ``({}, note)`` when saving failed: the fits stay ok
    (the note goes to ``reason``) and a later run with ``save_models`` on fits the cell again."""
    from featstore.train import saved

    if not cfg.save_models:
        saved.clear_cell(path, key)
        return {}, None
    try:
        out = saved.save_fits(path, key, cell.model, cell.feature_set, dim, fits, classes)
        return out, None
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
        "max_features": tuple(_max_features_value(v) for v in cfg.forest_max_features),
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


def _max_features_value(v: str) -> str | float:
    try:
        return float(v)
    except ValueError:
        return v

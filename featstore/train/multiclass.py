"""Multi-class probes (``train.target: class``): the same three families as the binary probes,
fitted to K classes at once. Pure numpy in, :class:`MultiFit` out; ``featstore.train.grid``
runs each in one Spark task and ``featstore.multiclass`` evaluates it.

The rules are the binary probes' (issue 24): every probe standardizes its inputs on the rows it
trains on; hyper-parameters are chosen inside the training rows with the one-standard-error rule
(:func:`~featstore.train.base.one_se_choice`); the test rows are only predicted.

* lasso: multinomial L1 logistic regression (``saga``: liblinear has no multinomial loss), C by
  stratified k-fold CV on the training rows (accuracy), the sparsest C within one standard error
  (:func:`~featstore.train.base.fold_score_se`, as the binary lasso's); the CV subsample
  (``cv_max_rows``) and the fold count are the binary probes' too
  (:func:`~featstore.train.base.stratified_subsample`, :func:`~featstore.train.base.cv_folds`).
* forest: a random forest, ``max_features`` by out-of-bag accuracy (or CV), one-SE rule, chosen
  by the binary forest's selector (:func:`featstore.train.forest.choose_forest`, the same
  subsample, folds and standard errors) on the K classes.
* dense: ``Dense(hidden, relu) -> Dense(K, softmax)``, sparse categorical cross-entropy,
  early stopping on a held-out tenth of the training rows (best weights restored).

``class_weight="balanced"`` weighs class ``c`` by ``n / (K n_c)`` in every probe.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featstore.timing import Phases
from featstore.train.base import (
    SingleClassError,
    as_features,
    check_test,
    class_weight_arg,
    cv_folds,
    fold_score_se,
    jsonable,
    one_se_choice,
    stratified_subsample,
)

logger = logging.getLogger(__name__)

MODELS = ("lasso", "forest", "dense")


@dataclass
class MultiFit:
    """One multi-class fit's class probabilities for the rows it was asked to predict
    (``proba``: rows x K, float32) and its chosen hyper-parameters (plain JSON values)."""

    model: str
    proba: np.ndarray
    params: dict[str, Any]
    fit_seconds: float
    history: dict[str, list[float]] | None = None
    estimator: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.proba = np.asarray(self.proba, dtype=np.float32)
        self.params = jsonable(self.params)

    @property
    def y_pred(self) -> np.ndarray:
        """The most probable class of each row (ties: the lower index), int8."""
        return np.argmax(self.proba, axis=1).astype(np.int8)


def check_classes(y: Any, n_classes: int, what: str = "training sample") -> np.ndarray:
    """``y`` as int64 class indices in ``[0, n_classes)``, every class present at least twice
    (cross-validation, out-of-bag scoring and the held-out tenth need them); otherwise
    :class:`SingleClassError` with one line naming the classes that are short."""
    arr = np.asarray(y).reshape(-1).astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        raise ValueError(
            f"{what}: class indices must lie in [0, {n_classes}), got {arr.min()}..{arr.max()}"
        )
    counts = np.bincount(arr, minlength=n_classes)
    short = [int(c) for c in np.flatnonzero(counts < 2)]
    if short:
        raise SingleClassError(
            f"{what} has fewer than 2 images of class index(es) {short} "
            f"(counts {counts.tolist()}): a {n_classes}-class probe needs "
            "at least 2 of each"
        )
    return arr


def _weights(y: np.ndarray, n_classes: int, class_weight: str | None) -> dict[int, float] | None:
    if class_weight_arg(class_weight) is None:
        return None
    counts = np.bincount(y, minlength=n_classes)
    return {c: float(y.size / (n_classes * counts[c])) for c in range(n_classes)}


def fit_multiclass(
    model: str,
    x_train: Any,
    y_train: Any,
    x_test: Any,
    *,
    n_classes: int,
    seed: int = 0,
    class_weight: str | None = None,
    **kw: Any,
) -> MultiFit:
    """Fit ``model`` (lasso, forest or dense) on K-class labels and predict the test rows.
    ``kw``: the settings of that probe (see :func:`fit_lasso`, :func:`fit_forest`,
    :func:`fit_dense`)."""
    fits = {"lasso": fit_lasso, "forest": fit_forest, "dense": fit_dense}
    if model not in fits:
        raise ValueError(f"multi-class probes are {', '.join(MODELS)}; got {model!r}")
    xs = as_features(x_train, "training features")
    ys = check_classes(y_train, n_classes)
    if xs.shape[0] != ys.size:
        raise ValueError(f"training sample: {xs.shape[0]} feature rows but {ys.size} labels")
    xt = check_test(x_test, xs.shape[1])
    clock = Phases()
    with clock("fit"):
        proba, params, history, est = fits[model](
            xs, ys, xt, n_classes=n_classes, seed=seed, class_weight=class_weight, **kw
        )
    params = {
        **params,
        "n_classes": n_classes,
        "class_weight": class_weight,
        "n_features": xs.shape[1],
    }
    logger.info(
        "%s (%d classes): %s, %.1f s",
        model,
        n_classes,
        {k: v for k, v in params.items() if k in ("C", "max_features", "best_epoch")},
        clock.total,
    )
    return MultiFit(model, proba, params, clock.total, history, est)


def fit_lasso(
    xs: np.ndarray,
    ys: np.ndarray,
    xt: np.ndarray,
    *,
    n_classes: int,
    seed: int,
    class_weight: str | None,
    folds: int = 10,
    cs: int | Sequence[float] = 10,
    max_iter: int = 1000,
    cv_max_rows: int | None = None,
) -> tuple:
    """Multinomial L1 logistic regression; C by stratified CV (accuracy) over ``cs`` (an int:
    log-spaced in [1e-3, 1e2]), the smallest C within one standard error of the best."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import Pipeline

    from featstore.train.lasso import lasso_pipeline

    grid = [float(c) for c in (np.logspace(-3, 2, cs) if isinstance(cs, int) else cs)]
    sub = stratified_subsample(ys, cv_max_rows, seed)
    x_cv, y_cv = (xs, ys) if sub is None else (xs[sub], ys[sub])
    k = cv_folds(y_cv, folds)

    settings = {
        "solver": "saga",
        "tol": 1e-3,
        "class_weight": _weights(ys, n_classes, class_weight),
    }

    def pipe(c: float) -> Pipeline:
        return lasso_pipeline(c, max_iter, seed, settings)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        cv = StratifiedKFold(k, shuffle=True, random_state=seed)
        per_fold = np.array(
            [cross_val_score(pipe(c), x_cv, y_cv, cv=cv, scoring="accuracy") for c in grid]
        )  # (cs, folds)
        scores = per_fold.mean(axis=1)
        errors = fold_score_se(per_fold, axis=1)
        best = one_se_choice(scores, errors)
        fitted = pipe(grid[best]).fit(xs, ys)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        logger.warning(
            "lasso (%d classes): some saga fits did not converge in max_iter=%d; "
            "raise train.lasso_max_iter",
            n_classes,
            max_iter,
        )
    coef = fitted[-1].coef_
    params = {
        "C": grid[best],
        "cs": grid,
        "folds": k,
        "cv_score": float(scores[best]),
        "cv_score_se": float(errors[best]),
        "cv_rows": int(y_cv.size),
        "n_nonzero": int(np.count_nonzero(np.any(coef != 0, axis=0))),
        "solver": "saga",
        "selection_rule": "one standard error",
    }
    return fitted.predict_proba(xt), params, None, fitted


def fit_forest(
    xs: np.ndarray,
    ys: np.ndarray,
    xt: np.ndarray,
    *,
    n_classes: int,
    seed: int,
    class_weight: str | None,
    n_estimators: int = 200,
    max_features: Sequence[Any] = ("sqrt", 0.1, 0.3),
    selection: str = "oob",
    folds: int = 5,
    max_samples: int | None = None,
    n_jobs: int | None = 1,
    cv_max_rows: int | None = None,
) -> tuple:
    """Random forest on standardized inputs; ``max_features`` by out-of-bag accuracy
    (``selection="oob"``: one forest per candidate, the chosen one kept) or stratified CV
    (then a refit), the first candidate within one standard error of the best: the binary
    forest's selector (:func:`featstore.train.forest.choose_forest`), scoring accuracy on the
    most probable class. ``max_samples``: bootstrap rows per tree, an int cap (or a fraction)."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from featstore.train.forest import choose_forest, forest_estimator

    candidates = list(max_features)
    scaler = StandardScaler().fit(xs)
    xs_s, xt_s = scaler.transform(xs), scaler.transform(xt)
    forest = forest_estimator(
        n_estimators=n_estimators, seed=seed, n_jobs=n_jobs, class_weight=class_weight
    )
    choice = choose_forest(
        forest,
        xs_s,
        ys,
        candidates,
        selection=selection,
        scoring="accuracy",
        max_samples=max_samples,
        folds=folds,
        cv_max_rows=cv_max_rows,
        seed=seed,
    )
    params = {
        "max_features": choice.max_features,
        "selection": selection,
        "n_estimators": n_estimators,
        "selection_rule": "one standard error",
        "candidate_scores": [[c, s] for c, s in zip(candidates, choice.scores)],
        "candidate_errors": [[c, e] for c, e in zip(candidates, choice.errors)],
    }
    est = Pipeline([("scale", scaler), ("forest", choice.forest)])
    return choice.forest.predict_proba(xt_s), params, None, est


def fit_dense(
    xs: np.ndarray,
    ys: np.ndarray,
    xt: np.ndarray,
    *,
    n_classes: int,
    seed: int,
    class_weight: str | None,
    hidden: Sequence[int] = (20,),
    epochs: int = 50,
    patience: int = 5,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    validation_fraction: float = 0.1,
) -> tuple:
    """A softmax head on standardized inputs (the binary head's :class:`Standardize` layer),
    early stopping on the validation loss of a held-out tenth of the training rows."""
    import keras

    from featstore.train.dense import HISTORY_KEYS, _batched, _build_head, _moments

    order = np.random.default_rng(seed).permutation(ys.size)
    n_val = max(n_classes, round(validation_fraction * ys.size))
    val, fit = order[:n_val], np.sort(order[n_val:])
    mean, std = _moments(xs[fit])
    keras.utils.set_random_seed(seed)
    model = _build_head(
        xs.shape[1],
        hidden,
        n_classes,
        mean,
        std,
        learning_rate,
        activation="softmax",
        loss="sparse_categorical_crossentropy",
        name="softmax_head",
    )
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", mode="min", patience=patience, restore_best_weights=True
    )
    hist = model.fit(
        xs[fit],
        ys[fit],
        validation_data=(xs[val], ys[val]),
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        callbacks=[stop],
        verbose=0,
        class_weight=_weights(ys[fit], n_classes, class_weight),
    )
    history = {key: [float(v) for v in hist.history.get(key, [])] for key in HISTORY_KEYS}
    val_loss = history["val_loss"]
    params = {
        "hidden": [int(u) for u in hidden],
        "epochs": epochs,
        "epochs_run": len(history["loss"]),
        "best_epoch": int(np.argmin(val_loss)) + 1 if val_loss else 0,
        "best_val_loss": float(min(val_loss)) if val_loss else None,
        "batch_size": batch_size,
        "patience": patience,
        "learning_rate": learning_rate,
        "held_out_rows": int(n_val),
    }
    return _batched(model, xt, 8192), params, history, model


__all__ = ["MODELS", "MultiFit", "check_classes", "fit_multiclass"]

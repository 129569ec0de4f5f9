"""Random forest with ``max_features`` chosen by stratified k-fold CV.

Trees need no feature scaling. ``n_jobs`` goes to the forest (trees are built in threads, sharing
the training matrix), not to the grid search: a process per fold would copy the matrix.

Cost: a forest grows all trees to purity by default, so a fit is roughly linear in rows x
n_estimators x max_features (x log rows); 10 folds x 3 candidates = 30 forests plus the refit.
On large training sets bound it with ``cv_max_rows`` (CV on a stratified subsample, refit on all
rows), ``max_samples`` (bootstrap rows per tree; an int is a cap, so CV and refit trees see
the same number of rows) and/or ``min_samples_leaf``.

Determinism: the fold split and every tree are seeded by ``seed``; the same seed and data give the
same predictions, bit for bit, whatever ``n_jobs``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from featstore.train.base import (
    FitResult,
    check_test,
    check_xy,
    cv_folds,
    scores_to_result,
    stopwatch,
    stratified_subsample,
)

logger = logging.getLogger(__name__)

MaxFeatures = str | int | float


def fit_forest(x_train: Any, y_train: Any, x_test: Any, *, folds: int = 10,
               max_features: Sequence[MaxFeatures] = ("sqrt", 0.1, 0.3),
               n_estimators: int = 200, seed: int = 0, n_jobs: int | None = 1,
               scoring: str = "accuracy", min_samples_leaf: int = 1,
               max_samples: int | float | None = None,
               cv_max_rows: int | None = None) -> FitResult:
    """Fit a random forest, ``max_features`` chosen among the candidates by stratified k-fold
    CV (``scoring``, accuracy by default), refit on all training rows, and predict the test rows.

    With a single candidate there is nothing to choose: no CV is run (``params["folds"] == 0``).
    ``folds`` is reduced (warning logged) when the minority class is smaller. ``max_samples``:
    bootstrap rows per tree, a fraction or an int cap (ignored where the training set is
    smaller). ``cv_max_rows``:
    run the CV on a stratified random subsample of at most that many rows, then refit the chosen
    setting on all training rows.

    params: max_features, n_estimators, folds, cv_score (mean CV score of the choice, None without
    CV), cv_rows, min_samples_leaf, max_samples, n_features.
    """
    xs, ys = check_xy(x_train, y_train)
    xt = check_test(x_test, xs.shape[1])
    candidates = list(max_features) if not isinstance(max_features, (str, int, float)) \
        else [max_features]
    if not candidates:
        raise ValueError("max_features needs at least one candidate")
    forest = RandomForestClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=n_jobs,
                                    min_samples_leaf=min_samples_leaf,
                                    max_features=candidates[0])
    with stopwatch() as sw:
        k, cv_score, cv_rows = 0, None, 0
        chosen: MaxFeatures = candidates[0]
        if len(candidates) > 1:
            sub = stratified_subsample(ys, cv_max_rows, seed)
            x_cv, y_cv = (xs, ys) if sub is None else (xs[sub], ys[sub])
            k = cv_folds(y_cv, folds)
            smallest_fold = y_cv.size - -(-y_cv.size // k)  # rows a CV forest is trained on
            cv_forest = clone(forest).set_params(max_samples=_cap(max_samples, smallest_fold))
            search = GridSearchCV(cv_forest, {"max_features": candidates}, scoring=scoring,
                                  cv=StratifiedKFold(k, shuffle=True, random_state=seed),
                                  refit=False, n_jobs=1)
            search.fit(x_cv, y_cv)
            chosen = search.best_params_["max_features"]
            cv_score, cv_rows = float(search.best_score_), int(y_cv.size)
            if sub is not None:
                logger.info("forest: max_features=%s chosen on %d of %d rows; refitting on all "
                            "rows", chosen, sub.size, ys.size)
        # the refit on all rows (GridSearchCV's own refit would keep the CV-sized max_samples)
        fitted = clone(forest).set_params(max_features=chosen,
                                          max_samples=_cap(max_samples, ys.size))
        fitted.fit(xs, ys)
        y_score = fitted.predict_proba(xt)[:, 1]
    params = {"max_features": chosen, "n_estimators": n_estimators, "folds": k,
              "cv_score": cv_score, "cv_rows": cv_rows, "min_samples_leaf": min_samples_leaf,
              "max_samples": max_samples, "n_features": xs.shape[1]}
    logger.info("forest: max_features=%s, %d trees, %d folds, %.1f s", chosen, n_estimators, k,
                sw.seconds)
    return scores_to_result("forest", y_score, params, sw.seconds, estimator=fitted)


def _cap(max_samples: int | float | None, rows: int) -> int | float | None:
    """scikit-learn rejects an int ``max_samples`` above the rows: treat an int as a cap."""
    if isinstance(max_samples, int) and not isinstance(max_samples, bool):
        if max_samples < 1:
            raise ValueError(f"max_samples must be positive, got {max_samples}")
        return None if max_samples >= rows else max_samples
    return max_samples

"""The multi-class probes' selection (featstore.train.multiclass) on small synthetic data, without
Spark: the lasso's CV uses the binary probes' subsample, fold count and standard error
(featstore.train.base)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.model_selection import StratifiedKFold, cross_val_score

from featstore.train import SingleClassError
from featstore.train.base import cv_folds, fold_score_se, stratified_subsample
from featstore.train.multiclass import fit_multiclass

K = 4
CANDIDATES = (0.05, "sqrt", 0.5, 1.0)
FOREST = {"n_estimators": 20, "max_features": CANDIDATES, "folds": 3}


def _split(n_classes: int, seed: int) -> tuple[np.ndarray, ...]:
    x, y = make_classification(
        n_samples=400,
        n_features=12,
        n_informative=5,
        n_redundant=2,
        n_classes=n_classes,
        n_clusters_per_class=1,
        weights=[0.4, 0.3, 0.2, 0.1] if n_classes == K else None,
        flip_y=0.05,
        random_state=seed,
    )
    x = x.astype(np.float32)
    return x[:300], y[:300], x[300:], y[300:]


@pytest.fixture(scope="module")
def four() -> tuple[np.ndarray, ...]:
    return _split(K, 7)


def test_fold_score_se_is_the_sample_std_over_sqrt_k() -> None:
    folds = np.array([[0.7, 0.6], [0.8, 0.6], [0.9, 0.9]])  # 3 folds x 2 candidates
    se = fold_score_se(folds, axis=0)
    assert se == pytest.approx([0.1 / math.sqrt(3), math.sqrt(0.03) / math.sqrt(3)], abs=1e-15)
    assert fold_score_se(folds.T, axis=1) == pytest.approx(se, abs=1e-15)
    # ddof=0 (GridSearchCV's std_test_score): smaller by sqrt((k - 1) / k)
    assert fold_score_se(folds, axis=0, ddof=0) == pytest.approx(se * math.sqrt(2 / 3), abs=1e-15)


def test_subsample_and_folds_keep_every_class() -> None:
    y = np.repeat(np.arange(K), [50, 30, 15, 5])
    sub = stratified_subsample(y, 40, seed=1)
    assert sub is not None and np.all(np.diff(sub) > 0)
    assert np.bincount(y[sub]).tolist() == [20, 12, 6, 2]  # each class its share, at least 2
    assert stratified_subsample(y, 100, seed=1) is None
    with pytest.raises(ValueError, match="cv_max_rows must be at least 8, got 7"):
        stratified_subsample(y, 7, seed=1)
    with pytest.raises(ValueError, match="cv_max_rows must be at least 4, got 3"):
        stratified_subsample(np.array([0, 1] * 5, dtype=np.int8), 3, seed=1)
    assert cv_folds(y[sub], 5) == 2  # the smallest class bounds the folds
    assert cv_folds(y, 5) == 5
    with pytest.raises(SingleClassError, match="has 1 member"):
        cv_folds(np.array([0, 0, 1, 1, 2]), 3)


def test_multiclass_lasso_cv_uses_the_shared_subsample_folds_and_error(four, caplog) -> None:
    x, y, xt, _ = four
    with caplog.at_level(logging.WARNING, logger="featstore.train.base"):
        fit = fit_multiclass(
            "lasso", x, y, xt, n_classes=K, seed=2, cs=[0.1, 1.0], folds=10, cv_max_rows=40
        )
    sub = stratified_subsample(y, 40, seed=2)
    assert fit.params["cv_rows"] == sub.size
    # the smallest class has 4 rows in the subsample: 4 folds, said in one warning
    assert fit.params["folds"] == np.bincount(y[sub]).min() == 4
    assert "fewer than 10 folds: using 4 folds" in caplog.text
    cv = StratifiedKFold(4, shuffle=True, random_state=2)
    from featstore.train.lasso import lasso_pipeline

    settings = {"solver": "saga", "tol": 1e-3, "class_weight": None}
    per_fold = cross_val_score(
        lasso_pipeline(fit.params["C"], 1000, 2, settings), x[sub], y[sub], cv=cv
    )
    assert fit.params["cv_score"] == pytest.approx(per_fold.mean(), abs=1e-12)
    assert fit.params["cv_score_se"] == pytest.approx(per_fold.std(ddof=1) / 2, abs=1e-12)

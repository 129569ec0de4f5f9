"""The multi-class probes' selection (featstore.train.multiclass) on small synthetic data, without
Spark: the forest chooses ``max_features`` with the binary forest's selector
(featstore.train.forest.choose_forest), the lasso's CV uses the binary probes' subsample, fold
count and standard error (featstore.train.base)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.preprocessing import StandardScaler

from featstore.train import SingleClassError
from featstore.train.base import cv_folds, fold_score_se, one_se_choice, stratified_subsample
from featstore.train.forest import choose_forest, fit_forest, forest_estimator
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


def _oob_by_hand(xs, ys, seed) -> tuple[list[float], list[float]]:
    """Out-of-bag accuracy (most probable class, rows never out of bag left out) and its binomial
    standard error per candidate, with scikit-learn directly."""
    scores, errors = [], []
    for mf in CANDIDATES:
        f = RandomForestClassifier(
            n_estimators=FOREST["n_estimators"], max_features=mf, random_state=seed, oob_score=True
        ).fit(xs, ys)
        proba = f.oob_decision_function_
        covered = proba.sum(axis=1) > 0
        s = float(np.mean(np.argmax(proba[covered], axis=1) == ys[covered]))
        scores.append(s)
        errors.append(math.sqrt(s * (1 - s) / covered.sum()))
    return scores, errors


def _cv_by_hand(xs, ys, seed) -> tuple[list[float], list[float]]:
    """Stratified 3-fold CV accuracy per candidate; the standard error of every probe's CV (the
    sample standard deviation over sqrt(k))."""
    cv = StratifiedKFold(3, shuffle=True, random_state=seed)
    per_fold = [
        cross_val_score(
            RandomForestClassifier(
                n_estimators=FOREST["n_estimators"], max_features=mf, random_state=seed
            ),
            xs,
            ys,
            cv=cv,
        )
        for mf in CANDIDATES
    ]
    return [float(f.mean()) for f in per_fold], [
        float(f.std(ddof=1) / math.sqrt(3)) for f in per_fold
    ]


@pytest.mark.parametrize("selection", ["oob", "cv"])
def test_multiclass_forest_chooses_with_the_shared_selector(four, selection) -> None:
    x, y, xt, _ = four
    fit = fit_multiclass("forest", x, y, xt, n_classes=K, seed=3, selection=selection, **FOREST)
    scaler = StandardScaler().fit(x)
    xs = scaler.transform(x)
    choice = choose_forest(
        forest_estimator(n_estimators=20, seed=3, n_jobs=1, class_weight=None),
        xs,
        y,
        CANDIDATES,
        selection=selection,
        scoring="accuracy",
        max_samples=None,
        folds=3,
        cv_max_rows=None,
        seed=3,
    )
    params = fit.params
    assert params["candidate_scores"] == [[c, s] for c, s in zip(CANDIDATES, choice.scores)]
    assert params["candidate_errors"] == [[c, e] for c, e in zip(CANDIDATES, choice.errors)]
    assert params["max_features"] == choice.max_features
    want = choice.forest.predict_proba(scaler.transform(xt)).astype(np.float32)  # MultiFit's dtype
    assert np.array_equal(fit.proba, want)
    # ... and what the selector returns is the out-of-bag / CV accuracy and the one-SE choice
    scores, errors = (_oob_by_hand if selection == "oob" else _cv_by_hand)(xs, y, 3)
    assert choice.scores == pytest.approx(scores, abs=1e-12)
    assert choice.errors == pytest.approx(errors, abs=1e-12)
    assert params["max_features"] == CANDIDATES[one_se_choice(scores, errors)]
    assert params["selection"] == selection and params["selection_rule"] == "one standard error"


@pytest.mark.parametrize(
    ("selection", "class_weight", "cv_max_rows"),
    [("oob", None, None), ("oob", "balanced", None), ("cv", "balanced", 120)],
)
def test_two_class_multiclass_forest_is_the_binary_forest(selection, class_weight, cv_max_rows):
    x, y, xt, _ = _split(2, 11)
    kw = {
        "seed": 5,
        "selection": selection,
        "class_weight": class_weight,
        "cv_max_rows": cv_max_rows,
    }
    binary = fit_forest(x, y, xt, **FOREST, **kw)
    multi = fit_multiclass("forest", x, y, xt, n_classes=2, **FOREST, **kw)
    for key in ("max_features", "candidate_scores", "candidate_errors", "selection"):
        assert multi.params[key] == binary.params[key], key
    assert np.array_equal(multi.proba[:, 1], binary.y_score)


def test_multiclass_forest_refuses_binary_only_oob_scorings(four) -> None:
    x, y, _, _ = four
    with pytest.raises(ValueError, match="with 4 classes supports scoring accuracy, balanced_acc"):
        choose_forest(
            forest_estimator(n_estimators=5, seed=0, n_jobs=1, class_weight=None),
            x,
            y,
            CANDIDATES,
            selection="oob",
            scoring="roc_auc",
            max_samples=None,
            folds=3,
            cv_max_rows=None,
            seed=0,
        )


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

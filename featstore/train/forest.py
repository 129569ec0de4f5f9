"""Random forest with ``max_features`` chosen among candidates by out-of-bag score or by
stratified k-fold CV.

Inputs are standardized (fitted on the training rows) before the trees see them: trees are
invariant to scale in theory, but scikit-learn's splitter treats a feature whose range is below
1e-7 as constant, so random-weight MobileNetV2 embeddings (~1e-12) gave forests that predicted
one class. The saved estimator is ``StandardScaler -> forest`` (a Pipeline).

The choice among ``max_features`` candidates uses the one-standard-error rule
(:func:`~featstore.train.base.one_se_choice`, the candidates in the given order, fewest features
first by default): the first candidate whose score is within one standard error of the best
(out-of-bag: the binomial ``sqrt(s (1 - s) / n)`` over the covered rows; CV:
:func:`~featstore.train.base.fold_score_se` of the fold scores, the lasso's standard error),
so a margin of one row cannot flip it. ``n_jobs`` goes to the forest (trees
are built in threads, sharing the training matrix), not to the grid search: a process per fold
would copy the matrix.

Selection (``selection``):

* ``"oob"`` (the training grid's default): one forest per candidate on ALL training rows
  (bootstrap, ``oob_score``); each row is scored only by the trees whose bootstrap sample left it
  out. The candidate with the best out-of-bag score wins (ties: the first candidate in the given
  order) and that forest, already fitted, predicts the test rows: no refit.
* ``"cv"`` (this function's default, the earlier behaviour): stratified k-fold CV over the
  candidates (on at most ``cv_max_rows`` rows), then a refit of the choice on all rows.

Out-of-bag coverage: a row drawn into every tree's bootstrap sample has no out-of-bag prediction.
Such rows are left out of the score (scikit-learn's own ``oob_score_`` would count them as
predicted class 0; its warning about them is silenced and replaced by ours). With ``m`` rows per
tree out of ``n``, a row is out of bag for one tree with probability about ``exp(-m/n)``, so
``n_estimators`` trees leave ``(1 - exp(-m/n)) ** n_estimators`` of the rows uncovered (10 % for
5 trees of all rows, 1 % for 10, 0.01 % for 20; nothing measurable for 50 trees of 20,000 out of
160,000 rows). Where the expected coverage is below 50 % (in practice: a single tree of all rows)
``selection="oob"`` is a ``ValueError`` (use more trees or ``selection="cv"``); a measured
coverage below 95 % is logged as a warning.

Scoring: ``"cv"`` takes any scikit-learn scorer name. ``"oob"`` computes the score from the
out-of-bag class probabilities and supports ``accuracy`` (the default), ``balanced_accuracy``,
``f1`` and ``roc_auc`` (the last two: two classes only); anything else is a ``ValueError``.

One selector for both kinds of probe: :func:`choose_forest` (out-of-bag or CV choice, then the
forest fitted on all rows) serves :func:`fit_forest` (0/1 labels) and the multi-class forest
(:func:`featstore.train.multiclass.fit_forest`, class indices ``0..K-1``, accuracy). With K
classes the out-of-bag prediction of a row is its most probable class (ties: the lower index;
for two classes the same as ``P(1) > P(0)``), the CV subsample keeps every class's share
(:func:`~featstore.train.base.stratified_subsample`) and the folds are bounded by the smallest
class (:func:`~featstore.train.base.cv_folds`).

Cost: a forest grows all trees to purity by default, so a fit is roughly linear in rows x
n_estimators x max_features (x log rows). With ``selection="cv"``, folds x candidates forests
plus the refit (grid defaults: 5 x 3 + 1 = 16 forests); with ``selection="oob"``, one forest
per candidate (3) plus the out-of-bag predictions (each tree predicts the rows it did not see).
A 50-tree forest with CV at 162,768 rows x 64 dims took 209.5 s (lasso: 9.2 s);
``bench/bench_forest.py`` at 162,770 rows x 64 dims, 50 trees (2 shared cores): CV 313.6 s,
OOB 94.9 s (3.3x), test accuracy 0.782 vs 0.783. On large training sets bound the cost
with ``max_samples`` (bootstrap rows per tree; an int is a cap, so CV and refit trees see the
same number of rows), ``cv_max_rows`` (CV on a stratified subsample; ``"cv"`` only) and/or
``min_samples_leaf``.

Determinism: the fold split and every tree (its bootstrap sample included) are seeded by
``seed``; the same seed and data give the same choice and predictions, bit for bit, whatever
``n_jobs``.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from featstore.timing import Phases
from featstore.train.base import (
    FitResult,
    check_test,
    check_xy,
    class_weight_arg,
    cv_folds,
    fold_score_se,
    one_se_choice,
    scores_to_result,
    stratified_subsample,
)

logger = logging.getLogger(__name__)

MaxFeatures = str | int | float

SELECTIONS = ("oob", "cv")
#: Below this expected share of rows with an out-of-bag prediction, ``selection="oob"`` refuses.
MIN_EXPECTED_OOB_COVERAGE = 0.5
#: Below this measured share, a warning is logged (the score rests on fewer rows).
WARN_OOB_COVERAGE = 0.95


def _oob_class(proba: np.ndarray) -> np.ndarray:
    """The predicted class of each row: the most probable one, ties to the lower index (as
    scikit-learn's ``oob_score_``; for two classes the same as ``P(1) > P(0)``)."""
    return np.argmax(proba, axis=1)


# scorers on out-of-bag class probabilities (rows x classes 0..K-1) -> score, higher is better
_OOB_SCORERS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda y, p: accuracy_score(y, _oob_class(p)),
    "balanced_accuracy": lambda y, p: balanced_accuracy_score(y, _oob_class(p)),
    "f1": lambda y, p: f1_score(y, _oob_class(p), zero_division=0.0),
    "roc_auc": lambda y, p: roc_auc_score(y, p[:, 1]),
}
OOB_SCORINGS = tuple(_OOB_SCORERS)
#: Out-of-bag scorings of two classes only (``f1`` of class 1, ``roc_auc`` of ``P(1)``).
BINARY_OOB_SCORINGS = ("f1", "roc_auc")


@dataclass
class ForestChoice:
    """What :func:`choose_forest` chose: ``max_features``, the forest with it fitted on all the
    training rows (None only inside the selector, before the refit), and how the choice was
    made. ``scores``/``errors``: every candidate's score and standard error in the given order
    (empty without a choice); ``folds`` (0 without CV), ``cv_score`` and ``cv_rows`` (CV),
    ``oob_score`` and ``oob_coverage`` (out-of-bag) describe the choice; None (0) where not
    used."""

    max_features: MaxFeatures
    forest: RandomForestClassifier | None
    scores: list[float] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)
    folds: int = 0
    cv_score: float | None = None
    cv_rows: int = 0
    oob_score: float | None = None
    oob_coverage: float | None = None


def forest_estimator(
    *,
    n_estimators: int,
    seed: int,
    n_jobs: int | None,
    class_weight: str | None,
    min_samples_leaf: int = 1,
) -> RandomForestClassifier:
    """The unfitted forest every probe starts from (binary and multi-class): seeded by ``seed``,
    ``class_weight`` as :func:`~featstore.train.base.class_weight_arg` reads it; its
    ``max_features`` is set by :func:`choose_forest`."""
    return RandomForestClassifier(
        n_estimators=n_estimators,
        random_state=seed,
        n_jobs=n_jobs,
        min_samples_leaf=min_samples_leaf,
        class_weight=class_weight_arg(class_weight),
    )


def fit_forest(
    x_train: Any,
    y_train: Any,
    x_test: Any,
    *,
    folds: int = 10,
    max_features: Sequence[MaxFeatures] = ("sqrt", 0.1, 0.3),
    n_estimators: int = 200,
    seed: int = 0,
    n_jobs: int | None = 1,
    scoring: str = "accuracy",
    min_samples_leaf: int = 1,
    max_samples: int | float | None = None,
    cv_max_rows: int | None = None,
    selection: str = "cv",
    class_weight: str | None = None,
) -> FitResult:
    """Fit a random forest, ``max_features`` chosen among the candidates (``scoring``, accuracy
    by default), and predict the test rows.

    ``selection="oob"``: one forest per candidate on all training rows, chosen by out-of-bag
    score (ties: first candidate), that forest kept (no refit); ``folds`` and ``cv_max_rows``
    are not used. ``selection="cv"``: stratified k-fold CV, then a refit on all training rows;
    ``folds`` is reduced (warning logged) when the minority class is smaller; ``cv_max_rows``:
    run the CV on a stratified random subsample of at most that many rows. See the module
    docstring for out-of-bag coverage and the supported ``scoring`` values.

    With a single candidate there is nothing to choose: one forest on all rows, no CV or
    out-of-bag scoring (``params["folds"] == 0``, scores None). ``max_samples``: bootstrap rows
    per tree, a fraction or an int cap (ignored where the training set is smaller).

    params: selection, scoring, max_features (the choice), n_estimators, folds (0 without CV),
    cv_score (mean CV score of the choice, None without CV), cv_rows, oob_score (out-of-bag score
    of the choice, None without it), oob_coverage (share of training rows with an out-of-bag
    prediction, None without it), candidate_scores ([max_features, score] per candidate in the
    given order; empty without a choice), min_samples_leaf, max_samples, n_features.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    xs, ys = check_xy(x_train, y_train)
    xt = check_test(x_test, xs.shape[1])
    scaler = StandardScaler().fit(xs)
    xs, xt = scaler.transform(xs), scaler.transform(xt)
    candidates = (
        list(max_features) if not isinstance(max_features, (str, int, float)) else [max_features]
    )
    forest = forest_estimator(
        n_estimators=n_estimators,
        seed=seed,
        n_jobs=n_jobs,
        class_weight=class_weight,
        min_samples_leaf=min_samples_leaf,
    )
    clock = Phases()
    with clock("fit"):
        choice = choose_forest(
            forest,
            xs,
            ys,
            candidates,
            selection=selection,
            scoring=scoring,
            max_samples=max_samples,
            folds=folds,
            cv_max_rows=cv_max_rows,
            seed=seed,
        )
        y_score = choice.forest.predict_proba(xt)[:, 1]
    fitted = Pipeline([("scale", scaler), ("forest", choice.forest)])
    params = {
        "selection": selection,
        "scoring": scoring,
        "max_features": choice.max_features,
        "selection_rule": "one standard error",
        "class_weight": class_weight,
        "n_estimators": n_estimators,
        "folds": choice.folds,
        "cv_score": choice.cv_score,
        "cv_rows": choice.cv_rows,
        "oob_score": choice.oob_score,
        "oob_coverage": choice.oob_coverage,
        "candidate_scores": [[c, s] for c, s in zip(candidates, choice.scores)],
        "candidate_errors": [[c, e] for c, e in zip(candidates, choice.errors)],
        "min_samples_leaf": min_samples_leaf,
        "max_samples": max_samples,
        "n_features": xs.shape[1],
    }
    logger.info(
        "forest: max_features=%s by %s, %d trees, %.1f s",
        choice.max_features,
        selection if len(candidates) > 1 else "default (one candidate)",
        n_estimators,
        clock.total,
    )
    return scores_to_result("forest", y_score, params, clock.total, estimator=fitted)


def choose_forest(
    forest: RandomForestClassifier,
    xs: np.ndarray,
    ys: np.ndarray,
    candidates: Sequence[MaxFeatures],
    *,
    selection: str,
    scoring: str,
    max_samples: int | float | None,
    folds: int,
    cv_max_rows: int | None,
    seed: int,
) -> ForestChoice:
    """The one ``max_features`` selector of the forest probes, binary (``ys`` 0/1) and
    multi-class (``ys`` class indices ``0..K-1``, every class present): the one-SE choice among
    ``candidates`` (in order of preference) by out-of-bag score (``selection="oob"``) or
    stratified k-fold CV (``"cv"``), and ``forest`` (unfitted; its other settings are kept) with
    that ``max_features`` fitted on all of ``xs`` (standardized). A single candidate: that
    forest, no scoring. ``max_samples``: bootstrap rows per tree, a fraction or an int cap. See
    the module docstring for the rules, the coverage checks and the supported ``scoring``."""
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    candidates = list(candidates)
    if not candidates:
        raise ValueError("max_features needs at least one candidate")
    cap = _cap(max_samples, ys.size)
    if len(candidates) == 1:
        choice = ForestChoice(candidates[0], None)
    elif selection == "oob":
        _check_oob_settings(scoring, forest.n_estimators, cap, ys.size, np.unique(ys).size)
        choice = _select_oob(forest, xs, ys, candidates, cap, scoring)
    else:
        choice = _select_cv(
            forest, xs, ys, candidates, max_samples, scoring, folds, cv_max_rows, seed
        )
    if choice.forest is None:
        # the refit on all rows (GridSearchCV's own refit would keep the CV-sized max_samples)
        choice.forest = clone(forest).set_params(max_features=choice.max_features, max_samples=cap)
        choice.forest.fit(xs, ys)
    return choice


def expected_oob_coverage(n_estimators: int, rows_per_tree: int, rows: int) -> float:
    """Expected share of ``rows`` left out of at least one of ``n_estimators`` bootstrap
    samples of ``rows_per_tree`` rows drawn with replacement."""
    p_out = math.exp(rows_per_tree * math.log1p(-1.0 / rows)) if rows > 1 else 0.0
    return 1.0 - (1.0 - p_out) ** n_estimators


def _check_oob_settings(
    scoring: str, n_estimators: int, max_samples: int | float | None, rows: int, n_classes: int
) -> None:
    if scoring not in _OOB_SCORERS:
        raise ValueError(
            f"selection='oob' supports scoring {', '.join(OOB_SCORINGS)}, got "
            f"{scoring!r}; use selection='cv' for other scorers"
        )
    if n_classes > 2 and scoring in BINARY_OOB_SCORINGS:
        raise ValueError(
            f"selection='oob' with {n_classes} classes supports scoring "
            f"{', '.join(s for s in OOB_SCORINGS if s not in BINARY_OOB_SCORINGS)}, got "
            f"{scoring!r}; use selection='cv' for other scorers"
        )
    per_tree = (
        rows
        if max_samples is None
        else (max_samples if isinstance(max_samples, int) else max(1, round(max_samples * rows)))
    )
    expected = expected_oob_coverage(n_estimators, per_tree, rows)
    if expected < MIN_EXPECTED_OOB_COVERAGE:
        raise ValueError(
            f"selection='oob' with {n_estimators} tree(s) of {per_tree} rows leaves about "
            f"{1 - expected:.0%} of the {rows} training rows never out of bag: use more trees "
            "(n_estimators), a smaller max_samples, or selection='cv'"
        )


def _select_cv(
    forest: RandomForestClassifier,
    xs: np.ndarray,
    ys: np.ndarray,
    candidates: list[MaxFeatures],
    max_samples: int | float | None,
    scoring: str,
    folds: int,
    cv_max_rows: int | None,
    seed: int,
) -> ForestChoice:
    """Stratified k-fold CV of every candidate (on at most ``cv_max_rows`` rows); the choice is
    the first candidate within one standard error of the best mean score. Returns the choice, the
    score and standard error of every candidate, the folds, the choice's score and the rows the
    CV ran on (no forest: the caller refits the choice on all rows)."""
    sub = stratified_subsample(ys, cv_max_rows, seed)
    x_cv, y_cv = (xs, ys) if sub is None else (xs[sub], ys[sub])
    k = cv_folds(y_cv, folds)
    smallest_fold = y_cv.size - -(-y_cv.size // k)  # rows a CV forest is trained on
    cv_forest = clone(forest).set_params(max_samples=_cap(max_samples, smallest_fold))
    search = GridSearchCV(
        cv_forest,
        {"max_features": candidates},
        scoring=scoring,
        cv=StratifiedKFold(k, shuffle=True, random_state=seed),
        refit=False,
        n_jobs=1,
    )
    search.fit(x_cv, y_cv)
    scores = [float(s) for s in search.cv_results_["mean_test_score"]]
    fold_scores = [search.cv_results_[f"split{i}_test_score"] for i in range(k)]  # (k, candidates)
    # not GridSearchCV's std_test_score (ddof=0): the one standard error of every probe
    errors = [float(e) for e in fold_score_se(fold_scores, axis=0)]
    pick = one_se_choice(scores, errors)
    chosen = candidates[pick]
    if sub is not None:
        logger.info(
            "forest: max_features=%s chosen on %d of %d rows; refitting on all rows",
            chosen,
            sub.size,
            ys.size,
        )
    return ForestChoice(
        chosen, None, scores, errors, folds=k, cv_score=scores[pick], cv_rows=int(y_cv.size)
    )


def _select_oob(
    forest: RandomForestClassifier,
    xs: np.ndarray,
    ys: np.ndarray,
    candidates: list[MaxFeatures],
    max_samples: int | float | None,
    scoring: str,
) -> ForestChoice:
    """One forest per candidate on all rows; the choice is the first candidate within one
    standard error of the best out-of-bag score. Returns the choice, its fitted forest, the
    score and standard error of every candidate, the choice's score and the out-of-bag
    coverage. Only the best forest so far is kept in memory; the chosen one is refitted (the
    same seed: the same trees) only where the one-SE choice is not the best."""
    scorer = _OOB_SCORERS[scoring]
    best: tuple[MaxFeatures, RandomForestClassifier, float, float] | None = None
    scores: list[float] = []
    errors: list[float] = []
    for candidate in candidates:
        model = clone(forest).set_params(
            max_features=candidate, max_samples=max_samples, bootstrap=True, oob_score=True
        )
        with warnings.catch_warnings():
            # rows never out of bag: handled below (left out of the score), not as sklearn does
            warnings.filterwarnings(
                "ignore", message="Some inputs do not have OOB scores", category=UserWarning
            )
            model.fit(xs, ys)
        proba = np.asarray(model.oob_decision_function_)
        covered = proba.sum(axis=1) > 0
        coverage = float(covered.mean())
        y_cov = ys[covered]
        if y_cov.size == 0 or (scoring == "roc_auc" and np.unique(y_cov).size < 2):
            raise ValueError(
                f"selection='oob': too few out-of-bag rows to score "
                f"({y_cov.size} of {ys.size}); use more trees or selection='cv'"
            )
        if not scores and coverage < WARN_OOB_COVERAGE:
            # once: the bootstrap samples (so the coverage) depend on the seed, not max_features
            logger.warning(
                "forest: only %.1f%% of %d training rows have an out-of-bag "
                "prediction (%d trees); the out-of-bag scores rest on those rows "
                "(more trees would cover more)",
                100 * coverage,
                ys.size,
                len(model.estimators_),
            )
        # columns: classes_ 0..K-1 (check_xy / check_classes ensured every class is present)
        score = float(scorer(y_cov, proba[covered]))
        scores.append(score)
        # binomial standard error over the covered rows (for every scorer: a tolerance, not a test)
        errors.append(math.sqrt(max(score * (1.0 - score), 0.0) / y_cov.size))
        logger.debug("forest: max_features=%s, out-of-bag %s %.4f", candidate, scoring, score)
        if best is None or score > best[2]:
            best = (candidate, model, score, coverage)
        # a forest that lost is dropped here: only the best one so far is kept in memory
    assert best is not None
    chosen = candidates[one_se_choice(scores, errors)]
    fitted, coverage = best[1], best[3]
    if chosen != best[0]:  # the same seed: the very forest that was scored, fitted again
        fitted = clone(forest).set_params(
            max_features=chosen, max_samples=max_samples, bootstrap=True, oob_score=False
        )
        fitted.fit(xs, ys)
    return ForestChoice(
        chosen,
        fitted,
        scores,
        errors,
        oob_score=scores[candidates.index(chosen)],
        oob_coverage=coverage,
    )


def _cap(max_samples: int | float | None, rows: int) -> int | float | None:
    """scikit-learn rejects an int ``max_samples`` above the rows: treat an int as a cap."""
    if isinstance(max_samples, int) and not isinstance(max_samples, bool):
        if max_samples < 1:
            raise ValueError(f"max_samples must be positive, got {max_samples}")
        return None if max_samples >= rows else max_samples
    return max_samples

"""The fitting functions on small synthetic data: 400 train / 200 val / 1000 test rows x 16
features; the "signal" label is a noisy linear function of features 0-2, the "noise" label is
independent of the features (30% positive). Each model must beat the majority baseline clearly on
the signal and stay near it on the noise."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from featstore.train import FitResult, SingleClassError, check_binary
from featstore.train.forest import fit_forest
from featstore.train.lasso import fit_lasso

N_TRAIN, N_VAL, N_TEST, DIM = 400, 200, 1000, 16
FOREST = {"folds": 3, "n_estimators": 30}
DENSE = {"epochs": 15, "patience": 3, "batch_size": 32, "learning_rate": 1e-2}


def _sample(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    signal = x[:, :3] @ np.array([1.0, -1.0, 1.0]) + rng.normal(size=n) > 0.5
    noise = rng.random(n) < 0.3
    return {"x": x, "signal": signal.astype(np.int8), "noise": noise.astype(np.int8)}


@pytest.fixture(scope="module")
def data() -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(20261123)
    return {
        split: _sample(rng, n)
        for split, n in (("train", N_TRAIN), ("val", N_VAL), ("test", N_TEST))
    }


def _majority(y: np.ndarray) -> float:
    return float(max(y.mean(), 1.0 - y.mean()))


def _dense(data: dict[str, dict[str, np.ndarray]], label: str, **kw: Any) -> FitResult:
    from featstore.train.dense import fit_dense

    tr, va, te = data["train"], data["val"], data["test"]
    return fit_dense(tr["x"], tr[label], va["x"], va[label], te["x"], **{**DENSE, **kw})


def _fit(model: str, data: dict[str, dict[str, np.ndarray]], label: str, **kw: Any) -> FitResult:
    tr, te = data["train"], data["test"]
    if model == "lasso":
        return fit_lasso(tr["x"], tr[label], te["x"], folds=3, **kw)
    if model == "forest":
        return fit_forest(tr["x"], tr[label], te["x"], **{**FOREST, **kw})
    return _dense(data, label, **kw)


@pytest.fixture(scope="module")
def fitted(data: dict[str, dict[str, np.ndarray]]) -> Callable[[str, str], FitResult]:
    """Fits shared between tests (each model x label fitted once per module)."""
    cache: dict[tuple[str, str], FitResult] = {}

    def get(model: str, label: str) -> FitResult:
        if (model, label) not in cache:
            cache[model, label] = _fit(model, data, label)
        return cache[model, label]

    return get


MODELS = ["lasso", "forest", "dense"]


@pytest.mark.parametrize("model", MODELS)
def test_beats_majority_on_signal(model: str, data, fitted) -> None:
    result = fitted(model, "signal")
    y = data["test"]["signal"]
    assert result.model == model
    assert result.y_pred.shape == result.y_score.shape == (N_TEST,)
    assert result.y_pred.dtype == np.int8 and result.y_score.dtype == np.float32
    assert np.array_equal(result.y_pred, (result.y_score > 0.5).astype(np.int8))
    assert result.accuracy(y) > _majority(y) + 0.15
    assert result.fit_seconds > 0
    json.dumps(result.params)


@pytest.mark.parametrize("model", MODELS)
def test_near_majority_on_noise(model: str, data, fitted) -> None:
    y = data["test"]["noise"]
    accuracy = fitted(model, "noise").accuracy(y)
    assert abs(accuracy - _majority(y)) < 0.05, (accuracy, _majority(y))


def test_lasso_zeroes_noise_coefficients(fitted) -> None:
    signal, noise = fitted("lasso", "signal").params, fitted("lasso", "noise").params
    assert signal["n_features"] == DIM and signal["folds"] == 3
    assert 3 <= signal["n_nonzero"] <= 7, signal
    assert noise["n_nonzero"] <= 2, noise
    assert signal["C"] in signal["cs"] and len(signal["cs"]) == 12


def test_lasso_picks_the_sparsest_c_within_one_standard_error(data) -> None:
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    tr = data["train"]
    result = _fit("lasso", data, "signal")
    params = result.params
    # the fold scores, computed directly with scikit-learn
    direct = LogisticRegressionCV(
        Cs=12,
        l1_ratios=(1.0,),
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
        scoring="accuracy",
        solver="liblinear",
        tol=1e-5,
        intercept_scaling=1e4,
        random_state=0,
        use_legacy_attributes=False,
        max_iter=1000,
    ).fit(StandardScaler().fit_transform(tr["x"]), tr["signal"])
    folds = np.asarray(direct.scores_).reshape(3, -1)
    scores = folds.mean(axis=0).tolist()
    errors = (folds.std(axis=0, ddof=1) / np.sqrt(3)).tolist()
    chosen = _within_one_se(scores, errors)
    assert params["C"] == pytest.approx(float(direct.Cs_[chosen]))
    assert params["C"] <= params["cv_best_C"]  # never less sparse than the plain argmax
    assert params["cv_score"] == pytest.approx(scores[chosen])
    assert params["selection_rule"] == "one standard error"


def test_lasso_deterministic_and_silent(data, fitted) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = _fit("lasso", data, "signal")
    assert np.array_equal(again.y_score, fitted("lasso", "signal").y_score)
    assert again.params == fitted("lasso", "signal").params


def test_lasso_cv_on_subsample_then_refit(data) -> None:
    result = _fit("lasso", data, "signal", cv_max_rows=150)
    y = data["test"]["signal"]
    params = result.params
    assert 140 <= params["cv_rows"] <= 152
    assert params["C"] == pytest.approx(params["cv_C"] * np.sqrt(params["cv_rows"] / N_TRAIN))
    assert result.accuracy(y) > _majority(y) + 0.15


def test_forest_deterministic_and_records_choice(data, fitted) -> None:
    first = fitted("forest", "signal")
    again = _fit("forest", data, "signal")
    assert np.array_equal(again.y_score, first.y_score)
    assert first.params["max_features"] in ("sqrt", 0.1, 0.3)
    assert first.params["n_estimators"] == 30 and first.params["folds"] == 3
    other = _fit("forest", data, "signal", seed=1)
    assert not np.array_equal(other.y_score, first.y_score)


# ------------------------------------------------------------------ forest: out-of-bag selection

OOB_CANDIDATES = (0.1, 0.5, "sqrt")  # 1, 8 and 4 of the 16 features: three different forests


def _sklearn_oob_forests(
    x: np.ndarray,
    y: np.ndarray,
    candidates: tuple[Any, ...],
    *,
    seed: int = 0,
    max_samples: int | None = None,
) -> list[Any]:
    """The forests fit_forest(selection="oob") should fit, built directly with scikit-learn
    (on the standardized training rows, as fit_forest standardizes)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.preprocessing import StandardScaler

    xs = StandardScaler().fit_transform(x)
    return [
        RandomForestClassifier(
            n_estimators=FOREST["n_estimators"],
            random_state=seed,
            max_features=c,
            bootstrap=True,
            oob_score=True,
            max_samples=max_samples,
            min_samples_leaf=1,
            n_jobs=1,
        ).fit(xs, y)
        for c in candidates
    ]


def _within_one_se(scores: list[float], errors: list[float]) -> int:
    """The one-standard-error rule, written out: the first candidate whose score is at least
    the best score minus the best's standard error."""
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return next(i for i, s in enumerate(scores) if s >= scores[best] - errors[best] - 1e-12)


@pytest.fixture(scope="module")
def oob_signal(data) -> FitResult:
    return _fit(
        "forest", data, "signal", selection="oob", max_features=OOB_CANDIDATES, max_samples=200
    )


def test_forest_oob_picks_the_first_candidate_within_one_se_and_its_forest(
    data, oob_signal
) -> None:
    from sklearn.preprocessing import StandardScaler

    tr, te = data["train"], data["test"]
    direct = _sklearn_oob_forests(tr["x"], tr["signal"], OOB_CANDIDATES, max_samples=200)
    expected = [f.oob_score_ for f in direct]
    assert len(set(expected)) > 1  # the choice is not trivial
    errors = [float(np.sqrt(s * (1 - s) / len(tr["signal"]))) for s in expected]
    chosen = _within_one_se(expected, errors)
    params = oob_signal.params
    assert [c for c, _ in params["candidate_scores"]] == list(OOB_CANDIDATES)
    assert [s for _, s in params["candidate_scores"]] == pytest.approx(expected, abs=1e-12)
    assert [e for _, e in params["candidate_errors"]] == pytest.approx(errors, abs=1e-12)
    assert params["max_features"] == OOB_CANDIDATES[chosen]
    assert params["oob_score"] == pytest.approx(expected[chosen], abs=1e-12)
    # the chosen candidate's forest (same seed, same trees) predicts the standardized test rows
    xt = StandardScaler().fit(tr["x"]).transform(te["x"])
    want = direct[chosen].predict_proba(xt)[:, 1].astype(np.float32)
    assert np.array_equal(oob_signal.y_score, want)
    forest = oob_signal.estimator[-1]
    assert forest.max_features == OOB_CANDIDATES[chosen] and len(forest.estimators_) == 30


def test_forest_oob_params(oob_signal) -> None:
    params = oob_signal.params
    assert params["selection"] == "oob" and params["scoring"] == "accuracy"
    assert params["folds"] == 0 and params["cv_score"] is None and params["cv_rows"] == 0
    chosen = dict(map(tuple, params["candidate_scores"]))[params["max_features"]]
    assert params["oob_score"] == chosen and params["selection_rule"] == "one standard error"
    assert params["oob_coverage"] == 1.0  # 30 trees of 200 of 400 rows: every row out of bag
    assert params["n_estimators"] == 30 and params["max_samples"] == 200
    assert params["n_features"] == DIM
    assert json.loads(json.dumps(params)) == params


def test_forest_oob_beats_majority_on_signal_not_on_noise(data, oob_signal) -> None:
    y = data["test"]["signal"]
    assert oob_signal.accuracy(y) > _majority(y) + 0.15
    assert np.array_equal(oob_signal.y_pred, (oob_signal.y_score > 0.5).astype(np.int8))
    noise = _fit("forest", data, "noise", selection="oob")
    y = data["test"]["noise"]
    assert abs(noise.accuracy(y) - _majority(y)) < 0.05


def test_forest_oob_deterministic_whatever_n_jobs(data, oob_signal) -> None:
    kw = {"selection": "oob", "max_features": OOB_CANDIDATES, "max_samples": 200}
    threads = _fit("forest", data, "signal", n_jobs=2, **kw)
    assert np.array_equal(threads.y_score, oob_signal.y_score)
    assert threads.params == oob_signal.params
    other = _fit("forest", data, "signal", seed=1, **kw)
    assert not np.array_equal(other.y_score, oob_signal.y_score)


@pytest.mark.parametrize("order", [(4, "sqrt"), ("sqrt", 4)])
def test_forest_oob_ties_go_to_the_first_candidate(data, order) -> None:
    result = _fit("forest", data, "signal", selection="oob", max_features=order)
    (_, first), (_, second) = result.params["candidate_scores"]
    assert first == second  # sqrt(16) = 4: the same forest twice
    assert result.params["max_features"] == order[0]


def test_forest_cv_selection_still_works(data, fitted) -> None:
    tr = data["train"]
    result = _fit("forest", data, "signal", selection="cv", max_features=OOB_CANDIDATES)
    params = result.params
    assert params["selection"] == "cv" and params["folds"] == 3 and params["cv_rows"] == N_TRAIN
    assert params["oob_score"] is None and params["oob_coverage"] is None
    scores = [s for _, s in params["candidate_scores"]]
    errors = [e for _, e in params["candidate_errors"]]
    assert [c for c, _ in params["candidate_scores"]] == list(OOB_CANDIDATES)
    chosen = _within_one_se(scores, errors)
    assert params["cv_score"] == scores[chosen]
    assert params["max_features"] == OOB_CANDIDATES[chosen]
    assert not result.estimator[-1].oob_score  # refitted on all rows, no out-of-bag scoring
    y = data["test"]["signal"]
    assert result.accuracy(y) > _majority(y) + 0.15
    # "cv" is fit_forest's default: the shared fit is the same fit
    assert fitted("forest", "signal").params["selection"] == "cv"
    assert result.estimator.n_features_in_ == tr["x"].shape[1]


def test_forest_oob_other_scorings(data) -> None:
    from sklearn.metrics import roc_auc_score

    tr = data["train"]
    result = _fit(
        "forest", data, "signal", selection="oob", max_features=OOB_CANDIDATES, scoring="roc_auc"
    )
    direct = _sklearn_oob_forests(tr["x"], tr["signal"], OOB_CANDIDATES)
    expected = [roc_auc_score(tr["signal"], f.oob_decision_function_[:, 1]) for f in direct]
    assert [s for _, s in result.params["candidate_scores"]] == pytest.approx(expected)
    errors = [float(np.sqrt(s * (1 - s) / len(tr["signal"]))) for s in expected]
    assert result.params["max_features"] == OOB_CANDIDATES[_within_one_se(expected, errors)]
    assert result.params["scoring"] == "roc_auc"
    balanced = _fit("forest", data, "signal", selection="oob", scoring="balanced_accuracy")
    assert 0.5 < balanced.params["oob_score"] <= 1.0
    with pytest.raises(ValueError, match=r"'oob' supports scoring accuracy, .*'neg_log_loss'"):
        _fit("forest", data, "signal", selection="oob", scoring="neg_log_loss")
    with pytest.raises(ValueError, match="selection must be one of oob, cv, got 'bag'"):
        _fit("forest", data, "signal", selection="bag")


def test_forest_oob_coverage_low_warns_too_low_raises(data, caplog) -> None:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.preprocessing import StandardScaler

    tr = data["train"]
    with (
        caplog.at_level(logging.WARNING, logger="featstore.train.forest"),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("error")  # scikit-learn's own warning is handled, not passed on
        few = _fit("forest", data, "signal", selection="oob", n_estimators=3)
    direct = RandomForestClassifier(
        n_estimators=3, random_state=0, oob_score=True, max_features=few.params["max_features"]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        direct.fit(StandardScaler().fit_transform(tr["x"]), tr["signal"])
    covered = direct.oob_decision_function_.sum(axis=1) > 0
    assert 0.5 < covered.mean() < 0.95  # ~1 - 0.632**3 = 75% of the rows
    assert few.params["oob_coverage"] == pytest.approx(covered.mean())
    # rows never out of bag are left out of the score (sklearn's oob_score_ counts them as 0)
    y_cov = tr["signal"][covered]
    pred = direct.oob_decision_function_[covered].argmax(axis=1)
    chosen_score = dict(map(tuple, few.params["candidate_scores"]))[few.params["max_features"]]
    assert chosen_score == pytest.approx(np.mean(pred == y_cov))
    assert caplog.text.count("have an out-of-bag prediction") == 1  # once, not per candidate
    with pytest.raises(ValueError, match="never out of bag: use more trees"):
        _fit("forest", data, "signal", selection="oob", n_estimators=1)
    # one candidate: nothing to choose, no out-of-bag scoring (so one tree is fine)
    single = _fit("forest", data, "signal", selection="oob", n_estimators=1, max_features=["sqrt"])
    assert single.params["oob_score"] is None and single.params["candidate_scores"] == []
    assert single.params["folds"] == 0


def test_dense_deterministic_on_tf_cpu(data, fitted) -> None:
    import keras

    first = fitted("dense", "signal")
    again = _dense(data, "signal")
    if keras.backend.backend() == "tensorflow":
        assert np.array_equal(again.y_score, first.y_score)
    else:  # not checked bit for bit on other backends: allow float reduction-order noise
        np.testing.assert_allclose(again.y_score, first.y_score, atol=1e-5)
    other = _dense(data, "signal", seed=1)
    assert not np.allclose(other.y_score, first.y_score, atol=1e-3)


def test_dense_history_and_early_stopping(fitted) -> None:
    noise = fitted("dense", "noise")
    assert set(noise.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert noise.params["epochs_run"] < DENSE["epochs"]
    assert len(noise.history["val_loss"]) == noise.params["epochs_run"]
    best = noise.params["best_epoch"]
    assert noise.history["val_loss"][best - 1] == min(noise.history["val_loss"])
    assert noise.params["hidden"] == [20]


@pytest.mark.parametrize("fit", ["lasso", "forest", "dense", "bottleneck", "multilabel"])
def test_single_class_training_labels(fit: str, data) -> None:
    from featstore.train.dense import fit_bottleneck, fit_multilabel

    tr, va, te = data["train"], data["val"], data["test"]
    ones = np.ones(N_TRAIN, dtype=np.int8)
    with pytest.raises(SingleClassError, match=f"one class only: all {N_TRAIN} labels are 1"):
        if fit == "bottleneck":
            fit_bottleneck(tr["x"], ones, va["x"], va["signal"], te["x"], k=4)
        elif fit == "multilabel":
            fit_multilabel(tr["x"], ones, va["x"], va["signal"], te["x"], attributes=["a"])
        else:
            _fit(fit, {**data, "train": {"x": tr["x"], "signal": ones}}, "signal")


def test_check_binary() -> None:
    check_binary(np.array([0, 1, 1], dtype=bool))
    with pytest.raises(SingleClassError, match="all 2 labels are 0"):
        check_binary([0, 0])
    with pytest.raises(ValueError, match="must be 0/1"):
        check_binary([0, 2])


@pytest.mark.parametrize("model", ["lasso", "forest"])
def test_folds_reduced_for_tiny_minority(model: str, data, caplog) -> None:
    x = data["train"]["x"][:60]
    y = np.zeros(60, dtype=np.int8)
    y[[3, 40]] = 1
    fit = fit_lasso if model == "lasso" else fit_forest
    kw = {"n_estimators": 10} if model == "forest" else {}
    with caplog.at_level(logging.WARNING, logger="featstore.train.base"):
        result = fit(x, y, data["test"]["x"][:50], folds=10, **kw)
    assert result.params["folds"] == 2
    assert "minority class has 2 members, fewer than 10 folds" in caplog.text
    y[40] = 0
    with pytest.raises(SingleClassError, match="cross-validation needs at least 2"):
        fit(x, y, data["test"]["x"][:50], folds=10, **kw)


@pytest.mark.parametrize("second", ["lasso", "forest"])
def test_bottleneck(second: str, data) -> None:
    from featstore.train.dense import fit_bottleneck

    tr, va, te = data["train"], data["val"], data["test"]
    kw = {"n_estimators": 30} if second == "forest" else {}
    result = fit_bottleneck(
        tr["x"],
        tr["signal"],
        va["x"],
        va["signal"],
        te["x"],
        k=8,
        second=second,
        folds=3,
        **DENSE,
        **kw,
    )
    assert result.model == f"bottleneck8-{second}"
    assert result.params["k"] == 8 and result.params["hidden"] == [8]
    assert 1 <= result.params["epochs_run"] <= DENSE["epochs"]
    assert result.params["second_params"]["n_features"] == 8
    assert result.params["second_params"]["folds"] == 3
    assert result.history is not None and result.history["val_loss"]
    assert result.accuracy(te["signal"]) > _majority(te["signal"]) + 0.1
    assert result.estimator.head.activations(te["x"][:5]).shape == (5, 8)
    json.dumps(result.params)


def test_bottleneck_rejects_bad_settings(data) -> None:
    from featstore.train.dense import fit_bottleneck

    tr, va, te = data["train"], data["val"], data["test"]
    with pytest.raises(ValueError, match="k=8 units"):
        fit_bottleneck(tr["x"], tr["signal"], va["x"], va["signal"], te["x"], k=8, hidden=(32, 4))
    with pytest.raises(TypeError, match="n_estimators"):
        fit_bottleneck(
            tr["x"],
            tr["signal"],
            va["x"],
            va["signal"],
            te["x"],
            k=8,
            second="lasso",
            n_estimators=3,
        )


def test_multilabel_one_result_per_attribute(data) -> None:
    from featstore.train.dense import fit_multilabel

    tr, va, te = data["train"], data["val"], data["test"]
    names = ["Signal", "Noise"]

    def labels(split: dict[str, np.ndarray]) -> np.ndarray:
        return np.stack([split["signal"], split["noise"]], axis=1)

    results = fit_multilabel(
        tr["x"], labels(tr), va["x"], labels(va), te["x"], attributes=names, **DENSE
    )
    assert list(results) == names
    signal, noise = results["Signal"], results["Noise"]
    assert {r.model for r in results.values()} == {"multilabel"}
    assert signal.params["attribute"] == "Signal" and signal.params["n_attributes"] == 2
    assert signal.history == noise.history and signal.history["val_loss"]
    assert not np.array_equal(signal.y_score, noise.y_score)
    assert signal.accuracy(te["signal"]) > _majority(te["signal"]) + 0.1
    assert abs(noise.accuracy(te["noise"]) - _majority(te["noise"])) < 0.05


def test_dense_from_dataset(data) -> None:
    tf = pytest.importorskip("tensorflow")
    from featstore.train.dense import fit_dense

    tr, va, te = data["train"], data["val"], data["test"]
    ds = (
        tf.data.Dataset.from_tensor_slices((tr["x"], tr["signal"].astype(np.float32)[:, None]))
        .shuffle(N_TRAIN, seed=0)
        .batch(32)
    )
    result = fit_dense(None, None, va["x"], va["signal"], te["x"], train_data=ds, **DENSE)
    assert result.accuracy(te["signal"]) > _majority(te["signal"]) + 0.15
    assert result.params["n_features"] == DIM


def test_forest_max_samples_int_is_a_cap(data) -> None:
    tr, te = data["train"], data["test"]
    capped = fit_forest(tr["x"], tr["signal"], te["x"], folds=3, n_estimators=10, max_samples=100)
    assert capped.estimator[-1].max_samples == 100 and capped.params["max_samples"] == 100
    whole = fit_forest(
        tr["x"], tr["signal"], te["x"], max_features=["sqrt"], n_estimators=10, max_samples=10_000
    )
    assert whole.estimator[-1].max_samples is None and whole.params["folds"] == 0


@pytest.mark.parametrize("model", ["lasso", "forest", "dense"])
def test_every_probe_finds_the_signal_at_any_feature_scale(model: str, data) -> None:
    """Random-weight MobileNetV2 embeddings are ~1e-12: scikit-learn's trees took every feature
    for a constant and Keras' Normalization divided by max(std, 1e-7). Standardized inputs give
    every probe the same chance at any scale."""
    tiny = {
        split: {**part, "x": (part["x"] * 1e-12).astype(np.float32)} for split, part in data.items()
    }
    result = _fit(model, tiny, "signal")
    y = data["test"]["signal"]
    assert result.accuracy(y) > _majority(y) + 0.15
    assert len(np.unique(result.y_pred)) == 2  # not one class for every row

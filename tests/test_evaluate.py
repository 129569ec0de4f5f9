"""featstore.evaluate: metrics, bootstrap CI, McNemar, Holm and the comparison tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.multitest import multipletests

from featstore import evaluate
from featstore.evaluate import (
    BASELINE_COLUMNS,
    BEST_COLUMNS,
    COMPARISON_COLUMNS,
    baseline_tests,
    beats_baseline,
    best_model_table,
    bootstrap_ci,
    compare_models,
    holm,
    majority_baseline,
    mcnemar,
    metrics,
)

# --------------------------------------------------------------------------- metrics

# 10 images:        0  1  2  3  4  5  6  7  8  9
TINY_TRUE = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=np.int8)
TINY_PRED = np.array([1, 1, 1, 0, 0, 0, 0, 0, 1, 1], dtype=np.int8)
TINY_SCORE = np.array([0.9, 0.8, 0.7, 0.3, 0.1, 0.2, 0.4, 0.35, 0.6, 0.75])


def test_metrics_match_hand_computed_values():
    # tp = 3 (0,1,2), fn = 1 (3), tn = 4 (4..7), fp = 2 (8,9)
    # accuracy = 7/10; recall+ = 3/4, recall- = 4/6 -> balanced = (0.75 + 0.6667)/2 = 17/24
    # f1 = 2*3 / (2*3 + 2 + 1) = 6/9
    # AUC: positives {.9,.8,.7,.3} vs negatives {.1,.2,.4,.35,.6,.75}: pairs won
    #   .9 -> 6, .8 -> 6, .7 -> 5 (loses to .75), .3 -> 2 (beats .1,.2) = 19 of 24
    # test majority: 6 negatives of 10 -> 0.6
    got = metrics(TINY_TRUE, TINY_PRED, TINY_SCORE)
    expected = {
        "n": 10, "positives": 4, "accuracy": 0.7, "balanced_accuracy": 17 / 24,
        "f1": 6 / 9, "roc_auc": 19 / 24, "tn": 4, "fp": 2, "fn": 1, "tp": 3,
        "majority_baseline": 0.6, "baseline_source": "test",
    }
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_metrics_train_majority_baseline_is_the_honest_one():
    y_train = np.array([1, 1, 1, 0], dtype=np.int8)  # train majority = 1
    # predicting 1 on TINY_TRUE is right on the 4 positives: 0.4, not the test majority's 0.6
    assert majority_baseline(y_train, TINY_TRUE) == pytest.approx(0.4)
    got = metrics(TINY_TRUE, TINY_PRED, y_train=y_train)
    assert (got["majority_baseline"], got["baseline_source"]) == (pytest.approx(0.4), "train")


def test_metrics_single_class_has_no_auc_and_defined_balanced_accuracy():
    y_true = np.zeros(5, dtype=np.int8)
    y_pred = np.array([0, 0, 0, 1, 0], dtype=np.int8)
    got = metrics(y_true, y_pred, np.linspace(0, 1, 5))
    assert got["roc_auc"] is None
    assert got["balanced_accuracy"] == pytest.approx(0.8)  # recall of the one present class
    assert got["f1"] == 0.0  # 2*0 / (0 + 1 + 0)
    assert metrics(y_true, np.zeros(5, dtype=np.int8))["f1"] is None  # undefined: 0/0


def test_metrics_rejects_non_binary_labels():
    with pytest.raises(ValueError, match="only 0 and 1"):
        metrics(np.array([0, 1, 2]), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="differ in length"):
        metrics(np.array([0, 1, 1]), np.array([0, 1]))


def test_beats_baseline_uses_paired_test_against_constant():
    rng = np.random.default_rng(3)
    y_true = (rng.random(2000) < 0.3).astype(np.int8)
    good = np.where(rng.random(2000) < 0.9, y_true, 1 - y_true).astype(np.int8)
    weak = np.where(rng.random(2000) < 0.6, y_true, 1 - y_true).astype(np.int8)
    assert beats_baseline(y_true, good)["beats"]
    res = beats_baseline(y_true, weak)
    assert not res["beats"] and res["accuracy"] < res["baseline_accuracy"]


def test_beats_baseline_with_a_given_constant_class():
    y_true = np.array([1, 1, 1, 0, 0], dtype=np.int8)
    y_pred = np.array([1, 1, 0, 0, 0], dtype=np.int8)
    res = beats_baseline(y_true, y_pred, y_train=[1, 1, 1], baseline_class=0)  # class wins
    assert (res["baseline_class"], res["baseline_accuracy"], res["b"], res["c"]) == (0, 0.4, 2, 0)
    assert res == beats_baseline(y_true, y_pred, y_train=[0])
    with pytest.raises(ValueError, match="baseline_class must be 0 or 1"):
        beats_baseline(y_true, y_pred, baseline_class=2)


# --------------------------------------------------------------------------- McNemar

def _pairs(n11: int, b: int, c: int, n00: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """y_true (all 1) and two predictions with the given 2x2 counts of (A right, B right)."""
    a = np.array([1] * n11 + [1] * b + [0] * c + [0] * n00, dtype=np.int8)
    bb = np.array([1] * n11 + [0] * b + [1] * c + [0] * n00, dtype=np.int8)
    return np.ones_like(a), a, bb


@pytest.mark.parametrize(
    ("n11", "b", "c", "n00", "method"),
    [
        (50, 3, 11, 6, "exact"),   # b + c = 14 < 25
        (40, 7, 7, 2, "exact"),    # b == c: p capped at 1
        (30, 0, 5, 1, "exact"),
        (500, 40, 19, 30, "chi2"),  # b + c = 59
        (500, 20, 20, 30, "chi2"),  # b == c: statsmodels' unclipped correction, 1/(b+c)
        (900, 101, 160, 12, "chi2"),
    ],
)
def test_mcnemar_matches_statsmodels(n11, b, c, n00, method):
    y_true, a, bb = _pairs(n11, b, c, n00)
    got = mcnemar(y_true, a, bb)
    table = np.array([[n11, b], [c, n00]])  # rows: A right/wrong, columns: B right/wrong
    ref = sm_mcnemar(table, exact=(method == "exact"), correction=True)
    assert (got["b"], got["c"], got["method"]) == (b, c, method)
    assert got["statistic"] == pytest.approx(float(ref.statistic), rel=1e-12)
    assert got["p_value"] == pytest.approx(float(ref.pvalue), rel=1e-10)


def test_mcnemar_forced_method_and_no_discordant_pairs():
    y_true, a, bb = _pairs(30, 20, 9, 4)
    forced = mcnemar(y_true, a, bb, exact=True)
    ref = sm_mcnemar(np.array([[30, 20], [9, 4]]), exact=True)
    assert forced["method"] == "exact" and forced["p_value"] == pytest.approx(ref.pvalue)
    chi = mcnemar(y_true, a, bb, exact=False)
    ref = sm_mcnemar(np.array([[30, 20], [9, 4]]), exact=False, correction=True)
    assert chi["method"] == "chi2" and chi["p_value"] == pytest.approx(ref.pvalue)
    same = mcnemar(y_true, a, a, exact=False)
    assert (same["b"], same["c"], same["p_value"]) == (0, 0, 1.0)


# --------------------------------------------------------------------------- Holm

def test_holm_matches_statsmodels():
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.2, 0.04, 0.8, 0.0001, 0.049, 0.5])
    np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1], rtol=0, atol=1e-15)
    rng = np.random.default_rng(1)
    q = rng.random(40) ** 3
    np.testing.assert_allclose(holm(q), multipletests(q, method="holm")[1], rtol=0, atol=1e-15)


def test_holm_passes_missing_values_through():
    got = holm([0.01, None, 0.04, float("nan"), 0.03])
    ref = multipletests([0.01, 0.04, 0.03], method="holm")[1]
    assert math.isnan(got[1]) and math.isnan(got[3])
    np.testing.assert_allclose(got[[0, 2, 4]], ref)
    assert holm([]).shape == (0,)


# --------------------------------------------------------------------------- bootstrap

def _simple_bootstrap(y_true, y_pred, n_boot, alpha, seed):
    """The documented method, one resample at a time."""
    rng = np.random.default_rng(seed)
    n = len(y_true)
    accs = []
    for _ in range(n_boot):
        idx = np.minimum(np.floor(rng.random(n) * n).astype(int), n - 1)
        accs.append(np.mean(y_true[idx] == y_pred[idx]))
    return tuple(np.quantile(accs, [alpha / 2, 1 - alpha / 2]))


def _noisy(n: int, acc: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = (rng.random(n) < 0.4).astype(np.int8)
    y_pred = np.where(rng.random(n) < acc, y_true, 1 - y_true).astype(np.int8)
    return y_true, y_pred


def test_bootstrap_matches_simple_loop_and_is_block_size_invariant(monkeypatch):
    y_true, y_pred = _noisy(301, 0.8, seed=5)
    expected = _simple_bootstrap(y_true, y_pred, n_boot=500, alpha=0.1, seed=7)
    got = bootstrap_ci(y_true, y_pred, n_boot=500, alpha=0.1, seed=7)
    assert got == pytest.approx(expected, abs=1e-12)
    monkeypatch.setattr(evaluate, "_BLOCK_ELEMS", 301 * 37)  # 37 resamples a block, ragged tail
    assert bootstrap_ci(y_true, y_pred, n_boot=500, alpha=0.1, seed=7) == got


def test_bootstrap_deterministic_contains_estimate_and_narrows():
    y_true, y_pred = _noisy(400, 0.75, seed=2)
    point = float(np.mean(y_true == y_pred))
    first = bootstrap_ci(y_true, y_pred, seed=3)
    assert bootstrap_ci(y_true, y_pred, seed=3) == first
    # another seed, other resamples (accuracy sits on a k/n lattice; balanced accuracy does not)
    assert (bootstrap_ci(y_true, y_pred, stat="balanced_accuracy", seed=4)
            != bootstrap_ci(y_true, y_pred, stat="balanced_accuracy", seed=3))
    assert first[0] < point < first[1]
    big_true, big_pred = _noisy(6400, 0.75, seed=2)
    big = bootstrap_ci(big_true, big_pred, seed=3)
    # width scales like 1/sqrt(n): 16x the images, about a quarter of the width
    assert (big[1] - big[0]) < 0.35 * (first[1] - first[0])


def test_bootstrap_agrees_with_normal_approximation_for_large_n():
    y_true, y_pred = _noisy(20_000, 0.85, seed=11)
    p = float(np.mean(y_true == y_pred))
    half = 1.959964 * math.sqrt(p * (1 - p) / len(y_true))
    low, high = bootstrap_ci(y_true, y_pred, n_boot=2000, seed=0)
    assert low == pytest.approx(p - half, abs=0.0015)
    assert high == pytest.approx(p + half, abs=0.0015)


@pytest.mark.parametrize("stat", ["balanced_accuracy", "f1", "error_rate"])
def test_bootstrap_other_stats_bracket_their_point_estimate(stat):
    y_true, y_pred = _noisy(500, 0.8, seed=9)
    m = metrics(y_true, y_pred)
    point = 1 - m["accuracy"] if stat == "error_rate" else m[stat]
    low, high = bootstrap_ci(y_true, y_pred, stat=stat, n_boot=400, seed=1)
    assert low < point < high and high - low < 0.2


def test_bootstrap_rejects_unknown_stat():
    with pytest.raises(ValueError, match="stat must be one of"):
        bootstrap_ci(TINY_TRUE, TINY_PRED, stat="auc")


# --------------------------------------------------------------------------- tables

def _results(with_ids: bool) -> pd.DataFrame:
    """Two attributes, three models, one feature set / size / seed.

    'smiling': forest right on all 200 images, lasso wrong on 60 of them (b=60, c=0 -> p ~ 1e-14),
    dense wrong on 40; 'bald': lasso and forest wrong on disjoint sets of 10 images each
    (b = c = 10, tied accuracy, p = 1), dense wrong on those 20 plus 5 more."""
    n = 200
    rng = np.random.default_rng(0)
    rows = []
    for attribute in ("smiling", "bald"):
        y_true = (rng.random(n) < 0.5).astype(np.int8)
        wrong = {
            "smiling": {"lasso": np.arange(60), "forest": np.arange(0), "dense": np.arange(40)},
            "bald": {"lasso": np.arange(10), "forest": np.arange(10, 20),
                     "dense": np.arange(25)},
        }[attribute]
        for model in ("lasso", "forest", "dense"):
            y_pred = y_true.copy()
            y_pred[wrong[model]] ^= 1
            ids = np.array([f"{i:06d}.jpg" for i in range(n)])
            row = {"attribute": attribute, "feature_set": "vgg16-block5_pool-avg",
                   "model": model, "train_size": 1000, "seed": 0,
                   "y_true": y_true, "y_pred": y_pred}
            if with_ids:
                perm = rng.permutation(n)  # each model stores its own test order
                row.update(y_true=y_true[perm], y_pred=y_pred[perm], image_ids=ids[perm])
            rows.append(row)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("with_ids", [False, True])
def test_compare_models_rows(with_ids):
    comp = compare_models(_results(with_ids))
    assert list(comp.columns) == COMPARISON_COLUMNS
    got = comp.set_index(["attribute", "model_a", "model_b"])
    assert len(got) == 6  # 2 attributes x 3 pairs
    s = got.loc[("smiling", "forest", "lasso")]
    assert (s.n, s.accuracy_a, s.accuracy_b, s.b, s.c, s.method) == (200, 1.0, 0.7, 60, 0, "chi2")
    assert s.p_value < 1e-12 and bool(s.significant)
    t = got.loc[("bald", "forest", "lasso")]
    assert (t.accuracy_a, t.accuracy_b, t.b, t.c, t.method) == (0.95, 0.95, 10, 10, "exact")
    assert t.p_value == 1.0 and not t.significant
    # Holm family = both attributes of one model pair
    for pair in [("forest", "lasso"), ("dense", "forest"), ("dense", "lasso")]:
        fam = got.xs(pair, level=["model_a", "model_b"])
        np.testing.assert_allclose(fam.p_holm, holm(fam.p_value.to_numpy()))


def test_best_model_table_rows():
    results = _results(with_ids=True)
    best = best_model_table(results, compare_models(results)).set_index("attribute")
    assert list(best.reset_index().columns) == BEST_COLUMNS
    smiling = best.loc["smiling"]
    assert (smiling.best_model, smiling.best_accuracy, smiling.runner_up) == ("forest", 1.0, "dense")
    assert bool(smiling.beats_all) and not smiling.tied and smiling.max_p_holm < 0.05
    bald = best.loc["bald"]
    # forest and lasso tie at 0.95; first by name wins the tie, and cannot beat its twin
    assert (bald.best_model, bald.runner_up, bool(bald.tied)) == ("forest", "lasso", True)
    assert not bald.beats_all and bald.max_p_holm == 1.0


def test_compare_models_rejects_misaligned_test_sets():
    results = _results(with_ids=True)
    results.at[1, "image_ids"] = np.array([f"x{i}" for i in range(200)])
    with pytest.raises(ValueError, match="different set of test images"):
        compare_models(results)
    plain = _results(with_ids=False)
    plain.at[1, "y_true"] = plain.at[1, "y_true"][::-1].copy()
    with pytest.raises(ValueError, match="y_true disagrees"):
        compare_models(plain)


def _baseline_frame() -> pd.DataFrame:
    """Three attributes x two models on 300 test images, ``majority_baseline`` as the grid
    stores it (test accuracy of the *train*-majority constant). 'young': 180 positives, train
    majority 0 (a minority in test: baseline 0.4); 'hat': 150 positives (balanced: either
    constant fits); 'bangs': 90 positives, train majority 0. lasso is right on 90% of the images,
    forest flips coins (which beats young's constant, wrong on 60% of the images)."""
    n = 300
    rng = np.random.default_rng(11)
    rows = []
    for attribute, positives, train_majority in (("young", 180, 0), ("hat", 150, 1),
                                                 ("bangs", 90, 0)):
        y = np.zeros(n, dtype=np.int8)
        y[rng.permutation(n)[:positives]] = 1
        good = y.copy()
        good[rng.permutation(n)[:30]] ^= 1
        coin = (rng.random(n) < 0.5).astype(np.int8)
        for model, pred in (("lasso", good), ("forest", coin)):
            rows.append({"attribute": attribute, "feature_set": "fs", "model": model,
                         "train_size": 0, "seed": 0, "y_true": y, "y_pred": pred,
                         "majority_baseline": majority_baseline([train_majority], y)})
    return pd.DataFrame(rows)


def test_baseline_tests_recover_the_train_majority_class_and_holm_per_family():
    frame = _baseline_frame()
    out = baseline_tests(frame, family=["feature_set", "train_size", "seed", "model"])
    assert list(out.columns) == BASELINE_COLUMNS
    keys = ["attribute", "model"]
    assert out[keys].values.tolist() == frame[keys].values.tolist()
    got = out.set_index(["attribute", "model"])
    for row in frame.itertuples(index=False):
        r = got.loc[(row.attribute, row.model)]
        if row.attribute == "hat":  # balanced: both constants tested, the larger p kept
            tests = [beats_baseline(row.y_true, row.y_pred, baseline_class=k) for k in (0, 1)]
            want = max(tests, key=lambda t: t["p_value"])
        else:
            want = beats_baseline(row.y_true, row.y_pred, y_train=[0])
        assert r.baseline_class == want["baseline_class"]
        assert (r.n, r.b, r.c, r.method) == (300, want["b"], want["c"], want["method"])
        assert r.baseline_accuracy == pytest.approx(row.majority_baseline)
        assert r.p_value == pytest.approx(want["p_value"], rel=1e-12, abs=0)
    assert got.loc[("young", "lasso"), "baseline_accuracy"] == pytest.approx(0.4)
    # Holm family: the attributes of one model (and feature set, size, seed)
    for model in ("lasso", "forest"):
        fam = got.xs(model, level="model")
        np.testing.assert_allclose(fam.p_holm, multipletests(fam.p_value, method="holm")[1],
                                   rtol=1e-12)
        assert (fam.p_holm >= fam.p_value).all()
    assert got.xs("lasso", level="model").beats_baseline.all()
    # coin flips beat only the constant that is wrong on 60% of young's test images
    assert got.xs("forest", level="model").beats_baseline.to_dict() == {
        "young": True, "hat": False, "bangs": False}
    # one family over every row; the default family (one feature set, size and seed: every
    # attribute and model) is that here
    flat = baseline_tests(frame, family=[])
    np.testing.assert_allclose(flat.p_holm, multipletests(flat.p_value, method="holm")[1],
                               rtol=1e-12)
    pd.testing.assert_frame_equal(baseline_tests(frame), flat)
    assert evaluate.FAMILY == ["feature_set", "train_size", "seed"]


def test_baseline_tests_reject_a_baseline_neither_constant_gives():
    frame = _baseline_frame()
    frame.at[0, "majority_baseline"] = 0.5
    with pytest.raises(ValueError, match="accuracy of neither constant"):
        baseline_tests(frame)
    with pytest.raises(ValueError, match="lacks columns"):
        baseline_tests(frame.drop(columns="majority_baseline"))
    empty = baseline_tests(frame.iloc[:0])
    assert list(empty.columns) == BASELINE_COLUMNS and empty.empty

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
        "n": 10,
        "positives": 4,
        "accuracy": 0.7,
        "balanced_accuracy": 17 / 24,
        "f1": 6 / 9,
        "roc_auc": 19 / 24,
        "tn": 4,
        "fp": 2,
        "fn": 1,
        "tp": 3,
        "majority_baseline": 0.6,
        "baseline_source": "test",
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
        (50, 3, 11, 6, "exact"),  # b + c = 14 < 25
        (40, 7, 7, 2, "exact"),  # b == c: p capped at 1
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
    # 37 resamples a block, ragged tail
    monkeypatch.setattr(evaluate.intervals, "_BLOCK_ELEMS", 301 * 37)
    assert bootstrap_ci(y_true, y_pred, n_boot=500, alpha=0.1, seed=7) == got


def test_bootstrap_deterministic_contains_estimate_and_narrows():
    y_true, y_pred = _noisy(400, 0.75, seed=2)
    point = float(np.mean(y_true == y_pred))
    first = bootstrap_ci(y_true, y_pred, seed=3)
    assert bootstrap_ci(y_true, y_pred, seed=3) == first
    # another seed, other resamples (accuracy sits on a k/n lattice; balanced accuracy does not)
    assert bootstrap_ci(y_true, y_pred, stat="balanced_accuracy", seed=4) != bootstrap_ci(
        y_true, y_pred, stat="balanced_accuracy", seed=3
    )
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
            "bald": {"lasso": np.arange(10), "forest": np.arange(10, 20), "dense": np.arange(25)},
        }[attribute]
        for model in ("lasso", "forest", "dense"):
            y_pred = y_true.copy()
            y_pred[wrong[model]] ^= 1
            ids = np.array([f"{i:06d}.jpg" for i in range(n)])
            row = {
                "attribute": attribute,
                "feature_set": "vgg16-block5_pool-avg",
                "model": model,
                "train_size": 1000,
                "seed": 0,
                "y_true": y_true,
                "y_pred": y_pred,
            }
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
    assert (smiling.best_model, smiling.best_accuracy, smiling.runner_up) == (
        "forest",
        1.0,
        "dense",
    )
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
    for attribute, positives, train_majority in (
        ("young", 180, 0),
        ("hat", 150, 1),
        ("bangs", 90, 0),
    ):
        y = np.zeros(n, dtype=np.int8)
        y[rng.permutation(n)[:positives]] = 1
        good = y.copy()
        good[rng.permutation(n)[:30]] ^= 1
        coin = (rng.random(n) < 0.5).astype(np.int8)
        for model, pred in (("lasso", good), ("forest", coin)):
            rows.append(
                {
                    "attribute": attribute,
                    "feature_set": "fs",
                    "model": model,
                    "train_size": 0,
                    "seed": 0,
                    "y_true": y,
                    "y_pred": pred,
                    "majority_baseline": majority_baseline([train_majority], y),
                }
            )
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
        np.testing.assert_allclose(
            fam.p_holm, multipletests(fam.p_value, method="holm")[1], rtol=1e-12
        )
        assert (fam.p_holm >= fam.p_value).all()
    assert got.xs("lasso", level="model").beats_baseline.all()
    # coin flips beat only the constant that is wrong on 60% of young's test images
    assert got.xs("forest", level="model").beats_baseline.to_dict() == {
        "young": True,
        "hat": False,
        "bangs": False,
    }
    # one family over every row; the default family (one feature set, size and seed: every
    # attribute and model) is that here
    flat = baseline_tests(frame, family=[])
    np.testing.assert_allclose(
        flat.p_holm, multipletests(flat.p_value, method="holm")[1], rtol=1e-12
    )
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


# --------------------------------------------------------------------------- issue 24: intervals
# Every check below recomputes the number with an independent implementation: statsmodels,
# scipy, scikit-learn, or the documented method written as a plain loop.

from itertools import combinations  # noqa: E402

from scipy import stats as sp_stats  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import balanced_accuracy_score, brier_score_loss, roc_auc_score  # noqa: E402
from statsmodels.stats.proportion import proportion_confint  # noqa: E402

from featstore.evaluate import (  # noqa: E402
    CALIBRATION_COLUMNS,
    CHOSEN_BY_SELECTION,
    CHOSEN_BY_TEST,
    FAMILY,
    accuracy_ci,
    auc_vs_chance,
    brier_score,
    calibration_table,
    holm_by_family,
    paired_difference_ci,
)


def _people(n_people: int, seed: int, *, within: float = 0.95):
    """Test images of ``n_people`` identities (1-12 images each, shuffled): labels, a score with
    signal, and a prediction that is right or wrong for a person as a whole with probability
    ``within`` (strong within-identity correlation), returned with the identity per image."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 13, n_people)
    ident = np.repeat(np.arange(n_people), sizes)
    person_label = (rng.random(n_people) < 0.4).astype(np.int8)
    person_right = rng.random(n_people) < 0.75
    y_true = person_label[ident]
    keep = np.where(
        rng.random(len(ident)) < within, person_right[ident], rng.random(len(ident)) < 0.75
    )
    y_pred = np.where(keep, y_true, 1 - y_true).astype(np.int8)
    person_shift = rng.normal(0, 1.0, n_people)
    y_score = 1 / (
        1 + np.exp(-(1.2 * (2 * y_true - 1) + person_shift[ident] + rng.normal(0, 0.5, len(ident))))
    )
    perm = rng.permutation(len(ident))
    names = np.array([f"person{i:04d}" for i in range(n_people)], dtype=object)
    return y_true[perm], y_pred[perm], y_score[perm], names[ident[perm]]


def _cluster_loop(groups, n_boot, seed, fn):
    """The documented cluster bootstrap, one resample at a time: draw G clusters (numbered by
    first appearance) by floor(U * G), take all their images, call ``fn(idx)``."""
    order = list(dict.fromkeys(groups.tolist()))
    members = {g: np.flatnonzero(groups == g) for g in order}
    rng = np.random.default_rng(seed)
    g_count = len(order)
    out = []
    for _ in range(n_boot):
        pick = np.minimum(np.floor(rng.random(g_count) * g_count).astype(int), g_count - 1)
        out.append(fn(np.concatenate([members[order[k]] for k in pick])))
    return np.array(out, dtype=float)


def _iid_loop(n, n_boot, seed, fn):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        out.append(fn(np.minimum(np.floor(rng.random(n) * n).astype(int), n - 1)))
    return np.array(out, dtype=float)


def _auc_or_nan(y, s):
    return roc_auc_score(y, s) if 0 < y.sum() < len(y) else np.nan


def _percentile(values, alpha):
    return tuple(np.nanquantile(values, [alpha / 2, 1 - alpha / 2]))


@pytest.mark.parametrize(("k", "n"), [(7, 10), (0, 12), (50, 50), (981, 1000), (1, 3)])
def test_accuracy_ci_is_wilson(k, n):
    y_true = np.ones(n, dtype=np.int8)
    y_pred = np.array([1] * k + [0] * (n - k), dtype=np.int8)
    want = proportion_confint(k, n, alpha=0.05, method="wilson")
    assert accuracy_ci(y_true, y_pred) == pytest.approx(want, abs=1e-12)
    # all-distinct groups: independent images, the same interval
    assert accuracy_ci(y_true, y_pred, groups=np.arange(n)) == accuracy_ci(y_true, y_pred)
    want90 = proportion_confint(k, n, alpha=0.1, method="wilson")
    assert accuracy_ci(y_true, y_pred, alpha=0.1) == pytest.approx(want90, abs=1e-12)


def test_accuracy_ci_widens_by_the_design_effect():
    y_true, y_pred, _, ident = _people(120, seed=4)
    n = len(y_true)
    correct = (y_true == y_pred).astype(float)
    acc = correct.mean()
    # the design effect from its definition, cluster by cluster
    per = pd.DataFrame({"g": ident, "c": correct}).groupby("g")["c"].agg(["sum", "count"])
    g_count = len(per)
    v_cluster = (
        g_count
        / (g_count - 1)
        * sum((y - acc * m) ** 2 for y, m in zip(per["sum"], per["count"], strict=True))
        / n**2
    )
    v_iid = n / (n - 1) * acc * (1 - acc) / n
    n_eff = n / max(1.0, v_cluster / v_iid)
    assert n_eff < 0.5 * n  # strongly clustered
    want = proportion_confint(acc * n_eff, n_eff, alpha=0.05, method="wilson")
    got = accuracy_ci(y_true, y_pred, groups=ident)
    assert got == pytest.approx(want, abs=1e-12)
    plain = accuracy_ci(y_true, y_pred)
    assert got[0] < plain[0] and got[1] > plain[1]
    # missing identities are independent images: all missing = no groups
    assert accuracy_ci(y_true, y_pred, groups=[None] * n) == plain
    with pytest.raises(ValueError, match="differ in length"):
        accuracy_ci(y_true, y_pred, groups=ident[:-1])
    with pytest.raises(ValueError, match="single cluster"):
        accuracy_ci(y_true, y_pred, groups=["one"] * n)


def test_cluster_bootstrap_matches_a_plain_loop_and_widens():
    y_true, y_pred, y_score, ident = _people(50, seed=8)
    correct = y_true == y_pred
    want = _percentile(_cluster_loop(ident, 300, 5, lambda i: correct[i].mean()), 0.1)
    got = bootstrap_ci(y_true, y_pred, groups=ident, n_boot=300, alpha=0.1, seed=5)
    assert got == pytest.approx(want, abs=1e-12)
    auc_vals = _cluster_loop(ident, 300, 5, lambda i: _auc_or_nan(y_true[i], y_score[i]))
    got_auc = bootstrap_ci(
        y_true, None, stat="roc_auc", y_score=y_score, groups=ident, n_boot=300, alpha=0.1, seed=5
    )
    assert got_auc == pytest.approx(_percentile(auc_vals, 0.1), abs=1e-12)
    bal = _cluster_loop(ident, 300, 5, lambda i: balanced_accuracy_score(y_true[i], y_pred[i]))
    got_bal = bootstrap_ci(
        y_true, y_pred, stat="balanced_accuracy", groups=ident, n_boot=300, alpha=0.1, seed=5
    )
    assert got_bal == pytest.approx(_percentile(bal, 0.1), abs=1e-12)
    # identity-clustered errors: resampling people is wider than resampling images
    iid = bootstrap_ci(y_true, y_pred, n_boot=300, alpha=0.1, seed=5)
    assert (got[1] - got[0]) > 1.5 * (iid[1] - iid[0])


def test_cluster_bootstrap_block_invariant_and_all_distinct_equals_iid(monkeypatch):
    y_true, y_pred, y_score, ident = _people(40, seed=2)
    n = len(y_true)
    kw = {"n_boot": 101, "seed": 9}
    first = bootstrap_ci(y_true, y_pred, groups=ident, **kw)
    first_auc = bootstrap_ci(y_true, y_pred, stat="roc_auc", y_score=y_score, groups=ident, **kw)
    assert bootstrap_ci(y_true, y_pred, groups=np.arange(n), **kw) == bootstrap_ci(
        y_true, y_pred, **kw
    )
    monkeypatch.setattr(evaluate.intervals, "_BLOCK_ELEMS", n * 13)
    assert bootstrap_ci(y_true, y_pred, groups=ident, **kw) == first
    assert (
        bootstrap_ci(y_true, y_pred, stat="roc_auc", y_score=y_score, groups=ident, **kw)
        == first_auc
    )


def test_iid_auc_bootstrap_matches_a_plain_loop():
    y_true, _, y_score, _ = _people(30, seed=3)
    y_score = np.round(y_score, 1)  # ties count one half, as in sklearn
    vals = _iid_loop(len(y_true), 250, 1, lambda i: _auc_or_nan(y_true[i], y_score[i]))
    got = bootstrap_ci(y_true, None, stat="roc_auc", y_score=y_score, n_boot=250, seed=1)
    assert got == pytest.approx(_percentile(vals, 0.05), abs=1e-12)


def _bca_plain(values, point, jack, alpha):
    """Efron & Tibshirani's BCa (eq. 14.10, 14.15) written out."""
    z0 = sp_stats.norm.ppf((np.sum(values < point) + np.sum(values <= point)) / (2 * len(values)))
    d = jack.mean() - jack
    a = np.sum(d**3) / (6 * np.sum(d**2) ** 1.5)
    qs = []
    for q in (alpha / 2, 1 - alpha / 2):
        z = sp_stats.norm.ppf(q)
        qs.append(sp_stats.norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z))))
    return tuple(np.quantile(values, qs))


@pytest.mark.parametrize("stat", ["accuracy", "balanced_accuracy", "f1", "roc_auc"])
def test_bca_matches_a_plain_implementation(stat):
    y_true, y_pred, y_score, _ = _people(25, seed=6)
    n = len(y_true)

    def fn(i):
        t, p, s = y_true[i], y_pred[i], y_score[i]
        if stat == "accuracy":
            return np.mean(t == p)
        if stat == "balanced_accuracy":
            return balanced_accuracy_score(t, p)
        if stat == "f1":
            return 2 * np.sum(t & p) / (np.sum(t) + np.sum(p))
        return _auc_or_nan(t, s)

    values = _iid_loop(n, 400, 2, fn)
    everything = np.arange(n)
    jack = np.array([fn(np.delete(everything, i)) for i in range(n)])
    want = _bca_plain(values, fn(everything), jack, 0.05)
    got = bootstrap_ci(y_true, y_pred, stat=stat, y_score=y_score, n_boot=400, seed=2, method="bca")
    assert got == pytest.approx(want, abs=1e-12)


def test_bca_agrees_with_scipy_near_the_edge():
    # 196 of 200 right: the percentile interval hugs 1; BCa (and Wilson) do not
    y_true = np.ones(200, dtype=np.int8)
    y_pred = y_true.copy()
    y_pred[:4] = 0
    correct = (y_pred == y_true).astype(float)
    ref = sp_stats.bootstrap(
        (correct,), np.mean, n_resamples=4000, method="BCa", random_state=np.random.default_rng(0)
    ).confidence_interval
    got = bootstrap_ci(y_true, y_pred, n_boot=4000, method="bca")
    assert got == pytest.approx((ref.low, ref.high), abs=0.006)
    pct = bootstrap_ci(y_true, y_pred, n_boot=4000)
    assert got[0] < pct[0]


def test_bootstrap_new_arguments_are_checked():
    y_true, y_pred, y_score, ident = _people(10, seed=1)
    with pytest.raises(ValueError, match="y_score is required"):
        bootstrap_ci(y_true, y_pred, stat="roc_auc")
    with pytest.raises(ValueError, match="NaN or infinite"):
        bootstrap_ci(y_true, y_pred, stat="roc_auc", y_score=np.where(y_true, np.nan, 0.1))
    with pytest.raises(ValueError, match="differ in length"):
        bootstrap_ci(y_true, y_pred, stat="roc_auc", y_score=y_score[:-1])
    with pytest.raises(ValueError, match="differ in length"):
        bootstrap_ci(y_true, y_pred, groups=ident[1:])
    with pytest.raises(ValueError, match="method='bca' needs independent"):
        bootstrap_ci(y_true, y_pred, groups=ident, method="bca")
    with pytest.raises(ValueError, match="method must be"):
        bootstrap_ci(y_true, y_pred, method="basic")
    with pytest.raises(ValueError, match="y_pred is required"):
        bootstrap_ci(y_true, None)


# --------------------------------------------------------------------------- paired differences


def test_paired_difference_matches_a_plain_loop():
    y_true, pred_a, score_a, ident = _people(45, seed=12)
    rng = np.random.default_rng(0)
    pred_b = np.where(rng.random(len(y_true)) < 0.7, y_true, 1 - y_true).astype(np.int8)
    score_b = np.clip(score_a + rng.normal(0, 0.3, len(y_true)), 0, 1)

    acc = _cluster_loop(
        ident, 200, 3, lambda i: np.mean(pred_a[i] == y_true[i]) - np.mean(pred_b[i] == y_true[i])
    )
    got = paired_difference_ci(y_true, pred_a, pred_b, groups=ident, n_boot=200, seed=3)
    assert got["diff"] == pytest.approx(np.mean(pred_a == y_true) - np.mean(pred_b == y_true))
    assert (got["ci_low"], got["ci_high"]) == pytest.approx(_percentile(acc, 0.05), abs=1e-12)

    auc = _iid_loop(
        len(y_true),
        200,
        4,
        lambda i: _auc_or_nan(y_true[i], score_a[i]) - _auc_or_nan(y_true[i], score_b[i]),
    )
    got = paired_difference_ci(
        y_true, None, None, stat="roc_auc", score_a=score_a, score_b=score_b, n_boot=200, seed=4
    )
    assert got["diff"] == pytest.approx(
        roc_auc_score(y_true, score_a) - roc_auc_score(y_true, score_b), abs=1e-12
    )
    assert (got["ci_low"], got["ci_high"]) == pytest.approx(_percentile(auc, 0.05), abs=1e-12)

    bal = _cluster_loop(
        ident,
        200,
        5,
        lambda i: (
            balanced_accuracy_score(y_true[i], pred_a[i])
            - balanced_accuracy_score(y_true[i], pred_b[i])
        ),
    )
    got = paired_difference_ci(
        y_true,
        pred_a,
        pred_b,
        stat="balanced_accuracy",
        groups=ident,
        n_boot=200,
        seed=5,
        alpha=0.2,
    )
    assert (got["ci_low"], got["ci_high"]) == pytest.approx(_percentile(bal, 0.2), abs=1e-12)

    # a model against itself: no difference on any resample
    same = paired_difference_ci(y_true, pred_a, pred_a, n_boot=50)
    assert same == {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    with pytest.raises(ValueError, match="stat must be one of"):
        paired_difference_ci(y_true, pred_a, pred_b, stat="f1")
    with pytest.raises(ValueError, match="score_b is required"):
        paired_difference_ci(y_true, None, None, stat="roc_auc", score_a=score_a)
    with pytest.raises(ValueError, match="differ in length"):
        paired_difference_ci(y_true, pred_a, pred_b[:-1])


# --------------------------------------------------------------------------- scores


def test_auc_vs_chance_exact_small_sample():
    got = auc_vs_chance(TINY_TRUE, TINY_SCORE)
    assert got["auc"] == pytest.approx(roc_auc_score(TINY_TRUE, TINY_SCORE)) == 19 / 24
    assert got["statistic"] == 19

    # exact null distribution: every way of labelling 4 of the 10 scores positive
    def u_of(pos):
        neg = [j for j in range(10) if j not in pos]
        return sum(TINY_SCORE[i] > TINY_SCORE[j] for i in pos for j in neg)

    null = [u_of(set(c)) for c in combinations(range(10), 4)]
    assert got["p_value"] == pytest.approx(np.mean(np.array(null) >= 19), rel=1e-12)


def test_auc_vs_chance_normal_approximation_with_ties():
    rng = np.random.default_rng(5)
    y_true = (rng.random(400) < 0.1).astype(np.int8)  # imbalanced: ~40 positives
    y_score = np.round(rng.random(400) * 0.7 + 0.3 * y_true, 1)  # heavy ties
    got = auc_vs_chance(y_true, y_score)
    assert got["auc"] == pytest.approx(roc_auc_score(y_true, y_score), abs=1e-12)
    n1, n0 = int(y_true.sum()), int((1 - y_true).sum())
    n = n1 + n0
    _, tie_counts = np.unique(y_score, return_counts=True)
    sigma = math.sqrt(n1 * n0 / 12 * ((n + 1) - np.sum(tie_counts**3 - tie_counts) / (n * (n - 1))))
    z = (got["auc"] * n1 * n0 - n1 * n0 / 2 - 0.5) / sigma
    assert got["p_value"] == pytest.approx(sp_stats.norm.sf(z), rel=1e-9)
    assert got["p_value"] < 1e-6
    one_class = auc_vs_chance(np.ones(5, dtype=np.int8), np.linspace(0, 1, 5))
    assert all(math.isnan(one_class[k]) for k in ("auc", "statistic", "p_value"))
    assert one_class["method"] is None and got["method"] == "mann-whitney"
    with pytest.raises(ValueError, match="NaN or infinite"):
        auc_vs_chance(TINY_TRUE, np.where(TINY_TRUE, np.inf, 0.0))
    with pytest.raises(ValueError, match="differ in length"):
        auc_vs_chance(TINY_TRUE, TINY_SCORE[:-1])


def test_brier_and_calibration_match_sklearn():
    rng = np.random.default_rng(2)
    y_score = np.concatenate([rng.random(500), [0.0, 0.1, 0.2, 0.5, 0.9, 1.0]])  # edges too
    y_true = (rng.random(len(y_score)) < y_score**1.5).astype(np.int8)
    assert brier_score(y_true, y_score) == pytest.approx(
        brier_score_loss(y_true, y_score), abs=1e-15
    )
    for bins in (10, 7):
        table = calibration_table(y_true, y_score, bins=bins)
        assert list(table.columns) == CALIBRATION_COLUMNS
        prob_true, prob_pred = calibration_curve(y_true, y_score, n_bins=bins, strategy="uniform")
        np.testing.assert_allclose(table.frac_positive, prob_true, atol=1e-12)
        np.testing.assert_allclose(table.mean_score, prob_pred, atol=1e-12)
        assert table.n.sum() == len(y_score)
        # every image lies in its bin: (low, high], the first bin also 0
        ids = np.searchsorted(np.linspace(0, 1, bins + 1)[1:-1], y_score)
        assert table.n.tolist() == [int(c) for c in np.bincount(ids) if c]
    sparse = calibration_table([0, 1, 1], [0.05, 0.93, 0.97])  # empty bins dropped
    assert sparse[["bin_low", "n", "frac_positive"]].values.tolist() == [
        [0.0, 1, 0.0],
        [0.9, 2, 1.0],
    ]
    with pytest.raises(ValueError, match="probabilities in"):
        brier_score([0, 1], [0.2, 1.5])
    with pytest.raises(ValueError, match="bins must be"):
        calibration_table([0, 1], [0.2, 0.5], bins=0)


# --------------------------------------------------------------------------- families, tables


def test_holm_by_family_matches_statsmodels_per_family():
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "feature_set": rng.choice(["a", "b"], 60),
            "train_size": rng.choice([400, 1000], 60),
            "seed": rng.choice([0, 1], 60),
            "p": rng.random(60) ** 2,
        },
        index=rng.permutation(60) + 100,
    )
    frame.loc[frame.index[:3], "p"] = np.nan
    got = holm_by_family(frame, "p")
    assert got.index.equals(frame.index)
    for _, fam in frame.groupby(FAMILY):
        ok = fam["p"].dropna()
        np.testing.assert_allclose(got[ok.index], multipletests(ok, method="holm")[1])
        assert got[fam.index.difference(ok.index)].isna().all()
    np.testing.assert_allclose(
        holm_by_family(frame, "p", family=[]).dropna(),
        multipletests(frame["p"].dropna(), method="holm")[1],
    )
    with pytest.raises(ValueError, match="lacks columns"):
        holm_by_family(frame.drop(columns="seed"), "p")


def test_baseline_tests_auc_against_chance_has_power_under_imbalance():
    frame = _baseline_frame()
    # a rare attribute: 7 positives of 300, a model that ranks them all on top but predicts
    # the majority class: McNemar against the constant cannot see it, AUC against chance can
    y = np.zeros(300, dtype=np.int8)
    y[:7] = 1
    rare = {
        "attribute": "hat_rare",
        "feature_set": "fs",
        "model": "dense",
        "train_size": 0,
        "seed": 0,
        "y_true": y,
        "y_pred": np.zeros(300, dtype=np.int8),
        "majority_baseline": majority_baseline([0], y),
    }
    frame = pd.concat([frame, pd.DataFrame([rare])], ignore_index=True)
    rng = np.random.default_rng(1)
    scores = []
    for row in frame.itertuples():
        if row.model == "forest":
            scores.append(None)  # a fit without scores (old store)
        else:
            scores.append(np.clip(0.3 + 0.4 * row.y_true + rng.normal(0, 0.2, 300), 0, 1))
    frame["y_score"] = scores
    out = baseline_tests(frame)
    assert list(out.columns) == BASELINE_COLUMNS
    has = frame["y_score"].notna().to_numpy()
    for i in np.flatnonzero(has):
        t, s = frame.at[i, "y_true"], frame.at[i, "y_score"]
        ref = sp_stats.mannwhitneyu(s[t == 1], s[t == 0], alternative="greater")
        assert out.at[i, "auc"] == pytest.approx(roc_auc_score(t, s), abs=1e-12)
        assert out.at[i, "p_auc"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert out.loc[~has, ["auc", "p_auc", "p_auc_holm"]].isna().all().all()
    assert not out.loc[~has, "beats_chance"].any()
    np.testing.assert_allclose(
        out.loc[has, "p_auc_holm"], multipletests(out.loc[has, "p_auc"], method="holm")[1]
    )
    assert (out.beats_chance == (out.p_auc_holm < 0.05)).all()
    r = out.set_index("attribute").loc["hat_rare"]
    assert not r.beats_baseline and r.beats_chance
    # no y_score column at all: the new columns are empty, the old ones unchanged
    old = baseline_tests(frame.drop(columns="y_score"))
    assert old[["auc", "p_auc", "p_auc_holm"]].isna().all().all() and not old.beats_chance.any()
    pd.testing.assert_frame_equal(old[BASELINE_COLUMNS[:-4]], out[BASELINE_COLUMNS[:-4]])
    bad = frame.copy()
    bad.at[0, "y_score"] = bad.at[0, "y_score"][:-1]
    with pytest.raises(ValueError, match="differ in length"):
        baseline_tests(bad)


def test_best_model_table_chooses_by_selection_score():
    results = _results(with_ids=True)
    # smiling: forest is best on test (1.0) but dense is chosen on validation; bald: all tie
    sel = {
        ("smiling", "lasso"): 0.70,
        ("smiling", "forest"): 0.80,
        ("smiling", "dense"): 0.90,
        ("bald", "lasso"): 0.5,
        ("bald", "forest"): 0.5,
        ("bald", "dense"): 0.5,
    }
    results["selection_score"] = [
        sel[(a, m)] for a, m in zip(results.attribute, results.model, strict=True)
    ]
    comp = compare_models(results)
    best = best_model_table(results, comp).set_index("attribute")
    assert list(best.reset_index().columns) == BEST_COLUMNS
    s = best.loc["smiling"]
    assert (s.best_model, s.best_accuracy, s.runner_up, s.runner_up_accuracy) == (
        "dense",
        0.8,
        "forest",
        1.0,
    )  # test accuracies of the chosen models
    assert (s.chosen_by, s.best_selection_score, bool(s.tied)) == (CHOSEN_BY_SELECTION, 0.9, False)
    assert not s.beats_all  # dense is worse than forest on test
    b = best.loc["bald"]  # equal selection scores: lasso, forest, dense in that order
    assert (b.best_model, b.runner_up, bool(b.tied)) == ("lasso", "forest", True)
    # one model of a group lacks selection_score: that group falls back to the old rule
    results.loc[(results.attribute == "bald") & (results.model == "dense"), "selection_score"] = (
        np.nan
    )
    mixed = best_model_table(results, comp).set_index("attribute")
    assert mixed.loc["smiling", "chosen_by"] == CHOSEN_BY_SELECTION
    fallback = mixed.loc["bald"]
    assert (fallback.chosen_by, fallback.best_model) == (CHOSEN_BY_TEST, "forest")
    assert math.isnan(fallback.best_selection_score)
    old = best_model_table(results.drop(columns="selection_score"), comp)
    assert (old.chosen_by == CHOSEN_BY_TEST).all() and old.best_selection_score.isna().all()

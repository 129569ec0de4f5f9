"""The significance tests by identity: McNemar as an exact sign-flip test over people, the AUC
test as Obuchowski's clustered z-test, and the study's tables that use them."""

from __future__ import annotations

import importlib.util
import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from featstore.evaluate import (
    auc_vs_chance,
    baseline_tests,
    compare_models,
    majority_baseline,
    mcnemar,
)
from featstore.evaluate.significance import sign_flip_p


def test_sign_flip_p_is_the_share_of_sign_vectors_at_least_as_extreme():
    rng = np.random.default_rng(0)
    for _ in range(25):
        d = rng.integers(-4, 5, size=int(rng.integers(1, 11)))
        flips = np.array(list(itertools.product([-1, 1], repeat=len(d))))
        brute = np.mean(np.abs(flips @ d) >= abs(d.sum()))
        assert sign_flip_p(d) == pytest.approx(brute, abs=1e-12)
    assert sign_flip_p([]) == 1.0 and sign_flip_p([0, 0]) == 1.0


@pytest.mark.parametrize("b, c", [(3, 10), (0, 7), (30, 50), (100, 100)])
def test_one_image_per_person_is_the_exact_mcnemar_test(b, c):
    d = np.array([1] * b + [-1] * c)
    exact = min(1.0, 2 * stats.binom.cdf(min(b, c), b + c, 0.5))
    assert sign_flip_p(d) == pytest.approx(exact, rel=1e-9, abs=1e-15)


def _pairs(people: int, images: int, seed: int) -> tuple[np.ndarray, ...]:
    """Labels, two models' predictions and identities: A is wrong on every image of a few
    people, B on scattered images."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(people), images)
    t = rng.integers(0, 2, groups.size).astype(np.int8)
    a_wrong = np.isin(groups, rng.choice(people, 3, replace=False))
    b_wrong = rng.random(groups.size) < 0.01
    return t, np.where(a_wrong, 1 - t, t), np.where(b_wrong, 1 - t, t), groups


def test_mcnemar_by_identity_counts_people_not_images():
    t, pred_a, pred_b, groups = _pairs(people=40, images=10, seed=1)
    plain = mcnemar(t, pred_b, pred_a)
    clustered = mcnemar(t, pred_b, pred_a, groups=groups)
    # the same discordant images ...
    assert (clustered["b"], clustered["c"]) == (plain["b"], plain["c"])
    assert clustered["method"] == "clustered exact"
    # ... but the evidence is three people: the per-person balances, sign-flipped
    right_a, right_b = pred_b == t, pred_a == t
    d = np.bincount(groups, weights=right_a.astype(int) - right_b.astype(int)).astype(int)
    d = d[d != 0]
    flips = np.array(list(itertools.product([-1, 1], repeat=len(d))))
    assert clustered["p_value"] == pytest.approx(np.mean(np.abs(flips @ d) >= abs(d.sum())))
    assert clustered["statistic"] == abs(d.sum())
    assert plain["p_value"] < 1e-4 < 0.05 < clustered["p_value"]
    durkalski = mcnemar(t, pred_b, pred_a, groups=groups, exact=False)
    assert durkalski["method"] == "clustered chi2"
    assert durkalski["statistic"] == pytest.approx(d.sum() ** 2 / (d @ d))
    assert durkalski["p_value"] == pytest.approx(stats.chi2.sf(d.sum() ** 2 / (d @ d), 1))


def test_one_image_per_person_or_unknown_identities_keep_the_classical_tests():
    t, pred_a, pred_b, _ = _pairs(people=40, images=10, seed=2)
    plain = mcnemar(t, pred_a, pred_b)
    assert mcnemar(t, pred_a, pred_b, groups=np.arange(t.size)) == plain
    unknown = np.array([None] * t.size, dtype=object)  # nobody known: every image alone
    assert mcnemar(t, pred_a, pred_b, groups=unknown) == plain
    score = t + np.random.default_rng(2).normal(0, 1, t.size)
    assert auc_vs_chance(t, score, groups=np.arange(t.size)) == auc_vs_chance(t, score)


def _obuchowski_by_pairs(t, score, groups):
    """Obuchowski (1997) written out pair by pair, as in the paper."""
    people = sorted(set(groups))
    pos, neg = np.flatnonzero(t == 1), np.flatnonzero(t == 0)
    psi = (score[pos][:, None] > score[neg][None, :]) + 0.5 * (
        score[pos][:, None] == score[neg][None, :]
    )
    auc = psi.mean()
    v10 = {p: psi[groups[pos] == p].mean(axis=1).sum() for p in people}
    v01 = {p: psi[:, groups[neg] == p].mean(axis=0).sum() for p in people}
    m_i = {p: np.sum(groups[pos] == p) for p in people}
    n_i = {p: np.sum(groups[neg] == p) for p in people}
    k = len(people)
    s10 = k / ((k - 1) * len(pos)) * sum((v10[p] - m_i[p] * auc) ** 2 for p in people)
    s01 = k / ((k - 1) * len(neg)) * sum((v01[p] - n_i[p] * auc) ** 2 for p in people)
    s11 = k / (k - 1) * sum((v10[p] - m_i[p] * auc) * (v01[p] - n_i[p] * auc) for p in people)
    var = s10 / len(pos) + s01 / len(neg) + 2 * s11 / (len(pos) * len(neg))
    return auc, (auc - 0.5) / math.sqrt(var)


def test_auc_by_identity_is_obuchowskis_clustered_test():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(30), rng.integers(1, 9, 30))
    t = (rng.normal(0, 1, 30)[groups] + rng.normal(0, 1, groups.size) > 0).astype(np.int8)
    score = np.round(0.4 * t + rng.normal(0, 1, 30)[groups] + rng.normal(0, 1, groups.size), 1)
    got = auc_vs_chance(t, score, groups=groups)
    auc, z = _obuchowski_by_pairs(t, score, groups)
    assert got["method"] == "obuchowski"
    assert got["auc"] == pytest.approx(roc_auc_score(t, score), abs=1e-12)
    assert got["auc"] == pytest.approx(auc, abs=1e-12)
    assert got["statistic"] == pytest.approx(z, rel=1e-9)
    # read on Student's t with people - 1 degrees of freedom, never below the image-level test
    image_level = stats.mannwhitneyu(score[t == 1], score[t == 0], alternative="greater").pvalue
    want = max(stats.t.sf(z, 29), image_level)
    assert got["p_value"] == pytest.approx(want, rel=1e-9)
    # one person holds every image: nothing to resample by, no test
    alone = auc_vs_chance(t, score, groups=np.zeros(t.size, dtype=int))
    assert math.isnan(alone["p_value"]) and alone["method"] is None


def test_perfect_separation_by_identity_claims_no_more_than_the_images_do():
    """Obuchowski's variance collapses at AUC 1 (every component at its mean): the p-value is
    then the image-level test's, not 0; positives of one person are no test at all."""
    groups = np.repeat(np.arange(10), 6)
    t = np.zeros(60, dtype=np.int8)
    t[[0, 6, 12, 18]] = 1  # four people with one positive image each
    score = t + np.linspace(0, 0.5, 60)  # every positive above every negative
    got = auc_vs_chance(t, score, groups=groups)
    image_level = auc_vs_chance(t, score)
    assert got["auc"] == 1.0 and got["statistic"] == math.inf
    assert got["p_value"] == pytest.approx(image_level["p_value"]) and got["p_value"] > 0
    one_person = np.zeros(60, dtype=np.int8)
    one_person[:4] = 1  # four positives, all of person 0
    alone = auc_vs_chance(one_person, one_person + np.linspace(0, 0.5, 60), groups=groups)
    assert math.isnan(alone["p_value"]) and alone["method"] is None


def _bench():
    """bench/bench_identity_tests.py as a module (bench/ is scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "bench" / "bench_identity_tests.py"
    spec = importlib.util.spec_from_file_location("bench_identity_tests", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tests_by_identity_hold_their_level_where_the_image_tests_do_not():
    """Both nulls true, labels and scores sharing a per-person effect: the image-level tests
    reject far more often than alpha, the tests by identity about alpha (bench/
    bench_identity_tests.py prints the same with more runs)."""
    one_run = _bench().one_run
    rng = np.random.default_rng(0)
    runs = [one_run(rng, people=60, images=15, spread=1.5) for _ in range(150)]
    rate = pd.DataFrame(runs).lt(0.05).mean()
    assert rate["auc > 0.5, images (mann-whitney)"] > 0.15
    assert rate["auc > 0.5, by identity (obuchowski)"] < 0.11
    assert rate["mcnemar, by identity"] < 0.11


def _fits(with_ids: bool) -> pd.DataFrame:
    """Two probes on one attribute of a test split of 40 people x 10 images, with the
    identities stored per fit as the grid stores them (and, with ids, each in its own order)."""
    t, pred_a, pred_b, groups = _pairs(people=40, images=10, seed=4)
    ids = np.array([f"{i:06d}.jpg" for i in range(t.size)])
    rng = np.random.default_rng(4)
    rows = []
    for model, pred in (("dense", pred_a), ("lasso", pred_b)):
        score = np.clip(0.5 * pred + 0.25 + rng.normal(0, 0.1, t.size), 0, 1)
        row = {
            "attribute": "smiling",
            "feature_set": "fs",
            "model": model,
            "train_size": 0,
            "seed": 0,
            "y_true": t,
            "y_pred": pred,
            "y_score": score,
            "groups": groups.tolist(),
            "majority_baseline": majority_baseline([0, 0, 1], t),
        }
        if with_ids:
            perm = rng.permutation(t.size)
            row.update(
                y_true=t[perm],
                y_pred=pred[perm],
                y_score=score[perm],
                groups=groups[perm].tolist(),
                image_ids=ids[perm],
            )
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("with_ids", [False, True])
def test_the_study_tables_test_by_the_stored_identities(with_ids):
    t, pred_a, pred_b, groups = _pairs(people=40, images=10, seed=4)
    fits = _fits(with_ids)
    comp = compare_models(fits).iloc[0]
    want = mcnemar(t, pred_a, pred_b, groups=groups)
    assert (comp.model_a, comp.model_b, comp.method) == ("dense", "lasso", "clustered exact")
    assert (comp.b, comp.c) == (want["b"], want["c"])
    assert comp.p_value == pytest.approx(want["p_value"])
    base = baseline_tests(fits).set_index("model")
    for model, pred in (("dense", pred_a), ("lasso", pred_b)):
        row = fits.set_index("model").loc[model]
        constant = np.full(t.size, int(base.at[model, "baseline_class"]))
        ref = mcnemar(t, pred, constant, groups=groups)
        assert base.at[model, "method"] == "clustered exact"
        assert base.at[model, "p_value"] == pytest.approx(ref["p_value"])
        chance = auc_vs_chance(row.y_true, row.y_score, groups=row.groups)
        assert base.at[model, "p_auc"] == pytest.approx(chance["p_value"])
    # the same fits without identities: the classical tests
    blind = compare_models(fits.drop(columns="groups")).iloc[0]
    assert blind.method in ("exact", "chi2") and blind.p_value < comp.p_value


@pytest.mark.parametrize("with_ids", [False, True])
def test_the_best_models_lead_has_a_paired_interval_by_person(with_ids):
    from featstore.evaluate import best_model_table, paired_difference_ci

    t, pred_a, pred_b, _ = _pairs(people=40, images=10, seed=4)
    fits = _fits(with_ids).assign(selection_score=[0.6, 0.9])  # lasso chosen, dense runner-up
    best = best_model_table(fits, compare_models(fits), n_boot=400).iloc[0]
    assert (best.best_model, best.runner_up) == ("lasso", "dense")
    # in the test order of the first model by name (dense), where the rows are aligned to
    dense = fits.set_index("model").loc["dense"]
    lasso = _aligned_to(fits, "lasso", dense)
    want = paired_difference_ci(dense.y_true, lasso, dense.y_pred, groups=dense.groups, n_boot=400)
    assert best.gap == pytest.approx(np.mean(pred_b == t) - np.mean(pred_a == t))
    assert (best.gap, best.gap_ci_low, best.gap_ci_high) == pytest.approx(
        (want["diff"], want["ci_low"], want["ci_high"])
    )
    # resampling people, not images: three people's errors make a wide interval
    images = paired_difference_ci(t, pred_b, pred_a, n_boot=400)
    assert best.gap_ci_high - best.gap_ci_low > 1.5 * (images["ci_high"] - images["ci_low"])
    alone = best_model_table(
        fits[fits.model == "lasso"], compare_models(fits[fits.model == "lasso"])
    )
    assert alone[["gap", "gap_ci_low", "gap_ci_high"]].isna().all(axis=None)


def _aligned_to(fits: pd.DataFrame, model: str, ref: pd.Series) -> np.ndarray:
    """``model``'s predictions in ``ref``'s test order (by image id where the rows have them)."""
    row = fits.set_index("model").loc[model]
    if "image_ids" not in fits.columns:
        return np.asarray(row.y_pred)
    where = {image: i for i, image in enumerate(row.image_ids)}
    return np.asarray(row.y_pred)[[where[image] for image in ref.image_ids]]


def test_probes_pooled_over_attributes_resample_whole_people():
    """Each probe against each other over all attributes at once: the gap is the mean of the
    per-attribute differences, the test McNemar over every attribute's images with a person's
    images of every attribute one cluster; Holm over the pairs."""
    from featstore.evaluate import holm, paired_difference_ci, pooled_comparisons

    t, pred_a, pred_b, groups = _pairs(people=40, images=10, seed=4)
    smiling = _fits(with_ids=False)
    rng = np.random.default_rng(9)
    t2 = rng.integers(0, 2, t.size).astype(np.int8)
    second = {"dense": np.where(rng.random(t.size) < 0.2, 1 - t2, t2), "lasso": t2.copy()}
    male = smiling.assign(
        attribute="Male", y_true=[t2, t2], y_pred=[second["dense"], second["lasso"]]
    )
    fits = pd.concat([smiling, male], ignore_index=True).drop(columns="y_score")
    pooled = pooled_comparisons(fits, n_boot=300).iloc[0]
    assert (pooled.model_a, pooled.model_b, pooled.attributes, pooled.n) == (
        "lasso",
        "dense",
        2,
        400,
    )
    per_attribute = [
        np.mean(pred_b == t) - np.mean(pred_a == t),
        np.mean(t2 == t2) - np.mean(second["dense"] == t2),
    ]
    assert pooled.gap == pytest.approx(np.mean(per_attribute))
    y = np.concatenate([t, t2])
    a = np.concatenate([pred_b, second["lasso"]])
    b = np.concatenate([pred_a, second["dense"]])
    people = np.concatenate([groups, groups])
    assert pooled.p_value == pytest.approx(mcnemar(y, a, b, groups=people)["p_value"])
    want = paired_difference_ci(y, a, b, groups=people, n_boot=300)
    assert (pooled.gap_ci_low, pooled.gap_ci_high) == pytest.approx(
        (want["ci_low"], want["ci_high"])
    )
    assert pooled.p_holm == pytest.approx(holm([pooled.p_value])[0])

"""The chain on a synthetic store: images -> ingest -> extract -> train. Rendered attributes are
learned from CNN features; an attribute whose labels are independent of the images is not."""

from __future__ import annotations

import pytest

from featstore.sources.synthetic import RENDERED_ATTRIBUTES, UNRENDERED_ATTRIBUTES, generate
from featstore.train.grid import read_results
from jobs import extract as extract_job
from jobs import ingest as ingest_job
from jobs import train as train_job


@pytest.fixture(scope="module")
def synthetic_store(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    generate(root / "celeba", 500, seed=1, workers=2)
    st = root / "store"
    assert ingest_job.main(["--store", str(st), "--path", str(root / "celeba")], spark=spark) == 0
    # random weights (no downloads here) still give features that carry the drawn attributes
    assert (
        extract_job.main(
            [
                "--store",
                str(st),
                "--model",
                "resnet50",
                "--input-size",
                "64x64",
                "--weights",
                "random",
                "--feature-set",
                "r50",
                "--batch-size",
                "50",
            ],
            spark=spark,
        )
        == 0
    )
    return st


def test_rendered_attributes_beat_baseline_independent_one_does_not(spark, synthetic_store):
    assert {"Smiling", "Male"} <= set(RENDERED_ATTRIBUTES)
    assert "Attractive" in UNRENDERED_ATTRIBUTES
    rc = train_job.main(
        [
            "--store",
            str(synthetic_store),
            "--feature-sets",
            "r50",
            "--attributes",
            "Smiling,Male,Attractive",
            "--models",
            "lasso",
            "--set",
            "train.folds=3",
            "--set",
            "train.lasso_cs=6",
            "--set",
            "train.bootstrap=500",
        ],
        spark=spark,
    )
    assert rc == 0
    res = read_results(synthetic_store).set_index("attribute")
    assert (res.status == "ok").all() and (res.n_test > 40).all()
    for attr in ("Smiling", "Male"):
        row = res.loc[attr]
        # clearly above: the whole 95% bootstrap interval lies above the majority baseline
        assert row.ci_low > row.majority_baseline, (attr, row.accuracy, row.majority_baseline)
    noise = res.loc["Attractive"]
    assert noise.ci_low <= noise.majority_baseline


# ----------------------------------------------------------------------------------------------
# Random-weight MobileNetV2: embeddings of a tiny scale (the case that made trees and the dense
# head predict one class); every probe standardizes, the set is flagged, winners are chosen on
# the validation split.

MNV2_ATTRS = ("Male", "Smiling", "Attractive")


@pytest.fixture(scope="module")
def mnv2_store(spark, tmp_path_factory):
    from jobs import report as report_job

    root = tmp_path_factory.mktemp("e2e-mnv2")
    generate(root / "celeba", 600, seed=2, workers=2)
    st = root / "store"
    assert ingest_job.main(["--store", str(st), "--path", str(root / "celeba")], spark=spark) == 0
    assert (
        extract_job.main(
            [
                "--store",
                str(st),
                "--model",
                "mobilenetv2",
                "--input-size",
                "64x64",
                "--weights",
                "random",
                "--feature-set",
                "mnv2",
                "--batch-size",
                "50",
            ],
            spark=spark,
        )
        == 0
    )
    assert (
        train_job.main(
            [
                "--store",
                str(st),
                "--feature-sets",
                "mnv2",
                "--attributes",
                ",".join(MNV2_ATTRS),
                "--models",
                "lasso,forest,dense",
                "--set",
                "train.folds=3",
                "--set",
                "train.lasso_cs=6",
                "--set",
                "train.forest_trees=60",
                "--set",
                "train.bootstrap=300",
                "--set",
                "train.dense_epochs=30",
            ],
            spark=spark,
        )
        == 0
    )
    assert report_job.main(["--store", str(st), "--out", str(root / "report")], spark=spark) == 0
    return root


def test_forest_and_dense_find_what_lasso_finds_on_tiny_scale_features(mnv2_store):
    res = read_results(mnv2_store / "store")
    assert (res.status == "ok").all()
    auc = res.pivot(index="attribute", columns="model", values="roc_auc")
    found = auc[auc["lasso"] >= 0.7]
    assert "Male" in found.index, auc  # the drawn attribute random 64x64 features carry
    for attr, row in found.iterrows():
        assert row["forest"] >= 0.6 and row["dense"] >= 0.6, (attr, row.to_dict())


def test_results_carry_selection_score_and_y_score(mnv2_store):
    import numpy as np

    res = read_results(mnv2_store / "store")
    for r in res.itertuples():
        assert 0.0 <= r.selection_score <= 1.0 and r.selection_metric == "validation accuracy"
        assert len(r.y_score) == len(r.y_true) == r.n_test
        # y_pred is y_score against the fit's threshold (0.5 by default)
        assert np.array_equal(r.y_pred, (np.asarray(r.y_score) > 0.5).astype(np.int8))
        assert r.ci_low <= r.accuracy <= r.ci_high
        assert r.auc_ci_low <= r.roc_auc <= r.auc_ci_high
        assert len(r.groups) == r.n_test  # the test images' people: intervals resample them


def test_the_best_model_is_the_argmax_of_selection_score(mnv2_store):
    import pandas as pd

    res = read_results(mnv2_store / "store")
    summary = pd.read_csv(mnv2_store / "report" / "summary.csv").set_index("attribute")
    order = {"lasso": 0, "forest": 1, "dense": 2}
    for attr, rows in res.groupby("attribute"):
        ranked = sorted(rows.itertuples(), key=lambda r: (-r.selection_score, order[r.model]))
        assert summary.loc[attr, "best_model"] == ranked[0].model
        # its TEST accuracy is the estimate reported
        assert summary.loc[attr, "best_accuracy"] == pytest.approx(ranked[0].accuracy)


def test_the_reports_tests_take_the_person_as_the_unit(mnv2_store):
    """The real jobs' report: its p-values against the constant and against chance are the
    tests by identity on the stored fits (the grid stored each test image's person)."""
    import numpy as np
    import pandas as pd

    from featstore import evaluate

    res = read_results(mnv2_store / "store").set_index(["attribute", "model"])
    summary = pd.read_csv(mnv2_store / "report" / "summary.csv").set_index("attribute")
    for attr, row in summary.iterrows():
        fit = res.loc[(attr, row.best_model)]
        assert len(set(fit.groups)) < len(fit.groups)  # people with several test images
        chance = evaluate.auc_vs_chance(fit.y_true, fit.y_score, groups=fit.groups)
        assert chance["method"] == "obuchowski"
        assert row.p_auc == pytest.approx(chance["p_value"], rel=1e-9, abs=1e-300)
        train_majority = [k for k in (0, 1) if np.mean(fit.y_true == k) == row.majority_baseline]
        test = max(
            (
                evaluate.beats_baseline(fit.y_true, fit.y_pred, baseline_class=k, groups=fit.groups)
                for k in train_majority
            ),
            key=lambda r: r["p_value"],
        )
        assert test["method"] == "clustered exact"
        assert row.p_baseline == pytest.approx(test["p_value"], rel=1e-9, abs=1e-300)


def test_the_labels_table_carries_the_identity_file(mnv2_store):
    import pandas as pd

    from featstore import store

    ident = pd.read_csv(
        mnv2_store / "celeba" / "identity_CelebA.txt",
        sep=" ",
        header=None,
        names=["image_id", "identity"],
    )
    labels = store.read_table(
        mnv2_store / "store", "labels", columns=["image_id", "identity"]
    ).to_pandas()
    merged = labels.merge(ident, on="image_id", suffixes=("", "_file"))
    assert len(merged) == len(labels) == 600
    assert (merged["identity"] == merged["identity_file"]).all()


def test_a_degenerate_set_is_flagged_in_its_manifest(mnv2_store):
    from featstore import store

    spread = store.feature_set_manifest(mnv2_store / "store", "mnv2")["spread"]
    assert spread["rows"] > 0 and spread["max_std"] >= spread["median_std"] >= 0
    # whatever the scale, the flag follows its rule (every dimension below TINY_STD)
    from featstore.spread import TINY_STD

    assert spread["degenerate"] == (spread["max_std"] < TINY_STD)


def test_describe_and_ls_name_a_degenerate_set(mnv2_store, capsys):
    from featstore import store
    from jobs import cli

    spread = store.feature_set_manifest(mnv2_store / "store", "mnv2")["spread"]
    assert cli.main(["describe", str(mnv2_store / "store"), "mnv2"]) == 0
    described = capsys.readouterr().out
    assert cli.main(["ls", str(mnv2_store / "store")]) == 0
    listed = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("note: degenerate")
    ]
    assert spread["degenerate"]  # random-weight MobileNetV2: every dimension ~1e-12 (measured)
    assert "DEGENERATE: every one of the 1280 dimensions" in described
    assert listed and listed[0].endswith(": mnv2")

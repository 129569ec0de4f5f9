"""A class-per-folder study with the real jobs: synth --layout folder (4 imbalanced classes) ->
ingest --source folder -> extract (MobileNetV2, random weights, 32x32) -> train --target class
-> report. The results rows are read back and checked against their own confusion matrices, their
bootstrap intervals against the bootstrap itself, their saved models against their predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from featstore import evaluate, store
from featstore.train.grid import read_results
from featstore.train.saved import ClassModel, load_model, predict_proba, predict_scores
from jobs import extract as extract_job
from jobs import ingest as ingest_job
from jobs import report as report_job
from jobs import synth as synth_job
from jobs import train as train_job

MODELS = ("lasso", "forest", "dense")


@pytest.fixture(scope="module")
def folder_study(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("multiclass")
    assert (
        synth_job.main(
            [
                "--out",
                str(root / "shapes"),
                "--layout",
                "folder",
                "--classes",
                "4",
                "--n",
                "400",
                "--size",
                "32",
            ]
        )
        == 0
    )
    st = str(root / "store")
    assert (
        ingest_job.main(
            [
                "--store",
                st,
                "--source",
                "folder",
                "--path",
                str(root / "shapes"),
                "--set",
                "ingest.split_fractions=[0.6,0.15,0.25]",
            ],
            spark=spark,
        )
        == 0
    )
    assert (
        extract_job.main(
            [
                "--store",
                st,
                "--model",
                "mobilenetv2",
                "--input-size",
                "32x32",
                "--weights",
                "random",
                "--feature-set",
                "mnv2",
                "--batch-size",
                "100",
            ],
            spark=spark,
        )
        == 0
    )
    assert (
        train_job.main(
            [
                "--store",
                st,
                "--feature-sets",
                "mnv2",
                "--target",
                "class",
                "--models",
                ",".join(MODELS),
                "--set",
                "train.folds=3",
                "--set",
                "train.lasso_cs=5",
                "--set",
                "train.forest_trees=60",
                "--set",
                "train.dense_epochs=60",
                "--set",
                "train.dense_patience=8",
                "--set",
                "train.dense_batch_size=32",
                "--set",
                "train.save_models=true",
            ],
            spark=spark,
        )
        == 0
    )
    assert report_job.main(["--store", st, "--out", str(root / "report")], spark=spark) == 0
    return root


def test_the_synthetic_folder_set_is_imbalanced(folder_study):
    sizes = sorted(len(list(d.iterdir())) for d in (folder_study / "shapes").iterdir())
    assert len(sizes) == 4 and sizes[-1] >= 10 * sizes[0]


def test_one_multiclass_row_per_probe_consistent_with_its_confusion_matrix(folder_study):
    res = read_results(folder_study / "store")
    assert sorted(res["model"]) == sorted(MODELS)
    assert (res["status"] == "ok").all() and (res["attribute"] == "class").all()
    labels = store.read_table(folder_study / "store", "labels").to_pandas()
    test_sizes = labels[labels["split"] == "test"]["class"].value_counts()
    for r in res.itertuples():
        cm = np.asarray(r.confusion)
        assert r.n_classes == 4 and cm.shape == (4, 4) and list(r.classes) == sorted(r.classes)
        # accuracy is the diagonal's share; rows sum to the test split's class sizes
        assert r.accuracy == pytest.approx(np.trace(cm) / cm.sum())
        assert cm.sum(axis=1).tolist() == [int(test_sizes[c]) for c in r.classes]
        assert (
            cm.tolist()
            == pd.crosstab(
                pd.Categorical(r.y_true, range(4)), pd.Categorical(r.y_pred, range(4)), dropna=False
            )
            .to_numpy()
            .tolist()
        )
        assert r.ci_low <= r.accuracy <= r.ci_high and 0 <= r.selection_score <= 1
        assert 0 < r.macro_f1 <= 1 and r.y_score is None
        # a set with signal: every probe above always predicting the majority class
        assert r.accuracy > r.majority_baseline, (r.model, r.accuracy, r.majority_baseline)


def test_the_report_shows_the_confusion_matrices_and_picks_by_selection_score(folder_study):
    html = (folder_study / "report" / "index.html").read_text()
    assert 'id="multiclass"' in html and "Multi-class targets" in html
    assert html.count("accuracy ") >= 3  # a confusion-matrix panel per probe (titles)
    for model in MODELS:
        assert f"{model} · accuracy" in html
    summary = pd.read_csv(folder_study / "report" / "multiclass.csv")
    res = read_results(folder_study / "store")
    order = {m: i for i, m in enumerate(MODELS)}
    ranked = sorted(res.itertuples(), key=lambda r: (-r.selection_score, order[r.model]))
    assert summary.loc[summary["best"], "model"].tolist() == [ranked[0].model]


def _boot(r, stat, groups):
    return evaluate.class_bootstrap_ci(
        r.y_true,
        r.y_pred,
        n_classes=r.n_classes,
        stat=stat,
        n_boot=N_BOOT,
        seed=r.seed,
        groups=groups,
    )


N_BOOT = 1000  # train.bootstrap's default, what folder_study's rows were made with


def test_multiclass_rows_carry_bootstrap_intervals_of_balanced_accuracy_and_macro_f1(
    folder_study,
):
    res = read_results(folder_study / "store")
    for r in res.itertuples():
        for est, lo, hi in (
            (r.balanced_accuracy, r.ba_ci_low, r.ba_ci_high),
            (r.macro_f1, r.macro_f1_ci_low, r.macro_f1_ci_high),
        ):
            assert np.isfinite([lo, hi]).all() and lo <= est <= hi, (r.model, lo, est, hi)
        # a folder set has no identities: the test images are resampled, with the cell's seed
        assert r.groups is None and r.ci_method == "wilson"
        assert (r.ba_ci_low, r.ba_ci_high) == _boot(r, "balanced_accuracy", None)
        assert (r.macro_f1_ci_low, r.macro_f1_ci_high) == _boot(r, "macro_f1", None)
    # the report shows them beside the numbers, and writes them to multiclass.csv
    summary = pd.read_csv(folder_study / "report" / "multiclass.csv").set_index("model")
    html = (folder_study / "report" / "index.html").read_text()
    for r in res.itertuples():
        assert summary.loc[r.model, "ba_ci_low"] == pytest.approx(r.ba_ci_low)
        assert summary.loc[r.model, "macro_f1_ci_high"] == pytest.approx(r.macro_f1_ci_high)
        assert f"{r.macro_f1:.3f} [{r.macro_f1_ci_low:.3f}, {r.macro_f1_ci_high:.3f}]" in html


def test_saved_multiclass_models_reproduce_the_test_predictions(folder_study):
    root = folder_study / "store"
    res = read_results(root)
    assert res.model_path.notna().all() and res.reason.isna().all()
    assert sorted(res.model_path) == sorted(f"models/{c}/class.joblib" for c in res.cell)
    test = store.read_arrow(root, "mnv2", splits=["test"])
    x = store.embedding_matrix(test, int(res.dim.iloc[0]), "mnv2")
    names = store.read_classes(root)
    for r in res.itertuples():
        model = load_model(root, r._asdict())
        assert isinstance(model, ClassModel) and list(model.classes) == list(r.classes)
        index = {c: i for i, c in enumerate(r.classes)}
        truth = [index[names[i]] for i in test["image_id"].to_pylist()]
        np.testing.assert_array_equal(truth, r.y_true)  # the grid's test rows, in its order
        proba = predict_proba(model, x)
        assert proba.shape == (len(x), 4) and proba.dtype == np.float32
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-4)
        np.testing.assert_array_equal(model.predict(x), r.y_pred, err_msg=r.model)
        with pytest.raises(ValueError, match="4-class model has no positive class"):
            predict_scores(model, x)


def test_intervals_resample_identities_where_the_store_knows_them(spark, tmp_path):
    """A store whose labels have a class and an identity (4 images per person): the multi-class
    row's intervals are the bootstrap over people, with the cell's seed."""
    from tests.storefakes import write_feature_set
    from tests.test_train_grid import write_labels

    n, rng = 240, np.random.default_rng(3)
    ids = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    splits = ["train" if i < 144 else ("val" if i < 192 else "test") for i in range(n)]
    x = rng.normal(size=(n, 6)).astype(np.float32)
    klass = np.array(["a", "b", "c"])[np.argmax(x[:, :3] + 0.5 * rng.normal(size=(n, 3)), axis=1)]
    write_labels(
        tmp_path,
        ids,
        splits,
        {"Smiling": x[:, 5] > 0},
        identity=[i // 4 for i in range(n)],
        klass=klass.tolist(),
    )
    write_feature_set(tmp_path, "cls", ids, splits, x)
    args = ["--store", str(tmp_path), "--feature-sets", "cls", "--target", "class"]
    settings = ["--set", "train.folds=3", "--set", "train.lasso_cs=4", "--set", "train.seeds=[2]"]
    assert train_job.main([*args, "--models", "lasso", *settings], spark=spark) == 0
    (r,) = read_results(tmp_path).itertuples()
    assert r.status == "ok" and r.seed == 2 and r.ci_method == "wilson, by identity"
    assert r.groups.tolist() == [i // 4 for i in range(192, n)]
    by_person = _boot(r, "balanced_accuracy", r.groups)
    assert (r.ba_ci_low, r.ba_ci_high) == by_person
    assert (r.macro_f1_ci_low, r.macro_f1_ci_high) == _boot(r, "macro_f1", r.groups)
    assert by_person != _boot(r, "balanced_accuracy", None)  # not the images one by one
    assert r.ba_ci_low <= r.balanced_accuracy <= r.ba_ci_high


def test_the_class_bootstrap_of_two_classes_is_the_binary_bootstrap():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 2, 300)
    p = np.where(rng.random(300) < 0.8, t, 1 - t)
    for groups in (None, rng.integers(0, 50, 300)):
        boot = {"n_boot": 300, "seed": 4, "groups": groups}
        for stat in ("accuracy", "balanced_accuracy"):
            assert evaluate.class_bootstrap_ci(
                t, p, n_classes=2, stat=stat, **boot
            ) == evaluate.bootstrap_ci(t, p, stat=stat, **boot)


def test_metrics_of_a_known_confusion_matrix():
    from featstore import multiclass

    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    m = multiclass.metrics(y_true, y_pred, 3, y_train=[0, 0, 0, 1, 2])
    assert m["confusion"].tolist() == [[3, 1, 0], [0, 1, 1], [0, 0, 2]]
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)
    assert m["macro_f1"] == pytest.approx((6 / 7 + 1 / 2 + 4 / 5) / 3)
    assert m["majority_class"] == 0 and m["majority_baseline"] == pytest.approx(4 / 8)


def test_mcnemar_on_per_image_correctness_is_the_binary_test():
    from featstore import evaluate, multiclass

    rows = pd.DataFrame(
        {
            "attribute": "class",
            "feature_set": "f",
            "train_size": 0,
            "seed": 0,
            "model": ["a", "b"],
            "y_true": [np.array([0, 1, 2, 2, 1]), np.array([0, 1, 2, 2, 1])],
            "y_pred": [np.array([0, 1, 2, 0, 0]), np.array([1, 1, 2, 2, 1])],
        }
    )
    comp = evaluate.compare_models(multiclass.correctness(rows))
    assert (comp["b"].item(), comp["c"].item()) == (1, 2)  # a right & b wrong: 1; reverse: 2


def test_synthetic_class_sizes_are_imbalanced_tenfold():
    from featstore.sources.synthetic_folder import class_sizes

    for n, k in ((200, 4), (1000, 5), (60, 3)):
        sizes = class_sizes(n, k)
        assert len(sizes) == k and sizes[0] >= 10 * sizes[-1] and min(sizes) >= 3


def test_target_class_needs_a_class_column_and_the_multiclass_probes(tmp_path, capsys):
    from tests.test_train_grid import _signal_store

    root = _signal_store(tmp_path / "store")  # labels written without a class column
    assert train_job.main(["--store", str(root), "--feature-sets", "sig", "--target", "class"]) == 2
    assert "needs a labels table with a class column" in capsys.readouterr().err
    assert (
        train_job.main(
            [
                "--store",
                str(root),
                "--feature-sets",
                "sig",
                "--target",
                "class",
                "--models",
                "lasso,multilabel",
            ]
        )
        == 2
    )
    assert "not multilabel" in capsys.readouterr().err

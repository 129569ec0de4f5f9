"""jobs/train.py: the results table the grid writes, error rows, resume, and real signal."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featstore import store
from featstore.train.grid import read_results
from jobs import train as train_job
from tests.storefakes import write_feature_set

FAST = [
    "--set",
    "train.folds=3",
    "--set",
    "train.forest_folds=3",
    "--set",
    "train.forest_trees=20",
    "--set",
    "train.dense_epochs=8",
    "--set",
    "train.bootstrap=200",
    "--set",
    "train.lasso_cs=4",
]


def write_labels(root, ids, splits, labels, *, identity=None, klass=None):
    """A committed labels table (one bool column per attribute; with ``identity`` / ``klass``,
    the person and the class of each image too), through the store's writer."""
    attrs = list(labels)
    extra = {
        **({store.IDENTITY: identity} if identity is not None else {}),
        **({store.CLASS: klass} if klass is not None else {}),
    }
    schema = store.labels_schema(attrs, identity=identity is not None, klass=klass is not None)
    with store.TableWriter(store.Layout(root), "labels") as w:
        pq.write_table(
            pa.table({"image_id": ids, "split": splits, **extra, **labels}, schema=schema),
            w.data / "p.parquet",
        )
        w.commit(
            store.base_manifest("labels", attributes=attrs, counts={"rows": len(ids)}),
            has_errors=False,
        )


def _signal_store(root, n=360, dim=8, seed=0):
    """Labels: Smiling follows feature 0, Male follows feature 1, Bald has one class in the
    train split, Attractive is independent of the features."""
    rng = np.random.default_rng(seed)
    ids = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    splits = ["train" if i < n * 0.6 else ("val" if i < n * 0.8 else "test") for i in range(n)]
    x = rng.normal(size=(n, dim)).astype(np.float32)
    labels = {
        "Smiling": x[:, 0] + 0.3 * rng.normal(size=n) > 0,
        "Male": x[:, 1] - 0.5 * x[:, 2] + 0.3 * rng.normal(size=n) > 0.2,
        "Bald": np.array([s != "train" and i % 2 == 0 for i, s in enumerate(splits)]),
        "Attractive": rng.random(n) < 0.5,
    }
    write_labels(root, ids, splits, labels)
    write_feature_set(root, "sig", ids, splits, x)
    write_feature_set(root, "sig-pca4", ids, splits, x[:, :4].copy())
    return root


@pytest.fixture()
def sig_store(tmp_path):
    return _signal_store(tmp_path / "store")


def test_every_cell_once_and_error_rows(spark, sig_store, capsys):
    grid = [
        "--attributes",
        "Smiling,Male,Bald,Attractive",
        "--models",
        "lasso,forest,dense",
        "--train-sizes",
        "0,5000",
        *FAST,
    ]
    # a feature set that is not committed: refused before Spark starts, nothing written
    assert (
        train_job.main(
            ["--store", str(sig_store), "--feature-sets", "sig,missing", *grid], spark=spark
        )
        == 2
    )
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("featstore:")]
    assert len(err) == 1 and "no committed feature set 'missing'" in err[0], err
    assert store.read_manifest(store.Layout(sig_store), "results") is None

    rc = train_job.main(["--store", str(sig_store), "--feature-sets", "sig", *grid], spark=spark)
    assert rc == 0
    res = read_results(sig_store)
    keys = ["attribute", "feature_set", "model", "train_size", "seed"]
    assert len(res) == 4 * 1 * 2 * 3 and not res.duplicated(keys).any()
    assert set(res.feature_set) == {"sig"}

    too_big = res[res.train_size == 5000]
    assert (too_big.status == "error").all()
    assert too_big.reason.str.contains("larger than the train split").all()
    bald = res[(res.attribute == "Bald") & (res.train_size < 5000)]
    assert (bald.status == "error").all() and bald.reason.str.contains("one class").all()

    ok = res[res.status == "ok"]
    assert len(ok) == 3 * 3  # 3 attributes x 3 models (Bald: one class; 5000: too large)
    assert (ok.n_train == 216).all() and (ok.dim == 8).all()
    assert ok.y_pred.map(len).eq(72).all() and (ok.ci_low <= ok.accuracy).all()
    assert (ok.accuracy <= ok.ci_high).all()
    params = json.loads(ok[ok.model == "lasso"].params.iloc[0])
    assert "C" in params or "c" in {k.lower() for k in params}
    dense = ok[ok.model == "dense"]
    assert dense.history.map(lambda h: "val_loss" in json.loads(h)).all()
    out = capsys.readouterr().out
    assert "results: " in out
    # where the time went: the driver's phases, then the fits' own split, summed over the tasks
    timing = re.search(
        r"^train time: plan [\d.]+ s \(\d+%\), fits [\d.]+ s \(\d+%\), merge "
        r"and commit [\d.]+ s \(\d+%\) of ([\d.]+) s; fits: read features \d+%, "
        r"fit \d+%, save models \d+%, evaluate \d+%, write \d+% of ([\d.]+) "
        r"task-s in 24 fits$",
        out,
        re.M,
    )
    assert timing, out
    manifest = store.read_manifest(store.Layout(sig_store), "results")
    assert set(manifest["timing"]["fits"]) == {
        "read features",
        "fit",
        "save models",
        "evaluate",
        "write",
    }
    assert manifest["timing"]["fits"]["fit"] > 0


def test_signal_attributes_beat_baseline_and_noise_does_not(spark, sig_store):
    assert (
        train_job.main(
            [
                "--store",
                str(sig_store),
                "--feature-sets",
                "sig",
                "--attributes",
                "Smiling,Male,Attractive",
                "--models",
                "lasso,forest",
                *FAST,
            ],
            spark=spark,
        )
        == 0
    )
    res = read_results(sig_store).set_index(["attribute", "model"])
    for model in ("lasso", "forest"):
        for attr in ("Smiling", "Male"):
            row = res.loc[(attr, model)]
            assert row.accuracy > row.majority_baseline + 0.15, (attr, model, row.accuracy)
            assert row.ci_low > row.majority_baseline
        noise = res.loc[("Attractive", model)]
        assert noise.accuracy < noise.majority_baseline + 0.12
        assert noise.ci_low < 0.5 + 0.1


def test_interrupted_grid_resumes_without_repeating_fits(spark, sig_store):
    args = [
        "--store",
        str(sig_store),
        "--feature-sets",
        "sig-pca4",
        "--attributes",
        "Smiling,Male",
        "--models",
        "lasso,forest",
        "--train-sizes",
        "0,100",
        *FAST,
    ]
    assert train_job.main(args, spark=spark) == 0
    layout = store.Layout(sig_store)
    cells = sorted(layout.cells.glob("*.parquet"))
    assert len(cells) == 8
    # as if the job had died before these two fits finished: their files never got written
    for lost in cells[:2]:
        lost.unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in cells[2:]}
    assert train_job.main(args, spark=spark) == 0
    manifest = store.read_manifest(layout, "results")
    assert manifest["last_grid"]["ran"] == 2 and manifest["last_grid"]["resumed"] == 6
    assert {p.name: p.stat().st_mtime_ns for p in cells[2:]} == kept  # not re-fitted
    res = read_results(sig_store)
    assert len(res) == 8 and (res.status == "ok").all()
    assert sorted(res.n_train.unique()) == [100, 216] and (res.dim == 4).all()


def test_bad_grid_fails_before_spark(sig_store, capsys):
    assert (
        train_job.main(
            ["--store", str(sig_store), "--feature-sets", "sig", "--models", "lasso,svm"]
        )
        == 2
    )
    assert "unknown model 'svm'" in capsys.readouterr().err
    assert (
        train_job.main(
            ["--store", str(sig_store), "--feature-sets", "sig", "--attributes", "Smilling"]
        )
        == 2
    )
    assert "unknown attribute 'Smilling'" in capsys.readouterr().err
    layout = store.Layout(sig_store)
    assert not layout.results.exists() and not layout.cells.exists()
    assert store.read_manifest(layout, "results") is None


def test_original_study_protocol_first_n_and_custom_split(spark, sig_store):
    """conf/seed_male_8k.yaml's protocol: the first N images, split by fixed counts."""
    assert (
        train_job.main(
            [
                "--store",
                str(sig_store),
                "--feature-sets",
                "sig",
                "--attributes",
                "Smiling",
                "--models",
                "lasso",
                "--set",
                "train.first_n=200",
                "--set",
                "train.custom_split=[60,20,120]",
                *FAST,
            ],
            spark=spark,
        )
        == 0
    )
    row = read_results(sig_store).iloc[0]
    assert (row.status, row.n_train, row.n_val, row.n_test) == ("ok", 60, 20, 120)
    assert len(row.y_pred) == 120


# ------------------------------------------------------------------ forest_selection


def test_forest_selection_config_key(tmp_path, capsys):
    from featstore.config import CONF_DIR, load_config
    from featstore.errors import ConfigError
    from featstore.train import forest
    from featstore.train.grid import FOREST_SELECTIONS, GridConfig

    assert FOREST_SELECTIONS == forest.SELECTIONS
    assert GridConfig().forest_selection == "oob"
    assert load_config(CONF_DIR / "train.yaml").train.forest_selection == "oob"
    assert load_config(overrides=["train.forest_selection=cv"]).train.forest_selection == "cv"
    with pytest.raises(
        ConfigError,
        match=r"train\.forest_selection: expected one of oob, cv, "
        r"got 'bag'",
    ):
        load_config(overrides=["train.forest_selection=bag"])
    with pytest.raises(ConfigError, match="got 'OOB'"):
        GridConfig(forest_selection="OOB")
    # the job refuses it before starting Spark or writing anything
    store_root = _signal_store(tmp_path / "store")
    assert (
        train_job.main(
            [
                "--store",
                str(store_root),
                "--feature-sets",
                "sig",
                "--set",
                "train.forest_selection=bag",
            ]
        )
        == 2
    )
    assert "train.forest_selection: expected one of oob, cv" in capsys.readouterr().err
    layout = store.Layout(store_root)
    assert not layout.results.exists() and not layout.cells.exists()
    assert store.read_manifest(layout, "results") is None


@pytest.mark.parametrize("selection", ["oob", "cv"])
def test_forest_cell_with_selection(sig_store, selection):
    from featstore.train.grid import Cell, GridConfig, run_cell

    cfg = GridConfig(
        feature_sets=("sig",),
        forest_trees=20,
        forest_folds=3,
        bootstrap=200,
        forest_selection=selection,
        dense_epochs=3,
    )
    other = GridConfig(
        feature_sets=("sig",),
        forest_trees=20,
        forest_folds=3,
        bootstrap=200,
        forest_selection="cv" if selection == "oob" else "oob",
        dense_epochs=3,
    )
    cell = Cell("Male", "sig", "forest", 0, 0)
    assert cell.key(cfg) != cell.key(other)  # a grid re-run with the other setting re-fits
    (row,) = run_cell(str(sig_store), cell, cfg)
    assert row["status"] == "ok", row["reason"]
    assert row["accuracy"] > row["majority_baseline"] + 0.15
    params = json.loads(row["params"])
    assert params["selection"] == selection and params["n_estimators"] == 20
    assert params["max_features"] in ("sqrt", 0.1, 0.3)
    assert len(params["candidate_scores"]) == 3
    if selection == "oob":
        assert params["folds"] == 0 and params["cv_score"] is None
        assert params["oob_score"] == max(s for _, s in params["candidate_scores"])
        assert params["oob_coverage"] == 1.0 and params["max_samples"] == 20_000
    else:
        assert params["folds"] == 3 and params["oob_score"] is None
        assert params["cv_score"] == max(s for _, s in params["candidate_scores"])
    if selection == "oob":  # the setting reaches the forest of a bottleneck cell too
        (row,) = run_cell(str(sig_store), Cell("Male", "sig", "bottleneck4-forest", 0, 0), cfg)
        assert row["status"] == "ok", row["reason"]
        second = json.loads(row["params"])["second_params"]
        assert second["selection"] == "oob" and second["oob_score"] is not None


# ------------------------------------------------------------------ cell keys and custom splits


def test_every_grid_setting_is_in_the_cell_or_a_settings_group():
    """A new GridConfig field must say which fits depend on it, or it would not reach the keys
    (a re-run would reuse fits made with the old value)."""
    from dataclasses import fields

    from featstore.train import grid

    groups = (
        grid.GRID_AXES,
        grid.DATA_SETTINGS,
        grid.LASSO_SETTINGS,
        grid.FOREST_SETTINGS,
        grid.FOREST_CV_SETTINGS,
        grid.DENSE_SETTINGS,
    )
    classified = {name for g in groups for name in g}
    assert {f.name for f in fields(grid.GridConfig)} == classified


def test_cell_key_changes_only_with_the_settings_of_its_model():
    from dataclasses import replace

    from featstore.train.grid import Cell, GridConfig

    base = GridConfig(feature_sets=("sig",))
    cells = {
        m: Cell("Male", "sig", m, 0, 0)
        for m in (
            "lasso",
            "forest",
            "dense",
            "multilabel",
            "bottleneck20-lasso",
            "bottleneck20-forest",
        )
    }

    def changed(**kw) -> set[str]:
        other = replace(base, **kw)
        return {m for m, c in cells.items() if c.key(base) != c.key(other)}

    assert changed(dense_epochs=7) == {
        "dense",
        "multilabel",
        "bottleneck20-lasso",
        "bottleneck20-forest",
    }
    assert changed(lasso_cs=3) == {"lasso", "bottleneck20-lasso"}
    assert changed(dense_hidden=(30, 10)) == {"dense", "multilabel"}  # bottleneck: k units
    assert changed(forest_trees=9) == {"forest", "bottleneck20-forest"}
    assert changed(forest_folds=3) == set()  # out-of-bag selection uses no folds
    assert changed(bootstrap=99) == set(cells)
    assert changed(seeds=(0, 1), models=("lasso",), overwrite=True) == set()  # which cells exist
    cv = replace(base, forest_selection="cv")
    assert cells["forest"].key(cv) != cells["forest"].key(replace(cv, forest_folds=3))
    assert cells["forest"].key(cv) != cells["forest"].key(replace(cv, cv_max_rows=500))


def test_custom_split_is_drawn_per_seed_and_shared_by_the_models_of_a_seed(sig_store):
    from featstore.train.grid import Cell, GridConfig, run_cell

    cfg = GridConfig(
        feature_sets=("sig",),
        first_n=200,
        custom_split=(60, 20, 120),
        folds=3,
        lasso_cs=3,
        forest_trees=20,
        bootstrap=100,
        dense_epochs=2,
    )
    rows = {
        (m, seed): run_cell(str(sig_store), Cell("Male", "sig", m, 0, seed), cfg)[0]
        for m in ("lasso", "forest")
        for seed in (0, 1)
    }
    for row in rows.values():
        assert (row["status"], row["n_train"], row["n_val"], row["n_test"]) == ("ok", 60, 20, 120)
    assert rows["lasso", 0]["y_true"] == rows["forest", 0]["y_true"]
    assert rows["lasso", 1]["y_true"] == rows["forest", 1]["y_true"]
    assert rows["lasso", 0]["y_true"] != rows["lasso", 1]["y_true"]


def test_a_custom_split_keeps_every_person_in_one_split():
    import numpy as np

    from featstore.train.cells import _custom_split

    rng = np.random.default_rng(0)
    groups = rng.integers(0, 40, size=400)  # 40 people, ~10 images each
    order = np.arange(400)
    split, keep = _custom_split(order, 400, (200, 50, 100), seed=3, groups=groups)
    kept = set(keep.tolist())
    for person in np.unique(groups):
        mine = {split[i] for i in np.flatnonzero(groups == person) if i in kept}
        assert len(mine) <= 1, (person, mine)  # never in two splits
    counts = {s: int(sum(split[i] == s for i in keep)) for s in ("train", "val", "test")}
    assert counts["train"] >= 200 and counts["val"] >= 50 and 0 < counts["test"] <= 100
    # another seed draws other people
    other, _ = _custom_split(order, 400, (200, 50, 100), seed=4, groups=groups)
    assert [split[i] for i in range(400)] != [other[i] for i in range(400)]
    # without identities: exact counts, as before
    plain, kept_plain = _custom_split(order, 400, (200, 50, 100), seed=3, groups=None)
    assert sorted(plain[i] for i in kept_plain).count("test") == 100

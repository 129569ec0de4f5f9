"""train.save_models: the grid keeps each ok fit's model; featstore.train.saved reads them back."""

from __future__ import annotations

import numpy as np
import pytest

from featstore import store
from featstore.errors import StoreError
from featstore.store import load_xy
from featstore.train.base import THRESHOLD
from featstore.train.grid import read_results
from featstore.train.saved import load_model, predict_scores, saved_models
from jobs import train as train_job
from tests.test_train_grid import FAST, _signal_store

SAVE = ["--set", "train.save_models=true"]
QUICK = [*FAST, "--set", "train.dense_epochs=3", "--set", "train.forest_trees=10"]


@pytest.fixture()
def sig_store(tmp_path):
    return _signal_store(tmp_path / "store")


def _model_files(root):
    return sorted(
        p.relative_to(root).as_posix() for p in store.Layout(root).models.rglob("*") if p.is_file()
    )


def _last_grid(root):
    return store.read_manifest(store.Layout(root), "results")["last_grid"]


def _predict(root, row):
    x, y, _ = load_xy(root, row.feature_set, row.attribute, "test")
    np.testing.assert_array_equal(y, row.y_true)  # the grid's test rows, in the same order
    return (predict_scores(load_model(root, row), x) > THRESHOLD).astype(np.int8)


def test_saved_models_of_every_kind_reproduce_the_results_predictions(spark, sig_store):
    models = "lasso,forest,dense,bottleneck4-lasso,multilabel"
    assert (
        train_job.main(
            [
                "--store",
                str(sig_store),
                "--feature-sets",
                "sig",
                "--attributes",
                "Smiling,Male,Bald",
                "--models",
                models,
                *QUICK,
                *SAVE,
            ],
            spark=spark,
        )
        == 0
    )
    res = read_results(sig_store)
    ok = res[res.status == "ok"]
    # Smiling, Male x 4 single-attribute models; multilabel: every attribute of the labels table
    # but Bald (one class in the train split: an error row, as for every other model)
    assert len(ok) == 8 + 3 and set(ok[ok.model == "multilabel"].attribute) == {
        "Smiling",
        "Male",
        "Attractive",
    }
    failed = res[res.status != "ok"]
    assert len(failed) == 5 and failed.model_path.isna().all()  # Bald: one class, no model
    assert set(failed.attribute) == {"Bald"} and failed.reason.str.contains("one class only").all()

    # a file per ok fit (one per multilabel cell), and nothing else
    assert ok.model_path.notna().all()
    assert _model_files(sig_store) == sorted(set(ok.model_path))
    assert len(_model_files(sig_store)) == 8 + 1
    for row in ok.itertuples():
        name = "_multilabel" if row.model == "multilabel" else row.attribute
        assert row.model_path == f"models/{row.cell}/{name}.joblib"
        assert row.reason is None

    # loading each and scoring the test split gives the results row's predictions exactly
    for _, row in ok.iterrows():
        np.testing.assert_array_equal(
            _predict(sig_store, row), row.y_pred, err_msg=f"{row.model} {row.attribute}"
        )
    # by cell key and attribute too (a multilabel cell: its one file)
    x, _, _ = load_xy(sig_store, "sig", "Male", "test")
    for model in ("lasso", "multilabel", "bottleneck4-lasso"):
        row = ok[(ok.model == model) & (ok.attribute == "Male")].iloc[0]
        scores = predict_scores(load_model(sig_store, row.cell, "Male"), x)
        assert scores.dtype == np.float32 and scores.shape == (len(x),)
        np.testing.assert_array_equal((scores > THRESHOLD).astype(np.int8), row.y_pred)

    listing = saved_models(sig_store)
    assert list(listing.columns) == [
        "attribute",
        "feature_set",
        "model",
        "train_size",
        "seed",
        "cell",
        "path",
    ]
    assert len(listing) == 11 and all(
        p == str(sig_store / r) for p, r in zip(listing.path, ok.model_path)
    )
    assert _last_grid(sig_store)["save_models"] is True


def test_turning_save_models_on_refits_only_cells_without_files(spark, sig_store):
    args = [
        "--store",
        str(sig_store),
        "--feature-sets",
        "sig-pca4",
        "--attributes",
        "Smiling,Male,Bald",
        "--models",
        "lasso,forest",
        *QUICK,
    ]
    assert train_job.main(args, spark=spark) == 0
    assert not store.Layout(sig_store).models.exists()  # off: nothing saved
    assert read_results(sig_store).model_path.isna().all()
    assert saved_models(sig_store).empty

    # on, for the finished grid: the 4 ok cells run again to save their models; the 2 error
    # cells (Bald: one class) run again too, as they do on every train
    assert train_job.main([*args, *SAVE], spark=spark) == 0
    assert (_last_grid(sig_store)["ran"], _last_grid(sig_store)["resumed"]) == (6, 0)
    res = read_results(sig_store)
    ok = res[res.status == "ok"]
    assert len(ok) == 4 and len(_model_files(sig_store)) == 4
    assert _model_files(sig_store) == sorted(ok.model_path)
    failed = res[res.status != "ok"]
    assert set(failed.attribute) == {"Bald"} and failed.model_path.isna().all()
    error_cells = {f"{c}.parquet" for c in failed.cell}
    assert len(error_cells) == 2

    # every file there: no ok cell runs (only the error cells); one file gone: its cell runs
    assert train_job.main([*args, *SAVE], spark=spark) == 0
    assert (_last_grid(sig_store)["ran"], _last_grid(sig_store)["resumed"]) == (2, 4)
    cells = store.Layout(sig_store).cells
    before = {p.name: p.stat().st_mtime_ns for p in cells.glob("*.parquet")}
    lost = ok[(ok.model == "forest") & (ok.attribute == "Male")].iloc[0]
    (sig_store / lost.model_path).unlink()

    with pytest.raises(StoreError) as info:  # a missing file: one line naming it
        load_model(sig_store, lost)
    message = str(info.value)
    assert "\n" not in message and str(sig_store / lost.model_path) in message
    assert "no saved model for attribute 'Male'" in message
    with pytest.raises(StoreError, match="no saved model for attribute 'Nope'"):
        load_model(sig_store, lost.cell, "Nope")

    assert train_job.main([*args, *SAVE], spark=spark) == 0
    assert (_last_grid(sig_store)["ran"], _last_grid(sig_store)["resumed"]) == (1 + 2, 5 - 2)
    after = {p.name: p.stat().st_mtime_ns for p in cells.glob("*.parquet")}
    assert {n for n in after if after[n] != before[n]} == {f"{lost.cell}.parquet", *error_cells}
    assert len(_model_files(sig_store)) == 4
    res = read_results(sig_store)
    row = res[(res.model == "forest") & (res.attribute == "Male")].iloc[0]
    assert row.cell == lost.cell and row.model_path == lost.model_path
    np.testing.assert_array_equal(_predict(sig_store, row), row.y_pred)

    # off again: finished ok cells are not touched (only the error cells run), the files stay
    assert train_job.main(args, spark=spark) == 0
    assert (_last_grid(sig_store)["ran"], _last_grid(sig_store)["resumed"]) == (2, 4)
    assert len(_model_files(sig_store)) == 4


def test_a_model_that_cannot_be_saved_leaves_an_ok_row_to_refit(sig_store):
    from featstore.train.grid import Cell, GridConfig, run_cell

    cfg = GridConfig(feature_sets=("sig",), folds=3, lasso_cs=3, bootstrap=100, save_models=True)
    store.Layout(sig_store).models.write_text("not a folder")
    (row,) = run_cell(str(sig_store), Cell("Male", "sig", "lasso", 0, 0), cfg)
    assert row["status"] == "ok" and row["model_path"] is None
    assert row["reason"].startswith("model not saved: ")

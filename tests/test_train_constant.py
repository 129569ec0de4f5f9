"""One rule for a constant attribute (training labels of one class only), whatever the model:
lasso, forest, dense and bottleneck give an error with the "one class only" reason; a multilabel
fit gives that same error for the constant attribute and results for the others, and is an error
as a whole only when every attribute is constant. Tiny numpy data, few epochs and trees."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featstore import store
from featstore.train import FitError, FitResult, SingleClassError
from tests.storefakes import write_feature_set

N_TRAIN, N_VAL, N_TEST, DIM = 120, 40, 60, 6
FAST = {
    "lasso": {"folds": 3, "cs": 3},
    "forest": {"folds": 3, "n_estimators": 10},
    "dense": {"epochs": 3, "batch_size": 32, "patience": 2},
}
MODELS = ["lasso", "forest", "dense", "bottleneck4-lasso", "bottleneck4-forest"]


def reason(n: int, value: int) -> str:
    return (
        f"training sample has one class only: all {n} labels are {value}; "
        "a classifier needs both 0 and 1"
    )


@pytest.fixture(scope="module")
def data() -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(12)
    out = {}
    for split, n in (("train", N_TRAIN), ("val", N_VAL), ("test", N_TEST)):
        x = rng.normal(size=(n, DIM)).astype(np.float32)
        out[split] = {
            "x": x,
            "signal": (x[:, 0] + 0.2 * rng.normal(size=n) > 0).astype(np.int8),
            "zeros": np.zeros(n, np.int8),
            "ones": np.ones(n, np.int8),
        }
    return out


def fit_one(model: str, data, label: str):
    from featstore.train.dense import fit_bottleneck, fit_dense
    from featstore.train.forest import fit_forest
    from featstore.train.lasso import fit_lasso

    tr, va, te = data["train"], data["val"], data["test"]
    if model == "lasso":
        return fit_lasso(tr["x"], tr[label], te["x"], **FAST["lasso"])
    if model == "forest":
        return fit_forest(tr["x"], tr[label], te["x"], **FAST["forest"])
    if model == "dense":
        return fit_dense(tr["x"], tr[label], va["x"], va["signal"], te["x"], **FAST["dense"])
    second = model.split("-")[1]
    kw = {"n_estimators": 10} if second == "forest" else {"cs": 3}
    return fit_bottleneck(
        tr["x"],
        tr[label],
        va["x"],
        va["signal"],
        te["x"],
        k=4,
        second=second,
        folds=3,
        **{k: v for k, v in FAST["dense"].items()},
        **kw,
    )


# --------------------------------------------------------------------------- fitting functions


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize(("label", "value"), [("zeros", 0), ("ones", 1)])
def test_single_attribute_models_refuse_a_constant_attribute(model, label, value, data):
    with pytest.raises(SingleClassError) as err:
        fit_one(model, data, label)
    assert str(err.value) == reason(N_TRAIN, value)


def test_multilabel_gives_the_constant_attribute_the_same_error_and_fits_the_others(data):
    from featstore.train.dense import fit_multilabel

    tr, va, te = data["train"], data["val"], data["test"]
    names = ["Zeros", "Signal", "Ones"]

    def labels(split):
        return np.stack([split["zeros"], split["signal"], split["ones"]], axis=1)

    results = fit_multilabel(
        tr["x"], labels(tr), va["x"], labels(va), te["x"], attributes=names, **FAST["dense"]
    )
    assert list(results) == names
    zeros, signal, ones = (results[n] for n in names)
    assert isinstance(zeros, FitError) and isinstance(ones, FitError)
    assert (zeros.model, zeros.status, zeros.reason) == ("multilabel", "error", reason(N_TRAIN, 0))
    assert (ones.status, ones.reason) == ("error", reason(N_TRAIN, 1))
    assert isinstance(signal, FitResult)
    assert (signal.status, signal.reason, signal.model) == ("ok", None, "multilabel")
    assert signal.y_pred.shape == (N_TEST,) and signal.y_score.shape == (N_TEST,)
    # the constant columns are not outputs of the head: it has one, Signal's
    assert signal.estimator.outputs == 1
    assert signal.params["outputs"] == ["Signal"] and signal.params["n_attributes"] == 3
    np.testing.assert_allclose(
        signal.estimator.predict_proba(te["x"])[:, 0], signal.y_score, rtol=1e-5, atol=1e-6
    )


def test_multilabel_with_every_attribute_constant_is_an_error(data):
    from featstore.train.dense import fit_multilabel

    tr, va, te = data["train"], data["val"], data["test"]
    y_tr = np.stack([tr["zeros"], tr["ones"]], axis=1)
    y_va = np.stack([va["signal"], va["signal"]], axis=1)
    with pytest.raises(SingleClassError) as err:
        fit_multilabel(
            tr["x"], y_tr, va["x"], y_va, te["x"], attributes=["A", "B"], **FAST["dense"]
        )
    assert str(err.value) == (
        f"no attribute can be fitted: A: {reason(N_TRAIN, 0)}; B: {reason(N_TRAIN, 1)}"
    )
    with pytest.raises(SingleClassError) as one:
        fit_multilabel(
            tr["x"], tr["zeros"], va["x"], va["signal"], te["x"], attributes=["A"], **FAST["dense"]
        )
    assert str(one.value) == reason(N_TRAIN, 0)  # a single attribute: the plain message


# --------------------------------------------------------------------------- the grid's rows


def _store(root, data, attributes: dict[str, str]):
    """Labels table + feature set "toy" from ``data``; ``attributes``: name -> data label."""
    ids, splits, xs = [], [], []
    cols: dict[str, list[bool]] = {a: [] for a in attributes}
    for split in ("train", "val", "test"):
        d = data[split]
        n = len(d["x"])
        ids += [f"{split}{i:04d}.jpg" for i in range(n)]
        splits += [split] * n
        xs.append(d["x"])
        for a, label in attributes.items():
            cols[a] += d[label].astype(bool).tolist()
    attrs = sorted(attributes)
    table = pa.table(
        {"image_id": ids, "split": splits, **{a: cols[a] for a in attrs}},
        schema=store.labels_schema(attrs),
    )
    with store.TableWriter(store.Layout(root), "labels") as w:
        pq.write_table(table, w.data / "part-00000.parquet")
        w.commit(
            store.base_manifest("labels", attributes=attrs, counts={"rows": len(ids)}),
            has_errors=False,
        )
    write_feature_set(root, "toy", ids, splits, np.concatenate(xs))
    return root


def _cfg(**kw):
    from featstore.train.grid import GridConfig

    return GridConfig(
        feature_sets=("toy",),
        folds=3,
        lasso_cs=3,
        forest_trees=10,
        forest_max_features=("sqrt",),
        dense_epochs=3,
        dense_patience=2,
        dense_batch_size=32,
        bootstrap=50,
        **kw,
    )


@pytest.fixture(scope="module")
def mixed_store(tmp_path_factory, data):
    return _store(
        tmp_path_factory.mktemp("constant") / "store", data, {"Const": "zeros", "Signal": "signal"}
    )


@pytest.mark.parametrize("model", MODELS)
def test_grid_row_of_a_constant_attribute(model, mixed_store):
    from featstore.train.grid import Cell, run_cell

    (row,) = run_cell(str(mixed_store), Cell("Const", "toy", model, 0, 0), _cfg())
    assert (row["attribute"], row["model"], row["status"]) == ("Const", model, "error")
    assert row["reason"] == reason(N_TRAIN, 0)
    assert row["accuracy"] is None and row["y_pred"] is None


def test_grid_rows_of_a_multilabel_cell_with_a_constant_attribute(mixed_store):
    from featstore.train import saved
    from featstore.train.grid import ALL_ATTRIBUTES, Cell, run_cell

    cfg = _cfg(save_models=True)
    rows = {
        r["attribute"]: r
        for r in run_cell(str(mixed_store), Cell(ALL_ATTRIBUTES, "toy", "multilabel", 0, 0), cfg)
    }
    assert sorted(rows) == ["Const", "Signal"]
    const, signal = rows["Const"], rows["Signal"]
    # the same row a lasso cell of that attribute gets
    assert (const["status"], const["reason"]) == ("error", reason(N_TRAIN, 0))
    assert const["accuracy"] is None and const["model_path"] is None
    assert (signal["status"], signal["reason"]) == ("ok", None)
    assert signal["n_train"] == N_TRAIN and len(signal["y_pred"]) == N_TEST
    assert 0.0 <= signal["accuracy"] <= 1.0
    assert const["cell"] == signal["cell"]
    # the saved head holds the fitted attribute only, and serves it
    model = saved.load_model(mixed_store, signal)
    assert model.attributes == ("Signal",)
    x_test, _, _ = store.load_xy(mixed_store, "toy", "Signal", "test")
    assert model.predict_proba(x_test).shape == (N_TEST,)


def test_grid_multilabel_cell_with_every_attribute_constant_is_one_error_row(tmp_path, data):
    from featstore.train.grid import ALL_ATTRIBUTES, Cell, run_cell

    root = _store(tmp_path / "store", data, {"Never": "zeros", "Always": "ones"})
    (row,) = run_cell(str(root), Cell(ALL_ATTRIBUTES, "toy", "multilabel", 0, 0), _cfg())
    assert (row["attribute"], row["status"]) == (ALL_ATTRIBUTES, "error")
    assert row["reason"] == (
        f"no attribute can be fitted: Always: {reason(N_TRAIN, 1)}; Never: {reason(N_TRAIN, 0)}"
    )


def test_multilabel_from_a_dataset_reports_the_constant_attribute_too(data):
    tf = pytest.importorskip("tensorflow")
    from featstore.train.dense import fit_multilabel

    tr, va, te = data["train"], data["val"], data["test"]
    y_tr = np.stack([tr["signal"], tr["ones"]], axis=1).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((tr["x"], y_tr)).batch(32)
    y_va = np.stack([va["signal"], va["signal"]], axis=1)
    results = fit_multilabel(
        None,
        None,
        va["x"],
        y_va,
        te["x"],
        attributes=["Signal", "Ones"],
        train_data=ds,
        **FAST["dense"],
    )
    assert (results["Ones"].status, results["Ones"].reason) == ("error", reason(N_TRAIN, 1))
    signal = results["Signal"]
    assert (signal.status, signal.y_pred.shape) == ("ok", (N_TEST,))
    # the caller's batches keep the column: it stays an output of the head
    assert signal.params["outputs"] == ["Signal", "Ones"] and signal.estimator.outputs == 2

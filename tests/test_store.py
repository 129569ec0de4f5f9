"""Store readers as analysts use them: Spark, pyarrow, pandas, numpy, DuckDB, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from chispa import assert_approx_df_equality
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    FloatType,
    StringType,
    StructField,
    StructType,
)

from featstore import store
from featstore.errors import StoreError
from jobs.cli import main as cli_main
from tests.storefakes import make_store


@pytest.fixture()
def toy(tmp_path):
    data = make_store(tmp_path / "store")
    data["root"] = tmp_path / "store"
    return data


def test_read_spark_returns_the_rows_the_store_holds(spark, toy):
    df = store.read_spark(
        spark, toy["root"], "toy-avg", splits=["train", "test"], attributes=["Smiling"]
    )
    schema = StructType(
        [
            StructField("image_id", StringType()),
            StructField("split", StringType()),
            StructField("embedding", ArrayType(FloatType())),
            StructField("Smiling", BooleanType()),
        ]
    )
    rows = [
        (toy["ids"][i], s, [float(v) for v in toy["x"][i]], bool(toy["labels"]["Smiling"][i]))
        for i, s in enumerate(toy["splits"])
        if s in ("train", "test")
    ]
    expected = spark.createDataFrame(rows, schema)
    assert df.columns == ["image_id", "split", "embedding", "Smiling"]
    assert_approx_df_equality(
        df, expected, precision=0.0, ignore_row_order=True, ignore_nullable=True
    )


def test_read_arrow_pandas_and_xy_are_exact(toy):
    t = store.read_arrow(toy["root"], "toy-avg", attributes=["Male", "Smiling"])
    assert t.column_names == ["image_id", "split", "embedding", "Male", "Smiling"]
    assert t["image_id"].to_pylist() == toy["ids"]
    assert t["split"].to_pylist() == toy["splits"]
    np.testing.assert_array_equal(np.array(t["embedding"].to_pylist(), dtype=np.float32), toy["x"])
    assert t["Male"].to_pylist() == toy["labels"]["Male"].tolist()

    pdf = store.read_pandas(toy["root"], "toy-avg", splits=["val"], attributes=[])
    val = [i for i, s in enumerate(toy["splits"]) if s == "val"]
    assert pdf["image_id"].tolist() == [toy["ids"][i] for i in val]
    assert list(pdf.columns) == ["image_id", "split", "embedding"]

    x, y, ids = store.load_xy(toy["root"], "toy-avg", "Smiling", "train")
    train = [i for i, s in enumerate(toy["splits"]) if s == "train"]
    assert x.dtype == np.float32 and x.shape == (len(train), 4)
    np.testing.assert_array_equal(x, toy["x"][train])
    np.testing.assert_array_equal(y, toy["labels"]["Smiling"][train].astype(np.int8))
    assert ids == [toy["ids"][i] for i in train]


def test_duckdb_reads_a_feature_set_joined_with_labels_by_path(toy):
    import duckdb

    root = toy["root"]
    con = duckdb.connect()
    rows = con.execute(f"""
        SELECT f.image_id, f.split, len(f.embedding) AS dim, l.Smiling
        FROM read_parquet('{root}/features/feature_set=toy-avg/*/*.parquet',
                          hive_partitioning = true) f
        JOIN read_parquet('{root}/labels/*.parquet') l USING (image_id)
        WHERE f.split = 'train'
        ORDER BY f.image_id
    """).fetchall()
    train = [i for i, s in enumerate(toy["splits"]) if s == "train"]
    assert rows == [(toy["ids"][i], "train", 4, bool(toy["labels"]["Smiling"][i])) for i in train]


def test_uncommitted_feature_set_is_invisible(toy):
    layout = store.Layout(toy["root"])
    with pytest.raises(RuntimeError), store.TableWriter(layout, "features/half-done") as w:
        (w.data / "split=train").mkdir()
        pq.write_table(pa.table({"image_id": ["a"]}), w.data / "split=train" / "p.parquet")
        raise RuntimeError("failed before the commit")
    names = [t["name"] for t in store.list_tables(toy["root"])]
    assert not layout.features("half-done").exists()
    assert not list(layout.staging.iterdir())  # a non-resumable writer drops its staging
    assert "half-done" not in names and "toy-avg" in names
    with pytest.raises(StoreError, match="no committed feature set 'half-done'"):
        store.read_arrow(toy["root"], "half-done")


def test_unknown_schema_version_is_refused(toy):
    path = store.Layout(toy["root"]).manifest_path("features/toy-avg")
    manifest = json.loads(path.read_text())
    manifest["schema_version"] = 99
    path.write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="schema_version 99 is not supported"):
        store.read_arrow(toy["root"], "toy-avg")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"splits": ["holdout"]}, "has no split 'holdout'"),
        ({"attributes": ["Smilling"]}, "unknown attribute 'Smilling'"),
    ],
)
def test_bad_selection_is_one_clear_error(toy, kwargs, message):
    with pytest.raises(StoreError, match=message):
        store.read_arrow(toy["root"], "toy-avg", **kwargs)


def test_row_count_disagreeing_with_manifest_is_refused(toy, capsys):
    path = store.Layout(toy["root"]).manifest_path("features/toy-avg")
    manifest = json.loads(path.read_text())
    manifest["counts"]["splits"]["train"] += 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=r"table features/toy-avg is damaged: counts.splits"):
        store.load_xy(toy["root"], "toy-avg", "Male", "train")
    assert cli_main(["describe", str(toy["root"]), "toy-avg", "--check"]) == 2
    assert "counts.splits" in capsys.readouterr().err


def test_cli_ls_and_describe_feature_set(toy, capsys):
    assert cli_main(["ls", str(toy["root"])]) == 0
    out = capsys.readouterr().out
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "KIND", "ROWS", "DIM", "CREATED", "STATE"]
    (row,) = [r for r in rows if r.startswith("toy-avg ")]
    assert row.split()[1:5] == ["features", "12", "rows", "4"] and row.endswith("  ok")
    assert cli_main(["describe", str(toy["root"]), "toy-avg", "--check"]) == 0
    out = capsys.readouterr().out
    assert (
        "toy-avg (features)" in out
        and "3 files match the manifest (sizes, row counts, sha256)" in out
    )
    assert cli_main(["ls", str(toy["root"] / "nope")]) == 2
    assert "no such store folder" in capsys.readouterr().err


def test_embedding_matrix_refuses_rows_of_the_wrong_width():
    import pyarrow as pa

    ok = pa.table({"embedding": pa.array([[1, 2, 3, 4], [5, 6, 7, 8]], pa.list_(pa.float32()))})
    x = store.embedding_matrix(ok, 4, "fs")
    assert x.dtype == np.float32 and x.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    uneven = pa.table(
        {"embedding": pa.array([[1, 2, 3], [4, 5, 6, 7, 8]], pa.list_(pa.float32()))}
    )  # 8 values = 2 x 4
    with pytest.raises(StoreError, match="embeddings are not all 4 long"):
        store.embedding_matrix(uneven, 4, "fs")

"""A feature set has one width: its files store ``embedding`` as Arrow
``fixed_size_list<float32, dim>`` (store.embedding_type), so polars and DuckDB (through pyarrow)
see the width without a cast, Spark still reads an array, and sets written before (variable
lists) stay readable by every reader."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from featstore import feed, store
from featstore.errors import StoreError
from tests.conftest import JOB_FS
from tests.storefakes import make_store, write_feature_set

PCA = f"{JOB_FS}-pca4"


@pytest.mark.parametrize(("name", "dim"), [(JOB_FS, 1280), (PCA, 4)])
def test_job_written_sets_are_fixed_size_lists(job_store, name, dim):
    files = store.parquet_files(store.Layout(job_store).features(name))
    assert files
    for f in files:  # extract's (Spark-written, rewritten at commit) and reduce's alike
        assert pq.read_schema(f).field("embedding").type == store.embedding_type(dim)
        assert not any(
            pq.ParquetFile(f).metadata.row_group(0).column(i).has_dictionary_page for i in range(2)
        )


def test_polars_sees_an_array_and_takes_its_mean(job_store):
    import polars as pl

    folder = store.Layout(job_store).features(PCA)
    df = pl.read_parquet(f"{folder}/", hive_partitioning=True)
    assert df.schema["embedding"] == pl.Array(pl.Float32, 4)
    x = df["embedding"].to_numpy()  # (rows, 4), no explode
    n = store.feature_set_manifest(job_store, PCA)["counts"]["ok"]
    assert x.shape == (n, 4)
    row_means = df.select(pl.col("embedding").arr.mean())["embedding"].to_numpy()
    np.testing.assert_allclose(row_means, x.mean(axis=1), rtol=1e-5, atol=1e-6)


def test_duckdb_array_cosine_similarity_without_a_cast(job_store):
    import duckdb
    import pyarrow.dataset as ds

    features = ds.dataset(  # noqa: F841 (DuckDB reads it by name)
        store.Layout(job_store).features(JOB_FS),
        partitioning="hive",
    ).to_table()
    ((typ,),) = duckdb.sql("SELECT typeof(embedding) FROM features LIMIT 1").fetchall()
    assert typ == "FLOAT[1280]"
    top = duckdb.sql("""
        SELECT image_id, array_cosine_similarity(
            embedding, (SELECT embedding FROM features ORDER BY image_id LIMIT 1)) AS s
        FROM features ORDER BY s DESC LIMIT 3""").fetchall()
    first = store.read_arrow(job_store, JOB_FS, attributes=[])["image_id"][0].as_py()
    assert top[0][0] == first and top[0][1] == pytest.approx(1.0, abs=1e-5)


def test_spark_reads_an_array(spark, job_store):
    from pyspark.sql.types import ArrayType, FloatType

    df = spark.read.parquet(store.spark_uri(store.Layout(job_store).features(PCA)))
    assert df.schema["embedding"].dataType == ArrayType(FloatType(), True)
    x, _, ids = store.load_xy(job_store, PCA, "Smiling", "train")
    rows = {r.image_id: r.embedding for r in df.filter("split = 'train'").collect()}
    np.testing.assert_array_equal(np.array([rows[i] for i in ids], np.float32), x)


def _old_store(tmp_path, monkeypatch) -> dict:
    """A store written the way featstore wrote feature sets before: variable-length lists."""
    with monkeypatch.context() as m:
        m.setattr(store.writer, "fix_embedding_width", lambda folder, dim: 0)
        data = make_store(tmp_path / "store", n=24, dim=6)
    data["root"] = tmp_path / "store"
    return data


def test_old_variable_list_sets_stay_readable(tmp_path, monkeypatch):
    old = _old_store(tmp_path, monkeypatch)
    (f, *_) = store.parquet_files(store.Layout(old["root"]).features("toy-avg"))
    assert pq.read_schema(f).field("embedding").type == pa.list_(pa.float32())
    x, _, _ = store.load_xy(old["root"], "toy-avg", "Smiling", "train")
    train = [i for i, s in enumerate(old["splits"]) if s == "train"]
    np.testing.assert_array_equal(x, old["x"][train])
    with feed.numpy_batches(None, old["root"], "toy-avg", ["Smiling"], "train") as batches:
        assert sum(len(b) for b, _ in batches) == len(train)


def test_a_commit_rewrites_variable_lists_and_keeps_the_values(tmp_path, monkeypatch):
    old = _old_store(tmp_path, monkeypatch)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(24, 6)).astype(np.float32)
    write_feature_set(old["root"], "new-avg", old["ids"], old["splits"], x, row_group_size=5)
    files = store.parquet_files(store.Layout(old["root"]).features("new-avg"))
    for f in files:
        assert pq.read_schema(f).field("embedding").type == store.embedding_type(6)
    train_file = next(f for f in files if f.parent.name == "split=train")
    assert pq.ParquetFile(train_file).metadata.num_row_groups == 4  # 16 rows, groups kept
    got = store.embedding_matrix(store.read_arrow(old["root"], "new-avg", attributes=[]), 6, "n")
    np.testing.assert_array_equal(got, x[np.argsort(old["ids"])])


def test_a_row_of_another_width_is_refused_at_commit(tmp_path):
    root = tmp_path / "store"
    make_store(root, n=6, dim=3)
    ids, splits = ["a", "b"], ["train", "train"]
    with store.TableWriter(store.Layout(root), store.features_id("bad")) as w:
        (w.data / "split=train").mkdir(parents=True)
        pq.write_table(
            pa.table(
                {
                    "image_id": ids,
                    "embedding": pa.array([[1.0, 2.0, 3.0], [1.0]], pa.list_(pa.float32())),
                }
            ),
            w.data / "split=train" / "part-0.parquet",
        )
        store.write_errors(w.errors, [])
        with pytest.raises(StoreError, match="not all 3 long"):
            w.commit(
                store.base_manifest(
                    "features", name="bad", dim=3, model="toy", counts={"ok": 2, "errors": 0}
                )
            )
    assert splits  # nothing committed
    assert store.read_manifest(store.Layout(root), store.features_id("bad")) is None

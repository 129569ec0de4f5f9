"""The store on a cluster: Spark gets ``file:`` URIs, whatever ``fs.defaultFS`` says; store
locations that are URIs of other file systems are refused with one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featstore import store
from featstore.errors import StoreError
from featstore.sources.synthetic import generate
from jobs import extract as extract_job
from jobs import ingest as ingest_job
from jobs import reduce as reduce_job
from jobs.cli import main as cli_main

N = 12
FEATURE_SET = "mnv2-64"


def test_local_path_accepts_paths_and_file_uris(tmp_path):
    assert store.local_path(tmp_path) == tmp_path.resolve()
    assert store.local_path(tmp_path.as_uri()) == tmp_path.resolve()
    assert store.local_path(f"file://localhost{tmp_path}") == tmp_path.resolve()
    spaced = tmp_path / "a b%"
    assert store.local_path(spaced.as_uri()) == spaced.resolve()
    assert store.spark_uri(tmp_path / "x") == (tmp_path / "x").resolve().as_uri()
    assert store.spark_uri(tmp_path).startswith("file:///")


@pytest.mark.parametrize(
    "uri",
    ["s3a://bucket/store", "hdfs://nn:8020/data/store", "gs://b/s", "file://otherhost/data/store"],
)
def test_other_file_systems_are_refused(uri):
    with pytest.raises(StoreError, match="not supported") as err:
        store.Layout(uri)
    assert uri in str(err.value)


def test_cli_refuses_a_bucket_store_with_one_line(capsys):
    assert cli_main(["ls", "s3a://bucket/store"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("featstore: error: store location 's3a://bucket/store': s3a://")


def test_chain_runs_when_the_default_file_system_is_not_local(spark, foreign_default_fs, tmp_path):
    """ingest -> extract -> reduce -> read_spark with fs.defaultFS pointing elsewhere (as on a
    YARN cluster with HDFS); the store given as a file:// URI."""
    generate(tmp_path / "celeba", N, seed=9)
    uri = (tmp_path / "store").as_uri()
    assert ingest_job.main(["--store", uri, "--path", str(tmp_path / "celeba")], spark=spark) == 0
    assert (
        extract_job.main(
            [
                "--store",
                uri,
                "--model",
                "mobilenetv2",
                "--input-size",
                "64x64",
                "--batch-size",
                "4",
                "--weights",
                "random",
                "--feature-set",
                FEATURE_SET,
            ],
            spark=spark,
        )
        == 0
    )
    assert (
        reduce_job.main(["--store", uri, "--feature-set", FEATURE_SET, "--dims", "3"], spark=spark)
        == 0
    )

    root = tmp_path / "store"
    layout = store.Layout(root)
    for tid in (
        "images",
        "labels",
        store.features_id(FEATURE_SET),
        store.features_id(f"{FEATURE_SET}-pca3"),
    ):
        manifest = json.loads(layout.manifest_path(tid).read_text())
        assert manifest["counts"]["ok" if "ok" in manifest["counts"] else "rows"] == N, tid
    df = store.read_spark(spark, uri, f"{FEATURE_SET}-pca3", attributes=["Male"])
    rows = df.collect()
    assert len(rows) == N and {len(r.embedding) for r in rows} == {3}
    x, _, _ = store.load_xy(root, f"{FEATURE_SET}-pca3", "Male", split="train")
    assert x.shape[1] == 3 and np.isfinite(x).all()

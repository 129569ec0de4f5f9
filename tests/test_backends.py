"""The extract job on Keras' JAX backend (the GPU path) gives the embeddings TensorFlow gives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from chispa import assert_approx_df_equality
from pyspark.sql import functions as F

from featstore import store
from featstore.sources.synthetic import generate
from jobs import extract as extract_job
from jobs import ingest as ingest_job

REPO = Path(__file__).resolve().parents[1]
N = 10
MODEL = ["--model", "mobilenetv2", "--input-size", "64x64", "--batch-size", "4"]


def _exploded(df, scale: float):
    """One row per embedding value, scaled so that the largest value of the TF set is 1."""
    return df.select("image_id", F.posexplode("embedding").alias("i", "value")).select(
        "image_id", "i", (F.col("value") * F.lit(scale)).alias("value")
    )


def test_spark_extract_on_jax_equals_tensorflow(spark, tmp_path):
    import keras

    assert keras.backend.backend() == "tensorflow"  # the suite's backend
    generate(tmp_path / "celeba", N, seed=21)
    root = tmp_path / "store"
    assert (
        ingest_job.main(["--store", str(root), "--path", str(tmp_path / "celeba")], spark=spark)
        == 0
    )
    keras.utils.set_random_seed(4)
    weights = tmp_path / "mnv2.weights.h5"
    keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(64, 64, 3)
    ).save_weights(str(weights))
    common = ["--store", str(root), *MODEL, "--weights", str(weights)]
    assert extract_job.main([*common, "--feature-set", "on-tf"], spark=spark) == 0

    # the driver on JAX, in its own process and Spark; its workers follow the driver
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "PYTHONPATH": str(REPO),
    }
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "jobs" / "extract.py"),
            *common,
            "--feature-set",
            "on-jax",
            "--master",
            "local[1]",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    layout = store.Layout(root)
    manifests = {
        b: store.read_manifest(layout, store.features_id(f"on-{b}")) for b in ("tf", "jax")
    }
    assert manifests["tf"]["backend"] == "tensorflow"
    assert manifests["jax"]["backend"] == "jax"
    assert manifests["jax"]["counts"] == manifests["tf"]["counts"]
    assert manifests["jax"]["counts"]["ok"] == N
    tf_df = spark.read.parquet(store.spark_uri(layout.features("on-tf")))
    jax_df = spark.read.parquet(store.spark_uri(layout.features("on-jax")))
    largest = tf_df.select(F.max(F.array_max(F.transform("embedding", F.abs)))).first()[0]
    assert largest > 0
    # relative to the largest activation (random-init activations are small)
    assert_approx_df_equality(
        _exploded(jax_df, 1 / largest),
        _exploded(tf_df, 1 / largest),
        precision=1e-4,
        ignore_row_order=True,
        ignore_nullable=True,
    )

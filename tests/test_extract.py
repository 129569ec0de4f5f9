"""jobs/extract.py: the feature set the Spark job writes, resume after a kill, bad images, GPUs."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from chispa import assert_approx_df_equality
from PIL import Image
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, IntegerType, StringType, StructField, StructType

from featstore import store
from featstore.sources.synthetic import generate
from jobs import extract as extract_job
from jobs import ingest as ingest_job
from tests.conftest import kill_job_when

REPO = Path(__file__).resolve().parents[1]
N = 20
MODEL = ["--model", "mobilenetv2", "--input-size", "native", "--batch-size", "8"]


@pytest.fixture(scope="module")
def celeba_store(spark, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("extract")
    generate(root / "celeba", N, seed=5)
    assert (
        ingest_job.main(
            ["--store", str(root / "store"), "--path", str(root / "celeba")], spark=spark
        )
        == 0
    )
    return root / "store"


@pytest.fixture(scope="module")
def saved_base(tmp_path_factory):
    """A MobileNetV2 base built directly with Keras, and its weights saved to a .weights.h5."""
    import keras

    keras.utils.set_random_seed(11)
    base = keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(218, 178, 3)
    )
    path = tmp_path_factory.mktemp("w") / "mnv2.weights.h5"
    base.save_weights(str(path))
    return base, path


def _direct_embeddings(base, store_dir: Path) -> dict[str, np.ndarray]:
    """The same model called directly in one process: decode, preprocess on the host, pool."""
    import keras

    images = pq.read_table(store_dir / "images", columns=["image_id", "content"]).to_pylist()
    x = np.stack(
        [np.asarray(Image.open(io.BytesIO(r["content"])).convert("RGB")) for r in images]
    ).astype("float32")
    x = keras.applications.mobilenet_v2.preprocess_input(x)
    fmap = keras.ops.convert_to_numpy(base(x, training=False))
    return {r["image_id"]: fmap[i].mean(axis=(0, 1)) for i, r in enumerate(images)}


EXPLODED_SCHEMA = StructType(
    [
        StructField("image_id", StringType(), False),
        StructField("i", IntegerType(), False),
        StructField("value", DoubleType(), True),
    ]
)


@pytest.mark.parametrize("partitions", [1, 3])
def test_spark_embeddings_equal_direct_keras(spark, celeba_store, saved_base, partitions):
    base, weights = saved_base
    name = f"direct-p{partitions}"
    rc = extract_job.main(
        [
            "--store",
            str(celeba_store),
            *MODEL,
            "--weights",
            str(weights),
            "--feature-set",
            name,
            "--set",
            f"extract.partitions={partitions}",
        ],
        spark=spark,
    )
    assert rc == 0
    got = spark.read.parquet(str(store.Layout(celeba_store).features(name)))
    assert got.count() == N
    direct = _direct_embeddings(base, celeba_store)
    # random-init activations are tiny: compare relative to the largest one (1e-4 of it)
    scale = 1.0 / max(float(np.abs(v).max()) for v in direct.values())
    expected = spark.createDataFrame(
        [(k, i, float(x) * scale) for k, vec in direct.items() for i, x in enumerate(vec)],
        EXPLODED_SCHEMA,
    )
    exploded = got.select("image_id", F.posexplode("embedding").alias("i", "value")).select(
        "image_id", "i", (F.col("value") * F.lit(scale)).alias("value")
    )
    assert_approx_df_equality(
        exploded, expected, precision=1e-4, ignore_row_order=True, ignore_nullable=True
    )
    manifest = store.check_feature_set(celeba_store, name, deep=True)
    assert manifest["dim"] == 1280 and manifest["model"] == "mobilenetv2"
    assert manifest["weights"]["source"] == "file"
    assert manifest["weights"]["sha256"] == store.sha256_file(weights)
    assert manifest["counts"]["ok"] == N and manifest["counts"]["errors"] == 0
    assert manifest["input_hw"] == [218, 178] and manifest["layers"] == ["out_relu"]


def test_rerun_skips_and_overwrite_gives_same_values(spark, celeba_store, capsys):
    args = ["--store", str(celeba_store), *MODEL, "--weights", "random", "--set", "extract.seed=3"]
    assert extract_job.main(args, spark=spark) == 0
    name = "mobilenetv2-out_relu-avg-218x178-random3"
    path = store.Layout(celeba_store).features(name)
    first = pq.read_table(path).sort_by("image_id")
    created = store.feature_set_manifest(celeba_store, name)["created"]
    capsys.readouterr()
    assert extract_job.main(args, spark=spark) == 0
    assert "already extracted" in capsys.readouterr().out
    assert store.feature_set_manifest(celeba_store, name)["created"] == created
    assert extract_job.main([*args, "--overwrite"], spark=spark) == 0
    second = pq.read_table(path).sort_by("image_id")
    assert second.num_rows == N
    np.testing.assert_array_equal(
        np.array(first["embedding"].to_pylist()), np.array(second["embedding"].to_pylist())
    )


def test_workers_measure_the_network_and_say_where_the_time_went(spark, celeba_store, capsys):
    """No model on the driver: the width, parameters and FLOPs in the manifest come from the
    workers' model and equal the base measured directly; the job prints the workers' and the
    driver's time split; the warm-up changes no value."""
    from featstore.models import describe_base

    args = ["--store", str(celeba_store), *MODEL, "--weights", "random", "--set", "extract.seed=4"]
    capsys.readouterr()
    assert extract_job.main([*args, "--feature-set", "warm"], spark=spark) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("extract time: "))
    assert "Spark start" in line and "workers: model " in line and "driver: plan " in line, line
    assert (
        extract_job.main(
            [*args, "--feature-set", "cold", "--set", "extract.warmup=false"], spark=spark
        )
        == 0
    )
    man = store.feature_set_manifest(celeba_store, "warm")
    direct = describe_base("mobilenetv2", "native")
    assert man["dim"] == 1280
    assert man["base"] == {"params": direct["params"], "flops": direct["flops"]}
    wk = man["timing"]["workers"]
    assert wk["tasks"] >= 1 and wk["model_s"] > 0 and wk["decode_s"] > 0
    assert wk["task_s"] >= wk["model_s"] + wk["start_s"] + wk["output_s"]
    assert set(man["timing"]["driver"]) == {"plan", "pass", "commit"}
    warm, cold = (
        pq.read_table(store.Layout(celeba_store).features(n)).sort_by("image_id")
        for n in ("warm", "cold")
    )
    np.testing.assert_array_equal(
        np.array(warm["embedding"].to_pylist()), np.array(cold["embedding"].to_pylist())
    )


def test_backend_threads_per_task_default_to_twice_the_task_cores_within_the_executor(spark):
    from featstore.extract import task_cpu_threads

    assert spark.sparkContext.master == "local[2]" and spark.conf.get("spark.task.cpus", "1") == "1"
    assert task_cpu_threads(spark) == 2  # 2 x 1 task core, within local[2]'s 2 cores
    assert task_cpu_threads(spark, 3) == 3  # extract.cpu_threads wins


def test_a_fresh_job_finds_the_model_built_by_its_warm_up(celeba_store):
    """A job in its own Spark session: the warm-up tasks (an RDD job, no SQL planning) start
    the Python workers that the embed UDF's tasks then reuse, model built and traced; the job
    says so. (Spark keeps one pool of workers per environment: this fails if the warm-up's
    workers are not the embed UDF's, e.g. when a Spark version changes that environment.)"""
    cmd = [
        sys.executable,
        str(REPO / "jobs" / "extract.py"),
        "--store",
        str(celeba_store),
        *MODEL,
        "--weights",
        "random",
        "--feature-set",
        "fresh",
        "--master",
        "local[2]",
    ]
    proc = subprocess.run(
        cmd,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    wk = store.feature_set_manifest(celeba_store, "fresh")["timing"]["workers"]
    assert wk["tasks"] == 2 and wk["model_reused"] == 2, wk
    assert wk["warmup_tasks"] == 2 and wk["warmup_s"] > 0, wk  # the build, timed in the warm-up
    line = next(x for x in proc.stdout.splitlines() if x.startswith("extract time: "))
    assert "in 2 tasks (2 found the model built; decode " in line, line
    assert (
        "; warm-up: 2 workers imported the backend, built the model and ran its first pass "
        "in " in line
    ), line


def _write_images_table(store_dir: Path, rows: list[tuple[str, bytes]]) -> None:
    """An images table as another tool might have written it (no ingest-time validation)."""
    table = pa.Table.from_pylist(
        [
            {
                "image_id": i,
                "split": "test",
                "content": c,
                "width": 0,
                "height": 0,
                "source_path": f"/x/{i}",
            }
            for i, c in rows
        ],
        schema=store.IMAGES_SCHEMA,
    )
    with store.TableWriter(store.Layout(store_dir), "images") as w:
        part = w.data / "split=test"
        part.mkdir(parents=True)
        pq.write_table(table.drop(["split"]), part / "part-0.parquet")
        store.write_errors(w.errors, [])
        w.commit(
            store.base_manifest(
                "images", input_fingerprint="handmade", counts={"ok": len(rows), "errors": 0}
            )
        )


def test_chunks_cut_the_sorted_ids_whether_or_not_the_files_are_sorted(celeba_store, tmp_path):
    from featstore.extract import _plan_chunks

    def expected(ids: list[str], size: int) -> list[tuple[str, str, int]]:
        ids = sorted(ids)
        return [
            (ids[i], ids[min(i + size, len(ids)) - 1], min(size, len(ids) - i))
            for i in range(0, len(ids), size)
        ]

    layout = store.Layout(celeba_store)  # ingest's files: one per split, each sorted
    manifest = store.read_manifest(layout, "images")
    assert len(manifest["files"]) >= 3
    ids = store.read_table(celeba_store, "images", ["image_id"]).column(0).to_pylist()
    assert _plan_chunks(layout, manifest, 6) == expected(ids, 5)  # 20 rows: 4 chunks of 5
    assert _plan_chunks(layout, manifest, 50) == expected(ids, 20)

    other = tmp_path / "handmade"  # one file, ids in reverse order
    rev = [(f"{i:06d}.jpg", b"x") for i in range(9, 0, -1)]
    _write_images_table(other, rev)
    m2 = store.read_manifest(store.Layout(other), "images")
    assert _plan_chunks(store.Layout(other), m2, 4) == expected([r[0] for r in rev], 3)


def _jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


def test_bad_images_go_to_errors(spark, tmp_path):
    rgb = Image.new("RGB", (178, 218), (120, 60, 30))
    good = _jpeg(rgb)
    png = io.BytesIO()
    Image.new("RGBA", (50, 40), (1, 2, 3, 4)).save(png, "PNG")
    rows = [
        ("a-good.jpg", good),
        ("b-gray.jpg", _jpeg(rgb.convert("L"))),
        ("c-cmyk.jpg", _jpeg(rgb.convert("CMYK"))),
        ("d-png.jpg", png.getvalue()),
        ("e-large.jpg", _jpeg(Image.new("RGB", (2400, 3000), (9, 9, 9)), quality=50)),
        ("f-truncated.jpg", good[: len(good) // 2]),
        ("g-empty.jpg", b""),
        ("h-garbage.jpg", b"\x00\x01not an image" * 20),
    ]
    st = tmp_path / "store"
    _write_images_table(st, rows)
    rc = extract_job.main(
        ["--store", str(st), *MODEL, "--weights", "random", "--feature-set", "bad"], spark=spark
    )
    assert rc == 1
    feats = pq.read_table(store.Layout(st).features("bad")).to_pandas()
    assert sorted(feats.image_id) == [
        "a-good.jpg",
        "b-gray.jpg",
        "c-cmyk.jpg",
        "d-png.jpg",
        "e-large.jpg",
    ]
    assert all(len(e) == 1280 and np.isfinite(e).all() for e in feats.embedding)
    errors = store.read_errors(st, "bad").to_pandas().set_index("image_id")
    assert sorted(errors.index) == ["f-truncated.jpg", "g-empty.jpg", "h-garbage.jpg"]
    assert (errors.stage == "embed").all() and errors.error.str.len().gt(3).all()
    manifest = store.check_feature_set(st, "bad", deep=True)
    assert manifest["counts"]["ok"] + manifest["counts"]["errors"] == len(rows)
    # the errors table is queryable by path too, and holds exactly those rows
    by_path = pq.read_table(store.Layout(st).errors("features/bad"))
    assert sorted(by_path["image_id"].to_pylist()) == sorted(errors.index)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "vgg17"], "unknown model 'vgg17'"),
        (
            ["--model", "mobilenetv2", "--weights", "random", "--layers", "block9_nope"],
            "block9_nope",
        ),
        (
            ["--model", "mobilenetv2", "--weights", "imagenet"],
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        ),
        (["--model", "mobilenetv2", "--weights", "/no/such.weights.h5"], "/no/such.weights.h5"),
    ],
)
def test_bad_settings_fail_before_spark(celeba_store, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras-home"))
    before = (
        sorted(p.name for p in (celeba_store / "features").iterdir())
        if (celeba_store / "features").exists()
        else []
    )
    rc = extract_job.main(["--store", str(celeba_store), *args])  # no spark given: none started
    assert rc == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("featstore:")]
    assert len(lines) == 1 and message in lines[0]
    after = (
        sorted(p.name for p in (celeba_store / "features").iterdir())
        if (celeba_store / "features").exists()
        else []
    )
    assert after == before


def test_killed_run_commits_nothing_and_rerun_resumes(spark, celeba_store, tmp_path):
    """SIGKILL the job (driver and JVM) after its first chunk; nothing is committed; the re-run
    resumes from the staged chunk and writes every image exactly once."""
    name = "killed"
    cmd = [
        sys.executable,
        str(REPO / "jobs" / "extract.py"),
        "--store",
        str(celeba_store),
        *MODEL,
        "--weights",
        "random",
        "--feature-set",
        name,
        "--master",
        "local[1]",
        "--set",
        "extract.chunk_rows=5",
    ]
    staging = store.Layout(celeba_store).staging
    kill_job_when(cmd, staging, f"features__{name}-*/chunk-errors/errors-*.parquet")

    assert not store.Layout(celeba_store).features(name).exists()
    assert name not in [t["name"] for t in store.list_tables(celeba_store)]
    # a chunk is done when Spark committed it (_SUCCESS) and the driver wrote its errors file
    done = [
        s
        for s in staging.glob(f"features__{name}-*/chunks/chunk-*/_SUCCESS")
        if (s.parents[2] / "chunk-errors" / f"errors-{s.parent.name[6:]}.parquet").is_file()
    ]
    assert 1 <= len(done) < 4  # 20 images in chunks of 5: killed part-way
    # a chunk whose errors file is missing (a kill between the two) is done again, not trusted
    redo = sorted(done)[0]
    (redo.parents[2] / "chunk-errors" / f"errors-{redo.parent.name[6:]}.parquet").unlink()
    staged = done[1:]

    from featstore.config import load_config
    from featstore.extract import extract

    cfg = load_config(
        None,
        [
            "extract.model=mobilenetv2",
            "extract.input_size=native",
            "extract.batch_size=8",
            "extract.weights=random",
            f"extract.feature_set={name}",
            "extract.chunk_rows=5",
        ],
    )
    summary = extract(spark, cfg.extract, str(celeba_store))
    assert summary.chunks_resumed == len(staged)
    assert summary.chunks_resumed + summary.chunks_done == 4
    ids = pq.read_table(store.Layout(celeba_store).features(name), columns=["image_id"])["image_id"]
    assert sorted(ids.to_pylist()) == [f"{i:06d}.jpg" for i in range(1, N + 1)]
    assert not list(staging.glob(f"features__{name}-*"))


GPU_PROBE = textwrap.dedent("""
    import json, os, sys
    from pyspark.sql import SparkSession
    spark = (SparkSession.builder.master("local-cluster[2,1,1024]")
             .config("spark.worker.resource.gpu.amount", "2")
             .config("spark.worker.resource.gpu.discoveryScript", sys.argv[1])
             .config("spark.executor.resource.gpu.amount", "1")
             .config("spark.task.resource.gpu.amount", "1")
             .config("spark.ui.enabled", "false").getOrCreate())
    def probe(it):
        from pyspark import TaskContext
        from featstore import udf
        given = udf.task_gpu_addresses()
        visible = udf.pin_gpu()
        yield [(TaskContext.get().partitionId(), ",".join(given), visible, os.getpid())]
    out = spark.sparkContext.parallelize(range(8), 8).mapPartitions(probe).collect()
    print("RESULT " + json.dumps([r for part in out for r in part]))
    spark.stop()
""")


def test_each_task_sees_its_gpu_in_local_cluster(tmp_path):
    script = tmp_path / "gpus.sh"
    script.write_text('#!/bin/bash\necho \'{"name": "gpu", "addresses": ["0", "1"]}\'\n')
    script.chmod(0o755)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run(
        [sys.executable, "-c", GPU_PROBE, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, proc.stderr[-3000:]
    rows = json.loads(line[len("RESULT ") :])
    assert len(rows) == 8
    for _pid, given, visible, _os_pid in rows:
        assert given in ("0", "1")
        assert visible == given  # CUDA_VISIBLE_DEVICES is the address Spark gave the task

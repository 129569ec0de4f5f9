"""One session-scoped local SparkSession for the whole suite, and shared fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.realdata import REAL_CELEBA

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_CELEBA = REAL_CELEBA


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("featstore-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.python.worker.reuse", "true")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def shared_celeba() -> Path:
    if not (SHARED_CELEBA / "list_eval_partition.txt").is_file():
        pytest.skip(f"real CelebA annotation files not found at {SHARED_CELEBA}")
    return SHARED_CELEBA


@pytest.fixture
def foreign_default_fs(spark):
    """Spark's default file system set to one that does not exist, as on a YARN cluster whose
    ``fs.defaultFS`` is HDFS: a bare local path handed to Spark then fails; ``file:`` URIs work."""
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    before = conf.get("fs.defaultFS")
    conf.set("fs.defaultFS", "featstore-nowhere:///")
    try:
        yield
    finally:
        conf.set("fs.defaultFS", before)


JOB_FS = "mobilenetv2-out_relu-avg-32x32-random0"  # what the job_store fixture's extract names
#: the job_store fixture's extract settings (small random-weight MobileNetV2), for tests that
#: extract again the same way
JOB_MODEL = "--model mobilenetv2 --weights random --input-size 32x32 --batch-size 8".split()
JOB_N = 40  # images the synthetic set lists; JOB_BAD of them are bad files
JOB_BAD = {"000007.jpg": b"not an image at all", "000011.jpg": None}  # None: truncated JPEG


def build_job_store(spark, root: Path, *, train: bool = True) -> Path:
    """A store built by the real jobs from a synthetic CelebA-format set with bad images:
    ingest (errors table with rows), extract (a tiny MobileNetV2, random weights), reduce (PCA 4)
    and, with ``train``, a small grid with saved models."""
    from featstore.sources.synthetic import generate
    from jobs import extract as extract_job
    from jobs import ingest as ingest_job
    from jobs import reduce as reduce_job
    from jobs import train as train_job

    generate(root / "celeba", JOB_N, seed=5)
    img = root / "celeba" / "img_align_celeba"
    for name, data in JOB_BAD.items():
        full = (img / name).read_bytes()
        (img / name).write_bytes(data if data is not None else full[: len(full) // 3])
    store_dir = root / "store"
    assert (
        ingest_job.main(["--store", str(store_dir), "--path", str(root / "celeba")], spark=spark)
        == 1
    )  # finished, bad images recorded
    assert (
        extract_job.main(
            ["--store", str(store_dir), *JOB_MODEL],
            spark=spark,
        )
        == 0
    )
    assert (
        reduce_job.main(
            ["--store", str(store_dir), "--feature-set", JOB_FS, "--dims", "4"], spark=spark
        )
        == 0
    )
    if train:
        assert (
            train_job.main(
                [
                    "--store",
                    str(store_dir),
                    "--feature-sets",
                    f"{JOB_FS}-pca4",
                    "--attributes",
                    "Smiling,Male",
                    "--models",
                    "lasso",
                    "--set",
                    "train.save_models=true",
                    "--set",
                    "train.folds=3",
                ],
                spark=spark,
            )
            == 0
        )
    return store_dir


@pytest.fixture(scope="session")
def job_store(spark, tmp_path_factory) -> Path:
    """One store built by the real jobs for the whole suite: read it, never change it (copy it
    with ``shutil.copytree`` first)."""
    return build_job_store(spark, tmp_path_factory.mktemp("job-store"))


def kill_job_when(
    cmd: list[str],
    staging: Path,
    pattern: str,
    *,
    timeout: float = 240,
) -> list[Path]:
    """Start a job (its own session: driver, JVM, Python workers), wait until ``staging``
    holds a file matching ``pattern``, then SIGKILL the whole process group. Returns the files
    matched. Fails the test if the job ends first or nothing matches within ``timeout``."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(
        cmd,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable},
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + timeout
    found: list[Path] = []
    while time.time() < deadline and proc.poll() is None:
        found = list(staging.glob(pattern))
        if found:
            break
        time.sleep(0.1)
    if proc.poll() is not None:
        pytest.fail(
            f"the job ended before it could be killed: {proc.stdout.read().decode()[-2000:]}"
        )
    if not found:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"nothing matched {pattern} within {timeout:.0f} s")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return found

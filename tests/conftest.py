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

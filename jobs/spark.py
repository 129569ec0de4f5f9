"""The one place that creates SparkSessions (house rule: only jobs/ does)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from featstore.config import SparkConfig

logger = logging.getLogger(__name__)


def get_spark(cfg: SparkConfig, *, master: str | None = None, extra_conf: dict[str, str] | None = None) -> Any:
    """A SparkSession for a job.

    Under ``spark-submit`` the master and conf given there win (we only add settings that are not
    set yet); in plain ``python jobs/X.py`` runs we start ``cfg.master`` (default local[*]).
    Python workers use this interpreter unless PYSPARK_PYTHON says otherwise, so UDFs find the
    same packages as the driver.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    existing = SparkConf()  # holds what spark-submit passed (system properties)
    builder = SparkSession.builder.appName(cfg.app_name)
    if master:
        builder = builder.master(master)
    elif not existing.contains("spark.master"):
        builder = builder.master(cfg.master)
    for key, value in {**cfg.conf, **(extra_conf or {})}.items():
        if not existing.contains(key) or (extra_conf and key in extra_conf):
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("FEATSTORE_SPARK_LOG_LEVEL", "WARN"))
    logger.info("spark %s, master %s", spark.version, spark.sparkContext.master)
    return spark

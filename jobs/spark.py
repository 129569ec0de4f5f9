"""The one place that creates SparkSessions (house rule: only jobs/ does)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from featstore import quiet
from featstore.config import SparkConfig

logger = logging.getLogger(__name__)


def get_spark(
    cfg: SparkConfig, *, master: str | None = None, extra_conf: dict[str, str] | None = None
) -> Any:
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
    settings = {**cfg.conf, **(extra_conf or {})}
    for key, value in settings.items():
        if not existing.contains(key) or (extra_conf and key in extra_conf):
            builder = builder.config(key, value)
    for key, value in _quiet_settings(existing, settings).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    # quiet (no -v): Spark's own ERROR lines off too. A failed job is reported by featstore in
    # one line naming its root cause (featstore.causes), and a successful one printed none of
    # the Java traces Spark logs at ERROR for work it cancelled itself (the warm-up's
    # InterruptedException); -v (WARN) shows them all
    spark.sparkContext.setLogLevel(
        os.environ.get("FEATSTORE_SPARK_LOG_LEVEL", "FATAL" if quiet.is_quiet() else "WARN")
    )
    logger.info("spark %s, master %s", spark.version, spark.sparkContext.master)
    return spark


def _quiet_settings(existing: Any, settings: dict[str, str]) -> dict[str, str]:
    """Settings that keep the executors' Python workers as quiet (or as verbose, with -v) as the
    driver: the environment of featstore.quiet as ``spark.executorEnv.*`` (a cluster's workers
    do not inherit the driver's environment; in local mode they do anyway), and, when this
    process starts the driver JVM itself (not under spark-submit), a log4j2 configuration at
    ERROR for it. Nothing the user set is replaced."""
    out: dict[str, str] = {}
    for key, value in quiet.worker_env().items():
        conf_key = f"spark.executorEnv.{key}"
        if not existing.contains(conf_key) and conf_key not in settings:
            out[conf_key] = value
    starts_jvm = "PYSPARK_GATEWAY_PORT" not in os.environ
    java_opts = "spark.driver.extraJavaOptions"
    if quiet.is_quiet() and starts_jvm and quiet.LOG4J2.is_file():
        current = settings.get(java_opts) or (
            existing.get(java_opts) if existing.contains(java_opts) else ""
        )
        if "log4j2.configurationFile" not in current and "log4j.configuration" not in current:
            flag = f"-Dlog4j2.configurationFile={quiet.LOG4J2.as_uri()}"
            out[java_opts] = f"{current} {flag}".strip()
    return out

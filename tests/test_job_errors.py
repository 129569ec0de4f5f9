"""What a job says and returns when a Spark task fails (jobs/common.run_guarded)."""

from __future__ import annotations

import logging

import pandas as pd

from jobs.common import EXIT_BAD_INPUT, EXIT_FAILED, run_guarded


def _task_raising(spark, exc: Exception):
    def body(batches):
        for _ in batches:
            raise exc
        yield pd.DataFrame({"id": []})

    def job() -> int:
        spark.range(4, numPartitions=1).mapInPandas(body, "id long").collect()
        return 0

    return job


def test_featstore_error_in_a_task_is_one_line_and_exit_2(spark, capsys, caplog):
    from featstore.errors import ConfigError

    err = ConfigError("weights file not found: /shared/w.h5")
    with caplog.at_level(logging.INFO):
        assert run_guarded(_task_raising(spark, err)) == EXIT_BAD_INPUT
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["featstore: error: in a Spark task: weights file not found: /shared/w.h5"]


def test_other_task_failure_exits_3_with_trace_and_a_last_line(spark, capsys, caplog):
    with caplog.at_level(logging.DEBUG):  # the trace is logged at debug: shown with -v
        assert (
            run_guarded(_task_raising(spark, RuntimeError("CUDA error: device lost")))
            == EXIT_FAILED
        )
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("featstore:")]
    assert len(err) == 1
    last = err[-1]
    assert last.startswith(
        "featstore: error: the job failed (PythonException: "
        "RuntimeError: CUDA error: device lost); "
    )
    assert "committed nothing" in last
    # the full trace is logged for whoever debugs it, with the task's own error, at debug
    # level: on the console with -v only
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.exc_info)
    assert any(
        "CUDA error: device lost" in (r.exc_text or "")
        or "CUDA error: device lost" in str(r.exc_info[1])
        for r in caplog.records
        if r.exc_info
    )


def test_a_bug_on_the_driver_exits_3(capsys):
    def job() -> int:
        raise KeyError("split")

    assert run_guarded(job) == EXIT_FAILED
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("featstore: error: the job failed (KeyError: 'split')")


def test_featstore_error_that_is_not_bad_input_exits_3(spark, capsys):
    from featstore.errors import FeatstoreError

    assert run_guarded(_task_raising(spark, FeatstoreError("cache corrupt"))) == EXIT_FAILED
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["featstore: error: in a Spark task: cache corrupt"]

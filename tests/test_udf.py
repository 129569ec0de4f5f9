"""featstore/udf.py without Spark: executors run Keras on the driver's backend."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from featstore import udf
from featstore.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import io, sys
    import pandas as pd
    from PIL import Image
    from featstore.embed import EmbedConfig
    from featstore.udf import embed_batches

    def jpeg(color):
        buf = io.BytesIO()
        Image.new("RGB", (40, 48), color).save(buf, format="JPEG")
        return buf.getvalue()

    cfg = EmbedConfig(model="vgg16", weights="random", input_size="32x32", batch_size=2)
    backend = sys.argv[1] or None
    out = list(embed_batches(cfg, iter([pd.Series([jpeg("red"), jpeg("blue"), b"bad"])]),
                             backend=backend))
    import keras
    print("RESULT", keras.backend.backend(), out[0]["embedding"].map(
        lambda v: -1 if v is None else len(v)).tolist(), out[0]["error"].notna().tolist())
""")


def _run(backend: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": "featstore-no-such-backend", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, backend],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=REPO,
    )


def test_worker_runs_the_backend_the_driver_passes():
    """The worker's environment names another backend; the driver's wins."""
    done = _run("tensorflow")
    assert done.returncode == 0, done.stderr[-2000:]
    result = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert result == ["RESULT tensorflow [512, 512, -1] [False, False, True]"]
    # control: without the driver's backend the worker's environment is used, and fails here
    control = _run("")
    assert control.returncode != 0
    assert "featstore-no-such-backend" in control.stderr


def test_worker_already_on_another_backend_fails_with_one_line():
    import keras

    running = keras.backend.backend()
    udf.use_backend(running)  # the same: nothing to do
    udf.use_backend(None)
    other = "jax" if running != "jax" else "tensorflow"
    with pytest.raises(ConfigError) as err:
        udf.use_backend(other)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"runs Keras on {running!r} but the driver chose {other!r}" in msg
    assert f"KERAS_BACKEND={other}" in msg


def test_a_background_job_stopped_leaves_no_task_running(spark):
    """The warm-up's job outlives nothing: stop() cancels a job whose tasks are busy (here: a
    two-minute sleep in the Python worker) and returns once Spark has none of its tasks left."""
    import time

    sc = spark.sparkContext

    def busy(_):
        time.sleep(120)
        yield os.getpid()

    job = udf.BackgroundJob(sc, sc.parallelize(range(2), 2).mapPartitions(busy), "test-busy")
    deadline = time.monotonic() + 60
    while job.active_tasks() < 2:
        assert time.monotonic() < deadline, "the busy tasks never started"
        time.sleep(0.1)
    t = time.monotonic()
    assert job.stop() is True
    waited = time.monotonic() - t
    assert job.active_tasks() == 0 and sc.statusTracker().getActiveJobsIds() == []
    assert job.result is None and job.error is not None  # cancelled, not finished
    assert waited < 30, waited  # Spark's kill timeout, not the tasks' two minutes
    assert job.stop() is True  # idempotent
    # the session goes on: the next job runs
    assert sc.parallelize(range(4), 2).map(lambda x: x * 2).collect() == [0, 2, 4, 6]


def test_a_background_job_that_finished_keeps_its_result(spark):
    sc = spark.sparkContext
    job = udf.BackgroundJob(sc, sc.parallelize(range(3), 1).map(lambda x: x + 1), "test-done")
    job._thread.join(60)
    assert job.stop() is True
    assert job.result == [1, 2, 3] and job.error is None


def test_a_task_is_one_stream_through_decode_and_model(monkeypatch):
    """The UDF body calls ``embed_iter`` once over the task's Arrow batches, and a batch's rows
    leave while the next batch's first sub-batch is already in the model (no drain)."""
    import numpy as np
    import pandas as pd

    from featstore import embed
    from tests.test_embed import VGG, jpeg

    emb = embed.Embedder(VGG)  # batch_size 4
    events: list[str] = []
    dispatch, embed_iter = emb._forward.dispatch, emb.embed_iter

    def spy_dispatch(x):
        events.append("model")
        return dispatch(x)

    calls = []

    def spy_iter(batches):
        calls.append(1)
        return embed_iter(batches)

    monkeypatch.setattr(emb._forward, "dispatch", spy_dispatch)
    monkeypatch.setattr(emb, "embed_iter", spy_iter)
    monkeypatch.setattr(embed, "get_embedder", lambda cfg, sha=None, **kw: emb)
    images = [jpeg(i) for i in range(12)]
    batches = [pd.Series(images[i : i + 4]) for i in (0, 4, 8)]
    frames = []
    for frame in udf.embed_batches(VGG, iter(batches)):
        events.append("rows")
        frames.append(frame)
    assert calls == [1]
    assert events == ["model", "model", "rows", "model", "rows", "rows"]
    for batch, frame in zip(batches, frames):  # the same shapes (4 rows): the same bits
        ref = emb.embed(list(batch)).embeddings
        np.testing.assert_array_equal(np.stack(frame["embedding"].to_list()), ref)
        assert frame["error"].isna().all()

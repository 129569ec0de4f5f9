#!/usr/bin/env python
"""Issue 26's measurements on one GPU, in order of value (run by ``bench/gpu/run.sh``).

Usage: python bench/gpu/measure.py OUTDIR [--small]

Sections (each rewrites OUTDIR/gpu.json, so a timeout keeps what ran):
  env        devices, versions
  handoff    DecodePool consumer CPU per image (shared memory vs pipe), bench_decode_handoff
  model      vgg16 native bf16 batch 256: the jitted async pass (embed_arrays) vs
             predict_on_batch (synchronous), and their embeddings compared (max relative diff)
  e2e        Embedder.embed_iter once over 1,024-row batches, JPEG bytes -> embeddings,
             decode processes = cores - 1, shared-memory ring; ratio e2e / model
  e2e_gpu    the same with extract.decode=gpu (nvJPEG through torchvision)
  layouts    N processes sharing the GPU (a stand-in for N Spark tasks per GPU: no Java), each
             running the UDF's own per-batch function (featstore.udf.embed_batches) over Arrow
             batches of an images table, started together behind a barrier
  full       202,599 images (CelebA's count, cycled JPEGs) in the shipped layout
``--small``: a CPU dry run (JAX on the CPU, a 32x32 vgg16, tiny counts).
Exit status 1 when a section or a layout recorded an error instead of its figures, else 0.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import sys
import time
import traceback
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for p in (ROOT, ROOT / "bench"):
    sys.path.insert(0, str(p))
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

OUTDIR = Path(sys.argv[1])
SMALL = "--small" in sys.argv
NCPU = os.cpu_count() or 1
RES: dict = {"small": SMALL, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "sections": {}}
T0 = time.time()


def pick(big, small):
    return small if SMALL else big


#: the model of the issue's targets; --small: a tiny one
CFG = dict(
    model="vgg16",
    weights="random",
    input_size=pick("native", "32x32"),
    precision=pick("bfloat16", "float32"),
    batch_size=pick(256, 8),
    seed=0,
)
ROWS = pick(1024, 24)  # Arrow batch rows


def save() -> None:
    RES["elapsed_s"] = round(time.time() - T0, 1)
    (OUTDIR / "gpu.json").write_text(json.dumps(RES, indent=1, default=str))


def section(name):
    def deco(fn):
        def run(*a, **k):
            t = time.time()
            print(f"== {name} (t={t - T0:.0f}s)", flush=True)
            try:
                RES["sections"][name] = fn(*a, **k)
            except Exception as exc:  # later sections still measure
                RES["sections"][name] = {
                    "error": f"{type(exc).__name__}: {exc}",
                    "tb": traceback.format_exc()[-2000:],
                }
            RES["sections"][name + "_s"] = round(time.time() - t, 1)
            print(json.dumps(RES["sections"][name], default=str)[:1500], flush=True)
            save()

        return run

    return deco


_JPEGS: list[bytes] = []


def jpegs(n: int) -> list[bytes]:
    if not _JPEGS:  # made once, shared by the layout processes through a file
        import pickle

        from bench_embed import synthetic_jpegs

        k = pick(512, 64)
        path = Path(f"/tmp/featstore_jpegs_{k}.pkl")
        if not path.exists():
            tmp = path.with_suffix(f".{os.getpid()}")
            tmp.write_bytes(pickle.dumps(synthetic_jpegs(k, seed=0)))
            tmp.replace(path)
        _JPEGS.extend(pickle.loads(path.read_bytes()))
    return [_JPEGS[i % len(_JPEGS)] for i in range(n)]


def embed_cfg(**kw):
    from featstore.embed import EmbedConfig

    return EmbedConfig(**{**CFG, **kw})


def stub_pyspark() -> None:
    """featstore.udf imports pyspark.accumulators; the GPU machine has no pyspark."""
    try:
        import pyspark.accumulators
    except ImportError:
        acc = types.ModuleType("pyspark.accumulators")
        acc.AccumulatorParam = object
        pyspark = types.ModuleType("pyspark")
        pyspark.TaskContext = type("TaskContext", (), {"get": staticmethod(lambda: None)})
        sys.modules["pyspark"] = pyspark
        sys.modules["pyspark.accumulators"] = acc


# --------------------------------------------------------------------------- sections


@section("env")
def env():
    import jax
    import keras
    import numpy

    out = {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "keras": keras.version(),
        "numpy": numpy.__version__,
        "devices": [str(d) for d in jax.devices()],
        "cpus": NCPU,
        "cfg": CFG,
        "rows": ROWS,
    }
    try:
        import torch

        out["torch"] = torch.__version__
        out["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception as exc:
        out["torch"] = f"unavailable: {exc}"
    return out


@section("handoff")
def handoff():
    import bench_decode_handoff

    path = OUTDIR / "handoff.json"
    bench_decode_handoff.main(
        [
            "--workers",
            str(max(1, NCPU - 1)),
            "--n",
            str(pick(8192, 256)),
            "--batch-size",
            str(CFG["batch_size"]),
            "--json",
            str(path),
        ]
    )
    return json.loads(path.read_text())


@section("model")
def model():
    import numpy as np

    from featstore import forward
    from featstore.embed import Embedder

    emb = Embedder(embed_cfg(), warmup=True)
    h, w = emb.input_hw
    n = pick(256 * 60, 32)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    emb.embed_arrays(images[: 2 * CFG["batch_size"]])  # warm
    t = time.perf_counter()
    fast = emb.embed_arrays(images)
    fast_s = time.perf_counter() - t
    jit_name = emb._forward.name
    emb._forward = forward.make_forward(emb.model, emb.input_hw, mode="sync")
    emb.embed_arrays(images[: CFG["batch_size"]])  # warm
    t = time.perf_counter()
    sync = emb.embed_arrays(images)
    sync_s = time.perf_counter() - t
    diff = np.abs(fast - sync).max() / max(1e-12, float(np.abs(sync).max()))
    cos = (fast * sync).sum(1) / (np.linalg.norm(fast, axis=1) * np.linalg.norm(sync, axis=1))
    return {
        "images": n,
        "overlapped": jit_name,
        "overlapped_img_s": n / fast_s,
        "predict_on_batch_img_s": n / sync_s,
        "max_rel_diff": float(diff),
        "min_cosine": float(cos.min()),
    }


def e2e_run(n: int, **kw) -> dict:
    from featstore.embed import Embedder

    cfg = embed_cfg(decode_workers=max(1, NCPU - 1), **kw)
    with Embedder(cfg, warmup=True) as emb:
        data = jpegs(n)
        batches = [data[i : i + ROWS] for i in range(0, n, ROWS)]
        list(emb.embed_iter(batches[:2]))  # start the decoders, warm
        emb.stats.reset()
        t = time.perf_counter()
        done = sum(len(r.ok_index) for r in emb.embed_iter(batches))
        wall = time.perf_counter() - t
        return {
            "images": done,
            "wall_s": wall,
            "img_s": done / wall,
            "decoder": type(emb._decoder).__name__,
            **emb.stats.as_dict(),
        }


@section("e2e")
def e2e():
    out = e2e_run(pick(60_000, 48))
    m = RES["sections"].get("model", {}).get("overlapped_img_s")
    if m:
        out["ratio_to_model"] = out["img_s"] / m
    return out


@section("e2e_gpu")
def e2e_gpu():
    return e2e_run(pick(60_000, 48), decode="gpu")


def _task(cfg_kw, n, rows, barrier, queue):
    """One stand-in Spark task: its own Python process, the UDF's per-batch function."""
    stub_pyspark()
    import pandas as pd
    import pyarrow as pa

    from featstore import udf
    from featstore.embed import get_embedder

    cfg = embed_cfg(**cfg_kw)
    emb = get_embedder(cfg, warm=True)
    table = pa.table({"content": pa.array(jpegs(n), pa.binary())})  # an images table
    batches = [b.column(0).to_pandas() for b in table.to_batches(max_chunksize=rows)]
    warm = [pd.Series(jpegs(cfg.batch_size))]
    for _ in udf.embed_batches(cfg, iter(warm)):
        pass
    barrier.wait()
    t0 = time.time()
    done = sum(len(df) for df in udf.embed_batches(cfg, iter(batches)))
    queue.put((t0, time.time(), done))
    # the cached embedder's decode pool: closed here, or the process waited at exit for its
    # workers (seen in the CPU dry run: layout (2, 8, 1) hung in join)
    emb.close()


def layout(tasks: int, batch: int, workers: int, n_total: int, rows: int = ROWS) -> dict:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(tasks), ctx.Queue()
    kw = {"batch_size": batch, "decode_workers": workers}
    procs = [
        ctx.Process(target=_task, args=(kw, n_total // tasks, rows, barrier, queue))
        for _ in range(tasks)
    ]
    for p in procs:
        p.start()
    import queue as queues

    got: list = []
    deadline = time.time() + pick(150, 60)
    while len(got) < tasks:
        try:
            got.append(queue.get(timeout=1))
        except queues.Empty:
            died = sum(p.exitcode not in (None, 0) for p in procs)
            if died or time.time() > deadline:
                for p in procs:
                    p.kill()
                raise RuntimeError(
                    "a task process died (see the log)"
                    if died
                    else "the layout ran past its deadline"
                ) from None
    for p in procs:
        p.join()
    start, end = min(g[0] for g in got), max(g[1] for g in got)
    done = sum(g[2] for g in got)
    return {
        "tasks": tasks,
        "batch": batch,
        "decode_workers": workers,
        "rows": rows,
        "images": done,
        "wall_s": end - start,
        "img_s": done / (end - start),
    }


#: (tasks per GPU, batch, decode processes per task): the issue's 4x64 and 8x256 with one
#: decode thread, and the new pipeline's candidates with decode processes over the 16 cores
LAYOUTS = pick(
    [(4, 64, 0), (8, 256, 0), (1, 256, 15), (2, 256, 7), (4, 256, 3), (8, 256, 1)],
    [(2, 8, 0), (2, 8, 1)],
)


@section("layouts")
def layouts():
    out = []
    for tasks, batch, workers in LAYOUTS:
        if time.time() - T0 > 280:
            out.append({"skipped": [tasks, batch, workers], "why": "time budget"})
            continue
        try:
            out.append(layout(tasks, batch, workers, pick(40_000, 48)))
        except Exception as exc:
            out.append({"layout": [tasks, batch, workers], "error": repr(exc)})
        print(out[-1], flush=True)
    return out


@section("full")
def full():
    # the shipped layout (conf/cluster-gpu): 8 tasks per GPU, batch 256, one decode thread each
    if time.time() - T0 > 300:
        return {"skipped": "time budget"}
    return layout(*pick((8, 256, 0), (2, 8, 0)), pick(202_599, 64))


def errors() -> list[str]:
    """The sections (and layouts) that recorded an error instead of figures."""
    out = []
    for name, val in RES["sections"].items():
        if isinstance(val, dict) and "error" in val:
            out.append(name)
        elif isinstance(val, list):
            out += [f"{name}{e['layout']}" for e in val if isinstance(e, dict) and "error" in e]
    return out


def main() -> int:
    OUTDIR.mkdir(parents=True, exist_ok=True)
    for fn in (env, handoff, model, e2e, e2e_gpu, layouts, full):
        fn()
    print(f"done in {time.time() - T0:.0f}s -> {OUTDIR / 'gpu.json'}", flush=True)
    bad = errors()
    if bad:  # every figure is still in gpu.json; the exit status says some are missing
        print(f"errors in: {', '.join(bad)}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

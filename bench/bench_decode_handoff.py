#!/usr/bin/env python
"""What the process that consumes ``DecodePool(hw, workers).map(chunks)`` pays per image it
receives, as a fraction of one image's decode time (issue 26's target: <= 0.08).

The consumer's CPU is ``resource.getrusage(RUSAGE_SELF)`` (user + system, every thread of this
process: the executor's feeder and result threads included; the workers' CPU is not in it)
over a pass that releases each batch at once; one image's decode time is the process CPU of
``decode_image`` over the same JPEGs in this process. Both handoffs are measured: pixels through
the shared-memory ring (the default) and through the pipe (``shared=False``, what it was)::

    python bench/bench_decode_handoff.py --workers 2 --n 4096 --batch-size 256
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def consumer_pass(pool, chunks) -> tuple[int, float, float]:
    """(images received, consumer CPU seconds, wall seconds) of one pass over ``chunks``."""
    c0, t0, n = cpu_s(), time.perf_counter(), 0
    for batch in pool.map(chunks):
        n += len(batch.images)
        batch.release()
    return n, cpu_s() - c0, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--n", type=int, default=4096, help="images per measured pass")
    ap.add_argument("--batch-size", type=int, default=256, help="images per chunk (slot)")
    ap.add_argument("--hw", default="218x178", help="decoded size HxW (native CelebA)")
    ap.add_argument("--unique", type=int, default=256)
    ap.add_argument("--json", default="", help="also write the figures to this file")
    args = ap.parse_args(argv)

    from bench_embed import synthetic_jpegs

    from featstore.embed import DecodePool, decode_image

    hw = tuple(int(v) for v in args.hw.split("x"))
    unique = synthetic_jpegs(args.unique, seed=0)
    contents = [unique[i % len(unique)] for i in range(args.n)]
    bs = args.batch_size
    chunks = [contents[i : i + bs] for i in range(0, args.n, bs)]

    m = min(len(unique), 256)
    for data in unique[:16]:
        decode_image(data, hw)  # warm
    c0 = time.process_time()
    for data in unique[:m]:
        decode_image(data, hw)
    decode_cpu = (time.process_time() - c0) / m
    print(f"machine   {platform.node()} python {platform.python_version()} cpus {os.cpu_count()}")
    print(
        f"decode    {decode_cpu * 1e3:.3f} ms CPU per image in one process ({hw[0]}x{hw[1]}, "
        f"{m} JPEGs)"
    )
    out = {
        "decode_cpu_ms": decode_cpu * 1e3,
        "workers": args.workers,
        "n": args.n,
        "batch_size": bs,
        "hw": list(hw),
    }
    for name, shared in (("shm", True), ("pipe", False)):
        with DecodePool(hw, args.workers, capacity=bs, shared=shared) as pool:
            consumer_pass(pool, chunks[: max(2, args.workers)])  # start and warm the workers
            n, cpu, wall = consumer_pass(pool, chunks)
        frac = cpu / n / decode_cpu
        out[name] = {
            "images": n,
            "consumer_cpu_s": cpu,
            "wall_s": wall,
            "images_per_s": n / wall,
            "consumer_cpu_us_per_image": cpu / n * 1e6,
            "fraction_of_decode": frac,
        }
        print(
            f"{name:5s}     {n / wall:8.1f} img/s delivered; consumer CPU {cpu / n * 1e6:7.1f} "
            f"us per image = {frac:.3f} of one decode"
        )
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

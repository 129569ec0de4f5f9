"""Throughput of the two feeds (featstore.feed): native pyarrow vs petastorm, one epoch each.

    .venv/bin/python bench/bench_feed.py [--rows 50000] [--dim 512] [--batch 256]

Writes a synthetic feature set (``--rows`` train rows of ``--dim`` float32, 4 row groups) and a
labels table through the store's writer into a temporary store, then reads one shuffled epoch of
``(x, y)`` batches with ``numpy_batches`` and ``tf_dataset`` on each engine and prints seconds to
open the feed (petastorm: Spark writes its cache), seconds for the epoch and rows/s. The petastorm
rows are skipped where petastorm does not import.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NAME = "bench-feed"
ATTRS = ["Smiling", "Male"]


def generate(root: Path, rows: int, dim: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from featstore import store

    rng = np.random.default_rng(0)
    ids = [f"{i:06d}.jpg" for i in range(1, rows + 1)]
    layout = store.Layout(root)
    labels = pa.table(
        {"image_id": ids, "split": ["train"] * rows, **{a: rng.random(rows) < 0.5 for a in ATTRS}},
        schema=store.labels_schema(ATTRS),
    )
    with store.TableWriter(layout, "labels") as w:
        pq.write_table(labels, w.data / "part-00000.parquet")
        w.commit(
            store.base_manifest("labels", attributes=ATTRS, counts={"rows": rows}), has_errors=False
        )
    x = rng.normal(size=(rows, dim)).astype(np.float32)
    emb = pa.ListArray.from_arrays(
        pa.array(np.arange(0, rows * dim + 1, dim, dtype=np.int32)), pa.array(x.reshape(-1))
    )
    with store.TableWriter(layout, store.features_id(NAME)) as w:
        part = w.data / "split=train"
        part.mkdir(parents=True)
        pq.write_table(
            pa.table({"image_id": ids, "embedding": emb}),
            part / "part-00000.parquet",
            row_group_size=-(-rows // 4),
        )
        store.write_errors(w.errors, [])
        w.commit(
            store.base_manifest(
                "features", name=NAME, dim=dim, model="bench", counts={"ok": rows, "errors": 0}
            )
        )


def timed(open_feed, epoch) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    with open_feed() as feed_out:
        t1 = time.perf_counter()
        n = epoch(feed_out)
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from featstore import feed

    engines = ["native"] + (["petastorm"] if feed.petastorm_available() else [])
    print(
        f"machine: {platform.node()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f}; {args.rows:,} rows x {args.dim} float32, batch {args.batch}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-feed-") as tmp:
        root = Path(tmp) / "store"
        generate(root, args.rows, args.dim)
        spark = None
        if "petastorm" in engines:
            from featstore.config import load_config
            from jobs.spark import get_spark

            spark = get_spark(load_config(None, []).spark, extra_conf={"spark.ui.enabled": "false"})
        try:
            for engine in engines:
                kw = {"batch_size": args.batch, "engine": engine}
                cases = {
                    "numpy_batches": (
                        lambda kw=kw: feed.numpy_batches(
                            spark, root, NAME, ATTRS, "train", shuffle=True, **kw
                        ),
                        lambda batches: sum(len(x) for x, _ in batches),
                    ),
                    "tf_dataset": (
                        lambda kw=kw: feed.tf_dataset(spark, root, NAME, ATTRS, "train", **kw),
                        lambda out: sum(int(x.shape[0]) for x, _ in out[0]),
                    ),
                }
                for what, (open_feed, epoch) in cases.items():
                    opened, took, n = timed(open_feed, epoch)
                    print(
                        f"{engine:9s} {what:13s} open {opened:6.2f} s  epoch {took:6.2f} s  "
                        f"{n / took:9,.0f} rows/s  ({n:,} rows)"
                    )
        finally:
            if spark is not None:
                spark.stop()


if __name__ == "__main__":
    main()

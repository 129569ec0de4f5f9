#!/usr/bin/env python
"""Reduce benchmark: PCA of a full-CelebA-sized feature set (202,599 x 2,048 float32) on Spark.

Writes a synthetic feature set with pyarrow in row-group chunks (low-rank structure plus noise,
splits 162,770 / 19,867 / 19,962, extract's layout and a manifest) into a temp folder, then runs
``featstore.reduce.reduce`` - the function ``jobs/reduce.py`` runs - with the default dimensions
in a Spark session from ``jobs.spark.get_spark`` (local[*] unless --master)::

    python bench/bench_reduce.py                       # full size, driver memory 6g
    python bench/bench_reduce.py --rows 20000 --dim 512 --conf spark.task.cpus=1

Figures printed: generation time; the reduce's total, its fit pass (shift, partial sums,
treeReduce, eigh) and its projection/write pass; peak memory: the driver's max RSS
(getrusage RUSAGE_SELF), RUSAGE_CHILDREN (descendants that have exited), and sampled every
0.2 s with psutil: the JVM's RSS, the Python workers' (largest one and all together) and the
whole process tree's.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

SPLITS = {"train": 162_770, "val": 19_867, "test": 19_962}  # CelebA's 202,599 images
NAME = "bench-resnet50-avg"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--rows",
        type=int,
        default=sum(SPLITS.values()),
        help="total rows, split in CelebA's proportions (default 202,599)",
    )
    p.add_argument("--dim", type=int, default=2048, help="embedding dimension")
    p.add_argument("--dims", default="8,16,32,64,128,256", help="PCA dimensions")
    p.add_argument("--rank", type=int, default=64, help="rank of the synthetic structure")
    p.add_argument("--chunk-rows", type=int, default=8192, help="rows per generated row group")
    p.add_argument("--file-rows", type=int, default=32768, help="rows per Parquet file")
    p.add_argument("--arrow-rows", type=int, default=0, help="reduce.arrow_batch_rows (0: config)")
    p.add_argument("--master", default="local[*]")
    p.add_argument("--driver-memory", default="6g")
    p.add_argument("--conf", action="append", default=[], metavar="K=V", help="Spark setting")
    p.add_argument("--dir", help="work folder (default: a temp folder, removed at the end)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    return p.parse_args(argv)


def split_sizes(rows: int) -> dict[str, int]:
    total = sum(SPLITS.values())
    sizes = {s: rows * n // total for s, n in SPLITS.items()}
    sizes["train"] += rows - sum(sizes.values())
    return sizes


def generate(
    store_dir: Path,
    sizes: dict[str, int],
    dim: int,
    rank: int,
    chunk_rows: int,
    file_rows: int,
    seed: int = 0,
) -> None:
    """features/feature_set=<NAME>/split=<s>/part-*.parquet, committed through the store's
    writer (manifest with checksums), chunk by chunk: memory stays at a few chunks whatever the
    size."""
    from featstore import store

    rng = np.random.default_rng(seed)
    loadings = (
        rng.standard_normal((rank, dim), dtype=np.float32)
        * (0.9 ** np.arange(rank, dtype=np.float32))[:, None]
    )
    offset = rng.uniform(0.0, 2.0, size=dim).astype(np.float32)
    file_schema = pa.schema([f for f in store.FEATURES_SCHEMA if f.name != "split"])
    with store.TableWriter(store.Layout(store_dir), store.features_id(NAME)) as w:
        for split, n in sizes.items():
            part_dir = w.data / f"split={split}"
            part_dir.mkdir(parents=True)
            for f, start in enumerate(range(0, n, file_rows)):
                stop = min(n, start + file_rows)
                with pq.ParquetWriter(
                    part_dir / f"part-{f:05d}.parquet", file_schema, compression="snappy"
                ) as writer:
                    for a in range(start, stop, chunk_rows):
                        b = min(stop, a + chunk_rows)
                        x = rng.standard_normal((b - a, rank), dtype=np.float32) @ loadings
                        x += 0.3 * rng.standard_normal((b - a, dim), dtype=np.float32) + offset
                        values = pa.array(x.reshape(-1))
                        offsets = pa.array(np.arange(0, (b - a + 1) * dim, dim, dtype=np.int32))
                        emb = pa.ListArray.from_arrays(offsets, values)
                        ids = pa.array([f"{split}-{i:06d}.jpg" for i in range(a, b)])
                        writer.write_table(
                            pa.Table.from_arrays([ids, emb], schema=file_schema),
                            row_group_size=chunk_rows,
                        )
        store.write_errors(w.errors, [])
        # the writer adds the files, their checksums and the rows per split
        w.commit(
            store.base_manifest(
                "features",
                name=NAME,
                run_key=store.fingerprint([NAME, str(sizes), str(dim)]),
                model="synthetic",
                layers=["none"],
                pooling="avg",
                dim=dim,
                counts={"ok": sum(sizes.values()), "errors": 0},
            )
        )


def _reusable(store_dir: Path, sizes: dict[str, int], dim: int) -> bool:
    from featstore import store
    from featstore.errors import StoreError

    if not store_dir.is_dir():
        return False
    try:
        manifest = store.read_manifest(store.Layout(store_dir), store.features_id(NAME))
    except StoreError:  # an older layout or a damaged manifest: generate it again
        return False
    return bool(manifest and manifest["dim"] == dim and manifest["counts"]["splits"] == sizes)


class MemorySampler(threading.Thread):
    """Peak RSS of the JVM, of the Python workers and of the whole tree under this process."""

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.stop_event = threading.Event()
        self.peak: dict[str, int] = {
            "driver": 0,
            "jvm": 0,
            "worker_max": 0,
            "workers": 0,
            "tree": 0,
        }

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self.stop_event.is_set():
            sample = {"driver": me.memory_info().rss, "jvm": 0, "worker_max": 0, "workers": 0}
            for proc in me.children(recursive=True):
                try:
                    name, rss, ppid = proc.name(), proc.memory_info().rss, proc.ppid()
                except psutil.Error:
                    continue
                # The JVM is our direct child. Its other descendants: the pyspark daemon and the
                # Python workers it forks; processes the JVM spawns for a moment (Hadoop's chmod
                # etc.) share its memory before exec and are not counted.
                if name.startswith("java") and ppid == me.pid:
                    sample["jvm"] += rss
                elif name.startswith("python"):
                    sample["workers"] += rss
                    sample["worker_max"] = max(sample["worker_max"], rss)
            sample["tree"] = sample["driver"] + sample["jvm"] + sample["workers"]
            for key, value in sample.items():
                self.peak[key] = max(self.peak[key], value)
            self.stop_event.wait(self.interval)

    def stop(self) -> dict[str, int]:
        self.stop_event.set()
        self.join()
        return self.peak


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from featstore import store
    from featstore.config import load_config
    from featstore.reduce import reduce, summary_line
    from jobs.common import setup_logging
    from jobs.spark import get_spark

    setup_logging()
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench-reduce-"))
    store_dir = work / "store"
    sizes = split_sizes(args.rows)
    print(
        f"machine: {platform.node()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f} (other users' "
        f"processes slow the figures down)"
    )
    print(
        f"source: {sum(sizes.values()):,} rows x {args.dim:,} float32 {sizes}, "
        f"rank-{args.rank} structure + noise, in {work}"
    )
    try:
        tg = time.perf_counter()
        layout = store.Layout(store_dir)
        source_dir = layout.features(NAME)
        if _reusable(store_dir, sizes, args.dim):
            print(f"generate: reusing {source_dir} (--dir of an earlier --keep run)")
        else:
            shutil.rmtree(store_dir, ignore_errors=True)
            generate(store_dir, sizes, args.dim, args.rank, args.chunk_rows, args.file_rows)
        size = sum(p.stat().st_size for p in source_dir.rglob("*.parquet"))
        print(
            f"generate: {time.perf_counter() - tg:.1f} s, {gib(size)} of Parquet; driver max "
            f"RSS so far {gib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)}"
        )

        overrides = [
            f"reduce.feature_set={NAME}",
            f"reduce.dims={args.dims}",
            "reduce.overwrite=true",
        ]
        if args.arrow_rows:
            overrides.append(f"reduce.arrow_batch_rows={args.arrow_rows}")
        cfg = load_config(None, overrides)
        extra = {"spark.driver.memory": args.driver_memory, "spark.ui.enabled": "false"}
        extra.update(dict(kv.split("=", 1) for kv in args.conf))
        sampler = MemorySampler()
        sampler.start()
        ts = time.perf_counter()
        spark = get_spark(cfg.spark, master=args.master, extra_conf=extra)
        start_seconds = time.perf_counter() - ts
        try:
            t0 = time.perf_counter()
            summary = reduce(spark, cfg.reduce, str(store_dir))
            total = time.perf_counter() - t0
            conf: dict[str, Any] = {
                k: spark.conf.get(k, None)
                for k in (
                    "spark.driver.memory",
                    "spark.task.cpus",
                    "spark.sql.files.maxPartitionBytes",
                )
            }
            parallelism = spark.sparkContext.defaultParallelism
        finally:
            spark.stop()
        peak = sampler.stop()
        out = sum(
            p.stat().st_size
            for k in summary.sets
            for p in layout.features(k.name).rglob("*.parquet")
        )
        print(summary_line(summary))
        print(
            f"spark: {args.master} (parallelism {parallelism}), session start "
            f"{start_seconds:.1f} s, conf {conf}, arrow batch {cfg.reduce.arrow_batch_rows} rows"
        )
        print(
            f"time: total {total:.1f} s = fit {summary.fit_seconds:.1f} s "
            f"({summary.n_fit / summary.fit_seconds:,.0f} train rows/s) + project/write "
            f"{summary.project_seconds:.1f} s ({sum(sizes.values()) / summary.project_seconds:,.0f}"
            f" rows/s, {len(summary.written)} sets, {gib(out)} written)"
        )
        print(
            f"load average at the end: {os.getloadavg()[0]:.1f} (1 min), "
            f"{os.getloadavg()[1]:.1f} (5 min)"
        )
        self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        print(
            f"peak memory: driver python max RSS {gib(self_rss)} (getrusage SELF, includes "
            f"generation; sampled during reduce {gib(peak['driver'])}), exited children max "
            f"RSS {gib(child_rss)} (getrusage CHILDREN); sampled: JVM {gib(peak['jvm'])}, "
            f"python workers {gib(peak['workers'])} together (largest {gib(peak['worker_max'])})"
            f", whole tree {gib(peak['tree'])}"
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

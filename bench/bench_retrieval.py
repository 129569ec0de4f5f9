#!/usr/bin/env python
"""Retrieval benchmark: exact k-nearest-neighbour search at full CelebA size (the test split's
19,962 queries against the train split's 162,770 items), random float32 vectors.

Runs :func:`featstore.retrieval.search` - what ``featstore retrieve`` runs - once per backend
(faiss ``IndexFlat*``; blocked numpy matrix products), each in a fresh child process so that
each one's peak memory is its own::

    python bench/bench_retrieval.py                          # dim 512, cosine, k 10, both backends
    python bench/bench_retrieval.py --dim 2048 --backends faiss --metric l2
    python bench/bench_retrieval.py --job          # the whole `featstore retrieve` on a store

Figures printed per backend: search time; peak RSS of the child (getrusage ru_maxrss) and its
RSS after the vectors were made (the search's own peak is the difference); tracemalloc's peak of
the search (numpy's allocations; faiss allocates in C++, which tracemalloc does not see); the
agreement of the backends' neighbour lists. ``--job``: instead, writes a store of random vectors
and 40 random attributes through the store's writer (splits 162,770 train / 19,962 test) and
times the whole job (``jobs/retrieve.py``: read, search, metrics, commit), with its peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--queries", type=int, default=19_962, help="query vectors (CelebA test)")
    p.add_argument("--items", type=int, default=162_770, help="item vectors (CelebA train)")
    p.add_argument("--dim", type=int, default=512, help="dimension (float32 vectors)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--metric", default="cosine", choices=["cosine", "l2"])
    p.add_argument("--backends", default="faiss,numpy", help="comma-separated: faiss, numpy")
    p.add_argument("--query-block", type=int, default=4096)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--job", action="store_true", help="time the whole retrieve job on a store")
    p.add_argument("--one", help=argparse.SUPPRESS)  # child: run this backend, print JSON
    p.add_argument("--out", help=argparse.SUPPRESS)  # child: save its neighbours here (.npy)
    return p.parse_args(argv)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(args: argparse.Namespace) -> None:
    from featstore.retrieval import search

    rng = np.random.default_rng(args.seed)
    q = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    items = rng.standard_normal((args.items, args.dim), dtype=np.float32)
    search(q[:8], items[:64], 1, metric=args.metric, backend=args.one)  # imports, thread pools
    base = _rss_mib()
    tracemalloc.start()
    t0 = time.perf_counter()
    idx = search(
        q, items, args.k, metric=args.metric, backend=args.one, query_block=args.query_block
    )
    seconds = time.perf_counter() - t0
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    np.save(args.out, idx)
    print(
        json.dumps(
            {
                "backend": args.one,
                "seconds": seconds,
                "rss_after_data_mib": base,
                "peak_rss_mib": _rss_mib(),
                "tracemalloc_peak_mib": traced / 2**20,
            }
        )
    )


def job(args: argparse.Namespace) -> None:
    """The whole job on a random store (written here through TableWriter, like the jobs do)."""
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    from featstore import store
    from jobs import retrieve as retrieve_job

    attrs = [f"attr{i:02d}" for i in range(40)]
    rng = np.random.default_rng(args.seed)
    sizes = {"train": args.items, "test": args.queries}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        layout = store.Layout(root)
        t0 = time.perf_counter()
        n = sum(sizes.values())
        ids = [f"{i:06d}.jpg" for i in range(1, n + 1)]
        splits = ["train"] * args.items + ["test"] * args.queries
        lab = pa.table(
            {
                "image_id": ids,
                "split": splits,
                **{a: rng.random(n) < rng.uniform(0.05, 0.5) for a in attrs},
            },
            schema=store.labels_schema(attrs),
        )
        with store.TableWriter(layout, "labels") as w:
            pq.write_table(lab, w.data / "part-00000.parquet")
            w.commit(
                store.base_manifest("labels", attributes=attrs, counts={"rows": n}),
                has_errors=False,
            )
        name = f"bench-random-{args.dim}"
        with store.TableWriter(layout, store.features_id(name)) as w:
            start = 0
            for s, size in sizes.items():
                (w.data / f"split={s}").mkdir(parents=True)
                for c in range(0, size, 32768):
                    m = min(32768, size - c)
                    x = rng.standard_normal((m, args.dim), dtype=np.float32)
                    emb = pa.ListArray.from_arrays(
                        pa.array(np.arange(0, (m + 1) * args.dim, args.dim, dtype=np.int32)),
                        pa.array(x.reshape(-1)),
                    )
                    pq.write_table(
                        pa.table(
                            {
                                "image_id": ids[start + c : start + c + m],
                                "embedding": emb.cast(pa.list_(pa.float32())),
                            }
                        ),
                        w.data / f"split={s}" / f"part-{c // 32768:05d}.parquet",
                    )
                start += size
            store.write_errors(w.errors, [])
            w.commit(
                store.base_manifest(
                    "features",
                    name=name,
                    dim=args.dim,
                    model="random",
                    counts={"ok": n, "errors": 0},
                )
            )
        made = time.perf_counter() - t0
        base = _rss_mib()
        t1 = time.perf_counter()
        rc = retrieve_job.main(
            [
                "--store",
                str(root),
                "--feature-set",
                name,
                "--metric",
                args.metric,
                "--k",
                f"1,5,{args.k}",
                "--backend",
                args.backends.split(",")[0],
            ]
        )
        seconds = time.perf_counter() - t1
        manifest = store.read_manifest(layout, f"retrieval/{name}")
        timing = manifest["runs"][-1]["timing"] if manifest else {}
    print(
        f"store written in {made:.1f} s; retrieve job exit {rc}: {seconds:.1f} s in all "
        f"(read {timing.get('read_s')} s, search {timing.get('search_s')} s, metrics "
        f"{timing.get('evaluate_s')} s); peak RSS {_rss_mib():,.0f} MiB (before the job "
        f"{base:,.0f} MiB)"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one:
        child(args)
        return 0
    if args.job:
        load = os.getloadavg()
        print(
            f"retrieve job: {args.queries:,} test x {args.items:,} train, dim {args.dim} "
            f"float32, 40 attributes, {args.metric}; load average {load[0]:.2f}"
        )
        job(args)
        return 0
    import tempfile

    load = os.getloadavg()
    data_mib = (args.queries + args.items) * args.dim * 4 / 2**20
    print(
        f"exact search: {args.queries:,} queries x {args.items:,} items, dim {args.dim} "
        f"float32 ({data_mib:,.0f} MiB of vectors), {args.metric}, k {args.k}; "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    results, neighbours = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            out = Path(tmp) / f"{backend}.npy"
            cmd = [
                sys.executable,
                __file__,
                "--one",
                backend,
                "--out",
                str(out),
                "--queries",
                str(args.queries),
                "--items",
                str(args.items),
                "--dim",
                str(args.dim),
                "--k",
                str(args.k),
                "--metric",
                args.metric,
                "--query-block",
                str(args.query_block),
                "--seed",
                str(args.seed),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode:
                print(
                    f"{backend}: failed (exit {proc.returncode}): "
                    f"{proc.stderr.strip().splitlines()[-1:]}"
                )
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(r)
            neighbours[backend] = np.load(out)
            print(
                f"{backend:>6}: {r['seconds']:7.1f} s  ({args.queries / r['seconds']:,.0f} "
                f"queries/s)  peak RSS {r['peak_rss_mib']:,.0f} MiB (after the vectors: "
                f"{r['rss_after_data_mib']:,.0f} MiB; search +"
                f"{r['peak_rss_mib'] - r['rss_after_data_mib']:,.0f} MiB)  tracemalloc peak "
                f"{r['tracemalloc_peak_mib']:,.0f} MiB"
            )
    if len(neighbours) == 2:
        a, b = neighbours.values()
        print(
            f"neighbour lists agree: {(a == b).mean():.5%} of positions, first neighbour "
            f"{(a[:, 0] == b[:, 0]).mean():.5%}"
        )
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

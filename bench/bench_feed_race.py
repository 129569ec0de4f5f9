"""Stress check: how often a petastorm one-epoch read of a one-row-group file comes back short.

    .venv/bin/python bench/bench_feed_race.py [--epochs 300] [--rows 32] [--workers 1]

petastorm's stock ``ThreadPool`` can end an epoch before the ventilator's last items are read
(see ``featstore.feed._race_free_thread_pool``). This opens ``--epochs`` readers over one small
Parquet file (one row group) with ``make_batch_reader(num_epochs=1)``, first with the stock pool,
then with the pool featstore's feed installs, and prints how many epochs came back empty or short
for each. It is a race, so the stock figure varies from run to run and machine to machine; the
fixed pool's must be 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def read_epochs(url: str, epochs: int, rows: int, workers: int) -> tuple[int, int]:
    """(empty, short) epoch counts over ``epochs`` one-epoch readers of ``url``."""
    from petastorm import make_batch_reader

    empty = short = 0
    for _ in range(epochs):
        with make_batch_reader([url], num_epochs=1, workers_count=workers) as reader:
            n = sum(len(batch.x) for batch in reader)
        empty += n == 0
        short += n < rows
    return empty, short


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()

    import numpy as np
    import petastorm.reader
    import pyarrow as pa
    import pyarrow.parquet as pq

    from featstore import feed

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "part-0.parquet")
        pq.write_table(pa.table({"x": np.arange(args.rows, dtype=np.float32)}), path)
        url = Path(path).as_uri()
        if petastorm.reader.ThreadPool is feed._race_free_thread_pool():
            raise SystemExit("petastorm is already patched in this process; run this script alone")
        results = {"stock ThreadPool": read_epochs(url, args.epochs, args.rows, args.workers)}
        feed._patch_petastorm()
        results["featstore race-free pool"] = read_epochs(url, args.epochs, args.rows, args.workers)
    print(
        f"{args.epochs} one-epoch reads of {args.rows} rows (one row group), "
        f"workers_count={args.workers}"
    )
    for name, (empty, short) in results.items():
        print(
            f"  {name:26s} empty {empty:4d}  short {short:4d}  "
            f"({100 * short / args.epochs:.1f}% of epochs lost rows)"
        )


if __name__ == "__main__":
    main()

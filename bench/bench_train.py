"""Benchmark: the training grid's speed-up from Spark, and the time per fit by model at full size.

    .venv/bin/python bench/bench_train.py [--grid-rows 3000] [--full-rows 162770] [--dim 64]

Part 1 runs the same grid of fits twice in one run: one sequential loop in this process
(``run_grid(parallel=False)``) and Spark ``local[cores]`` (one task per fit), and prints the
speed-up. Part 2 times one fit of each model at the full CelebA train-split size (162,770 rows)
on synthetic features with a linear signal, as one Spark task would run it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def make_store(root: Path, n: int, dim: int, attrs: list[str], seed: int = 0) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from featstore import store

    rng = np.random.default_rng(seed)
    ids = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    n_tr, n_va = int(n * 0.8034), int(n * 0.098)
    splits = np.array(["train"] * n_tr + ["val"] * n_va + ["test"] * (n - n_tr - n_va))
    x = rng.normal(size=(n, dim)).astype(np.float32)
    labels = {
        a: (x[:, i % dim] + 0.8 * rng.normal(size=n)) > 0.3 * (i % 3) for i, a in enumerate(attrs)
    }
    layout = store.Layout(root)
    with store.TableWriter(layout, "labels") as w:
        pq.write_table(
            pa.table(
                {"image_id": ids, "split": splits, **labels}, schema=store.labels_schema(attrs)
            ),
            w.data / "p.parquet",
        )
        w.commit(
            store.base_manifest("labels", attributes=attrs, counts={"rows": n}), has_errors=False
        )
    with store.TableWriter(layout, store.features_id("bench")) as w:
        for s in ("train", "val", "test"):
            m = splits == s
            (w.data / f"split={s}").mkdir(parents=True)
            emb = pa.FixedSizeListArray.from_arrays(pa.array(x[m].ravel()), dim).cast(
                pa.list_(pa.float32())
            )
            pq.write_table(
                pa.table({"image_id": list(np.asarray(ids)[m]), "embedding": emb}),
                w.data / f"split={s}" / "p.parquet",
            )
        store.write_errors(w.errors, [])
        # the writer adds the files, their checksums and the rows per split
        w.commit(
            store.base_manifest("features", name="bench", dim=dim, counts={"ok": n, "errors": 0})
        )


def forget_results(root: Path) -> None:
    """Drop the results table and the grid's finished cells, so the next grid fits every cell."""
    from featstore import store

    layout = store.Layout(root)
    store.remove_table(layout, "results")
    shutil.rmtree(layout.cells, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid-rows", type=int, default=3000)
    ap.add_argument("--full-rows", type=int, default=202_599)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--skip-full", action="store_true")
    ap.add_argument("--forest-trees", type=int, default=200, help="trees in the full-size fits")
    args = ap.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    from dataclasses import replace

    from pyspark.sql import SparkSession

    from featstore.train.grid import Cell, GridConfig, run_cell, run_grid

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    attrs = ["A1", "A2", "A3", "A4"]
    grid_store = work / "grid"
    make_store(grid_store, args.grid_rows, args.dim, attrs)
    cfg = GridConfig(
        feature_sets=("bench",),
        attributes=tuple(attrs),
        models=("lasso", "forest", "dense"),
        folds=5,
        forest_trees=100,
        dense_epochs=20,
        bootstrap=500,
    )
    n_fits = len(attrs) * len(cfg.models)

    spark = (
        SparkSession.builder.master(f"local[{args.cores}]")
        .config("spark.ui.enabled", "false")
        .config("spark.python.worker.reuse", "true")
        .config("spark.driver.memory", "4g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")

    # warm both paths once (imports, Keras start) so the timed runs compare steady states
    warm = replace(cfg, attributes=("A1",), models=("dense",), dense_epochs=1)
    run_grid(None, str(grid_store), warm, parallel=False)
    run_grid(spark, str(grid_store), replace(warm, overwrite=True))

    forget_results(grid_store)
    t = time.perf_counter()
    seq_run = run_grid(None, str(grid_store), cfg, parallel=False)
    seq = time.perf_counter() - t
    forget_results(grid_store)
    t = time.perf_counter()
    par_run = run_grid(spark, str(grid_store), cfg)
    par = time.perf_counter() - t
    if (seq_run.ran, par_run.ran) != (n_fits, n_fits):  # a resumed fit would skew the figures
        raise SystemExit(
            f"bench_train: expected {n_fits} fits in each timed grid, ran "
            f"{seq_run.ran} and {par_run.ran}"
        )
    print(
        f"bench_train: grid of {n_fits} fits (4 attributes x lasso, forest, dense; "
        f"{args.grid_rows} rows x {args.dim} dims; 5-fold CV, 100 trees)"
    )
    print(f"  sequential loop, one process: {seq:7.1f} s")
    print(f"  Spark local[{args.cores}], one task per fit: {par:7.1f} s")
    print(f"  speed-up: {seq / par:.2f}x on {args.cores} cores")
    spark.stop()

    if args.skip_full:
        shutil.rmtree(work, ignore_errors=True)
        return
    full_store = work / "full"
    make_store(full_store, args.full_rows, args.dim, ["A1"])
    full = GridConfig(
        feature_sets=("bench",),
        attributes=("A1",),
        folds=10,
        forest_trees=args.forest_trees,
        dense_epochs=50,
        cv_max_rows=20_000,
        bootstrap=1000,
    )
    print(
        f"time per fit at full size ({args.full_rows} rows: 80.34% train; {args.dim} dims; "
        "10-fold CV (forest: 5) on at most 20,000 rows then refit on all; forest "
        f"{args.forest_trees} trees of at most 20,000 rows; one process each):"
    )
    for model in ("lasso", "forest", "dense", "bottleneck20-lasso", "multilabel"):
        t = time.perf_counter()
        rows = run_cell(
            str(full_store),
            Cell("*" if model == "multilabel" else "A1", "bench", model, 0, 0),
            full,
        )
        dt = time.perf_counter() - t
        r = rows[0]
        print(
            f"  {model:<20} {dt:8.1f} s  (fit {r['fit_seconds'] or 0:7.1f} s, "
            f"n_train {r['n_train']}, accuracy {r['accuracy'] or float('nan'):.3f}, "
            f"status {r['status']} {r['reason'] or ''})"
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark (a): the Spark extract job against a single-process Keras loop, same images, same cores.

    .venv/bin/python bench/bench_extract_cpu.py [--n 768] [--model mobilenetv2] [--cores 2]

Both sides run the same Embedder settings over the same JPEG bytes (read from the store's images
table): the loop in this process (decode + model, the backend using all ``--cores``), the job in
Spark ``local[cores]`` (one Python worker per core, one backend thread each). The job is timed
twice: cold (Python workers start, import the backend and build the model) and warm (workers
reused, model cached: the steady state of a long job). Prints images/second and the ratio
job / loop, measured in one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=768)
    ap.add_argument("--model", default="mobilenetv2")
    ap.add_argument("--input-size", default="default")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--workdir", help="keep the store here (default: a temp folder)")
    args = ap.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    from pyspark.sql import SparkSession

    from featstore.config import load_config
    from featstore.extract import embed_config, extract
    from featstore.ingest import ingest
    from featstore.sources.synthetic import generate

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-extract-"))
    overrides = [
        f"extract.model={args.model}",
        f"extract.input_size={args.input_size}",
        f"extract.batch_size={args.batch_size}",
        "extract.weights=random",
        "extract.overwrite=true",
        "ingest.source=celeba",
        f"ingest.path={work / 'celeba'}",
    ]
    cfg = load_config(None, overrides)
    if not (work / "celeba" / "list_attr_celeba.txt").is_file():
        generate(work / "celeba", args.n, seed=0, workers=args.cores)

    spark = (
        SparkSession.builder.master(f"local[{args.cores}]")
        .config("spark.ui.enabled", "false")
        .config("spark.python.worker.reuse", "true")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.memory", "4g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    ingest(spark, cfg.ingest, str(work / "store"))

    import pyarrow.parquet as pq

    contents = (
        pq.read_table(work / "store" / "images", columns=["content"]).column("content").to_pylist()
    )
    n = len(contents)

    # the single-process loop: same settings, model built before timing
    from featstore.embed import Embedder

    embedder = Embedder(embed_config(cfg.extract))
    embedder.embed(contents[: args.batch_size])  # warm-up: first call compiles
    step = 512

    def loop_once() -> float:
        t = time.perf_counter()
        out = 0
        for result in embedder.embed_iter(contents[i : i + step] for i in range(0, n, step)):
            out += len(result.ok_index)
        assert out == n
        return time.perf_counter() - t

    # interleaved: loop, job cold, job warm, loop -- so load changes hit both sides alike
    loop1 = loop_once()
    t = time.perf_counter()
    s1 = extract(spark, cfg.extract, str(work / "store"))
    cold = time.perf_counter() - t
    t = time.perf_counter()
    s2 = extract(spark, cfg.extract, str(work / "store"))
    warm = time.perf_counter() - t
    assert s1.ok == s2.ok == n, (s1, s2, n)
    loop2 = loop_once()
    loop = (loop1 + loop2) / 2

    import keras

    print(
        f"bench_extract_cpu: {n} images 178x218 JPEG, {args.model} input {args.input_size}, "
        f"random weights, batch {args.batch_size}, {args.cores} cores, "
        f"backend {keras.backend.backend()}, Spark {spark.version} local[{args.cores}]"
    )
    print(
        f"  single-process loop (decode + model):  {n / loop:8.1f} img/s  "
        f"(runs {loop1:.1f} s and {loop2:.1f} s)"
    )
    print(f"  Spark extract job, cold (workers start): {n / cold:8.1f} img/s  ({cold:.1f} s)")
    print(f"  Spark extract job, warm (workers reused): {n / warm:7.1f} img/s  ({warm:.1f} s)")
    print(f"  ratio job/loop: warm {loop / warm:.2f}, cold {loop / cold:.2f}  (target >= 0.9)")
    spark.stop()


if __name__ == "__main__":
    main()

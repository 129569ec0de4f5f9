"""Every stage at full CelebA count on synthetic images, with a small model (not in CI).

    .venv/bin/python bench/bench_fullscale.py [--n 202599] [--model mobilenetv2]
        [--input-size 64x64] [--dims 32] [--workdir DIR] [--cores 2]

Writes a CelebA-format set of ``--n`` synthetic 178x218 JPEGs (official layout and split
sizes scaled from the real files' proportions: ``featstore synth``), then runs each stage as
its own ``featstore`` command, as a user would: ingest, extract (random weights), reduce
(PCA to ``--dims``), train (lasso on all 40 attributes, on the reduced set), retrieve
(test queries against train items, on the reduced set), report. Per stage it prints the wall
time, rows per second, the peak memory of the whole process tree (driver, JVM, Python
workers: summed RSS, sampled every 0.5 s), the data files of the table it wrote, and how many
"task of very large size" warnings Spark logged (a task carrying data it should read from
storage). A stage that fails stops the bench with its exit code and last lines.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNIT = {
    "synth": "images",
    "ingest": "images",
    "extract": "images",
    "reduce": "images",
    "train": "fits",
    "retrieve": "queries",
    "report": "",
}


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_stage(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, int, str]:
    """(seconds, peak tree RSS in bytes, stderr) of ``cmd``; exits on failure."""
    t = time.perf_counter()
    with open(log, "w") as err:
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
        peak = [0]

        def sample() -> None:
            while p.poll() is None:
                peak[0] = max(peak[0], _tree_rss(p.pid))
                time.sleep(0.5)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        out, _ = p.communicate()
        th.join()
    dt = time.perf_counter() - t
    text = log.read_text()
    if p.returncode not in (0, 1):  # 1: finished with per-image errors recorded
        tail = "\n".join(text.strip().splitlines()[-15:])
        raise SystemExit(f"{' '.join(cmd)} exited {p.returncode}:\n{tail}")
    for line in out.strip().splitlines()[-2:]:  # the job's summary lines
        print(f"    | {line[:300]}", flush=True)
    return dt, peak[0], text


def _files(store: Path, tid: str) -> int:
    man = store / "_featstore" / "tables" / tid / "manifest.json"
    return len(json.loads(man.read_text()).get("files", [])) if man.is_file() else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=202_599)
    ap.add_argument("--model", default="mobilenetv2")
    ap.add_argument("--input-size", default="64x64")
    ap.add_argument("--dims", type=int, default=32)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--workdir")
    ap.add_argument("--keep-going", action="store_true", help="reuse a finished synth/ingest")
    args = ap.parse_args()

    py = sys.executable
    cli = str(Path(py).with_name("featstore"))
    env = {
        **os.environ,
        "PYSPARK_PYTHON": py,
        "PYSPARK_DRIVER_PYTHON": py,
        "FEATSTORE_SPARK_LOG_LEVEL": "WARN",
    }
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-full-"))
    work.mkdir(parents=True, exist_ok=True)
    src, st = work / "celeba", work / "store"
    master = ["--master", f"local[{args.cores}]"]
    fs = f"{args.model}-full"
    red = f"{fs}-pca{args.dims}"
    n = args.n
    stages = [
        (
            "synth",
            [cli, "synth", "--out", str(src), "--n", str(n), "--workers", str(args.cores)],
            n,
            None,
        ),
        (
            "ingest",
            [cli, "ingest", "--source", "celeba", "--path", str(src), "--store", str(st), *master],
            n,
            "images",
        ),
        (
            "extract",
            [
                cli,
                "extract",
                "--store",
                str(st),
                "--model",
                args.model,
                "--weights",
                "random",
                "--input-size",
                args.input_size,
                "--feature-set",
                fs,
                *master,
            ],
            n,
            f"features/{fs}",
        ),
        (
            "reduce",
            [
                cli,
                "reduce",
                "--store",
                str(st),
                "--feature-set",
                fs,
                "--dims",
                str(args.dims),
                *master,
            ],
            n,
            f"features/{red}",
        ),
        (
            "train",
            [cli, "train", "--store", str(st), "--feature-sets", red, "--models", "lasso", *master],
            40,
            "results",
        ),
        (
            "retrieve",
            [cli, "retrieve", "--store", str(st), "--feature-set", red],
            None,
            f"retrieval/{red}",
        ),
        (
            "report",
            [
                cli,
                "report",
                "--store",
                str(st),
                "--out",
                str(work / "report"),
                "--feature-set",
                red,
            ],
            None,
            None,
        ),
    ]
    print(
        f"bench_fullscale: {n:,} synthetic 178x218 JPEGs, {args.model} at {args.input_size} "
        f"random weights, PCA {args.dims}, local[{args.cores}], {os.cpu_count()} CPUs; "
        f"work {work}",
        flush=True,
    )
    rows = []
    for name, cmd, count, table in stages:
        if (
            args.keep_going
            and name in ("synth", "ingest")
            and (
                (name == "synth" and (src / "list_attr_celeba.txt").is_file())
                or (name == "ingest" and (st / "_featstore/tables/images/manifest.json").is_file())
            )
        ):
            print(f"  {name}: reused", flush=True)
            continue
        load = os.getloadavg()[0]
        print(
            f"  {name}: {' '.join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))}",
            flush=True,
        )
        dt, peak, err = run_stage(cmd, env, work / f"{name}.log")
        if name == "retrieve":
            imgs = json.loads((st / "_featstore/tables/images/manifest.json").read_text())
            count = imgs["counts"]["splits"].get("test")  # queries
        big = len(re.findall(r"task of very large size", err))
        files = _files(st, table) if table else 0
        rows.append((name, dt, count, peak, files, big, load))
        print(
            f"  {name}: {dt:,.0f} s, {count / dt if count else float('nan'):,.1f} {UNIT[name]}/s, "
            f"peak {peak / 2**30:.2f} GiB, {files} files, {big} large-task warnings, "
            f"load {load:.1f}",
            flush=True,
        )
    print(
        "\n| stage | time | per second | of | peak memory (tree) | files | large-task warnings "
        "| load at start |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    for name, dt, count, peak, files, big, load in rows:
        rate = f"{count / dt:,.1f}" if count else "–"
        print(
            f"| {name} | {dt:,.0f} s | {rate} {UNIT[name]} | {count or '–'} | {peak / 2**30:.2f} GiB | "
            f"{files or '–'} | {big} | {load:.1f} |"
        )


if __name__ == "__main__":
    main()

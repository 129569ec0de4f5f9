"""featstore extract against a hand-written ``predict_batch_udf`` job and a bare Keras loop.

    .venv/bin/python bench/bench_extract_peer.py [--n 1000 3000] [--rounds 3] [--model resnet50]
        [--input-size 112x96] [--batch-size 64] [--cores 2] [--load N] [--workdir DIR]

One synthetic CelebA-format set per ``--n`` (178x218 JPEG), ingested once. Then, interleaved
(A B C A B C ...) so that a change of load hits all three alike, each as its own process:

A. ``featstore extract --overwrite`` (the CLI, ``--master local[cores]``);
B. bench/peer_predict_batch_udf.py: PIL decode + ``model.predict`` in the predict function,
   the input repartitioned to the core count (what the Spark docs show);
C. a bare loop in one process: read the images table with pyarrow, PIL decode, the model's
   ``predict_on_batch``, TensorFlow using every core (no Spark).

Per run: end-to-end img/s (images / the process's wall time), the pass rate (A: from the
workers' own timings in the feature set's manifest; B: the Spark job's wall time; C: the loop
without imports and model build), the driver process's peak RSS, the load average. Then the
medians and the ratios A/B (end to end) and A/C (pass). The embeddings of A and B are compared
(max abs difference, share of bit-identical rows).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _bare_loop(store: str, model: str, hw: tuple[int, int], batch: int, seed: int) -> None:
    """Mode C, run in a child process: prints one JSON line."""
    t0 = time.perf_counter()
    import io

    import numpy as np
    import pyarrow.dataset as ds
    from PIL import Image

    from featstore import models

    contents = (
        ds.dataset(os.path.join(store, "images"), format="parquet", partitioning="hive")
        .to_table(columns=["content"])
        .column("content")
        .to_pylist()
    )
    net = models.build_extractor(
        models.get_spec(model), input_hw=hw, weights=models.WeightsInfo("random"), seed=seed
    )
    h, w = hw
    net.predict_on_batch(np.zeros((batch, h, w, 3), np.uint8))  # compile outside the pass
    t1 = time.perf_counter()
    n = 0
    for i in range(0, len(contents), batch):
        x = np.stack(
            [
                np.asarray(
                    Image.open(io.BytesIO(b))
                    .convert("RGB")
                    .resize((w, h), Image.Resampling.BILINEAR),
                    dtype=np.uint8,
                )
                for b in contents[i : i + batch]
            ]
        )
        n += len(np.asarray(net.predict_on_batch(x)))
    t2 = time.perf_counter()
    print(json.dumps({"images": n, "start_s": t1 - t0, "pass_s": t2 - t1}))


def _run(cmd: list[str], env: dict[str, str]) -> dict:
    """Run ``cmd``; wall time, the peak RSS of its own process (the driver), its last JSON line."""
    load = os.getloadavg()[0]
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:
        import psutil

        with __import__("contextlib").suppress(Exception):
            proc = psutil.Process(p.pid)
            while p.poll() is None:
                peak[0] = max(peak[0], proc.memory_info().rss)
                time.sleep(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = p.communicate()
    wall = time.perf_counter() - t
    th.join()
    if p.returncode not in (0,):
        raise SystemExit(f"{' '.join(cmd)} exited {p.returncode}:\n{err[-3000:]}")
    info = {}
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            info = json.loads(line)
            break
    return {"wall_s": wall, "rss_gib": peak[0] / 2**30, "load": load, "stdout": out, **info}


def _featstore_pass(store: Path, name: str, cores: int) -> tuple[float, dict]:
    """Images/s of the workers' steady state: images x cores / (task time - worker start)."""
    man = json.loads(
        (store / "_featstore" / "tables" / "features" / name / "manifest.json").read_text()
    )
    wk = man["timing"]["workers"]
    busy = wk["task_s"] - wk["start_s"]
    return (man["counts"]["ok"] + man["counts"]["errors"]) * cores / busy, man["timing"]


def _compare(store: Path, name: str, peer_out: Path) -> tuple[float, float]:
    import numpy as np
    import pyarrow.dataset as ds

    a = (
        ds.dataset(
            store / "features" / f"feature_set={name}", format="parquet", partitioning="hive"
        )
        .to_table(columns=["image_id", "embedding"])
        .to_pandas()
    )
    b = ds.dataset(peer_out, format="parquet").to_table().to_pandas()
    m = a.merge(b, on="image_id", suffixes=("_a", "_b"))
    assert len(m) == len(a) == len(b), (len(m), len(a), len(b))
    x, y = np.stack(m.embedding_a.to_numpy()), np.stack(m.embedding_b.to_numpy())
    return float(np.abs(x - y).max()), float((x == y).all(axis=1).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[1000, 3000])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--input-size", default="112x96")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--only",
        default="ABC",
        help="which of A, B, C (and D: A with "
        "extract.cpu_threads=1, one backend thread per task) to run, in this order each round (default ABC)",
    )
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="extra featstore --set KEY=VALUE for A (repeatable)",
    )
    ap.add_argument(
        "--load",
        type=int,
        default=0,
        help="start this many busy processes (another job's load: each runs numpy "
        "matrix products on one thread) for the whole run",
    )
    ap.add_argument("--workdir")
    ap.add_argument("--bare", nargs=5, help=argparse.SUPPRESS)
    ap.add_argument("--burn", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare:
        store, model, size, batch, seed = args.bare
        _bare_loop(store, model, tuple(int(v) for v in size.split("x")), int(batch), int(seed))
        return
    if args.burn:
        _burn()
        return
    burners = [
        subprocess.Popen(
            [sys.executable, __file__, "--burn"],
            env={
                **os.environ,
                "OMP_NUM_THREADS": "1",
                "OPENBLAS_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1",
            },
        )
        for _ in range(args.load)
    ]
    try:
        _bench(args)
    finally:
        for b in burners:
            b.kill()


def _burn() -> None:
    """A CPU-bound job on one thread, until killed."""
    import numpy as np

    a = np.random.default_rng(0).random((256, 256))
    while True:
        a = np.tanh(a @ a)


def _bench(args: argparse.Namespace) -> None:

    py = sys.executable
    cli = str(Path(py).with_name("featstore"))
    env = {**os.environ, "PYSPARK_PYTHON": py, "PYSPARK_DRIVER_PYTHON": py, "PYTHONPATH": str(ROOT)}
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-peer-"))
    hw = args.input_size
    import platform

    print(
        f"bench_extract_peer: {args.model} random weights at {hw}, batch {args.batch_size}, "
        f"local[{args.cores}] / {args.cores} cores, {os.cpu_count()} CPUs, "
        f"{platform.python_version()}; rounds {args.rounds}, interleaved {args.only}; "
        f"{args.load} busy processes as other load"
    )
    for n in args.n:
        store = work / f"store-{n}"
        if not (store / "_featstore" / "tables" / "images" / "manifest.json").is_file():
            subprocess.run(
                [cli, "synth", "--out", str(work / f"celeba-{n}"), "--n", str(n)],
                env=env,
                check=True,
                capture_output=True,
            )
            subprocess.run(
                [
                    cli,
                    "ingest",
                    "--source",
                    "celeba",
                    "--path",
                    str(work / f"celeba-{n}"),
                    "--store",
                    str(store),
                    "--master",
                    f"local[{args.cores}]",
                ],
                env=env,
                check=True,
                capture_output=True,
            )
        name = f"bench-{args.model}"
        cmds = {
            "A": [
                cli,
                "extract",
                "--store",
                str(store),
                "--model",
                args.model,
                "--weights",
                "random",
                "--input-size",
                hw,
                "--batch-size",
                str(args.batch_size),
                "--feature-set",
                name,
                "--overwrite",
                "--master",
                f"local[{args.cores}]",
                *[x for kv in args.overrides for x in ("--set", kv)],
            ],
            "B": [
                py,
                str(ROOT / "bench" / "peer_predict_batch_udf.py"),
                "--store",
                str(store),
                "--out",
                str(work / f"peer-{n}"),
                "--model",
                args.model,
                "--input-size",
                hw,
                "--batch-size",
                str(args.batch_size),
                "--cores",
                str(args.cores),
            ],
            "C": [
                py,
                __file__,
                "--bare",
                str(store),
                args.model,
                hw,
                str(args.batch_size),
                str(args.seed),
            ],
        }
        # D: A with one backend thread per task (the thread policy's alternative: A's default
        # is two per task, featstore.extract.task_cpu_threads)
        cmds["D"] = [*cmds["A"], "--set", "extract.cpu_threads=1"]
        rows: dict[str, list[dict]] = {k: [] for k in args.only}
        for r in range(args.rounds):
            for k in args.only:
                res = _run(cmds[k], env)
                if k in "AD":
                    res["pass_ips"], timing = _featstore_pass(store, name, args.cores)
                    res["timing"] = timing
                elif k == "B":
                    res["pass_ips"] = n / res["pass_s"]
                else:
                    res["pass_ips"] = res["images"] / res["pass_s"]
                res["e2e_ips"] = n / res["wall_s"]
                rows[k].append(res)
                extra = ""
                if k in "AD":
                    wk = res["timing"]["workers"]
                    extra = (
                        f"  workers: start {wk['start_s']:.1f} s, model {wk['model_s']:.1f} s, "
                        f"decode {wk['decode_s']:.1f} s, input {wk['input_s']:.1f} s, "
                        f"output {wk['output_s']:.1f} s of {wk['task_s']:.1f} task-s"
                    )
                print(
                    f"  n={n} round {r + 1} {k}: {res['e2e_ips']:7.1f} img/s end to end "
                    f"({res['wall_s']:.1f} s), pass {res['pass_ips']:7.1f} img/s, driver "
                    f"{res['rss_gib']:.2f} GiB, load {res['load']:.1f}{extra}",
                    flush=True,
                )
        med = {
            k: (
                statistics.median(x["e2e_ips"] for x in v),
                statistics.median(x["pass_ips"] for x in v),
            )
            for k, v in rows.items()
        }
        print(
            f"n={n}: medians end to end / pass (img/s): "
            + ", ".join(f"{k} {e:.1f} / {p:.1f}" for k, (e, p) in med.items())
        )
        if "A" in med and "B" in med:
            per_round = ", ".join(
                f"{a['e2e_ips'] / b['e2e_ips']:.2f}"
                for a, b in zip(rows["A"], rows["B"], strict=True)
            )
            print(
                f"n={n}: featstore/peer end to end {med['A'][0] / med['B'][0]:.2f} "
                f"(per round: {per_round})"
            )
            diff, same = _compare(store, name, work / f"peer-{n}")
            print(
                f"n={n}: embeddings featstore vs peer: max abs diff {diff:.3g}, "
                f"{same:.0%} of rows bit-identical"
            )
        if "A" in med and "C" in med:
            print(
                f"n={n}: featstore pass / bare loop pass {med['A'][1] / med['C'][1]:.2f}, "
                f"featstore end to end / bare loop end to end {med['A'][0] / med['C'][0]:.2f}"
            )


if __name__ == "__main__":
    main()

"""bench_extract_cpu.py on two stacks in one run: the Spark 3.5 lock's venv against the Spark 4 one.

    .venv/bin/python bench/bench_stacks.py [--a .venv/bin/python] [--b .venv-spark4/bin/python]
                                           [--rounds 1] [-- ARGS for bench_extract_cpu.py]

Each round runs ``bench/bench_extract_cpu.py`` as A, B, B, A (so a change of the machine's load
hits both stacks alike), every run on the same images (one shared ``--workdir``) and with
``PYSPARK_PYTHON`` set to its own interpreter. Prints each run's figures with ``uptime``'s load
before it, then per stack the mean images/second of the single-process loop and of the Spark job
(cold and warm), and the ratio B / A of each.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench" / "bench_extract_cpu.py"
FIGURES = {
    "loop": r"single-process loop",
    "cold": r"Spark extract job, cold",
    "warm": r"Spark extract job, warm",
}


def _load() -> str:
    out = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    m = re.search(r"load average: (.*)$", out.strip())
    return m.group(1) if m else out.strip()


def _run(python: str, args: list[str]) -> tuple[dict[str, float], str]:
    python = str(Path(python).absolute())  # not resolve(): a venv's python is a symlink
    env = {**os.environ, "PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python}
    for key in ("VIRTUAL_ENV", "PYTHONPATH"):
        env.pop(key, None)
    done = subprocess.run(
        [python, str(BENCH), *args], capture_output=True, text=True, env=env, check=False, cwd=REPO
    )
    if done.returncode != 0:
        raise SystemExit(
            f"{python} {BENCH.name} failed ({done.returncode}):\n"
            f"{(done.stdout + done.stderr)[-3000:]}"
        )
    figures = {}
    for key, label in FIGURES.items():
        m = re.search(rf"^\s+{label}[^:]*:\s+([\d.]+) img/s", done.stdout, re.MULTILINE)
        if not m:
            raise SystemExit(f"no '{label}' figure in the output of {python}:\n{done.stdout}")
        figures[key] = float(m.group(1))
    header = next(ln for ln in done.stdout.splitlines() if ln.startswith("bench_extract_cpu:"))
    return figures, header


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", default=".venv/bin/python", help="stack A's interpreter")
    ap.add_argument("--b", default=".venv-spark4/bin/python", help="stack B's interpreter")
    ap.add_argument("--rounds", type=int, default=1, help="A B B A rounds (default 1)")
    ap.add_argument(
        "rest", nargs=argparse.REMAINDER, help="after --: arguments for bench_extract_cpu.py"
    )
    args = ap.parse_args()
    rest = [a for a in args.rest if a != "--"]
    if "--workdir" not in rest:
        rest += ["--workdir", tempfile.mkdtemp(prefix="bench-stacks-")]

    runs: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    for _ in range(args.rounds):
        for which in ("A", "B", "B", "A"):
            python = args.a if which == "A" else args.b
            load = _load()
            figures, header = _run(python, rest)
            runs[which].append(figures)
            print(
                f"{which} ({python}), load before {load}: loop {figures['loop']:.1f}, "
                f"job cold {figures['cold']:.1f}, job warm {figures['warm']:.1f} img/s",
                flush=True,
            )
            print(f"    {header}", flush=True)
    print(f"load after: {_load()}")
    print()
    print("| img/s (mean of runs) | A | B | B / A |")
    print("| --- | --- | --- | --- |")
    for key, label in (
        ("loop", "single-process loop"),
        ("cold", "Spark job, cold"),
        ("warm", "Spark job, warm"),
    ):
        a = statistics.mean(r[key] for r in runs["A"])
        b = statistics.mean(r[key] for r in runs["B"])
        print(f"| {label} | {a:.1f} | {b:.1f} | {b / a:.2f} |")
    for which in ("A", "B"):
        warm = statistics.mean(r["warm"] for r in runs[which])
        loop = statistics.mean(r["loop"] for r in runs[which])
        print(f"{which}: job warm / loop {warm / loop:.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

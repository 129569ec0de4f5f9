"""Write a synthetic CelebA-format image set (the official layout and file formats).

    python jobs/synth.py --out data/synth --n 3000 [--seed 0] [--labels-from list_attr_celeba.txt]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the repository, not from jobs/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from jobs.common import EXIT_OK


def add_arguments(p: argparse.ArgumentParser, name: str = "synth") -> None:
    p.add_argument("--out", required=True, help="output folder (img_align_celeba/ + list_*.txt)")
    p.add_argument("--n", type=int, default=3000, help="number of images (default 3000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--labels-from", help="a real list_attr_celeba.txt: sample its rows so the "
                   "synthetic set keeps the real joint distribution of the 40 attributes")
    p.add_argument("--workers", type=int, default=0, help="processes (default: all cores)")
    p.add_argument("-v", "--verbose", action="store_true")


def run(args: argparse.Namespace, spark: Any = None) -> int:
    import os

    from featstore.sources.synthetic import generate

    workers = args.workers or os.cpu_count() or 1
    s = generate(args.out, args.n, seed=args.seed, labels_from=args.labels_from, workers=workers)
    splits = ", ".join(f"{k} {v:,}" for k, v in s.split_counts.items())
    print(f"synthetic CelebA: {s.n:,} images ({splits}) in {s.seconds:.1f} s -> {s.out_dir}")
    return EXIT_OK


def main(argv: list[str] | None = None, spark: Any = None) -> int:
    from jobs.cli import main as cli_main

    return cli_main(["synth", *(sys.argv[1:] if argv is None else argv)], spark)


if __name__ == "__main__":
    sys.exit(main())

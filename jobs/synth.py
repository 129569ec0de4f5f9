"""Write a synthetic CelebA-format image set (the official layout and file formats), or with
``--layout folder`` a class-per-folder set of K imbalanced classes that differ visibly.

    python jobs/synth.py --out data/synth --n 3000 [--seed 0] [--labels-from list_attr_celeba.txt]
    python jobs/synth.py --out data/shapes --layout folder --classes 5 --n 1000
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
    p.add_argument(
        "--labels-from",
        help="a real list_attr_celeba.txt: sample its rows so the "
        "synthetic set keeps the real joint distribution of the 40 attributes",
    )
    p.add_argument("--workers", type=int, default=0, help="processes (default: all cores)")
    p.add_argument(
        "--layout",
        choices=("celeba", "folder"),
        default="celeba",
        help="celeba (default): the CelebA layout; folder: <out>/<class>/<image>, "
        "classes of geometrically falling sizes (largest >= 10x the smallest)",
    )
    p.add_argument("--classes", type=int, default=5, help="--layout folder: number of classes")
    p.add_argument("--size", type=int, default=64, help="--layout folder: image side in pixels")
    p.add_argument("-v", "--verbose", action="store_true")


def run(args: argparse.Namespace, spark: Any = None) -> int:
    import os

    from featstore.sources.synthetic import generate

    if args.layout == "folder":
        from featstore.sources.synthetic_folder import generate_folder

        f = generate_folder(args.out, args.n, classes=args.classes, seed=args.seed, size=args.size)
        sizes = ", ".join(f"{k} {v:,}" for k, v in f.class_counts.items())
        print(
            f"synthetic folder set: {f.n:,} images in {len(f.class_counts)} classes ({sizes}) "
            f"in {f.seconds:.1f} s -> {f.out_dir}"
        )
        return EXIT_OK
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

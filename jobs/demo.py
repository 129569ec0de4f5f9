"""The whole chain on built-in synthetic data: ``featstore demo [--out DIR]``.

synthetic CelebA-format set -> ingest -> (later stages as they land), one progress line a stage.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the repository, not from jobs/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from jobs.common import EXIT_IMAGE_ERRORS, EXIT_OK, SparkProvider, add_common, config_from_args

logger = logging.getLogger("featstore.demo")


def add_arguments(p: argparse.ArgumentParser, name: str = "demo") -> None:
    p.add_argument("--out", default="demo", help="output folder (default ./demo)")
    p.add_argument("--n", type=int, default=3000, help="synthetic images (default 3000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--labels-from", help="real list_attr_celeba.txt to draw labels from")
    add_common(p)


def _progress(stage: str, count: int, seconds: float, what: str = "images") -> None:
    rate = count / seconds if seconds > 0 else float("inf")
    print(f"[{stage:<8}] {count:>7,} {what} in {seconds:6.1f} s ({rate:,.0f}/s)", flush=True)


def run(args: argparse.Namespace, spark: Any = None) -> int:
    from featstore.ingest import ingest
    from featstore.sources.synthetic import generate

    out = Path(args.out).resolve()
    data_dir, store_dir = out / "celeba", out / "store"
    cfg = config_from_args(args, store=str(store_dir),
                           ingest={"source": "celeba", "path": str(data_dir)})
    t0 = time.perf_counter()
    if (data_dir / "list_attr_celeba.txt").is_file():
        print(f"[synth   ] reusing {data_dir}", flush=True)
    else:
        s = generate(data_dir, args.n, seed=args.seed, labels_from=args.labels_from,
                     workers=os.cpu_count() or 1)
        _progress("synth", s.n, s.seconds)

    session = SparkProvider(args, spark)(cfg)
    t = time.perf_counter()
    summary = ingest(session, cfg.ingest, cfg.store)
    _progress("ingest", summary.ok, time.perf_counter() - t)
    splits = ", ".join(f"{k} {v:,}" for k, v in summary.split_counts.items())
    print(f"store: {summary.store}  ({summary.ok:,} images: {splits}; {summary.errors} errors)")
    print(f"demo finished in {time.perf_counter() - t0:.0f} s; try: featstore ls {summary.store}")
    return EXIT_IMAGE_ERRORS if summary.errors else EXIT_OK


def main(argv: list[str] | None = None, spark: Any = None) -> int:
    from jobs.cli import main as cli_main

    return cli_main(["demo", *(sys.argv[1:] if argv is None else argv)], spark)


if __name__ == "__main__":
    sys.exit(main())

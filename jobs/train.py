"""Fit and evaluate the grid of probes (attributes x feature sets x models x sizes x seeds).

spark-submit jobs/train.py --config conf/train.yaml --store /data/store
python jobs/train.py --store demo/store --feature-sets A,B --attributes Smiling,Male
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the repository, not from jobs/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from jobs.common import EXIT_OK, SparkProvider, add_common, config_from_args


def add_arguments(p: argparse.ArgumentParser, name: str = "train") -> None:
    p.add_argument("--store", help="store folder with committed feature sets and labels")
    p.add_argument("--feature-sets", help="comma-separated feature set names")
    p.add_argument("--attributes", help="comma-separated attributes (default: all)")
    p.add_argument(
        "--models",
        help="comma-separated: lasso, forest, dense, multilabel, bottleneck<k>-lasso|forest",
    )
    p.add_argument(
        "--target",
        choices=("attributes", "class"),
        help="attributes (default): one binary probe per attribute; class: one "
        "multi-class probe of a class-per-folder set's class column",
    )
    p.add_argument("--train-sizes", help="comma-separated training sizes; 0 = whole split")
    p.add_argument("--seeds", help="comma-separated seeds")
    p.add_argument(
        "--overwrite",
        action="store_true",
        default=None,
        help="discard earlier results of this store and run every fit again",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the fits the grid would run and skip (resumed); no Spark, nothing written",
    )
    add_common(p)


def run(args: argparse.Namespace, spark: Any = None) -> int:
    from featstore.errors import ConfigError
    from featstore.train.grid import plan_train, run_train

    cfg = config_from_args(
        args,
        store=args.store,
        train={
            "feature_sets": args.feature_sets,
            "attributes": args.attributes,
            "models": args.models,
            "train_sizes": args.train_sizes,
            "seeds": args.seeds,
            "overwrite": args.overwrite,
            "target": args.target,
        },
    )
    if not cfg.store:
        raise ConfigError("train needs a store folder (--store STORE)")
    grid = plan_train(cfg.train, cfg.store)  # a bad grid, a damaged input: before Spark starts
    if args.dry_run:
        return _dry_run(grid)
    from featstore import store

    store.check_writable(cfg.store, what="train")
    session = SparkProvider(args, spark)(cfg)
    s = run_train(session, grid)
    print(
        f"trained: {s.cells} fits ({s.ran} run, {s.resumed} already done) in {s.seconds:.1f} s;"
        f" results: {s.ok_rows} ok, {s.error_rows} errors -> {s.store}/results"
    )
    print(s.timing_line())
    return EXIT_OK


def _dry_run(p: Any) -> int:
    """Print the fits a run would do and skip: one line per fit, then the totals."""
    done = {id(c) for c in p.done}
    for c in p.cells:
        verb = "skip" if id(c) in done else "run "
        size = c.train_size or "all"
        print(
            f"{verb} {c.model:<20} {c.attribute:<22} {c.feature_set}  train_size={size} "
            f"seed={c.seed}"
        )
    extra = []
    if p.retried:
        extra.append(f"{p.retried} of them ended in an error before")
    if p.lacking_models:
        extra.append(f"{p.lacking_models} lack their saved models")
    print(
        f"dry run: {len(p.cells)} fits: {len(p.todo)} to run, {len(p.done)} already done "
        f"(skipped){'; ' + ', '.join(extra) if extra else ''}; nothing was run or written"
    )
    return EXIT_OK


def main(argv: list[str] | None = None, spark: Any = None) -> int:
    from jobs.cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)], spark)


if __name__ == "__main__":
    sys.exit(main())

"""PCA of a feature set, fitted on its train split: features/feature_set=<set>-pca<k>/ for several k.

spark-submit jobs/reduce.py --store /data/store --feature-set vgg16-block5_pool-avg
python jobs/reduce.py --store demo/store --feature-set mobilenetv2-out_relu-avg --dims 8,64
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the repository, not from jobs/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from jobs.common import EXIT_OK, SparkProvider, add_common, config_from_args


def add_arguments(p: argparse.ArgumentParser, name: str = "reduce") -> None:
    p.add_argument("--store", help="store folder with a committed feature set")
    p.add_argument("--feature-set", help="the source feature set (features/feature_set=NAME/)")
    p.add_argument("--dims", help="comma-separated PCA dimensions (default 8,16,32,64,128,256)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        default=None,
        help="recompute the sets even if committed from the same source",
    )
    add_common(p)


def run(args: argparse.Namespace, spark: Any = None) -> int:
    from featstore.errors import ConfigError
    from featstore.reduce import plan_reduce, run_reduce, summary_line

    cfg = config_from_args(
        args,
        store=args.store,
        reduce={
            "feature_set": args.feature_set,
            "dims": args.dims,
            "overwrite": args.overwrite,
        },
    )
    if not cfg.store:
        raise ConfigError("reduce needs a store folder (--store STORE)")
    plan = plan_reduce(cfg.reduce, cfg.store)  # bad input: one line, before Spark starts
    if plan.todo:  # a read-only store or a full disk: one line, before Spark starts
        from featstore import store

        rows = sum(plan.splits.values())
        store.check_writable(
            cfg.store, rows * 4 * sum(plan.todo) + 4 * plan.dim * max(plan.todo), what="reduce"
        )
    session = SparkProvider(args, spark)(cfg) if plan.todo else spark
    print(summary_line(run_reduce(session, plan)))
    return EXIT_OK


def main(argv: list[str] | None = None, spark: Any = None) -> int:
    from jobs.cli import main as cli_main

    return cli_main(["reduce", *(sys.argv[1:] if argv is None else argv)], spark)


if __name__ == "__main__":
    sys.exit(main())

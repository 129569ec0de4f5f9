"""Which conv base? The base-comparison study: extract -> reduce -> retrieval per base, then one
probe grid over every base's reduced sets (featstore/compare.py, conf/compare_bases.yaml).

    python jobs/compare.py --store demo/store --bases mobilenetv2,resnet50 --set extract.weights=random
    spark-submit jobs/compare.py --store /data/store --config conf/compare_bases.yaml

The store needs a committed images table (``featstore ingest``). Every stage resumes, so a re-run
does only what is missing; ``featstore report`` then shows the "Which conv base" section.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the repository, not from jobs/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from jobs.common import EXIT_OK, SparkProvider, add_common, config_from_args

DEFAULT_CONFIG = "compare_bases.yaml"


def add_arguments(p: argparse.ArgumentParser, name: str = "compare") -> None:
    p.add_argument("--store", help="store folder with a committed images table")
    p.add_argument(
        "--bases",
        help="comma-separated conv bases (default: compare.bases of the "
        f"config, {DEFAULT_CONFIG}: vgg16,resnet50,mobilenetv2,...)",
    )
    p.add_argument("--dims", help="comma-separated PCA dimensions every base is reduced to")
    add_common(p)
    p.set_defaults(config=None)
    for action in p._actions:
        if action.dest == "config":
            action.help = f"YAML config (default conf/{DEFAULT_CONFIG})"


def run(args: argparse.Namespace, spark: Any = None) -> int:
    from featstore.compare import plan_compare, run_compare
    from featstore.errors import ConfigError

    args.config = args.config or DEFAULT_CONFIG
    cfg = config_from_args(
        args, store=args.store, compare={"bases": args.bases}, reduce={"dims": args.dims}
    )
    if not cfg.store:
        raise ConfigError("compare needs a store folder (--store STORE)")
    plan_compare(cfg, cfg.store)  # bad input: one line, before Spark starts
    s = run_compare(SparkProvider(args, spark)(cfg), cfg, cfg.store)
    sets = sum(len(v) for v in s.feature_sets.values())
    print(
        f"compare: {len(s.bases)} bases ({', '.join(s.bases)}), {sets} feature sets, "
        f"{s.grid_cells} grid cells, {s.retrieval_runs} retrieval runs in {s.seconds:.0f} s "
        f"-> {s.store} (featstore report --store {s.store} --out DIR)"
    )
    return EXIT_OK


def main(argv: list[str] | None = None, spark: Any = None) -> int:
    from jobs.cli import main as cli_main

    return cli_main(["compare", *(sys.argv[1:] if argv is None else argv)], spark)


if __name__ == "__main__":
    sys.exit(main())

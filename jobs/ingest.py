"""Ingest a CelebA folder or a class-per-folder image set into the store.

spark-submit jobs/ingest.py --store STORE --source celeba --path /data/celeba
python jobs/ingest.py --store STORE --source folder --path /data/flowers
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the repository, not from jobs/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from jobs.common import EXIT_IMAGE_ERRORS, EXIT_OK, SparkProvider, add_common, config_from_args


def add_arguments(p: argparse.ArgumentParser, name: str = "ingest") -> None:
    p.add_argument("--store", help="store folder (created if absent)")
    p.add_argument("--source", choices=["celeba", "folder"], help="input layout (default celeba)")
    p.add_argument("--path", help="input folder")
    p.add_argument(
        "--overwrite",
        action="store_true",
        default=None,
        help="rebuild even if the store already holds this input",
    )
    add_common(p)


def run(args: argparse.Namespace, spark: Any = None) -> int:
    from featstore import store
    from featstore.errors import ConfigError
    from featstore.ingest import plan_ingest, run_ingest

    cfg = config_from_args(
        args,
        store=args.store,
        ingest={"source": args.source, "path": args.path, "overwrite": args.overwrite},
    )
    if not cfg.store:
        raise ConfigError("ingest needs a store folder (--store STORE)")
    # the annotations, the store's layout (an older store: how to migrate) and a path Spark
    # cannot take: before Spark starts (a bad file is reported in a second)
    plan = plan_ingest(cfg.ingest, cfg.store)
    store.check_writable(plan.layout.root, what="ingest")  # read-only: refused before Spark
    summary = run_ingest(SparkProvider(args, spark)(cfg), plan)
    splits = ", ".join(f"{k} {v:,}" for k, v in summary.split_counts.items())
    verb = "already ingested" if summary.skipped else "ingested"
    print(f"{verb}: {summary.ok:,} images ({splits}); {summary.errors:,} errors -> {summary.store}")
    for line in summary.error_examples:
        print(f"  error: {line}")
    if summary.timing is not None:
        print(summary.timing.line("ingest"))
    return EXIT_IMAGE_ERRORS if summary.errors else EXIT_OK


def main(argv: list[str] | None = None, spark: Any = None) -> int:
    from jobs.cli import main as cli_main

    return cli_main(["ingest", *(sys.argv[1:] if argv is None else argv)], spark)


if __name__ == "__main__":
    sys.exit(main())

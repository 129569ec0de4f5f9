"""The ``featstore`` command: one subcommand per stage, each the same code as jobs/<stage>.py."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from jobs.common import run_guarded, setup_logging

# subcommand -> (module, help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("jobs.synth", "write a synthetic CelebA-format image set"),
    "ingest": ("jobs.ingest", "validate images and pack them into the store (Spark)"),
    "extract": ("jobs.extract", "embed every image with a conv base into a feature set (Spark)"),
    "reduce": ("jobs.reduce", "PCA fitted on the train split -> <set>-pca<k> feature sets (Spark)"),
    "train": ("jobs.train", "fit and evaluate the grid of probes on feature sets (Spark)"),
    "report": ("jobs.report", "HTML report of the results table: summary, plots, manifests"),
    "ls": ("jobs.catalog", "list the tables and feature sets of a store"),
    "describe": ("jobs.catalog", "show a table's or feature set's manifest"),
    "migrate": ("jobs.catalog", "convert a store written by an older featstore to this layout"),
    "demo": ("jobs.demo", "the whole chain on built-in synthetic data"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="featstore",
        description="Spark jobs: images -> CNN embeddings in a Parquet feature store -> classifiers",
        epilog="exit codes: 0 done; 1 finished with per-image errors recorded; "
               "2 bad input or configuration, nothing written; 3 the job failed (a Spark "
               "task, the cluster), the stage in progress committed nothing",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_arguments(p, name)
        p.set_defaults(_module=mod)
    return parser


def main(argv: list[str] | None = None, spark: Any = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    return run_guarded(lambda: args._module.run(args, spark))


if __name__ == "__main__":
    sys.exit(main())

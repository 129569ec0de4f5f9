"""The HTML report of a store's results table (no Spark).

featstore report --store demo/store --out demo/report [--feature-set NAME] [--color-by Smiling]
python jobs/report.py --store demo/store --out demo/report
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the repository, not from jobs/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from jobs.common import EXIT_OK, add_common, config_from_args


def add_arguments(p: argparse.ArgumentParser, name: str = "report") -> None:
    p.add_argument("--store", help="store folder with a committed results table")
    p.add_argument(
        "--out", required=True, help="folder for index.html, summary.csv, summary.md, table.csv"
    )
    p.add_argument(
        "--feature-set",
        help="feature set of the PCA / t-SNE maps (default: the "
        "largest-dimension feature set in the results)",
    )
    p.add_argument(
        "--color-by",
        help="attribute colouring the maps (default: the attribute "
        "the best model separates best from its baseline)",
    )
    add_common(p, spark=False)


def run(args: argparse.Namespace, spark: Any = None) -> int:
    from featstore.errors import ConfigError
    from featstore.report import build_report

    cfg = config_from_args(args, store=args.store)
    if not cfg.store:
        raise ConfigError("report needs a store folder (--store STORE)")
    s = build_report(cfg.store, args.out, feature_set=args.feature_set, color_by=args.color_by)
    if s.rows_ok or not s.multiclass_rows:
        print(s.markdown, end="")
    multi = (
        f", {s.multiclass_rows} ok multi-class fits (multiclass.csv)" if s.multiclass_rows else ""
    )
    print(
        f"report: {s.index_html} ({len(s.figures)} plots, {s.images} panels; {s.rows_ok} ok "
        f"and {s.rows_error} failed fits{multi}; summary.csv, summary.md and table.csv beside "
        "it)"
    )
    if s.timing is not None:
        print(s.timing.line("report"))
    return EXIT_OK


def main(argv: list[str] | None = None, spark: Any = None) -> int:
    from jobs.cli import main as cli_main

    return cli_main(["report", *(sys.argv[1:] if argv is None else argv)], spark)


if __name__ == "__main__":
    sys.exit(main())

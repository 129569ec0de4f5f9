"""Ingest a CelebA folder or a class-per-folder image set into the store.

spark-submit jobs/ingest.py --store STORE --source celeba --path /data/celeba
python jobs/ingest.py --store STORE --source folder --path /data/flowers
python jobs/ingest.py --store STORE --path /data/celeba --dry-run
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
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check everything and show the images per split, the attributes and what would "
        "be written; no Spark, no image read, nothing written",
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
    if args.dry_run:
        return _dry_run(plan)
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


def _dry_run(p: Any) -> int:
    """What the plan says (an :class:`featstore.ingest.IngestPlan`): the listing read from
    the annotation files, not one image opened; nothing run or written."""
    from featstore.sources.base import SPLITS
    from featstore.store import CLASS, IDENTITY

    listing = p.listing
    split = listing.images["split"]
    counts = {s: int((split == s).sum()) for s in (*SPLITS, *sorted(set(split) - set(SPLITS)))}
    splits = ", ".join(f"{k} {v:,}" for k, v in counts.items() if v)
    problems = (
        f"; {len(listing.problems):,} missing or unlisted (-> the errors table)"
        if listing.problems
        else ""
    )
    columns, new = set(listing.labels.columns), not p.layout.root.exists()
    print(f"source:      {listing.source} {Path(p.cfg.path).resolve()}")
    print(f"store:       {p.store}{' (new)' if new else ''}")
    print(f"images:      {p.images:,} listed ({splits}){problems}")
    print(
        f"attributes:  {len(listing.attributes)}; identity column: "
        f"{'yes' if IDENTITY in columns else 'no (null)'}; class column: "
        f"{'yes' if CLASS in columns else 'no (null)'}"
    )
    print(f"input:       fingerprint {p.fingerprint[:12]}")
    if p.done is not None:
        print(f"dry run: already ingested (this input): nothing to do -> {p.layout.root}")
        return EXIT_OK
    print(
        f"writes:      {p.layout.images} (by split, at most {p.cfg.rows_per_file:,} rows a file)"
        + ("; --overwrite: replaces the store's tables" if p.cfg.overwrite and not new else "")
    )
    print(f"             {p.layout.labels} (a row per image that decodes: {p.images:,} at most)")
    print(f"dry run: nothing was run or written -> {p.layout.root}")
    return EXIT_OK


def main(argv: list[str] | None = None, spark: Any = None) -> int:
    from jobs.cli import main as cli_main

    return cli_main(["ingest", *(sys.argv[1:] if argv is None else argv)], spark)


if __name__ == "__main__":
    sys.exit(main())

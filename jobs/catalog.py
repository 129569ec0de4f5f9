"""``featstore ls STORE`` and ``featstore describe STORE NAME``: read manifests, no Spark."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the repository, not from jobs/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from jobs.common import EXIT_OK


def add_arguments(p: argparse.ArgumentParser, name: str) -> None:
    p.add_argument("store", help="store folder")
    if name == "describe":
        p.add_argument("name", help="table (images, labels, results) or feature set name")
        p.add_argument("--json", action="store_true", help="print the manifest as JSON")
        p.add_argument("--check", action="store_true",
                       help="also check that the rows on disk are the rows the manifest declares")
    p.set_defaults(_catalog=name)
    p.add_argument("-v", "--verbose", action="store_true")


def _rows(manifest: dict[str, Any]) -> str:
    counts = manifest.get("counts", {})
    ok = counts.get("ok", counts.get("rows"))
    errors = counts.get("errors")
    text = f"{ok:,} rows" if isinstance(ok, int) else "?"
    if errors:
        text += f", {errors:,} errors"
    return text


def run(args: argparse.Namespace, spark: Any = None) -> int:
    from featstore import store

    if args._catalog == "ls":
        tables = store.list_tables(args.store)
        if not tables:
            print(f"{store.Layout(args.store).root}: no committed tables")
        for t in tables:
            m = t["manifest"]
            extra = f"dim {m['dim']}" if "dim" in m else ""
            print(f"{t['name']:<40} {t['kind']:<9} {_rows(m):<28} {extra:<9} {m.get('created', '')}")
        return EXIT_OK
    table = store.find_table(args.store, args.name)
    manifest = table["manifest"]
    checked = ""
    if args.check and table["kind"] == "features":
        store.check_feature_set(args.store, args.name)
        checked = "rows on disk match the manifest"
    if args.json:
        print(json.dumps(manifest, indent=2, sort_keys=True))
        return EXIT_OK
    print(f"{table['name']} ({table['kind']}) at {table['path']}")
    for key in sorted(manifest):
        value = manifest[key]
        if isinstance(value, (dict, list)):
            value = json.dumps(value, sort_keys=True)
        print(f"  {key:<20} {value}")
    if checked:
        print(checked)
    return EXIT_OK


def main(argv: list[str] | None = None, spark: Any = None) -> int:
    from jobs.cli import main as cli_main

    return cli_main(sys.argv[1:] if argv is None else argv, spark)


if __name__ == "__main__":
    sys.exit(main())

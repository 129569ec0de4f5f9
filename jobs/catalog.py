"""``featstore ls``, ``featstore describe`` and ``featstore migrate``: manifests only, no Spark."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # run as a script: import from the repository, not from jobs/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from jobs.common import EXIT_BAD_INPUT, EXIT_OK

if TYPE_CHECKING:
    from featstore.store import Manifest


def add_arguments(p: argparse.ArgumentParser, name: str) -> None:
    # the store as the other commands take it (--store STORE), or positionally as before
    p.add_argument("--store", dest="store_opt", metavar="STORE", help="store folder")
    if name == "describe":
        p.usage = "featstore describe [-h] [--store STORE | STORE] NAME [options]"
        p.add_argument(
            "positional",
            nargs="*",
            metavar="[STORE] NAME",
            help="the store folder (unless --store is given) and a table (images, "
            "labels, results) or feature set name",
        )
        p.add_argument(
            "--json",
            action="store_true",
            help="print the manifest as JSON, with the data and errors paths",
        )
        p.add_argument(
            "--check",
            action="store_true",
            help="check the files on disk against the manifest: sizes, row counts "
            "and every file's sha256",
        )
        p.add_argument(
            "--deep", action="store_true", help="with --check: also decode every data file in full"
        )
    else:
        p.add_argument(
            "positional", nargs="?", metavar="STORE", help="store folder (or --store STORE)"
        )
    if name == "migrate":
        p.add_argument("--dry-run", action="store_true", help="say what would move; move nothing")
    p.set_defaults(_catalog=name)
    p.add_argument("-v", "--verbose", action="store_true")


def _rows(manifest: Manifest) -> str:
    counts = manifest.counts
    ok = counts.get("ok", counts.get("rows"))
    errors = counts.get("errors")
    text = f"{ok:,} rows" if isinstance(ok, int) else "?"
    if errors:
        text += f", {errors:,} errors"
    return text


def _resolve_args(args: argparse.Namespace) -> None:
    """Set ``args.store`` (and ``args.name`` for describe) from --store and the positionals."""
    from featstore.errors import ConfigError

    given = (
        args.positional
        if isinstance(args.positional, list)
        else ([args.positional] if args.positional else [])
    )
    wanted = 1 if args._catalog == "describe" else 0  # positionals besides the store
    if args.store_opt is not None:
        if len(given) != wanted:
            what = "a table or feature set NAME" if wanted else "no other argument"
            raise ConfigError(
                f"{args._catalog}: with --store, expected {what}; got "
                f"{' '.join(given) or 'nothing'}"
            )
        args.store = args.store_opt
    else:
        if len(given) != wanted + 1:
            usage = "[--store] STORE NAME" if wanted else "[--store] STORE"
            raise ConfigError(
                f"{args._catalog}: expected {usage}; got {' '.join(given) or 'nothing'}"
            )
        args.store = given[0]
    if wanted:
        args.name = given[-1]


def run(args: argparse.Namespace, spark: Any = None) -> int:
    from featstore import spread, store

    _resolve_args(args)

    if args._catalog == "migrate":
        from featstore.migrate import migrate

        moved = migrate(args.store, dry_run=args.dry_run)
        verb = "would migrate" if args.dry_run else "migrated"
        print(
            f"{verb} {len(moved)} tables to store layout {store.LAYOUT_VERSION}: "
            f"{', '.join(moved) or 'none'} -> {store.Layout(args.store).root}"
        )
        return EXIT_OK
    if args._catalog == "ls":
        return _ls(args.store)
    table = store.find_table(args.store, args.name)
    manifest = table["manifest"]
    checked = ""
    if args.check or args.deep:
        store.check_table(args.store, args.name, checksums=True, deep=args.deep)
        checked = (
            f"{len(manifest.files or [])} files match the manifest "
            f"(sizes, row counts, sha256{'; every file decoded' if args.deep else ''})"
        )
    if args.json:
        print(
            json.dumps(
                {
                    **manifest.to_dict(),
                    "paths": {"data": table["path"], "errors": table["errors_path"]},
                },
                indent=2,
                sort_keys=True,
            )
        )
        return EXIT_OK
    print(f"{table['name']} ({table['kind']}) at {table['path']}")
    if table["errors_path"]:
        print(f"  errors table at {table['errors_path']}")
    stale = store.stale_inputs(store.Layout(args.store), table["id"], manifest)
    if stale:
        print(f"  STALE: derived from a version that no longer exists: {', '.join(stale)}")
    flag = spread.note(manifest)
    if flag:
        print(f"  DEGENERATE: {flag.removeprefix('degenerate: ')}")
    fields = manifest.to_dict()
    for key in sorted(fields):
        value = fields[key]
        if key in ("files", "errors_files"):
            value = f"{len(value)} files"
        elif isinstance(value, (dict, list)):
            value = json.dumps(value, sort_keys=True)
        print(f"  {key:<20} {value}")
    if checked:
        print(checked)
    return EXIT_OK


def _ls(path: str) -> int:
    """One row per table: name, kind, rows, dim, created, and a state: ok, STALE (an input it
    was derived from has changed since) or DAMAGED (the manifest, or the files against it: a
    listing and stats, no file read) with the reason. Exit 2 if any is damaged."""
    from featstore import spread, store

    layout = store.open_store(path, strict=True)
    tables = store.list_tables(path, damaged=True)
    if not tables:
        print(f"{layout.root}: no committed tables")
        return EXIT_OK
    rows = [("NAME", "KIND", "ROWS", "DIM", "CREATED", "STATE")]
    bad = 0
    degenerate: list[str] = []
    for t in tables:
        m = t["manifest"]
        if t["damaged"]:
            bad += 1
            state = f"DAMAGED: {t['damaged']}"
        else:
            stale = store.stale_inputs(layout, t["id"], m)
            state = f"STALE: derived from {', '.join(stale)}" if stale else "ok"
            if spread.note(m):  # usable, but worth a word (featstore.spread)
                degenerate.append(t["name"])
        rows.append(
            (
                t["name"],
                t["kind"],
                _rows(m) if m else "?",
                str(m.extra["dim"]) if m and "dim" in m.extra else "",
                str(m.created) if m and m.created is not None else "",
                state,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5])
    if degenerate:
        print(
            f"note: degenerate (every dimension with (almost) no spread; featstore describe "
            f"says more): {', '.join(degenerate)}",
            file=sys.stderr,
        )
    if bad:
        print(f"featstore: error: {bad} damaged table(s); the others are readable", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def main(argv: list[str] | None = None, spark: Any = None) -> int:
    from jobs.cli import main as cli_main

    return cli_main(sys.argv[1:] if argv is None else argv, spark)


if __name__ == "__main__":
    sys.exit(main())

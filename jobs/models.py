"""``featstore models``: the registered conv bases, measured on the Keras model itself.

    featstore models                       every base at its default input size (a second)
    featstore models mobilenetv2 vgg16     some of them
    featstore models --input-size native   parameters and FLOPs at CelebA's 218x178 (builds
                                           each base: seconds to a minute each)

Parameters are ``count_params()`` of the base (``include_top=False``); FLOPs are counted from the
built model's layers at that input size (see :func:`featstore.models.count_flops`). At each
base's default input size they are read from the generated table featstore/model_layers.json
(``scripts/gen_model_layers.py`` measures them the same way; no Keras import); any other size,
or another Keras version than the table's, builds the base, with a progress line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the repository, not from jobs/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from featstore.timing import Stopwatch
from jobs.common import EXIT_OK


def add_arguments(p: argparse.ArgumentParser, name: str = "models") -> None:
    p.add_argument("names", nargs="*", metavar="MODEL", help="bases to show (default: all)")
    p.add_argument(
        "--input-size", default="default", help="default (each base's own), native (218x178) or HxW"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per base")
    p.add_argument("-v", "--verbose", action="store_true")


def run(args: argparse.Namespace, spark: Any = None) -> int:
    from featstore import modelspecs

    names = [modelspecs.get_spec(n).name for n in args.names] or modelspecs.known_models()
    for n in names:  # a bad size is one line before Keras is imported
        modelspecs.resolve_input_size(modelspecs.get_spec(n), args.input_size)
    import logging

    if not args.verbose:  # one "built ..." line per base is noise here
        logging.getLogger("featstore.models").setLevel(logging.WARNING)
    if not args.json:
        print(
            f"{'model':<18} {'default layer':<22} {'input':>9} {'params':>12} {'GFLOPs':>8}",
            flush=True,
        )
    for i, n in enumerate(names, 1):
        spec = modelspecs.get_spec(n)
        hw = modelspecs.resolve_input_size(spec, args.input_size)
        d = modelspecs.known_counts(n) if hw == spec.default_hw else None
        if d is None:  # not in the generated table: build the base (Keras imported once)
            from featstore.models import describe_base

            print(
                f"[{i}/{len(names)}] building {n} at {hw[0]}x{hw[1]} to count its parameters "
                "and FLOPs ...",
                file=sys.stderr,
                flush=True,
            )
            t0 = Stopwatch()
            d = describe_base(n, args.input_size, use_table=False)
            logging.getLogger("featstore.models").info("%s measured in %.1f s", n, t0.seconds)
        if args.json:
            print(json.dumps(d, sort_keys=True), flush=True)
            continue
        h, w = d["input_hw"]
        print(
            f"{d['model']:<18} {d['default_layer']:<22} {f'{h}x{w}':>9} "
            f"{d['params']:>12,} {d['flops'] / 1e9:>8.2f}",
            flush=True,
        )
    return EXIT_OK


def main(argv: list[str] | None = None, spark: Any = None) -> int:
    from jobs.cli import main as cli_main

    return cli_main(["models", *(sys.argv[1:] if argv is None else argv)], spark)


if __name__ == "__main__":
    sys.exit(main())

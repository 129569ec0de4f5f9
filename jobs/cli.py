"""The ``featstore`` command: one subcommand per stage, each the same code as jobs/<stage>.py.

Building the parser imports only the job modules, which import nothing heavy at module level
(no pyspark, TensorFlow, Keras or JAX; a test keeps it so): every check that the arguments,
the config, the model registry and the store's manifests allow runs before Spark or Keras
starts, and answers in a fraction of a second.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any, NoReturn

from jobs.common import EXIT_BAD_INPUT, run_guarded, setup_logging

# subcommand -> (module, help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("jobs.synth", "write a synthetic CelebA-format image set"),
    "ingest": ("jobs.ingest", "validate images and pack them into the store (Spark)"),
    "extract": ("jobs.extract", "embed every image with a conv base into a feature set (Spark)"),
    "reduce": ("jobs.reduce", "PCA fitted on the train split -> <set>-pca<k> feature sets (Spark)"),
    "train": ("jobs.train", "fit and evaluate the grid of probes on feature sets (Spark)"),
    "retrieve": (
        "jobs.retrieve",
        "nearest-neighbour retrieval metrics of a feature set (top-k accuracy/precision, mAP@k)",
    ),
    "compare": (
        "jobs.compare",
        "which conv base: extract, reduce, probe and retrieve several "
        "bases (conf/compare_bases.yaml)",
    ),
    "report": ("jobs.report", "HTML report of the results table: summary, plots, manifests"),
    "ls": ("jobs.catalog", "list the tables and feature sets of a store"),
    "describe": ("jobs.catalog", "show a table's or feature set's manifest"),
    "migrate": ("jobs.catalog", "convert a store written by an older featstore to this layout"),
    "models": ("jobs.models", "the conv bases: default layer, input size, parameters, FLOPs"),
    "demo": ("jobs.demo", "the whole chain on built-in synthetic data"),
}


class _Parser(argparse.ArgumentParser):
    """Usage errors as the jobs report every bad input: one ``featstore: error:`` line, exit 2."""

    def error(self, message: str) -> NoReturn:
        sub = self.prog.split(" ", 1)[1] if " " in self.prog else ""
        where = f"{sub}: " if sub else ""
        helpcmd = f"featstore {sub} --help" if sub else "featstore --help"
        print(f"featstore: error: {where}{message} (see {helpcmd})", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def version_text() -> str:
    """featstore's version and the versions of the stack it runs on, read from the installed
    packages' metadata (nothing imported)."""
    from importlib import metadata

    from featstore import __version__

    parts = []
    for dist in ("pyspark", "keras", "tensorflow", "pyarrow"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    py = ".".join(str(v) for v in sys.version_info[:3])
    return f"featstore {__version__} (python {py}; {', '.join(parts)})"


class _Version(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> NoReturn:
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="featstore",
        description="Spark jobs: images -> CNN embeddings in a Parquet feature store -> classifiers",
        epilog="exit codes: 0 done; 1 finished with per-image errors recorded; "
        "2 bad input or configuration, nothing written; 3 the job failed (a Spark "
        "task, the cluster), the stage in progress committed nothing",
    )
    parser.add_argument(
        "--version", action=_Version, help="print featstore's version and its stack's, and exit"
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_arguments(p, name)
        p.set_defaults(_module=mod)
    return parser


def main(argv: list[str] | None = None, spark: Any = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, a usage error: argparse's own exit code
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_BAD_INPUT
    setup_logging(getattr(args, "verbose", False))
    return run_guarded(lambda: args._module.run(args, spark))


if __name__ == "__main__":
    sys.exit(main())

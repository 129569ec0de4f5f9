"""Run every image of the store through a conv base; write features/feature_set=<name>/.

    spark-submit --properties-file conf/cluster-gpu/spark-defaults.conf jobs/extract.py \
        --store /data/store --model vgg16 --layers block5_pool --pooling avg --input-size native
    python jobs/extract.py --store demo/store --model mobilenetv2 --weights random
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the repository, not from jobs/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from jobs.common import EXIT_IMAGE_ERRORS, EXIT_OK, SparkProvider, add_common, config_from_args


def add_arguments(p: argparse.ArgumentParser, name: str = "extract") -> None:
    p.add_argument("--store", help="store folder with a committed images table")
    p.add_argument("--model", help="conv base by name (vgg16, resnet50, mobilenetv2, ...)")
    p.add_argument("--layers", help="comma-separated layer names (default: the last conv block)")
    p.add_argument("--pooling", choices=["avg", "max", "flatten"])
    p.add_argument(
        "--weights",
        help="imagenet (from the Keras cache or KERAS_HOME), random, "
        "or PATH to a .weights.h5 / ImageNet .h5 file",
    )
    p.add_argument("--input-size", help="default (the model's), native (218x178) or HxW")
    p.add_argument("--precision", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--batch-size", type=int, help="forward-pass batch (default 64)")
    p.add_argument("--feature-set", help="name of the feature set (default from the settings)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        default=None,
        help="recompute even if committed or partly staged",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check everything and show the images, chunks and feature-set name; "
        "no Spark, no model built, nothing written",
    )
    add_common(p)


def run(args: argparse.Namespace, spark: Any = None) -> int:
    from featstore import store
    from featstore.errors import ConfigError
    from featstore.extract import plan_extract, run_extract
    from featstore.timing import Stopwatch

    cfg = config_from_args(
        args,
        store=args.store,
        extract={
            "model": args.model,
            "layers": args.layers,
            "pooling": args.pooling,
            "weights": args.weights,
            "input_size": args.input_size,
            "precision": args.precision,
            "batch_size": args.batch_size,
            "feature_set": args.feature_set,
            "overwrite": args.overwrite,
        },
    )
    if not cfg.store:
        raise ConfigError("extract needs a store folder (--store STORE)")
    # settings, store, model, weights, a damaged input or output: before Spark starts
    plan = plan_extract(cfg.extract, cfg.store)
    if args.dry_run:
        return _dry_run(plan)
    # a read-only store or a full disk (at least the image ids and one float a row)
    store.check_writable(
        plan.layout.root, int(plan.images_manifest["counts"].get("ok", 0)) * 24, what="extract"
    )
    clock = Stopwatch()
    session = SparkProvider(args, spark)(cfg)
    started = clock.seconds
    s = run_extract(session, plan)
    verb = "already extracted" if s.skipped else "extracted"
    print(
        f"{verb}: {s.feature_set} ({s.dim} floats) for {s.ok:,} images, {s.errors:,} errors, "
        f"{s.seconds:.1f} s ({s.images_per_second:,.1f} img/s) -> "
        f"{store.Layout(s.store).features(s.feature_set)}"
    )
    if s.timing is not None:
        print(f"extract time: Spark start {started:.1f} s; {s.timing.line()}")
    return EXIT_IMAGE_ERRORS if s.errors else EXIT_OK


def _dry_run(p: Any) -> int:
    """What the plan says (an :class:`featstore.extract.ExtractPlan`); nothing run or written."""
    splits = ", ".join(f"{k} {v:,}" for k, v in p.splits.items())
    sizes = sorted({c[2] for c in p.chunks})
    state = (
        f"committed {p.committed}: a run with the same settings does nothing, other "
        "settings (or --overwrite) rebuild it"
        if p.committed
        else "not committed"
    )
    print(f"feature set: {p.feature_set} ({state})")
    print(
        f"model:       {p.model} layers {','.join(p.layers)} at {p.input_hw[0]}x"
        f"{p.input_hw[1]}, weights {p.weights}"
    )
    print(f"images:      {p.images:,} ({splits})")
    print(
        f"chunks:      {len(p.chunks)} of {'-'.join(f'{s:,}' for s in sizes)} images"
        + (
            f"; {p.staged_chunks} staged by an earlier run (resumed if its settings were the same)"
            if p.staged_chunks
            else ""
        )
    )
    print(f"dry run: nothing was run or written -> {p.layout.features(p.feature_set)}")
    return EXIT_OK


def main(argv: list[str] | None = None, spark: Any = None) -> int:
    from jobs.cli import main as cli_main

    return cli_main(["extract", *(sys.argv[1:] if argv is None else argv)], spark)


if __name__ == "__main__":
    sys.exit(main())

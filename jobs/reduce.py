"""PCA of a feature set, fitted on its train split: features/feature_set=<set>-pca<k>/ for several k.

spark-submit jobs/reduce.py --store /data/store --feature-set vgg16-block5_pool-avg
python jobs/reduce.py --store demo/store --feature-set mobilenetv2-out_relu-avg --dims 8,64
python jobs/reduce.py --store demo/store --feature-set mobilenetv2-out_relu-avg --dry-run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the repository, not from jobs/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from jobs.common import EXIT_OK, SparkProvider, add_common, config_from_args


def add_arguments(p: argparse.ArgumentParser, name: str = "reduce") -> None:
    p.add_argument("--store", help="store folder with a committed feature set")
    p.add_argument("--feature-set", help="the source feature set (features/feature_set=NAME/)")
    p.add_argument("--dims", help="comma-separated PCA dimensions (default 8,16,32,64,128,256)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        default=None,
        help="recompute the sets even if committed from the same source",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check everything and show the source's rows, the sets that would be written and "
        "those already committed (skipped); no Spark, no embedding read, nothing written",
    )
    add_common(p)


def run(args: argparse.Namespace, spark: Any = None) -> int:
    from featstore.errors import ConfigError
    from featstore.reduce import plan_reduce, run_reduce, summary_line

    cfg = config_from_args(
        args,
        store=args.store,
        reduce={
            "feature_set": args.feature_set,
            "dims": args.dims,
            "overwrite": args.overwrite,
        },
    )
    if not cfg.store:
        raise ConfigError("reduce needs a store folder (--store STORE)")
    plan = plan_reduce(cfg.reduce, cfg.store)  # bad input: one line, before Spark starts
    if args.dry_run:
        return _dry_run(plan)
    if plan.todo:  # a read-only store or a full disk: one line, before Spark starts
        from featstore import store

        rows = sum(plan.splits.values())
        store.check_writable(
            cfg.store, rows * 4 * sum(plan.todo) + 4 * plan.dim * max(plan.todo), what="reduce"
        )
    session = SparkProvider(args, spark)(cfg) if plan.todo else spark
    print(summary_line(run_reduce(session, plan)))
    return EXIT_OK


def _dry_run(p: Any) -> int:
    """What the plan says (a :class:`featstore.reduce.ReducePlan`): the source's manifest and
    the committed sets' manifests, not one embedding read; nothing run or written."""
    from featstore import store
    from featstore.reduce import FIT_SPLIT, output_name

    rows = sum(p.splits.values())
    splits = ", ".join(f"{k} {v:,}" for k, v in p.splits.items())
    print(f"store:       {p.layout.root}")
    print(f"source:      {p.source} ({p.dim:,} floats; {rows:,} rows: {splits})")
    print(f"fit:         PCA on the {p.n_train:,} {FIT_SPLIT} rows; every split is projected")
    for i, k in enumerate(p.dims):
        name = output_name(p.source, k)
        if k in p.done:
            ratio = p.done[k].get("explained_variance_ratio_sum")
            var = f", explained variance {100 * ratio:.1f}%" if ratio is not None else ""
            state = f"skip: already committed from this source{var} (--overwrite recomputes it)"
        else:
            replaces = p.layout.manifest_path(store.features_id(name)).is_file()
            state = f"write {rows:,} rows" + ("; replaces the committed set" if replaces else "")
        print(f"{'sets:' if i == 0 else '':<13}{name} ({k:,} floats): {state}")
    if not p.todo:
        print(
            f"dry run: already reduced (these sets, this source): nothing to do -> {p.layout.root}"
        )
        return EXIT_OK
    ks = ",".join(map(str, p.todo))
    print(f"writes:      {p.layout.features_root} (feature_set={p.source}-pca<k>, k={ks})")
    print(f"dry run: nothing was run or written -> {p.layout.root}")
    return EXIT_OK


def main(argv: list[str] | None = None, spark: Any = None) -> int:
    from jobs.cli import main as cli_main

    return cli_main(["reduce", *(sys.argv[1:] if argv is None else argv)], spark)


if __name__ == "__main__":
    sys.exit(main())

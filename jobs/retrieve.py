"""Retrieval evaluation of a feature set: each query image's k nearest item images by embedding
distance, scored on the labels -> retrieval/feature_set=<set>/ (featstore/retrieval.py).

    python jobs/retrieve.py --store demo/store --feature-set mobilenetv2-out_relu-avg --k 1,5,10
    spark-submit jobs/retrieve.py --store /data/store --feature-set vgg16-block5_pool-avg-pca64
    python jobs/retrieve.py --store demo/store --feature-set mobilenetv2-out_relu-avg --dry-run

The search is exact and runs on the driver (faiss or blocked numpy products on the Arrow data):
no SparkSession is started, so it runs the same under spark-submit and python.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the repository, not from jobs/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from jobs.common import EXIT_OK, add_common, config_from_args


def add_arguments(p: argparse.ArgumentParser, name: str = "retrieve") -> None:
    p.add_argument("--store", help="store folder with a committed feature set and labels")
    p.add_argument("--feature-set", help="the feature set to evaluate (features/feature_set=NAME/)")
    p.add_argument("--queries", help="split of the query images (default test)")
    p.add_argument("--items", help="split searched for their neighbours (default train)")
    p.add_argument("--metric", help="cosine (default) or l2")
    p.add_argument("--k", help="comma-separated neighbour counts (default 1,5,10)")
    p.add_argument(
        "--attributes",
        help="comma-separated attributes, or classes of a class-per-folder source (default: all)",
    )
    p.add_argument("--backend", help="faiss (default) or numpy (blocked matrix products)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        default=None,
        help="recompute even if this run is committed for the set's content",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check everything and show the queries, items, metric, k and targets and whether "
        "the run is already committed; no embedding read, nothing searched or written",
    )
    add_common(p, spark=False)


def run(args: argparse.Namespace, spark: Any = None) -> int:
    from featstore.errors import ConfigError
    from featstore.retrieval import plan_retrieve, run_retrieve, summary_line

    cfg = config_from_args(
        args,
        store=args.store,
        retrieve={
            "feature_set": args.feature_set,
            "queries": args.queries,
            "items": args.items,
            "metric": args.metric,
            "k": args.k,
            "attributes": args.attributes,
            "backend": args.backend,
            "overwrite": args.overwrite,
        },
    )
    if not cfg.store:
        raise ConfigError("retrieve needs a store folder (--store STORE)")
    plan = plan_retrieve(cfg.retrieve, cfg.store)  # bad input: one line, nothing read or written
    if args.dry_run:
        return _dry_run(plan)
    if not plan.done:
        from featstore import store

        store.check_writable(cfg.store, 4096, what="retrieve")
    print(summary_line(run_retrieve(None, plan)))  # no Spark: the search runs here
    return EXIT_OK


def _count(names: tuple[str, ...], one: str, many: str = "") -> str:
    return f"{len(names):,} {one if len(names) == 1 else many or one + 's'}"


def _few(names: tuple[str, ...], n: int = 6) -> str:
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def _dry_run(p: Any) -> int:
    """What the plan says (a :class:`featstore.retrieval.RetrievePlan`): the feature set's and
    the labels' manifests, not one embedding or label read; nothing searched or written."""
    from featstore import store
    from featstore.retrieval import table_id

    splits = ", ".join(f"{k} {v:,}" for k, v in store.rows_per_split(p.manifest["files"]).items())
    print(f"store:       {p.layout.root}")
    print(f"feature set: {p.feature_set} ({p.dim:,} floats; {splits})")
    print(
        f"search:      {p.n_queries:,} {p.queries} queries x {p.n_items:,} {p.items} items, "
        f"{p.metric}, k={','.join(map(str, p.ks))}, {p.backend}"
        + ("; the same split: a query never finds itself" if p.same_split else "")
    )
    if p.single_label:
        classes = _count(p.classes, "class", "classes")
        print(f"targets:     class: all queries, and {classes} ({_few(p.classes)})")
    else:
        print(
            f"targets:     {_count(p.attributes, 'attribute')} ({_few(p.attributes)}); "
            "mean, exact, jaccard"
        )
    if p.done:
        print(
            "dry run: already done (this setting, this feature set's content): nothing to do "
            f"-> {p.layout.root}"
        )
        return EXIT_OK
    print(
        f"writes:      {p.layout.data(table_id(p.feature_set))} (this setting's rows; other "
        "settings' rows of the same content are kept)"
    )
    print(f"dry run: nothing was run or written -> {p.layout.root}")
    return EXIT_OK


def main(argv: list[str] | None = None, spark: Any = None) -> int:
    from jobs.cli import main as cli_main

    return cli_main(["retrieve", *(sys.argv[1:] if argv is None else argv)], spark)


if __name__ == "__main__":
    sys.exit(main())

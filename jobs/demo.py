"""The whole chain on built-in synthetic data: ``featstore demo [--out DIR]``.

synthetic CelebA-format set -> ingest -> extract -> reduce -> train -> report, one progress line a
stage with counts and rates. It runs offline: the conv base has *random* (seeded) weights, since
no ImageNet weights can be downloaded here -- random conv features still carry the drawn
attributes, which is what the demo shows. Point `extract.weights` at real weights for real work.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the repository, not from jobs/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from jobs.common import EXIT_OK, SparkProvider, add_common, config_from_args

logger = logging.getLogger("featstore.demo")

DEMO_ATTRIBUTES = ("Smiling", "Male", "Eyeglasses", "Wearing_Hat", "Blond_Hair", "Attractive")
DEMO_DIMS = (8, 32, 128)


def add_arguments(p: argparse.ArgumentParser, name: str = "demo") -> None:
    p.add_argument("--out", default="demo", help="output folder (default ./demo)")
    p.add_argument("--n", type=int, default=3000, help="synthetic images (default 3000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--labels-from", help="real list_attr_celeba.txt to draw labels from")
    add_common(p)


def _progress(stage: str, count: int, seconds: float, what: str = "images") -> None:
    rate = count / seconds if seconds > 0 else float("inf")
    print(f"[{stage:<8}] {count:>7,} {what:<7} in {seconds:6.1f} s ({rate:8,.1f}/s)", flush=True)


def demo_overrides(data_dir: Path) -> list[str]:
    """The demo's settings, small enough for a 2-core machine in a few minutes."""
    return [
        "ingest.source=celeba", f"ingest.path={data_dir}",
        "extract.model=resnet50", "extract.input_size=112x96", "extract.weights=random",
        "extract.batch_size=32",
        f"reduce.dims={','.join(str(d) for d in DEMO_DIMS)}",
        f"train.attributes={','.join(DEMO_ATTRIBUTES)}",
        "train.models=lasso,forest,dense", "train.train_sizes=400,0", "train.folds=5",
        "train.lasso_cs=8", "train.forest_trees=100", "train.forest_folds=3",
        "train.forest_max_features=[sqrt,'0.2']", "train.dense_epochs=30",
        "train.bootstrap=1000",
    ]


def run(args: argparse.Namespace, spark: Any = None) -> int:
    from dataclasses import replace

    from featstore.extract import extract
    from featstore.ingest import ingest
    from featstore.reduce import reduce
    from featstore.report import build_report
    from featstore.sources.synthetic import generate
    from featstore.train.grid import run_grid

    out = Path(args.out).resolve()
    data_dir, store_dir, report_dir = out / "celeba", out / "store", out / "report"
    cfg = config_from_args(argparse.Namespace(config=args.config,
                                              overrides=[*demo_overrides(data_dir),
                                                         *args.overrides]),
                           store=str(store_dir))
    t0 = time.perf_counter()
    if (data_dir / "list_attr_celeba.txt").is_file():
        print(f"[synth   ] reusing {data_dir}", flush=True)
    else:
        s = generate(data_dir, args.n, seed=args.seed, labels_from=args.labels_from,
                     workers=os.cpu_count() or 1)
        _progress("synth", s.n, s.seconds)

    session = SparkProvider(args, spark)(cfg)
    t = time.perf_counter()
    ing = ingest(session, cfg.ingest, cfg.store)
    _progress("ingest", ing.ok, time.perf_counter() - t)

    print("[extract ] resnet50 at 112x96 with RANDOM weights (offline demo; use "
          "--set extract.weights=imagenet with the Keras cache for real features)", flush=True)
    ex = extract(session, cfg.extract, cfg.store)
    _progress("extract", ex.ok + ex.errors, ex.seconds)

    t = time.perf_counter()
    red = reduce(session, replace(cfg.reduce, feature_set=ex.feature_set), cfg.store)
    _progress("reduce", len(red.sets), time.perf_counter() - t, "sets")

    # the PCA dimensions only: on 2 cores, forests on the full 2,048-dim embedding would take
    # longer than the rest of the demo together
    sets = tuple(r.name for r in sorted(red.sets, key=lambda r: r.dim))
    grid = replace(cfg.train, feature_sets=sets)
    g = run_grid(session, cfg.store, grid)
    _progress("train", g.cells, g.seconds, "fits")

    t = time.perf_counter()
    rep = build_report(cfg.store, report_dir, feature_set=ex.feature_set, color_by="Smiling")
    _progress("report", 1, time.perf_counter() - t, "report")

    print()
    print(rep.markdown)
    print()
    print(f"store:  {store_dir}   (featstore ls {store_dir})")
    print(f"report: {rep.index_html}")
    print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return EXIT_OK


def main(argv: list[str] | None = None, spark: Any = None) -> int:
    from jobs.cli import main as cli_main

    return cli_main(["demo", *(sys.argv[1:] if argv is None else argv)], spark)


if __name__ == "__main__":
    sys.exit(main())

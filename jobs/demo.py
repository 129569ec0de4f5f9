"""The whole chain on built-in synthetic data: ``featstore demo [--out DIR]``.

synthetic CelebA-format set -> ingest -> for each of two conv bases (ResNet50, the default, and
the small MobileNetV2): extract -> reduce -> retrieve -> the training grid on every base's reduced
sets at the whole train split (what the summary and the base comparison read), and at the other
training size on the first base's largest set (the accuracy-against-size curve) -> report (with
its "Which conv base" section), one progress line a stage with counts and rates. It runs offline: the conv bases have *random* (seeded) weights, since no
ImageNet weights can be downloaded here -- random conv features still carry the drawn
attributes, which is what the demo shows. Point `extract.weights` at real weights for real work;
``--set compare.bases=[resnet50]`` runs one base only.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the repository, not from jobs/
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from jobs.common import EXIT_OK, SparkProvider, add_common, config_from_args

logger = logging.getLogger("featstore.demo")

DEMO_ATTRIBUTES = ("Smiling", "Male", "Eyeglasses", "Wearing_Hat", "Blond_Hair", "Attractive")
DEMO_DIMS = (8, 32, 128)
#: the conv bases: the default feature set's (resnet50, README's examples query it) and a small one
DEMO_BASES = ("resnet50", "mobilenetv2")


def add_arguments(p: argparse.ArgumentParser, name: str = "demo") -> None:
    p.add_argument("--out", default="demo", help="output folder (default ./demo)")
    p.add_argument("--n", type=int, default=3000, help="synthetic images (default 3000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--labels-from", help="real list_attr_celeba.txt to draw labels from")
    add_common(p)


def _progress(stage: str, count: int, seconds: float, what: str = "images", note: str = "") -> None:
    rate = count / seconds if seconds > 0 else float("inf")
    print(
        f"[{stage:<8}] {count:>7,} {what:<7} in {seconds:6.1f} s ({rate:8,.1f}/s)"
        + (f"  {note}" if note else ""),
        flush=True,
    )


def demo_overrides(data_dir: Path) -> list[str]:
    """The demo's settings, small enough for a 2-core machine in a few minutes."""
    return [
        "ingest.source=celeba",
        f"ingest.path={data_dir}",
        "extract.model=resnet50",
        "extract.input_size=112x96",
        "extract.weights=random",
        "extract.batch_size=32",
        f"compare.bases=[{','.join(DEMO_BASES)}]",
        "compare.retrieve_on=all",
        "retrieve.k=1,5,10",
        f"reduce.dims={','.join(str(d) for d in DEMO_DIMS)}",
        f"train.attributes={','.join(DEMO_ATTRIBUTES)}",
        "train.models=lasso,forest,dense",
        "train.train_sizes=400,0",
        "train.folds=5",
        "train.lasso_cs=8",
        "train.forest_trees=100",
        "train.forest_folds=3",
        "train.forest_max_features=[sqrt,'0.2']",
        "train.dense_epochs=30",
        "train.bootstrap=1000",
        "train.seeds=0,1,2",
    ]


def run(args: argparse.Namespace, spark: Any = None) -> int:
    from featstore.compare import check_bases
    from featstore.ingest import ingest
    from featstore.report import build_report
    from featstore.study import run_study
    from featstore.timing import Phases

    out = Path(args.out).resolve()
    data_dir, store_dir, report_dir = out / "celeba", out / "store", out / "report"
    cfg = config_from_args(
        argparse.Namespace(
            config=args.config, overrides=[*demo_overrides(data_dir), *args.overrides]
        ),
        store=str(store_dir),
    )
    bases = check_bases(cfg)  # every base's name, layers and weights, before any work
    clock = Phases()
    clock.lap("synth")
    _synth(args, data_dir)

    clock.lap("start spark")
    session = SparkProvider(args, spark)(cfg)
    clock.lap("ingest")
    ing = ingest(session, cfg.ingest, cfg.store)
    clock.lap("study")
    _progress("ingest", ing.ok, clock.seconds["ingest"])

    study = run_study(
        session,
        cfg,
        cfg.store,
        bases,
        on_progress=_progress,
        on_base=_extract_banner(cfg),
        grids=demo_grids,
    )

    clock.lap("report")
    first_set = study.runs[0].raw  # the first base's raw set
    rep = build_report(cfg.store, report_dir, feature_set=first_set, color_by="Smiling")
    clock.lap(None)
    _progress("report", 1, clock.seconds["report"], "report")

    print()
    print(rep.markdown)
    print()
    print(f"store:  {store_dir}   (featstore ls {store_dir})")
    print(f"report: {rep.index_html}")
    print(f"demo finished in {clock.total:.0f} s")
    return EXIT_OK


def _synth(args: argparse.Namespace, data_dir: Path) -> None:
    """The synthetic CelebA-format set (kept from an earlier run)."""
    from featstore.sources.synthetic import generate

    if (data_dir / "list_attr_celeba.txt").is_file():
        print(f"[synth   ] reusing {data_dir}", flush=True)
        return
    s = generate(
        data_dir,
        args.n,
        seed=args.seed,
        labels_from=args.labels_from,
        workers=os.cpu_count() or 1,
    )
    _progress("synth", s.n, s.seconds)


def _extract_banner(cfg: Any) -> Any:
    """The study's ``on_base``: the line printed before each base's extract."""
    weights = cfg.extract.weights
    how = (
        "RANDOM weights (offline demo; use --set extract.weights=imagenet with the Keras "
        "cache for real features)"
        if weights == "random"
        else f"weights {weights}"
    )

    def banner(i: int, n: int, base: str) -> None:
        print(f"[extract ] {base} at {cfg.extract.input_size} with {how}", flush=True)

    return banner


def demo_grids(cfg: Any, runs: Any) -> list[Any]:
    """The demo's grids (featstore.study ``grids``), on the PCA dimensions only: on 2 cores,
    forests on the full 2,048-dim embedding would take longer than the rest of the demo
    together.

    One grid: every base's reduced sets at the summary's training size (the whole split when
    it is in the grid), which the summary, the heatmap and the base comparison read; then the
    other sizes on the first base's largest set only, the one the accuracy-against-size curve
    shows (the report plots the set with the most training sizes). On 2 cores the fits are
    most of the demo's time. The grid runs its cells in order, two at a time: the largest
    dimension first, so the slowest fits do not come last with one core idle.
    Seeds: the summary's grid runs the first seed; the smaller training size, where training
    draws matter most, runs every seed (train.seeds), so the report shows their spread at the
    cost of 2 more small grids instead of tripling the whole demo."""
    from dataclasses import replace

    from featstore.study import StudyGrid

    sizes = tuple(cfg.train.train_sizes)
    summary_size = 0 if 0 in sizes else max(sizes)
    seeds = tuple(cfg.train.seeds)
    reduced_sets = [(r.dim, r.name) for run in runs for r in run.reduce.sets]
    order = tuple(name for _, name in sorted(reduced_sets, key=lambda d: (-d[0], d[1])))
    first_top = runs[0].reduced[-1]  # the first base's largest reduced set
    grids = []
    for feature_sets, grid_sizes, grid_seeds, what in (
        (order, (summary_size,), seeds[:1], ", ".join(run.base for run in runs)),
        ((first_top,), tuple(n for n in sizes if n != summary_size), seeds, first_top),
    ):
        if not grid_sizes:
            continue
        shown = ", ".join("all rows" if n == 0 else f"{n:,} rows" for n in grid_sizes)
        seeds_text = f", {len(grid_seeds)} seeds" if len(grid_seeds) > 1 else ""
        grid_cfg = replace(
            cfg.train, feature_sets=feature_sets, train_sizes=grid_sizes, seeds=grid_seeds
        )
        grids.append(StudyGrid(grid_cfg, f"{what} ({shown}{seeds_text})"))
    return grids


def main(argv: list[str] | None = None, spark: Any = None) -> int:
    from jobs.cli import main as cli_main

    return cli_main(["demo", *(sys.argv[1:] if argv is None else argv)], spark)


if __name__ == "__main__":
    sys.exit(main())

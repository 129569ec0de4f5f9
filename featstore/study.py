"""The study chain of ``featstore compare`` and ``featstore demo``: for each conv base, extract
(featstore.extract) -> reduce (featstore.reduce) -> retrieval (featstore.retrieval) over the
chosen sets; then the grid(s) of probes (featstore.train.grid) over the bases' sets.

Every stage is the library's own and resumes the way it always does (a committed feature set
with the same settings, a finished grid cell, a committed retrieval run are skipped), so a re-run
after a failure, or with one more base, does only what is missing.

Progress: ``on_base(i, n, base)`` is called before each base's extract and
``on_progress(stage, count, seconds, what, note)`` after each stage (extract, reduce, retrieve:
once per base; train: once per grid). Without them, each base's start and each retrieval's
summary line are logged instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from featstore import store
from featstore.config import Config, GridConfig
from featstore.reduce import ReduceSummary, plan_reduce, run_reduce
from featstore.retrieval import RetrieveSummary, plan_retrieve, run_retrieve, summary_line
from featstore.timing import Phases
from featstore.train.grid import GridSummary, plan_train, run_train

logger = logging.getLogger(__name__)

#: ``on_progress(stage, count, seconds, what, note)``: a stage done, ``count`` ``what`` in
#: ``seconds`` (e.g. ``("reduce", 3, 12.5, "sets", "resnet50")``)
OnProgress = Callable[[str, int, float, str, str], None]
#: ``on_base(i, n, base)``: base ``i`` of ``n`` starts (its extract)
OnBase = Callable[[int, int, str], None]


@dataclass(frozen=True)
class BaseRun:
    """One base's stages: its raw feature set (extract), its reduced sets and the retrieval
    runs on the chosen ones."""

    base: str
    extract: Any  # featstore.extract.ExtractSummary
    reduce: ReduceSummary
    retrievals: tuple[RetrieveSummary, ...] = ()

    @property
    def raw(self) -> str:
        return self.extract.feature_set

    @property
    def reduced(self) -> tuple[str, ...]:
        """The reduced sets' names, smallest dimension first."""
        return tuple(r.name for r in sorted(self.reduce.sets, key=lambda r: r.dim))

    @property
    def feature_sets(self) -> tuple[str, ...]:
        """The raw set, then the reduced sets."""
        return (self.raw, *self.reduced)

    def dim(self, name: str) -> int:
        """The embedding dimension of one of the base's sets."""
        return {self.raw: self.extract.dim, **{r.name: r.dim for r in self.reduce.sets}}[name]


@dataclass(frozen=True)
class StudyGrid:
    """One grid of the study: its settings and the note of its progress line."""

    cfg: GridConfig
    note: str = ""


@dataclass(frozen=True)
class StudySummary:
    store: str
    runs: tuple[BaseRun, ...]  # one per base, in the order of the bases
    grids: tuple[GridSummary, ...]
    seconds: float

    @property
    def feature_sets(self) -> dict[str, tuple[str, ...]]:
        """base -> its raw set, then its reduced sets."""
        return {b.base: b.feature_sets for b in self.runs}

    @property
    def retrieval_runs(self) -> int:
        return sum(len(b.retrievals) for b in self.runs)

    @property
    def grid_cells(self) -> int:
        return sum(g.cells for g in self.grids)


Grids = Callable[[Config, Sequence[BaseRun]], Sequence[StudyGrid]]


def study_grids(cfg: Config, runs: Sequence[BaseRun]) -> list[StudyGrid]:
    """The study's one grid (``featstore compare``): the ``train`` settings over
    ``train.feature_sets`` when given, else over every base's reduced sets."""
    probed = cfg.train.feature_sets or tuple(n for r in runs for n in r.reduced)
    note = ", ".join(r.base for r in runs)
    return [StudyGrid(replace(cfg.train, feature_sets=tuple(probed)), note)]


def retrieved_sets(cfg: Config, run: BaseRun) -> tuple[str, ...]:
    """The sets of a base that retrieval runs on (``compare.retrieve_on``)."""
    return {"raw": (run.raw,), "reduced": run.reduced, "all": run.feature_sets}[
        cfg.compare.retrieve_on
    ]


def run_study(
    spark: Any,
    cfg: Config,
    store_path: str,
    bases: Sequence[str],
    *,
    on_progress: OnProgress | None = None,
    on_base: OnBase | None = None,
    grids: Grids = study_grids,
) -> StudySummary:
    """The study (module docstring) of ``bases`` (already checked: featstore.compare.check_bases)
    with the settings of ``cfg``; ``grids`` says which grids to train once every base is done
    (default :func:`study_grids`)."""
    clock = Phases()
    with clock("study"):
        runs = []
        for i, base in enumerate(bases, 1):
            if on_base is None:
                logger.info("base %d/%d: %s", i, len(bases), base)
            else:
                on_base(i, len(bases), base)
            runs.append(_run_base(spark, cfg, store_path, base, on_progress))
        trained = tuple(_train(spark, store_path, g, on_progress) for g in grids(cfg, runs))
        root = str(store.open_store(store_path).root)
    return StudySummary(root, tuple(runs), trained, clock.total)


def _run_base(
    spark: Any, cfg: Config, store_path: str, base: str, on_progress: OnProgress | None
) -> BaseRun:
    """Extract, reduce and retrieve for one base."""
    from featstore.extract import plan_extract, run_extract

    report = on_progress or _no_progress
    ex = run_extract(spark, plan_extract(replace(cfg.extract, model=base), store_path))
    report("extract", ex.ok + ex.errors, ex.seconds, "images", base)
    clock = Phases()
    with clock("reduce"):
        red = run_reduce(
            spark, plan_reduce(replace(cfg.reduce, feature_set=ex.feature_set), store_path)
        )
    report("reduce", len(red.sets), clock.seconds["reduce"], "sets", base)
    run = BaseRun(base, ex, red)
    on = retrieved_sets(cfg, run)
    with clock("retrieve"):
        runs = tuple(_retrieve(cfg, store_path, name, on_progress is None) for name in on)
    report("retrieve", len(runs), clock.seconds["retrieve"], "runs", _retrieval_note(run, runs))
    return replace(run, retrievals=runs)


def _retrieve(cfg: Config, store_path: str, name: str, log: bool) -> RetrieveSummary:
    s = run_retrieve(None, plan_retrieve(replace(cfg.retrieve, feature_set=name), store_path))
    if log:
        logger.info("%s", summary_line(s))
    return s


def _retrieval_note(run: BaseRun, runs: tuple[RetrieveSummary, ...]) -> str:
    """``base; top-5 precision of the 2048-d set: mean 0.712, exact-match 0.101``: the first
    run's (the raw set's, or the smallest reduced one's) top-5 precisions."""
    if not runs:
        return run.base
    first = runs[0]
    scores = ", ".join(
        f"{k.replace(' top-5 precision', '')} {v:.3f}"
        for k, v in first.headline.items()
        if k.endswith("top-5 precision")
    )
    if not scores:
        return run.base
    return f"{run.base}; top-5 precision of the {run.dim(first.feature_set)}-d set: {scores}"


def _train(
    spark: Any, store_path: str, grid: StudyGrid, on_progress: OnProgress | None
) -> GridSummary:
    g = run_train(spark, plan_train(grid.cfg, store_path))
    (on_progress or _no_progress)("train", g.cells, g.seconds, "fits", grid.note)
    return g


def _no_progress(stage: str, count: int, seconds: float, what: str, note: str) -> None:
    """The default ``on_progress``: nothing (the stages log their own lines)."""

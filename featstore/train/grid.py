"""The training grid: attributes x feature sets x models x training sizes x seeds, on Spark.

One Spark task per fit (a *cell*). Each task reads its data from the store (pyarrow, cached per
Python worker), fits, evaluates on the test split, and writes its result row straight to
``_featstore/cells/<key>.parquet`` (temp file + rename), so results stream to the store as fits
finish and an interrupted grid resumes where it stopped: a re-run skips cells whose rows are all
``ok`` and fits again those that ended in an error. At the end the driver merges the cells into
the ``results`` table and commits it through :class:`featstore.store.TableWriter`.

Problems of one cell (a single-class training sample, a training size larger than the split)
give a row with ``status = "error"`` and the reason; the rest of the grid
runs.

With ``save_models`` on, each ok fit's estimator is saved too, under
``models/<key>/<attribute>.joblib`` (a multilabel cell: ``_multilabel.joblib``), by the
task that fitted it and before the cell's row (whose ``model_path`` names the file); a finished
cell whose model files are missing is run again. See :mod:`featstore.train.saved`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from featstore import fsio, store
from featstore.config import FOREST_SELECTIONS, TARGETS, GridConfig
from featstore.errors import ConfigError
from featstore.progress import Progress, spark_feed
from featstore.timing import Phases
from featstore.train.cells import (
    ALL_ATTRIBUTES,
    CLASS_TARGET,
    DATA_SETTINGS,
    DENSE_SETTINGS,
    FOREST_CV_SETTINGS,
    FOREST_SETTINGS,
    GRID_AXES,
    LASSO_SETTINGS,
    RESULTS_SCHEMA,
    Cell,
    cell_settings,
    parse_model,
    run_cell,
)

# the grid's public names, with those defined in featstore.config and featstore.train.cells
__all__ = [
    "ALL_ATTRIBUTES",
    "CLASS_MODELS",
    "CLASS_TARGET",
    "DATA_SETTINGS",
    "DENSE_SETTINGS",
    "FOREST_CV_SETTINGS",
    "FOREST_SELECTIONS",
    "FOREST_SETTINGS",
    "GRID_AXES",
    "LASSO_SETTINGS",
    "RESULTS_SCHEMA",
    "TARGETS",
    "Cell",
    "GridConfig",
    "GridPlan",
    "GridSummary",
    "cell_settings",
    "parse_model",
    "plan",
    "plan_run",
    "plan_train",
    "read_results",
    "run_cell",
    "run_grid",
    "run_train",
]

logger = logging.getLogger(__name__)

CLASS_MODELS = ("lasso", "forest", "dense")  # featstore.train.multiclass.MODELS

read_results = store.read_results


def plan(path: str | os.PathLike[str], cfg: GridConfig) -> list[Cell]:
    """Every cell of the grid, in a stable order. Raises ConfigError for a bad grid."""
    if not cfg.feature_sets:
        raise ConfigError(
            "train needs at least one feature set (--feature-sets A,B or "
            "train.feature_sets in the config)"
        )
    for m in cfg.models:
        parse_model(m)
    layout = store.open_store(path)
    labels = store.require_committed(layout, "labels")
    known = list(labels["attributes"])
    contents = {}
    for fs in cfg.feature_sets:  # every named set committed, before Spark starts
        contents[fs] = store.fs_fingerprint(  # a verified read of every input
            store.check_feature_set(layout.root, fs, checksums=True)
        )
    if cfg.target == CLASS_TARGET:
        _check_class_target(path, cfg)
    attributes = [CLASS_TARGET] if cfg.target == CLASS_TARGET else list(cfg.attributes) or known
    for a in attributes if cfg.target != CLASS_TARGET else ():
        if a not in known:
            raise ConfigError(
                f"unknown attribute {a!r}; the labels table has {', '.join(known[:6])}, ..."
            )
    if cfg.custom_split and (
        len(cfg.custom_split) != 3 or not cfg.first_n or sum(cfg.custom_split) > cfg.first_n
    ):
        raise ConfigError(
            "custom_split needs first_n and 3 counts (train, val, test) whose sum "
            "is at most first_n"
        )
    cells = []
    for fs in cfg.feature_sets:
        for size in cfg.train_sizes:
            for seed in cfg.seeds:
                for model in cfg.models:
                    if model == "multilabel":
                        cells.append(
                            Cell(ALL_ATTRIBUTES, fs, model, int(size), int(seed), contents[fs])
                        )
                        continue
                    for a in attributes:
                        cells.append(Cell(a, fs, model, int(size), int(seed), contents[fs]))
    return cells


def _check_class_target(path: str | os.PathLike[str], cfg: GridConfig) -> None:
    bad = [m for m in cfg.models if m not in CLASS_MODELS]
    if bad:
        raise ConfigError(
            f"train.target: class fits the multi-class probes "
            f"{', '.join(CLASS_MODELS)}; not {', '.join(bad)}"
        )
    classes = store.read_classes(path)
    if classes is None:
        raise ConfigError(
            "train.target: class needs a labels table with a class column (a "
            "class-per-folder set: featstore ingest --source folder)"
        )
    if not 2 <= len(set(classes.values())) <= 127:  # y_true / y_pred are int8 class indices
        raise ConfigError(
            f"train.target: class needs 2 to 127 classes; the labels table has "
            f"{len(set(classes.values()))}"
        )


# ------------------------------------------------------------------ the plan (no Spark)


@dataclass(frozen=True)
class GridPlan:
    """What :func:`run_train` would do now (``featstore train --dry-run``): every cell, and which
    of them it would fit (``todo``) and skip as already done (``done``). :func:`run_train` reads
    the resume state again under the results table's lock; this one is a preview."""

    cells: list[Cell]
    todo: list[Cell]
    done: list[Cell]
    retried: int  # of todo: cells that ended in an error and run again
    lacking_models: int  # of todo: finished cells whose saved models are missing
    cfg: GridConfig
    layout: store.Layout
    seconds: float  # spent planning (the verified reads of the inputs)


def plan_train(cfg: GridConfig, store_path: str | os.PathLike[str]) -> GridPlan:
    """:func:`plan` plus the resume state in the store, as :func:`run_train` would see it now;
    no Spark, nothing written, no lock taken."""
    clock = Phases()
    with clock("plan"):
        layout = store.open_store(store_path)
        cells = plan(store_path, cfg)
        if cfg.overwrite:  # a fresh cells folder: every fit runs
            done, lacking, retried = set(), 0, 0
        else:
            done, lacking, retried = _resume_state(layout.root, cells, cfg, layout.cells)
    return GridPlan(
        cells,
        [c for c in cells if c.key(cfg) not in done],
        [c for c in cells if c.key(cfg) in done],
        retried,
        lacking,
        cfg,
        layout,
        clock.seconds["plan"],
    )


def plan_run(path: str | os.PathLike[str], cfg: GridConfig) -> GridPlan:
    """:func:`plan_train` with the arguments in the order of :func:`plan`."""
    return plan_train(cfg, path)


def _resume_state(
    root: Path, cells: list[Cell], cfg: GridConfig, cells_dir: Path
) -> tuple[set[str], int, int]:
    """(keys of the cells already done, how many finished cells lack their saved models and run
    again, how many cells that ended in an error run again): the resume state of
    :func:`run_train` and :func:`plan_train`."""
    keys = {c.key(cfg) for c in cells}
    done = {k for k in keys if _cell_ok(cells_dir / f"{k}.parquet")}
    lacking: set[str] = set()
    if cfg.save_models:  # a finished cell whose model files are missing runs again
        from featstore.train.saved import cell_lacks_models

        lacking = {k for k in done if cell_lacks_models(root, cells_dir / f"{k}.parquet")}
        done -= lacking
    retried = sum(1 for k in keys - done - lacking if (cells_dir / f"{k}.parquet").is_file())
    return done, len(lacking), retried


# ------------------------------------------------------------------ the Spark side


def _write_cell(cells_dir: Path, key: str, rows: list[dict[str, Any]]) -> None:
    table = pa.Table.from_pylist(rows, schema=RESULTS_SCHEMA)
    with fsio.atomic_path(cells_dir / f"{key}.parquet") as tmp:
        pq.write_table(table, tmp)


def _task(path: str, cfg: GridConfig, cells_dir: str, cpu_threads: int) -> Any:
    """The grid's task: fit each cell, write its file. Yields per cell (key, model, attribute,
    status, seconds, seconds per phase)."""

    def run(items: Iterator[Cell]) -> Iterator[tuple[str, str, str, str, float, dict[str, float]]]:
        if cpu_threads > 0:
            for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "OPENBLAS_NUM_THREADS"):
                os.environ.setdefault(var, str(cpu_threads))
            os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
        for cell in items:
            phases = Phases()
            rows = run_cell(path, cell, cfg, phases)
            with phases("write"):
                _write_cell(Path(cells_dir), cell.key(cfg), rows)
            yield (
                cell.key(cfg),
                cell.model,
                cell.attribute,
                rows[0]["status"],
                phases.total,
                phases.seconds,
            )

    return run


@dataclass(frozen=True)
class GridSummary:
    store: str
    cells: int
    ran: int
    resumed: int
    ok_rows: int
    error_rows: int
    seconds: float
    timing: Phases | None = None  # the driver's: plan, fits, merge and commit
    fit_timing: Phases | None = None  # the fits' own, summed over the tasks

    @property
    def ran_plus_resumed(self) -> int:
        return self.ran + self.resumed

    def timing_line(self) -> str:
        """``train time: plan 0.1 s (0%), fits 30.2 s (97%), ...; fits: read features 5%,
        fit 80%, ... of 58.3 task-s in 40 fits``."""
        line = self.timing.line("train") if self.timing is not None else "train time: -"
        if self.fit_timing is not None and self.fit_timing.total > 0:
            line += (
                f"; fits: {self.fit_timing.shares()} of {self.fit_timing.total:.1f} task-s "
                f"in {self.ran} fits"
            )
        return line


def run_train(spark: Any, plan: GridPlan, *, parallel: bool = True) -> GridSummary:
    """Run the grid of ``plan`` (one Spark task per cell; ``parallel=False`` runs the same cells
    in this process, one after another — the baseline of the speed-up benchmark).

    Resume: a cell whose file holds an ``ok`` row is kept; a cell that ended in an error is
    fitted again (its cause may be gone). ``overwrite`` fits every cell into a fresh cells
    folder that replaces the old one only when the new results table commits, so the old
    results stay readable and complete until then. The results table is written through the
    store's one writer, which also locks it against a second train."""
    phases, fit_phases = Phases(), Phases()
    phases.add({"plan": plan.seconds})
    phases.lap("plan")
    layout = plan.layout
    with store.TableWriter(layout, "results", spark=spark) as w:
        cells_dir = w.staging / "cells" if plan.cfg.overwrite else layout.cells
        cells_dir.mkdir(parents=True, exist_ok=True)
        todo = _cells_to_fit(layout.root, plan.cells, plan.cfg, cells_dir)
        if todo:
            phases.lap("fits")
            _fit_cells(
                spark, str(layout.root), plan.cfg, str(cells_dir), todo, fit_phases, parallel
            )
        phases.lap("merge and commit")
        ok, rows = _commit_results(w, plan, cells_dir, len(todo), phases, fit_phases)
    phases.lap(None)
    cells = len(plan.cells)
    return GridSummary(
        str(layout.root),
        cells,
        len(todo),
        cells - len(todo),
        ok,
        rows - ok,
        phases.total,
        phases,
        fit_phases,
    )


def run_grid(spark: Any, path: str, cfg: GridConfig, *, parallel: bool = True) -> GridSummary:
    """:func:`run_train` of :func:`plan_train` (the grid of ``cfg`` in the store ``path``)."""
    return run_train(spark, plan_train(cfg, path), parallel=parallel)


def _cells_to_fit(root: Path, cells: list[Cell], cfg: GridConfig, cells_dir: Path) -> list[Cell]:
    """The cells to fit now, the resume state read under the results table's lock (logged)."""
    done, lacking, retried = _resume_state(root, cells, cfg, cells_dir)
    if lacking:
        logger.info("%d finished fits have no saved model: running them again", lacking)
    todo = [c for c in cells if c.key(cfg) not in done]
    resumed = len(cells) - len(todo)
    if resumed:
        logger.info("%d of %d fits already in the results table (resumed)", resumed, len(cells))
    if retried:
        logger.info("%d fits that ended in an error run again", retried)
    return todo


def _fit_cells(
    spark: Any,
    root: str,
    cfg: GridConfig,
    cells_dir: str,
    todo: list[Cell],
    fit_phases: Phases,
    parallel: bool,
) -> None:
    """Fit ``todo``, one Spark task per cell (or here, one after another); each task writes its
    cell's file. The fits' own seconds per phase go to ``fit_phases``."""
    logger.info("running %d fits", len(todo))
    if parallel:
        cpu_threads = int(spark.conf.get("spark.task.cpus", "1")) if spark else 1
        fn = _task(root, cfg, cells_dir, cpu_threads)
        rdd = spark.sparkContext.parallelize(todo, len(todo))
        # one task per fit: the status tracker's finished tasks are the fits done
        with Progress("train", len(todo), "fits") as bar, spark_feed(spark, bar):
            spark.sparkContext.setJobDescription(f"featstore train: {len(todo)} fits")
            done_fits = rdd.mapPartitions(fn).collect()
    else:
        fn = _task(root, cfg, cells_dir, 0)
        done_fits = list(fn(iter(todo)))
    for key, model, attribute, status, secs, seconds in done_fits:
        logger.debug("fit %s %s %s: %s in %.1f s", key, model, attribute, status, secs)
        fit_phases.add(seconds)


def _commit_results(
    w: store.TableWriter,
    plan: GridPlan,
    cells_dir: Path,
    ran: int,
    phases: Phases,
    fit_phases: Phases,
) -> tuple[int, int]:
    """Merge the cells into the results table and commit it: ``(ok rows, rows)``."""
    cfg, cells = plan.cfg, plan.cells
    merged = _merge_cells(cells_dir)
    ok = int(sum(1 for s in merged["status"].to_pylist() if s == "ok"))
    pq.write_table(merged, w.data / "part-00000.parquet")
    phases.lap("merge and commit")  # books the time so far: the manifest's seconds
    w.commit(
        store.base_manifest(
            "results",
            counts={"ok": ok, "errors": merged.num_rows - ok, "rows": merged.num_rows},
            feature_sets={c.feature_set: c.feature_set_content for c in cells},
            last_grid={
                "cells": len(cells),
                "ran": ran,
                "resumed": len(cells) - ran,
                **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
            },
            seconds=round(phases.total, 2),
            timing={"driver": phases.as_dict(), "fits": fit_phases.as_dict()},
        ),
        has_errors=False,
        extra_moves=[(cells_dir, plan.layout.cells)] if cfg.overwrite else (),
    )
    return ok, merged.num_rows


def _cell_ok(cell_file: Path) -> bool:
    """True when a finished cell's file exists and holds an ``ok`` row: a cell that ended in an
    error is fitted again. (A multilabel cell's rows are ok except for attributes with one class
    only, which its next fit on the same data would give again.)"""
    if not cell_file.is_file():
        return False
    try:
        status = pq.read_table(cell_file, columns=["status"])["status"].to_pylist()
    except Exception:  # a damaged cell file: fit the cell again
        return False
    return any(s == "ok" for s in status)


def _merge_cells(cells_dir: Path) -> pa.Table:
    """Every fit ever run in this store, one row per (attribute, feature set, model, training
    size, seed): when a cell was re-run with other settings, the newest row wins."""
    files = sorted(cells_dir.glob("*.parquet"))
    if not files:
        return RESULTS_SCHEMA.empty_table()
    table = pa.concat_tables([pq.read_table(f, schema=RESULTS_SCHEMA) for f in files])
    keys = ["attribute", "feature_set", "model", "train_size", "seed"]
    cols = {k: table[k].to_pylist() for k in [*keys, "created"]}
    newest: dict[tuple[Any, ...], int] = {}
    for i in range(table.num_rows):
        k = tuple(cols[c][i] for c in keys)
        if k not in newest or cols["created"][i] >= cols["created"][newest[k]]:
            newest[k] = i
    keep = sorted(newest.values(), key=lambda i: tuple(str(cols[c][i]) for c in keys))
    return table.take(pa.array(keep, type=pa.int64()))

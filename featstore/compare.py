"""Which conv base? The base-comparison study (``featstore compare``, conf/compare_bases.yaml).

For each base of ``compare.bases``: extract (featstore.extract) -> reduce (featstore.reduce) ->
retrieval (featstore.retrieval); then one grid of probes (featstore.train.grid) over every base's
reduced sets. Every stage is the library's own and resumes the way it always does (a committed
feature set with the same settings, a finished grid cell, a committed retrieval run are
skipped), so a re-run after a failure, or with one more base, does only what is missing.

:func:`featstore.comparison.base_table` reads the outcome back from the store: one row per base
with its cost (parameters and FLOPs per image from the extract manifest, measured extraction
images/s) and its scores (mean probe accuracy and balanced accuracy over attributes, retrieval
top-5); :func:`featstore.comparison.pareto_front` marks the bases no other base beats on both cost
and score (both re-exported here). The report's "Which conv base" section (featstore/report/)
plots them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from featstore import store
from featstore.comparison import (  # noqa: F401  (the study read back: re-exported)
    RETRIEVAL_K,
    RETRIEVAL_TARGET,
    base_of,
    base_table,
    pareto_front,
    retrieval_chance,
    topk_chance,
)
from featstore.errors import ConfigError

logger = logging.getLogger(__name__)

RETRIEVE_ON = ("raw", "reduced", "all")


def check_bases(cfg: Any) -> tuple[str, ...]:
    """The study's bases, checked without Spark or Keras (names, input size, weights, layers:
    :func:`featstore.embed.check_config`). Raises one ConfigError line."""
    from featstore.embed import check_config
    from featstore.extract import embed_config

    bases = tuple(b.strip().lower() for b in cfg.compare.bases if b.strip())
    if not bases:
        raise ConfigError(
            "compare.bases is empty: name the conv bases to compare, e.g. "
            "--bases vgg16,resnet50 (see conf/compare_bases.yaml)"
        )
    if len(set(bases)) != len(bases):
        raise ConfigError(f"compare.bases names a base twice: {', '.join(bases)}")
    if cfg.compare.retrieve_on not in RETRIEVE_ON:
        raise ConfigError(
            f"compare.retrieve_on must be one of {', '.join(RETRIEVE_ON)}, got "
            f"{cfg.compare.retrieve_on!r}"
        )
    if cfg.extract.feature_set:
        raise ConfigError(
            "extract.feature_set must be empty for a study: each base's set is "
            "named after its settings"
        )
    for b in bases:
        check_config(embed_config(replace(cfg.extract, model=b)))
    return bases


def plan_compare(cfg: Any, store_path: str) -> tuple[str, ...]:
    """:func:`check_bases`, then each base's extract preflight against the store (a committed
    images table): everything checked before Spark starts. Returns the bases."""
    from featstore.extract import preflight

    bases = check_bases(cfg)
    for b in bases:
        preflight(replace(cfg.extract, model=b), store_path)
    return bases


@dataclass(frozen=True)
class CompareSummary:
    store: str
    bases: tuple[str, ...]
    feature_sets: dict[str, tuple[str, ...]]  # base -> its raw set, then its reduced sets
    grid_cells: int
    retrieval_runs: int
    seconds: float


def run_compare(spark: Any, cfg: Any, store_path: str) -> CompareSummary:
    """The study (module docstring) with the settings of ``cfg`` (a featstore.config.Config).
    Every base is checked first (:func:`check_bases` and each extract's preflight), so a bad
    name or a store without images fails before any Spark work."""
    from featstore.extract import extract
    from featstore.reduce import reduce
    from featstore.retrieval import plan_retrieve, retrieve, summary_line
    from featstore.train.grid import run_grid

    t0 = time.perf_counter()
    bases = plan_compare(cfg, store_path)
    sets: dict[str, tuple[str, ...]] = {}
    runs = 0
    for i, b in enumerate(bases, 1):
        logger.info("base %d/%d: %s", i, len(bases), b)
        ex = extract(spark, replace(cfg.extract, model=b), store_path)
        red = reduce(spark, replace(cfg.reduce, feature_set=ex.feature_set), store_path)
        reduced = tuple(r.name for r in sorted(red.sets, key=lambda r: r.dim))
        sets[b] = (ex.feature_set, *reduced)
        on = {"raw": (ex.feature_set,), "reduced": reduced, "all": sets[b]}[cfg.compare.retrieve_on]
        for name in on:
            s = retrieve(plan_retrieve(replace(cfg.retrieve, feature_set=name), store_path))
            logger.info("%s", summary_line(s))
            runs += 1
    probed = cfg.train.feature_sets or tuple(n for b in bases for n in sets[b][1:])
    g = run_grid(spark, store_path, replace(cfg.train, feature_sets=tuple(probed)))
    return CompareSummary(
        str(store.open_store(store_path).root), bases, sets, g.cells, runs, time.perf_counter() - t0
    )

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
from dataclasses import dataclass, replace
from typing import Any

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
    from featstore.study import run_study

    bases = plan_compare(cfg, store_path)
    s = run_study(spark, cfg, store_path, bases)
    return CompareSummary(s.store, bases, s.feature_sets, s.grid_cells, s.retrieval_runs, s.seconds)

"""Retrieval evaluation of a feature set: for each query image (default: the test split), its
``k`` nearest item images (default: the train split) by embedding distance, scored on the labels.

``features/feature_set=<set>/`` + ``labels/`` -> ``retrieval/feature_set=<set>/part-00000.parquet``
(:data:`featstore.store.RETRIEVAL_SCHEMA`), written through :class:`featstore.store.TableWriter`
(table id ``retrieval/<set>``). The table keeps one group of rows per setting (queries, items,
metric): a run replaces the rows of its own setting and keeps the others, as long as they were
computed from the same committed feature set and labels (the manifest's ``runs``); rows of a set
since rebuilt are dropped. A run whose setting, k, attributes, feature-set content
(:func:`featstore.store.fs_fingerprint`) and labels content are already committed does nothing.

No Spark: the search is exact, on the driver, with faiss (``IndexFlatIP`` on L2-normalised vectors
for cosine, ``IndexFlatL2`` for l2) or with blocked numpy matrix products; queries are searched
``query_block`` at a time, so memory is the item matrix plus one block's results (the full CelebA
split sizes, 19,962 x 162,770 at dim 512, take ~1 GiB; see bench/bench_retrieval.py).

Definitions (query ``q``, its ``k`` nearest items ``n_1..n_k`` nearest first, the query itself
excluded when queries and items are the same split; ``y_q[a]`` a 0/1 label; ``N`` items):

* per attribute ``a`` (target ``attribute``): ``n_j`` is relevant when ``y_nj[a] == y_q[a]``.
  top-k accuracy = mean over queries of [at least one of the k is relevant]; top-k precision =
  mean over queries of (relevant among the k) / k; AP@k(q) = sum_j P@j(q) rel_j(q) / min(k, R_q)
  with ``R_q`` the relevant items among all ``N``; mAP@k = mean of AP@k over the queries with
  ``R_q > 0`` (``n_relevant_queries``). chance_precision = mean over queries of ``R_q / N``: the
  top-k precision of k items drawn at random.
* ``mean``: the unweighted mean of the attribute rows' values.
* ``exact`` (multi-label, modified): relevant when the whole label vector over the run's
  attributes equals the query's; the same three metrics and chance.
* ``jaccard`` (multi-label, modified, graded): rel_j = |P_q & P_nj| / |P_q | P_nj| with ``P`` the
  set of positive attributes (1 when both are empty); top-k accuracy = mean over queries of
  max_j rel_j, top-k precision = mean of the mean rel_j; no mAP or chance (null).
* ``class`` (a class-per-folder source, labels one-hot): relevant when ``n_j`` has the query's
  class; attribute ``*``: all queries; attribute ``<class>``: the queries of that class.

Ties in distance are broken by the library (faiss, numpy: the item first in image_id order).
A zero vector has cosine similarity 0 to everything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from featstore import store
from featstore.config import RetrieveConfig
from featstore.errors import ConfigError, StoreError
from featstore.store import read_retrieval  # noqa: F401  (the table this stage writes, read back)
from featstore.timing import Phases

logger = logging.getLogger(__name__)

METRICS = ("cosine", "l2")
BACKENDS = ("faiss", "numpy")
ALL = "*"
TARGET_ATTRIBUTE, TARGET_MEAN, TARGET_EXACT, TARGET_JACCARD, TARGET_CLASS = (
    "attribute",
    "mean",
    "exact",
    "jaccard",
    "class",
)
TABLE = "retrieval"
DEFINITIONS_VERSION = 1  # bump when a metric's definition changes: committed runs re-run
CLASS_SOURCES = ("folder",)  # labels manifests whose attributes are one-hot classes
NUMPY_BLOCK_BYTES = 512 << 20  # numpy backend: one block's scores + argpartition stay below


def table_id(name: str) -> str:
    return f"{TABLE}/{store.check_name(name)}"


@dataclass(frozen=True)
class RetrievePlan:
    """What a retrieve run will do, found from manifests alone (no data read)."""

    layout: store.Layout
    feature_set: str
    manifest: store.Manifest
    dim: int
    queries: str
    items: str
    metric: str
    ks: tuple[int, ...]
    attributes: tuple[str, ...]
    single_label: bool  # class-per-folder source: one class per image
    classes: tuple[str, ...]  # single_label: the classes given a row of their own
    n_queries: int
    n_items: int
    content: str  # store.fs_fingerprint of the feature set
    labels_content: str
    run_key: str
    backend: str
    query_block: int
    done: bool  # this exact run is committed: nothing to do

    @property
    def same_split(self) -> bool:
        return self.queries == self.items

    @property
    def setting(self) -> tuple[str, str, str]:
        return self.queries, self.items, self.metric


@dataclass(frozen=True)
class RetrieveSummary:
    store: str
    feature_set: str
    queries: str
    items: str
    metric: str
    ks: tuple[int, ...]
    n_queries: int
    n_items: int
    rows: int
    seconds: float
    search_seconds: float
    headline: dict[str, float]  # e.g. {"mean top-5 accuracy": 0.93, ...}
    skipped: bool = False
    path: str = ""
    timing: Phases | None = None


# ---------------------------------------------------------------- plan (validation, no data)


def _parse_ks(ks: tuple[int, ...]) -> tuple[int, ...]:
    if not ks:
        raise ConfigError("retrieve.k is empty: give neighbour counts, e.g. --k 1,5,10")
    for k in ks:
        if k < 1:
            raise ConfigError(f"retrieve k {k} is < 1")
    return tuple(sorted(set(ks)))


def _check_settings(cfg: RetrieveConfig) -> tuple[int, ...]:
    """The metric, backend and query block of ``cfg`` checked; its neighbour counts, sorted."""
    if cfg.metric not in METRICS:
        raise ConfigError(f"retrieve metric {cfg.metric!r}: expected one of {', '.join(METRICS)}")
    if cfg.backend not in BACKENDS:
        raise ConfigError(
            f"retrieve backend {cfg.backend!r}: expected one of {', '.join(BACKENDS)}"
        )
    if cfg.query_block < 1:
        raise ConfigError(f"retrieve query_block {cfg.query_block} is < 1")
    return _parse_ks(cfg.k)


def _check_splits(name: str, splits: dict[str, int], cfg: RetrieveConfig) -> None:
    """The query and item splits hold rows."""
    for role, split in (("queries", cfg.queries), ("items", cfg.items)):
        if not splits.get(split):
            raise ConfigError(
                f"retrieve {role} split {split!r}: feature set {name!r} has no "
                f"rows in it (it has {', '.join(sorted(splits)) or 'none'})"
            )


def _check_k(splits: dict[str, int], cfg: RetrieveConfig, k: int) -> None:
    """At least ``k`` items, other than the query when queries and items are one split."""
    n_items = splits[cfg.items] - (1 if cfg.queries == cfg.items else 0)
    if k > n_items:
        raise ConfigError(
            f"retrieve k {k} is larger than the {n_items:,} items of split "
            f"{cfg.items!r}" + (" other than the query" if cfg.queries == cfg.items else "")
        )


def _label_targets(
    labels: dict[str, Any], cfg: RetrieveConfig
) -> tuple[tuple[str, ...], bool, tuple[str, ...]]:
    """``(attributes read, single_label, classes given a row of their own)`` of the labels
    table's manifest ``labels`` and the attributes ``cfg`` asks for (default: all)."""
    known = list(labels["attributes"])
    attributes = tuple(cfg.attributes) or tuple(known)
    for a in attributes:
        if a not in known:
            raise ConfigError(
                f"unknown attribute {a!r}; the labels table has {len(known)}: "
                f"{', '.join(known[:8])}{', ...' if len(known) > 8 else ''}"
            )
    if len(set(attributes)) != len(attributes):
        raise ConfigError("retrieve attributes: each attribute once")
    single = labels.get("source") in CLASS_SOURCES
    classes: tuple[str, ...] = ()
    if single:  # every class is read (a query's class is its one true column); rows: selected
        classes, attributes = attributes, tuple(known)
    return attributes, single, classes


def plan_retrieve(cfg: RetrieveConfig, store_path: str) -> RetrievePlan:
    """Validate the input and decide whether there is work. Raises ConfigError / StoreError (one
    line each) for: no store folder, a bad or unknown feature set, a split the set lacks, a
    metric or backend not known, k < 1 or more than the items available, unknown attributes."""
    layout = store.open_store(store_path)
    if not cfg.feature_set:
        raise ConfigError("retrieve needs a feature set (--feature-set NAME)")
    name = store.check_name(cfg.feature_set)
    ks = _check_settings(cfg)
    manifest = store.check_feature_set(layout.root, name, checksums=True)  # a verified read
    try:
        dim = int(manifest["dim"])
    except (KeyError, TypeError, ValueError):
        raise StoreError(f"{layout.manifest_path(store.features_id(name))}: no dim") from None
    splits = store.rows_per_split(manifest["files"])
    _check_splits(name, splits, cfg)
    labels = store.require_committed(layout, "labels")
    attributes, single, classes = _label_targets(labels, cfg)
    _check_k(splits, cfg, ks[-1])
    content = store.fs_fingerprint(manifest)
    labels_content = store.fs_fingerprint(labels)
    run_key = store.fingerprint(
        [
            TABLE,
            str(DEFINITIONS_VERSION),
            name,
            content,
            labels_content,
            cfg.queries,
            cfg.items,
            cfg.metric,
            ",".join(map(str, ks)),
            ",".join(attributes),
            ",".join(classes),
            str(single),
        ]
    )
    existing = store.existing_output(layout, table_id(name), overwrite=cfg.overwrite)
    done = (
        not cfg.overwrite
        and existing is not None
        and any(r.get("run_key") == run_key for r in existing.get("runs", []))
    )
    return RetrievePlan(
        layout,
        name,
        manifest,
        dim,
        cfg.queries,
        cfg.items,
        cfg.metric,
        ks,
        attributes,
        single,
        classes,
        splits[cfg.queries],
        splits[cfg.items],
        content,
        labels_content,
        run_key,
        cfg.backend,
        cfg.query_block,
        done,
    )


# ---------------------------------------------------------------- search


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32; a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.float32(1e-12))


def _numpy_block(
    q: np.ndarray, items: np.ndarray, item_sq: np.ndarray | None, kk: int
) -> np.ndarray:
    scores = q @ items.T  # (block, N) float32; larger is nearer
    if item_sq is not None:  # l2: ||q - x||^2 = ||q||^2 - 2 q.x + ||x||^2, ||q||^2 constant per row
        scores *= 2.0
        scores -= item_sq[None, :]
    n = scores.shape[1]
    if kk < n:  # the kk largest scores, unordered (no negated copy of the block)
        part = np.argpartition(scores, n - kk, axis=1)[:, n - kk :]
    else:
        part = np.broadcast_to(np.arange(n), (scores.shape[0], n)).copy()
    top = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -top), axis=1)  # nearest first; ties: lower item index first
    return np.take_along_axis(part, order, axis=1)


def search(
    queries: np.ndarray,
    items: np.ndarray,
    k: int,
    *,
    metric: str = "cosine",
    backend: str = "faiss",
    query_block: int = 4096,
    exclude_self: bool = False,
) -> np.ndarray:
    """Indices ``(n_queries, k)`` into ``items`` of each query's ``k`` nearest items, nearest
    first (exact search). ``exclude_self``: queries and items are the same rows, and query ``i``
    never returns item ``i``."""
    if metric not in METRICS:
        raise ConfigError(f"metric {metric!r}: expected one of {', '.join(METRICS)}")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    items = np.ascontiguousarray(items, dtype=np.float32)
    if metric == "cosine":
        queries, items = normalize(queries), normalize(items)
    kk = k + 1 if exclude_self else k
    n_q, n_i = queries.shape[0], items.shape[0]
    if kk > n_i:
        raise ConfigError(f"k {k} is larger than the {n_i - int(exclude_self)} items")
    out = np.empty((n_q, kk), dtype=np.int64)
    if backend == "faiss":
        loader = logging.getLogger("faiss.loader")  # which SIMD build it loads: not news
        if loader.level == logging.NOTSET and not logger.isEnabledFor(logging.DEBUG):
            loader.setLevel(logging.WARNING)
        import faiss

        index = (faiss.IndexFlatIP if metric == "cosine" else faiss.IndexFlatL2)(items.shape[1])
        index.add(items)
        block = query_block
        for s in range(0, n_q, block):
            _, idx = index.search(queries[s : s + block], kk)
            out[s : s + block] = idx
            logger.debug("searched %d/%d queries", min(s + block, n_q), n_q)
        del index
    elif backend == "numpy":
        item_sq = np.einsum("ij,ij->i", items, items) if metric == "l2" else None
        # one block's float32 scores plus argpartition's int64 indices under NUMPY_BLOCK_BYTES
        block = max(1, min(query_block, NUMPY_BLOCK_BYTES // max(1, n_i * 12)))
        for s in range(0, n_q, block):
            out[s : s + block] = _numpy_block(queries[s : s + block], items, item_sq, kk)
    else:
        raise ConfigError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if (out < 0).any():
        raise StoreError("the search returned fewer neighbours than asked (non-finite vectors?)")
    if not exclude_self:
        return out
    mine = out == np.arange(n_q)[:, None]
    keep = ~mine
    keep[~mine.any(axis=1), -1] = False  # self not among the kk: drop the farthest instead
    return out[keep].reshape(n_q, k)


# ---------------------------------------------------------------- metrics


def _relevance_scores(rel: np.ndarray, k: int, r: np.ndarray | None) -> dict[str, Any]:
    """Top-k accuracy, precision, mAP@k of a binary relevance matrix ``rel`` (n, >=k) and the
    relevant counts ``r`` (n,) among all items."""
    rel = rel[:, :k].astype(np.float64)
    out: dict[str, Any] = {
        "n_queries": int(rel.shape[0]),
        "top_k_accuracy": float(rel.max(axis=1).mean()) if rel.size else None,
        "top_k_precision": float(rel.mean()) if rel.size else None,
        "map_at_k": None,
        "n_relevant_queries": None,
    }
    if r is not None:
        has = r > 0
        out["n_relevant_queries"] = int(has.sum())
        if has.any():
            prec_at = np.cumsum(rel, axis=1) / np.arange(1, k + 1)
            ap = (prec_at * rel).sum(axis=1)[has] / np.minimum(k, r[has])
            out["map_at_k"] = float(ap.mean())
    return out


def _keys(labels: np.ndarray) -> np.ndarray:
    """One integer per distinct label row (for exact matching)."""
    packed = np.packbits(labels.astype(bool), axis=1)
    _, inverse = np.unique(packed, axis=0, return_inverse=True)
    return inverse.reshape(-1)


def evaluate(
    neighbours: np.ndarray,
    y_queries: np.ndarray,
    y_items: np.ndarray,
    ks: tuple[int, ...],
    attributes: tuple[str, ...],
    *,
    single_label: bool = False,
    same_split: bool = False,
    classes: tuple[str, ...] | None = None,
) -> list[dict[str, Any]]:
    """The metric rows (see the module docstring) of a search result: ``neighbours``
    (n_queries, >= max k) indices into the items; ``y_*`` boolean label matrices (rows, attrs).
    ``same_split``: the queries are the items, so a query's own label is not among its
    relevant items ``R_q``. ``single_label``: ``attributes`` are the one-hot classes, and
    ``classes`` (default: all) those given a row of their own."""
    y_q = np.asarray(y_queries, dtype=bool)
    y_i = np.asarray(y_items, dtype=bool)
    n_items = y_i.shape[0] - int(same_split)
    rows: list[dict[str, Any]] = []

    def add(
        k: int, target: str, attribute: str, scores: dict[str, Any], chance: float | None
    ) -> None:
        rows.append(
            {
                "k": k,
                "target": target,
                "attribute": attribute,
                "n_items": n_items,
                "chance_precision": chance,
                **scores,
            }
        )

    if single_label:
        _class_rows(add, neighbours, y_q, y_i, ks, attributes, classes, same_split, n_items)
        return rows

    got = y_i[neighbours]  # (n_q, kmax, A)
    agree = got == y_q[:, None, :]
    pos = y_i.sum(axis=0).astype(np.int64)
    r_attr = np.where(y_q, pos[None, :], y_i.shape[0] - pos[None, :]) - int(same_split)
    keys = _keys(np.concatenate([y_q, y_i]))
    key_q, key_i = keys[: len(y_q)], keys[len(y_q) :]
    r_exact = np.bincount(key_i, minlength=int(keys.max()) + 1)[key_q] - int(same_split)
    rel_exact = key_i[neighbours] == key_q[:, None]
    inter = (got & y_q[:, None, :]).sum(axis=2)
    union = (got | y_q[:, None, :]).sum(axis=2)
    jac = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    for k in ks:
        per = []
        for a, name in enumerate(attributes):
            s = _relevance_scores(agree[:, :, a], k, r_attr[:, a])
            chance = float((r_attr[:, a] / n_items).mean())
            add(k, TARGET_ATTRIBUTE, name, s, chance)
            per.append((s, chance))
        mean = {
            "n_queries": int(y_q.shape[0]),
            "n_relevant_queries": None,
            **{
                m: _mean([s[m] for s, _ in per])
                for m in ("top_k_accuracy", "top_k_precision", "map_at_k")
            },
        }
        add(k, TARGET_MEAN, ALL, mean, _mean([c for _, c in per]))
        add(
            k,
            TARGET_EXACT,
            ALL,
            _relevance_scores(rel_exact, k, r_exact),
            float((r_exact / n_items).mean()),
        )
        jk = jac[:, :k]
        add(
            k,
            TARGET_JACCARD,
            ALL,
            {
                "n_queries": int(y_q.shape[0]),
                "n_relevant_queries": None,
                "map_at_k": None,
                "top_k_accuracy": float(jk.max(axis=1).mean()),
                "top_k_precision": float(jk.mean()),
            },
            None,
        )
    return rows


_AddRow = Callable[[int, str, str, dict[str, Any], float | None], None]


def _class_rows(
    add: _AddRow,
    neighbours: np.ndarray,
    y_q: np.ndarray,
    y_i: np.ndarray,
    ks: tuple[int, ...],
    attributes: tuple[str, ...],
    classes: tuple[str, ...] | None,
    same_split: bool,
    n_items: int,
) -> None:
    """:func:`evaluate`'s rows of a class-per-folder source (``single_label``), passed to
    ``add(k, target, attribute, scores, chance)``."""
    cls_q, cls_i = _classes(y_q, "queries"), _classes(y_i, "items")
    counts = np.bincount(cls_i, minlength=len(attributes)).astype(np.int64)
    r = counts[cls_q] - int(same_split)
    rel = cls_i[neighbours] == cls_q[:, None]
    for k in ks:
        add(k, TARGET_CLASS, ALL, _relevance_scores(rel, k, r), float((r / n_items).mean()))
        for c, name in enumerate(attributes):
            if classes is not None and name not in classes:
                continue
            sel = cls_q == c
            if sel.any():
                add(
                    k,
                    TARGET_CLASS,
                    name,
                    _relevance_scores(rel[sel], k, r[sel]),
                    float((r[sel] / n_items).mean()),
                )


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _classes(y: np.ndarray, what: str) -> np.ndarray:
    per_row = y.sum(axis=1)
    if (per_row != 1).any():
        bad = int((per_row != 1).sum())
        raise StoreError(
            f"the labels of {bad} {what} images are not one class each (a "
            "class-per-folder labels table is one-hot)"
        )
    return y.argmax(axis=1)


# ---------------------------------------------------------------- the run


def _load(plan: RetrievePlan, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    table = store.read_arrow(
        plan.layout.root, plan.feature_set, splits=[split], attributes=list(plan.attributes)
    )
    x = store.embedding_matrix(table, plan.dim, plan.feature_set)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x).all(axis=1)).sum())
        raise StoreError(
            f"feature set {plan.feature_set!r}: {bad} {split} embeddings hold NaN "
            "or infinite values; rebuild the set"
        )
    y = (
        np.stack(
            [table[a].to_numpy(zero_copy_only=False).astype(bool) for a in plan.attributes], axis=1
        )
        if plan.attributes
        else np.zeros((table.num_rows, 0), bool)
    )
    return x, y, table["image_id"].to_pylist()


def _existing_rows(plan: RetrievePlan) -> tuple[pa.Table | None, list[dict[str, Any]]]:
    """Committed rows and runs to keep: other settings computed from the same content."""
    try:
        manifest = store.read_manifest(plan.layout, table_id(plan.feature_set))
    except StoreError:  # damaged, and --overwrite asked for: nothing of it is kept
        return None, []
    if manifest is None:
        return None, []
    runs = manifest.get("runs", [])
    keep = [
        r
        for r in runs
        if (r["queries"], r["items"], r["metric"]) != plan.setting
        and r.get("feature_set_content") == plan.content
        and r.get("labels_content") == plan.labels_content
    ]
    stale = [
        r for r in runs if r not in keep and (r["queries"], r["items"], r["metric"]) != plan.setting
    ]
    if stale:
        logger.info(
            "retrieval/%s: dropping %d run(s) computed from an earlier version of the "
            "feature set or labels",
            plan.feature_set,
            len(stale),
        )
    if not keep:
        return None, []
    try:
        table = store.read_table(plan.layout.root, table_id(plan.feature_set))
    except StoreError as exc:  # damaged, and --overwrite asked for
        logger.warning(
            "retrieval/%s: not keeping the rows of a damaged table (%s)", plan.feature_set, exc
        )
        return None, []
    table = table.select(store.RETRIEVAL_SCHEMA.names).cast(store.RETRIEVAL_SCHEMA)
    settings = {(r["queries"], r["items"], r["metric"]) for r in keep}
    mask = [
        (q, i, m) in settings
        for q, i, m in zip(
            table["queries"].to_pylist(), table["items"].to_pylist(), table["metric"].to_pylist()
        )
    ]
    return table.filter(pa.array(mask, pa.bool_())), keep


def _skipped_summary(plan: RetrievePlan) -> RetrieveSummary:
    """The summary of a run already committed for this content: nothing done."""
    return RetrieveSummary(
        str(plan.layout.root),
        plan.feature_set,
        plan.queries,
        plan.items,
        plan.metric,
        plan.ks,
        plan.n_queries,
        plan.n_items,
        0,
        0.0,
        0.0,
        {},
        skipped=True,
        path=str(plan.layout.data(table_id(plan.feature_set))),
    )


def _read_splits(plan: RetrievePlan) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y)`` of the queries, then of the items (the same arrays when one split)."""
    x_q, y_q, _ = _load(plan, plan.queries)
    if plan.same_split:
        return x_q, y_q, x_q, y_q
    x_i, y_i, _ = _load(plan, plan.items)
    return x_q, y_q, x_i, y_i


def _run_entry(
    plan: RetrievePlan, n_queries: int, n_items: int, rows: int, created: str, phases: Phases
) -> dict[str, Any]:
    """This run's entry in the table manifest's ``runs``."""
    return {
        "queries": plan.queries,
        "items": plan.items,
        "metric": plan.metric,
        "k": list(plan.ks),
        "attributes": list(plan.attributes),
        "single_label": plan.single_label,
        "run_key": plan.run_key,
        "feature_set_content": plan.content,
        "labels_content": plan.labels_content,
        "backend": plan.backend,
        "n_queries": n_queries,
        "n_items": n_items,
        "rows": rows,
        "created": created,
        "timing": {
            "read_s": round(phases.seconds["read"], 3),
            "search_s": round(phases.seconds["search"], 3),
            "evaluate_s": round(phases.seconds["metrics"], 3),
        },
    }


def _commit_rows(
    plan: RetrievePlan, rows: list[dict[str, Any]], n_queries: int, n_items: int, phases: Phases
) -> int:
    """Commit ``rows`` with the kept rows of the other settings: the ``retrieval/<set>`` table
    and its manifest. Returns how many rows this run added."""
    created = store.now_iso()
    for row in rows:
        row.update(
            queries=plan.queries,
            items=plan.items,
            metric=plan.metric,
            dim=plan.dim,
            feature_set_content=plan.content,
            created=created,
        )
    new = pa.Table.from_pylist(rows, schema=store.RETRIEVAL_SCHEMA)
    kept, kept_runs = _existing_rows(plan)
    table = pa.concat_tables([kept, new]) if kept is not None else new
    run = _run_entry(plan, n_queries, n_items, new.num_rows, created, phases)
    with store.TableWriter(plan.layout, table_id(plan.feature_set)) as w:
        pq.write_table(table, w.data / "part-00000.parquet")
        w.commit(
            store.base_manifest(
                TABLE,
                name=plan.feature_set,
                feature_set=plan.feature_set,
                feature_set_content=plan.content,
                labels_content=plan.labels_content,
                dim=plan.dim,
                definitions_version=DEFINITIONS_VERSION,
                counts={"rows": table.num_rows},
                runs=[*kept_runs, run],
            ),
            has_errors=False,
        )
    return new.num_rows


def run_retrieve(spark: Any, plan: RetrievePlan) -> RetrieveSummary:
    """Run the search and the metrics of ``plan`` and commit the ``retrieval/<set>`` table.
    ``spark`` is not used (the search runs here, on the driver); it may be None."""
    if plan.done:
        return _skipped_summary(plan)
    phases = Phases()
    with phases("read"):
        x_q, y_q, x_i, y_i = _read_splits(plan)
    with phases("search"):
        neighbours = search(
            x_q,
            x_i,
            plan.ks[-1],
            metric=plan.metric,
            backend=plan.backend,
            query_block=plan.query_block,
            exclude_self=plan.same_split,
        )
    logger.info(
        "retrieval/%s: %d %s queries x %d %s items (dim %d, %s, %s): searched in %.1f s",
        plan.feature_set,
        len(x_q),
        plan.queries,
        len(x_i),
        plan.items,
        plan.dim,
        plan.metric,
        plan.backend,
        phases.seconds["search"],
    )
    with phases("metrics"):
        rows = evaluate(
            neighbours,
            y_q,
            y_i,
            plan.ks,
            plan.attributes,
            single_label=plan.single_label,
            same_split=plan.same_split,
            classes=plan.classes or None,
        )
    with phases("commit"):
        added = _commit_rows(plan, rows, len(x_q), len(x_i), phases)
    return RetrieveSummary(
        str(plan.layout.root),
        plan.feature_set,
        plan.queries,
        plan.items,
        plan.metric,
        plan.ks,
        len(x_q),
        len(x_i),
        added,
        phases.total,
        phases.seconds["search"],
        _headline(rows, plan),
        path=str(plan.layout.data(table_id(plan.feature_set))),
        timing=phases,
    )


def retrieve(plan: RetrievePlan) -> RetrieveSummary:
    """:func:`run_retrieve` of ``plan`` (no Spark)."""
    return run_retrieve(None, plan)


def _headline(rows: list[dict[str, Any]], plan: RetrievePlan) -> dict[str, float]:
    k = 5 if 5 in plan.ks else plan.ks[-1]
    want = (
        [(TARGET_CLASS, "class")]
        if plan.single_label
        else [(TARGET_MEAN, "mean"), (TARGET_EXACT, "exact-match")]
    )
    out = {}
    for target, label in want:
        row = next(
            r for r in rows if r["k"] == k and r["target"] == target and r["attribute"] == ALL
        )
        for m, short in (("top_k_accuracy", "accuracy"), ("top_k_precision", "precision")):
            if row[m] is not None:
                out[f"{label} top-{k} {short}"] = row[m]
    return out


def summary_line(s: RetrieveSummary) -> str:
    ks = ",".join(map(str, s.ks))
    what = (
        f"retrieval of {s.feature_set}: {s.queries} queries vs {s.items} items, {s.metric}, k={ks}"
    )
    if s.skipped:
        return (
            f"{what}: already done for this feature set's committed content (--overwrite "
            f"to recompute) -> {s.path}"
        )
    scores = ", ".join(f"{name} {v:.3f}" for name, v in s.headline.items())
    line = (
        f"{what}: {s.n_queries:,} x {s.n_items:,} searched in {s.search_seconds:.1f} s "
        f"({s.seconds:.1f} s in all); {scores}; {s.rows} rows -> {s.path}"
    )
    return line + (f"\n{s.timing.line('retrieve')}" if s.timing is not None else "")

"""Reduce: PCA of a feature set, fitted on its train split, applied to every split.

``features/feature_set=<source>/`` -> ``features/feature_set=<source>-pca<k>/`` for each requested ``k``: the same layout
and :data:`featstore.store.FEATURES_SCHEMA` as extract's output (``embedding`` is a float32 array
of length ``k``), a manifest, and ``pca.npz`` (mean, the ``k`` components, their explained
variance) so the same projection can be applied to new data (:func:`load_projection`).

How (built for the full CelebA set, 202,599 x 2,048 float32, on a small driver):

* **Fit** - one Spark pass over the train split. Each partition (``mapInArrow``: the Arrow list
  column becomes an ``(n, d)`` float32 matrix without a Python object per row) accumulates in
  float64 ``n``, ``sum(x - c)`` and ``(x - c)^T (x - c)``, where the shift ``c`` is the mean of the
  first rows of the first train file: close to the mean, so the centered Gram matrix does not
  cancel catastrophically. The partials are combined with ``RDD.treeReduce``, so the driver
  receives a few ``d x d`` matrices rather than one per partition. The covariance
  ``(G - n m m^T) / (n - 1)`` (``m`` the mean of ``x - c``) is decomposed with
  ``numpy.linalg.eigh`` on the driver; eigenvalues are sorted decreasing and clipped at 0.
* **Sign convention** - each component is flipped so that its loading of largest absolute value
  is positive (first such index on ties): the convention of scikit-learn's
  ``svd_flip(u_based_decision=False)`` used by its ``PCA``. Components of equal eigenvalues are
  not unique; any orthonormal basis of their eigenspace is a valid answer.
* **Project** - one Spark pass over all splits computes ``Z = (X - mean) @ W[:, :kmax]`` in
  float64, stored as float32, persisted (MEMORY_AND_DISK); each ``k`` is written from it with
  ``F.slice`` (PCA components are nested: the first ``k`` of ``kmax``).

Each set is written through :class:`featstore.store.TableWriter` (staging, manifest, commit),
like extract; its ``pca.npz`` is a sidecar in the set's metadata folder. A re-run with the same source (same ``run_key``) skips the
dimensions already committed unless ``overwrite``. Bad input raises a :class:`StoreError` or
:class:`ConfigError` before anything is written.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from featstore import spread, store
from featstore.config import ReduceConfig
from featstore.errors import ConfigError, StoreError
from featstore.progress import Progress, spark_feed
from featstore.timing import Phases

logger = logging.getLogger(__name__)

REDUCER = "pca"
FIT_SPLIT = "train"
PCA_FILE = "pca.npz"  # a sidecar in the set's metadata folder (store.Layout.table_meta)
SIGN_CONVENTION = (
    "each component's loading of largest absolute value is positive "
    "(scikit-learn svd_flip, u_based_decision=False)"
)
SHIFT_ROWS = 1024  # rows of the first train file whose mean is the fit's shift
# source manifest keys that describe how the source was made and still apply to a reduction
_NOT_INHERITED = {
    "schema_version",
    "table",
    "code_version",
    "created",
    "name",
    "run_key",
    "dim",
    "counts",
    "spark",
    "timing",
    "chunks",
    "files",
    "errors_files",
    "data_path",
    "errors_path",
    "content_fingerprint",
    "sidecars",
}
_PARTIAL_SCHEMA = "n long, bad long, s binary, g binary"
ARROW_BATCH_KEY = "spark.sql.execution.arrow.maxRecordsPerBatch"


@dataclass(frozen=True)
class ReducedSet:
    name: str
    dim: int
    explained_variance_ratio_sum: float
    skipped: bool = False


@dataclass(frozen=True)
class ReduceSummary:
    store: str
    source: str
    source_dim: int
    n_fit: int
    sets: tuple[ReducedSet, ...]
    fit_seconds: float
    project_seconds: float
    seconds: float

    @property
    def written(self) -> tuple[ReducedSet, ...]:
        return tuple(s for s in self.sets if not s.skipped)


@dataclass(frozen=True)
class ReducePlan:
    """What a reduce run will do, found from manifests and Parquet footers (no Spark)."""

    layout: store.Layout
    source: str
    source_dir: Path
    manifest: store.Manifest
    dim: int
    splits: dict[str, int]
    files: tuple[Path, ...]
    dims: tuple[int, ...]
    run_key: str
    todo: tuple[int, ...]  # dimensions to compute
    done: dict[int, dict[str, Any]]  # dimension -> manifest of its committed set (skipped)
    arrow_batch_rows: int  # rows per Arrow batch to the workers (ReduceConfig.arrow_batch_rows)

    @property
    def n_train(self) -> int:
        return self.splits.get(FIT_SPLIT, 0)


@dataclass(frozen=True)
class PCAFit:
    """A PCA fitted on ``n`` rows: ``components`` (d x d, one component per row, decreasing
    variance) and ``explained_variance`` (the covariance's eigenvalues, ddof 1)."""

    n: int
    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray

    @property
    def total_variance(self) -> float:
        return float(self.explained_variance.sum())

    @property
    def explained_variance_ratio(self) -> np.ndarray:
        return self.explained_variance / self.total_variance


def output_name(source: str, k: int) -> str:
    return f"{source}-pca{k}"


# ---------------------------------------------------------------- plan (validation, no Spark)


def _check_embedding_type(path: Path) -> None:
    schema = pq.read_schema(path)
    if "embedding" not in schema.names:
        raise StoreError(f"{path}: no 'embedding' column (columns: {', '.join(schema.names)})")
    tp = schema.field("embedding").type
    if not store.is_embedding_type(tp):
        raise StoreError(f"{path}: 'embedding' is {tp}, expected a list of floats")


def _reduce_run_key(source_manifest: store.Manifest) -> str:
    """The exact committed content of the source (a rebuilt source re-derives its sets)."""
    return store.fingerprint(
        [REDUCER, FIT_SPLIT, source_manifest.get("name", ""), store.fs_fingerprint(source_manifest)]
    )


def plan_reduce(cfg: ReduceConfig, store_path: str) -> ReducePlan:
    """Validate the input and decide what to compute. Raises StoreError / ConfigError (one line
    each) for: no store folder, an unknown or uncommitted source, a source whose files disagree
    with its manifest, no train rows, a dimension < 1 or larger than the embedding dimension or
    the number of train rows, an output name that is not a valid feature-set name."""
    layout = store.open_store(store_path)
    if not cfg.feature_set:
        raise ConfigError("reduce needs a source feature set (--feature-set NAME)")
    source = store.check_name(cfg.feature_set)
    manifest = store.check_feature_set(layout.root, source, checksums=True)  # a verified read
    source_dir = layout.features(source)
    try:
        dim = int(manifest["dim"])
    except (KeyError, TypeError, ValueError):
        raise StoreError(f"{layout.manifest_path(store.features_id(source))}: no dim") from None
    splits = store.rows_per_split(manifest["files"])
    files = [source_dir / f["path"] for f in manifest["files"]]
    n_train = splits.get(FIT_SPLIT, 0)
    if n_train < 2:
        raise StoreError(
            f"{source_dir}: PCA is fitted on the {FIT_SPLIT!r} split, which has "
            f"{n_train} rows (needs at least 2)"
        )
    _check_embedding_type(files[0])

    dims = tuple(sorted(set(cfg.dims)))
    if not dims:
        raise ConfigError("reduce.dims is empty: give dimensions, e.g. --dims 8,16,32")
    for k in dims:
        if k < 1:
            raise ConfigError(f"reduce dimension {k} is < 1")
        if k > dim:
            raise ConfigError(
                f"reduce dimension {k} is larger than the embedding dimension {dim} of {source!r}"
            )
        if k > n_train:
            raise ConfigError(
                f"reduce dimension {k} is larger than the {n_train:,} "
                f"{FIT_SPLIT} rows of {source!r}"
            )
        store.check_name(output_name(source, k))

    run_key = _reduce_run_key(manifest)
    done: dict[int, dict[str, Any]] = {}
    for k in dims:
        existing = store.existing_output(
            layout, store.features_id(output_name(source, k)), overwrite=cfg.overwrite
        )
        if existing is not None and existing.get("run_key") == run_key and not cfg.overwrite:
            done[k] = existing
    todo = tuple(k for k in dims if k not in done)
    return ReducePlan(
        layout,
        source,
        source_dir,
        manifest,
        dim,
        splits,
        tuple(files),
        dims,
        run_key,
        todo,
        done,
        cfg.arrow_batch_rows,
    )


# ---------------------------------------------------------------- fit


def _matrix(column: pa.Array | pa.ChunkedArray, d: int) -> tuple[np.ndarray, int]:
    """An Arrow list<float> column as an (n, d) float32 matrix, and the number of bad rows (null,
    not of length d, or holding a null value); when there are bad rows the matrix is empty."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    lengths = pc.list_value_length(column).fill_null(-1).to_numpy()
    bad = int(np.count_nonzero(lengths != d))
    if bad:
        return np.empty((0, d), np.float32), bad
    values = column.flatten()
    if values.null_count:
        return np.empty((0, d), np.float32), int(values.null_count)
    x = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return x.reshape(len(column), d), 0


def _blas_limit(threads: int) -> Any:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings it
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=max(1, threads), user_api="blas")


def make_partial_fn(d: int, shift: np.ndarray, blas_threads: int = 1) -> Any:
    """The mapInArrow function of the fit pass: one row (n, bad, sum, Gram) per partition."""
    shift64 = np.asarray(shift, dtype=np.float64)

    def partial(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        n = bad = 0
        s = np.zeros(d, np.float64)
        g = np.zeros((d, d), np.float64)
        with _blas_limit(blas_threads):
            for batch in batches:
                x, b = _matrix(batch.column(0), d)
                bad += b
                if not len(x):
                    continue
                xc = x.astype(np.float64) - shift64
                n += len(xc)
                s += xc.sum(axis=0)
                g += xc.T @ xc  # numpy calls BLAS syrk for a.T @ a
        if n or bad:
            yield pa.RecordBatch.from_pydict(
                {"n": [n], "bad": [bad], "s": [s.tobytes()], "g": [g.tobytes()]},
                schema=pa.schema(
                    [("n", pa.int64()), ("bad", pa.int64()), ("s", pa.binary()), ("g", pa.binary())]
                ),
            )

    return partial


def _combine(
    a: tuple[int, int, np.ndarray, np.ndarray], b: tuple[int, int, np.ndarray, np.ndarray]
) -> tuple[int, int, np.ndarray, np.ndarray]:
    g = a[3]
    g += b[3]  # in place: each partial is a fresh deserialized array, used once
    return a[0] + b[0], a[1] + b[1], a[2] + b[2], g


def _decode_partial(d: int) -> Any:
    def decode(row: Any) -> tuple[int, int, np.ndarray, np.ndarray]:
        return (
            int(row["n"]),
            int(row["bad"]),
            np.frombuffer(row["s"], np.float64).copy(),
            np.frombuffer(row["g"], np.float64).reshape(d, d).copy(),
        )

    return decode


def sign_flip(components: np.ndarray) -> np.ndarray:
    """Flip each row so that its entry of largest absolute value is positive."""
    idx = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(len(components)), idx])
    signs[signs == 0] = 1.0
    return components * signs[:, None]


def pca_from_moments(n: int, shift: np.ndarray, s: np.ndarray, g: np.ndarray) -> PCAFit:
    """PCA from n, sum(x - c) and (x - c)^T (x - c) accumulated in float64 with shift c."""
    m = s / n
    cov = (g - n * np.outer(m, m)) / (n - 1)
    cov = (cov + cov.T) / 2.0  # exact symmetry for eigh (the sums are already symmetric)
    eigvals, eigvecs = np.linalg.eigh(cov)
    order = np.argsort(eigvals)[::-1]
    eigvals = np.clip(eigvals[order], 0.0, None)
    components = sign_flip(eigvecs[:, order].T)
    return PCAFit(
        n=n,
        mean=np.asarray(shift, np.float64) + m,
        components=components,
        explained_variance=eigvals,
    )


def fit_pca(
    embeddings: Any, d: int, shift: np.ndarray, *, blas_threads: int = 1, depth: int = 2
) -> PCAFit:
    """Fit a PCA on a DataFrame whose first column is ``embedding`` (array<float> of length d).
    Raises StoreError if a row is null or of another length, or a value is not finite."""
    rows = embeddings.mapInArrow(make_partial_fn(d, shift, blas_threads), _PARTIAL_SCHEMA).rdd.map(
        _decode_partial(d)
    )
    try:
        n, bad, s, g = rows.treeReduce(_combine, depth=depth)
    except ValueError as exc:  # an empty RDD
        raise StoreError(f"no {FIT_SPLIT} rows to fit the PCA on ({exc})") from None
    if bad:
        raise StoreError(f"{bad:,} {FIT_SPLIT} embeddings are null or not of length {d}")
    if n < 2:
        raise StoreError(f"PCA needs at least 2 {FIT_SPLIT} rows, found {n}")
    if not (np.isfinite(s).all() and np.isfinite(g).all()):
        raise StoreError(f"the {FIT_SPLIT} embeddings contain NaN or infinite values")
    fit = pca_from_moments(n, shift, s, g)
    if not fit.total_variance > 0:
        raise StoreError(f"the {FIT_SPLIT} embeddings have zero variance: nothing to reduce")
    return fit


def shift_from_file(path: Path, d: int, rows: int = SHIFT_ROWS) -> np.ndarray:
    """The mean of the first ``rows`` rows of a Parquet file: the fit's centering shift."""
    batch = next(pq.ParquetFile(path).iter_batches(batch_size=rows, columns=["embedding"]), None)
    if batch is None or batch.num_rows == 0:
        return np.zeros(d, np.float64)
    x, bad = _matrix(batch.column(0), d)
    if bad:
        raise StoreError(f"{path}: embeddings that are null or not of length {d}")
    mean = x.astype(np.float64).mean(axis=0)
    return np.where(np.isfinite(mean), mean, 0.0)


# ---------------------------------------------------------------- project


def make_project_fn(mean: np.ndarray, w: np.ndarray, blas_threads: int = 1) -> Any:
    """The mapInArrow function of the projection: (image_id, split, embedding) batches ->
    the same with embedding = float32((x - mean) @ w)."""
    d, k = w.shape
    mean64 = np.asarray(mean, np.float64)
    w64 = np.asarray(w, np.float64)
    out_schema = store.FEATURES_SCHEMA

    def project(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        with _blas_limit(blas_threads):
            for batch in batches:
                x, bad = _matrix(batch.column("embedding"), d)
                if bad:
                    raise ValueError(f"{bad} embeddings are null or not of length {d}")
                z = ((x.astype(np.float64) - mean64) @ w64).astype(np.float32)
                offsets = pa.array(np.arange(0, (len(z) + 1) * k, k, dtype=np.int32))
                emb = pa.ListArray.from_arrays(offsets, pa.array(z.reshape(-1)))
                yield pa.RecordBatch.from_arrays(
                    [batch.column("image_id"), batch.column("split"), emb], schema=out_schema
                )

    return project


def project(features: Any, fit: PCAFit, k: int, *, blas_threads: int = 1) -> Any:
    """DataFrame (image_id, split, embedding) -> the same with the first k PCA coordinates."""
    w = fit.components[:k].T
    return features.select("image_id", "split", "embedding").mapInArrow(
        make_project_fn(fit.mean, w, blas_threads), store.spark_schema(store.FEATURES_SCHEMA)
    )


# ---------------------------------------------------------------- the projection file


@dataclass(frozen=True)
class Projection:
    """A committed set's ``_pca.npz``: ``transform`` applies the set's projection to new rows."""

    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, np.float64) - self.mean) @ self.components.T).astype(np.float32)


def save_projection(table_dir: Path, fit: PCAFit, k: int) -> Path:
    path = Path(table_dir) / PCA_FILE
    with open(path, "wb") as fh:
        np.savez(
            fh,
            mean=fit.mean,
            components=fit.components[:k],
            explained_variance=fit.explained_variance[:k],
            explained_variance_ratio=fit.explained_variance_ratio[:k],
            total_variance=np.float64(fit.total_variance),
            n_fit=np.int64(fit.n),
        )
    return path


def load_projection(store_path: str | Path, name: str) -> Projection:
    """The projection of the committed PCA feature set ``name``."""
    manifest = store.feature_set_manifest(store_path, name)
    if manifest.get("pca_file") != PCA_FILE:
        raise StoreError(f"feature set {name!r} is not a PCA set (it has no projection)")
    layout = store.Layout(store_path)
    with np.load(layout.table_meta(store.features_id(name)) / PCA_FILE) as z:
        return Projection(
            z["mean"], z["components"], z["explained_variance"], z["explained_variance_ratio"]
        )


# ---------------------------------------------------------------- the job


def _reduced_manifest(
    plan: ReducePlan, fit: PCAFit, k: int, name: str, spark: Any, seconds: dict[str, float]
) -> dict[str, Any]:
    src = plan.manifest
    inherited = {key: v for key, v in src.items() if key not in _NOT_INHERITED}
    ratio = fit.explained_variance_ratio[:k]
    fields = {
        **inherited,  # model, layers, pooling, weights, preprocessing, input, attributes, ...
        "name": name,
        "run_key": plan.run_key,
        "reducer": REDUCER,
        "dim": k,
        "source": {
            "name": plan.source,
            "run_key": src.get("run_key"),
            "content_fingerprint": src.get("content_fingerprint"),
            "created": src.get("created"),
            "dim": plan.dim,
            "counts": src.get("counts"),
        },
        "fit_split": FIT_SPLIT,
        "n_fit": fit.n,
        "explained_variance_ratio": [float(r) for r in ratio],
        "explained_variance_ratio_sum": float(ratio.sum()),
        "explained_variance": [float(v) for v in fit.explained_variance[:k]],
        "total_variance": fit.total_variance,
        "sign_convention": SIGN_CONVENTION,
        "pca_file": PCA_FILE,
        "counts": {"ok": int(sum(plan.splits.values())), "errors": 0},
        # the components' spread on the fit rows: sqrt of their eigenvalues (featstore.spread)
        "spread": spread.spread_of_std(np.sqrt(np.maximum(fit.explained_variance[:k], 0.0)), fit.n),
        "spark": {
            "master": spark.sparkContext.master,
            "version": spark.version,
            "conf": {ARROW_BATCH_KEY: str(plan.arrow_batch_rows)},
        },
        "timing": {key: round(v, 2) for key, v in seconds.items()},
    }
    return store.base_manifest("features", **fields)


def _committed_sets(plan: ReducePlan) -> dict[int, ReducedSet]:
    """The requested sets already committed from this source (skipped), by dimension."""
    skipped = {
        k: ReducedSet(
            output_name(plan.source, k),
            k,
            float(m.get("explained_variance_ratio_sum", float("nan"))),
            skipped=True,
        )
        for k, m in plan.done.items()
    }
    for s in skipped.values():
        logger.info("feature set %s is already committed from this source; nothing to do", s.name)
    return skipped


@contextlib.contextmanager
def _arrow_batch_rows(spark: Any, rows: int) -> Iterator[None]:
    """Spark's Arrow batch size set to ``rows`` for the run, then restored."""
    previous = spark.conf.get(ARROW_BATCH_KEY, None)
    spark.conf.set(ARROW_BATCH_KEY, str(rows))
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(ARROW_BATCH_KEY)
        else:
            spark.conf.set(ARROW_BATCH_KEY, previous)


@contextlib.contextmanager
def _task_progress(spark: Any) -> Iterator[None]:
    """Progress: the finished Spark tasks of the fit, projection and writes (their total grows
    as Spark plans each job's stages)."""
    with Progress("reduce", 0, "tasks") as bar, spark_feed(spark, bar, tasks_total=True):
        yield


def _fit_source(plan: ReducePlan, source_df: Any, blas_threads: int) -> PCAFit:
    """The PCA of the source's train split, shifted by the mean of its first file's first rows."""
    from pyspark.sql import functions as F

    train_files = [f for f in plan.files if f.parent.name == f"split={FIT_SPLIT}"]
    shift = shift_from_file(train_files[0], plan.dim)
    return fit_pca(
        source_df.filter(F.col("split") == FIT_SPLIT).select("embedding"),
        plan.dim,
        shift,
        blas_threads=blas_threads,
    )


def _write_sets(
    spark: Any,
    plan: ReducePlan,
    fit: PCAFit,
    source_df: Any,
    blas_threads: int,
    fit_seconds: float,
) -> dict[int, ReducedSet]:
    """Project every row on the first ``max(todo)`` components once (persisted), then write and
    commit each requested set from it, the largest first."""
    from pyspark import StorageLevel

    kmax = max(plan.todo)
    projected = project(source_df, fit, kmax, blas_threads=blas_threads).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    try:
        return {
            k: _write_set(spark, plan, fit, projected, k, fit_seconds)
            for k in sorted(plan.todo, reverse=True)
        }
    finally:
        projected.unpersist()


def _write_set(
    spark: Any, plan: ReducePlan, fit: PCAFit, projected: Any, k: int, fit_seconds: float
) -> ReducedSet:
    """Write the set of dimension ``k`` (the first ``k`` projected coordinates) and commit it."""
    from pyspark.sql import functions as F

    clock = Phases()
    clock.lap("write")
    name = output_name(plan.source, k)
    with store.TableWriter(plan.layout, store.features_id(name), spark=spark) as w:
        (
            projected.select("image_id", "split", F.slice("embedding", 1, k).alias("embedding"))
            .write.options(**store.FEATURES_WRITE_OPTIONS)
            .partitionBy("split")
            .parquet(store.spark_uri(w.data), mode="overwrite")
        )
        store.write_errors(w.errors, [])
        save_projection(w.meta, fit, k)
        clock.lap("commit")
        manifest = _reduced_manifest(
            plan,
            fit,
            k,
            name,
            spark,
            {"fit_seconds": fit_seconds, "write_seconds": clock.seconds["write"]},
        )
        spread.warn(name, manifest["spread"])
        manifest = w.commit(manifest)
    clock.lap(None)
    splits = manifest["counts"]["splits"]
    if splits != plan.splits:  # pragma: no cover - the writer counted the rows
        raise StoreError(f"{name}: wrote {splits} rows per split, the source has {plan.splits}")
    written = ReducedSet(name, k, manifest["explained_variance_ratio_sum"])
    logger.info(
        "committed %s (%d rows, %.1f%% of the variance) in %.1f s",
        name,
        sum(splits.values()),
        100 * written.explained_variance_ratio_sum,
        clock.total,
    )
    return written


def run_reduce(spark: Any, plan: ReducePlan) -> ReduceSummary:
    """Run the reduction of ``plan`` (see the module docstring); when every requested set is
    already committed for this source, ``spark`` is not used."""
    phases = Phases()
    phases.lap("setup")
    skipped = _committed_sets(plan)
    if not plan.todo:
        phases.lap(None)
        return ReduceSummary(
            str(plan.layout.root),
            plan.source,
            plan.dim,
            int(next(iter(plan.done.values())).get("n_fit", plan.n_train)),
            tuple(skipped[k] for k in plan.dims),
            0.0,
            0.0,
            phases.total,
        )
    with _arrow_batch_rows(spark, plan.arrow_batch_rows), _task_progress(spark):
        blas_threads = int(spark.conf.get("spark.task.cpus", "1"))
        source_df = spark.read.schema(store.spark_schema(store.FEATURES_SCHEMA)).parquet(
            store.spark_uri(plan.source_dir)
        )
        phases.lap("fit")
        fit = _fit_source(plan, source_df, blas_threads)
        phases.lap("project")
        fit_seconds = phases.seconds["fit"]
        logger.info(
            "PCA fitted on %d %s rows x %d dims in %.1f s", fit.n, FIT_SPLIT, plan.dim, fit_seconds
        )
        written = _write_sets(spark, plan, fit, source_df, blas_threads, fit_seconds)
        phases.lap("restore")
    phases.lap(None)
    return ReduceSummary(
        str(plan.layout.root),
        plan.source,
        plan.dim,
        fit.n,
        tuple(written.get(k) or skipped[k] for k in plan.dims),
        fit_seconds,
        phases.seconds["project"],
        phases.total,
    )


def reduce(spark: Any, cfg: ReduceConfig, store_path: str) -> ReduceSummary:
    """:func:`run_reduce` of :func:`plan_reduce`: bad input raises before any Spark work."""
    return run_reduce(spark, plan_reduce(cfg, store_path))


def summary_line(s: ReduceSummary) -> str:
    """The job's one human line: the sets and their explained variance."""
    parts = [
        f"{x.name} {100 * x.explained_variance_ratio_sum:.1f}%"
        + (" (already committed)" if x.skipped else "")
        for x in s.sets
    ]
    verb = "reduced" if s.written else "already reduced"
    return (
        f"{verb}: {s.source} ({s.source_dim:,} floats, PCA fitted on {s.n_fit:,} "
        f"{FIT_SPLIT} rows) -> {', '.join(parts)} explained variance; fit "
        f"{s.fit_seconds:.1f} s, project+write {s.project_seconds:.1f} s, total "
        f"{s.seconds:.1f} s -> {s.store}/features"
    )

"""The one declaration of every table's schema (Arrow; Spark schemas are derived from them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

IMAGES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("content", pa.binary(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("source_path", pa.string(), nullable=False),
    ]
)

ERRORS_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=True),
        pa.field("source_path", pa.string(), nullable=True),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
    ]
)

FEATURES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("embedding", pa.list_(pa.float32()), nullable=False),
    ]
)


def embedding_type(dim: int) -> pa.DataType:
    """The ``embedding`` column of a committed feature set's files: ``fixed_size_list<float32,
    dim>`` (one width per set), so readers that honour the Arrow schema pyarrow stores in the
    Parquet footer see the width without a cast: polars ``Array(Float32, dim)``, pyarrow and
    pandas through pyarrow. Parquet has no fixed-size list type: the column is a plain Parquet
    LIST, so Spark reads ``array<float>`` and DuckDB's ``read_parquet`` ``FLOAT[]`` (DuckDB sees
    ``FLOAT[dim]`` through pyarrow: README, "Querying the store"). Spark writes variable lists
    (:data:`FEATURES_SCHEMA`, what Spark reads and writes); :meth:`TableWriter.commit` rewrites
    a feature set's staged files to this type. Sets written before (variable lists) stay
    readable: every reader here accepts both."""
    return pa.list_(pa.field("element", pa.float32()), dim)


def is_embedding_type(tp: pa.DataType) -> bool:
    """A list of floats, variable (old stores, Spark's side) or fixed-size (committed sets)."""
    return (
        pa.types.is_list(tp) or pa.types.is_large_list(tp) or pa.types.is_fixed_size_list(tp)
    ) and pa.types.is_floating(tp.value_type)


def features_file_schema(dim: int) -> pa.Schema:
    """:data:`FEATURES_SCHEMA` as a committed feature set's files hold it (``embedding`` of
    :func:`embedding_type`)."""
    return pa.schema(
        [
            pa.field("embedding", embedding_type(dim), nullable=False)
            if f.name == "embedding"
            else f
            for f in FEATURES_SCHEMA
        ]
    )


#: Options of every Spark write of a feature set's files (extract's chunks, reduce's sets): no
#: Parquet dictionary, since an embedding's floats (and the image ids) are all distinct and the
#: writer would hash each one until it gives up on the dictionary (seen in thread dumps of the
#: extract's tasks: the write fell behind the model; bench/RESULTS.md).
FEATURES_WRITE_OPTIONS = {"parquet.enable.dictionary": "false"}
#: The same for pyarrow's rewrite of those files to the fixed width (:func:`fix_embedding_width`)
FEATURES_PYARROW_OPTIONS = {"use_dictionary": False, "compression": "snappy"}

RESULTS_SCHEMA = pa.schema(
    [
        pa.field("attribute", pa.string()),
        pa.field("feature_set", pa.string()),
        pa.field("model", pa.string()),
        pa.field("train_size", pa.int64()),  # requested; 0 = the whole train split
        pa.field("seed", pa.int64()),
        pa.field("status", pa.string()),  # ok | error
        pa.field("reason", pa.string()),
        pa.field("n_train", pa.int64()),
        pa.field("n_val", pa.int64()),
        pa.field("n_test", pa.int64()),
        pa.field("dim", pa.int64()),
        pa.field("accuracy", pa.float64()),
        pa.field("balanced_accuracy", pa.float64()),
        pa.field("f1", pa.float64()),
        pa.field("roc_auc", pa.float64()),
        pa.field("tn", pa.int64()),
        pa.field("fp", pa.int64()),
        pa.field("fn", pa.int64()),
        pa.field("tp", pa.int64()),
        pa.field("majority_baseline", pa.float64()),
        pa.field("ci_low", pa.float64()),
        pa.field("ci_high", pa.float64()),
        pa.field("params", pa.string()),  # JSON: chosen hyper-parameters
        pa.field("history", pa.string()),  # JSON: dense training curves
        pa.field("fit_seconds", pa.float64()),
        pa.field("y_true", pa.list_(pa.int8())),  # test labels, in image_id order
        pa.field("y_pred", pa.list_(pa.int8())),  # test predictions, same order (for McNemar)
        # the test ROC curve (featstore.evaluate.roc_points): false / true positive rates of its
        # vertices from (0, 0) to (1, 1), at most evaluate.ROC_POINTS of them; null when the test
        # labels have one class. Absent from results written before them: read as null
        # (RESULTS_ADDED_COLUMNS)
        pa.field("roc_fpr", pa.list_(pa.float32())),
        pa.field("roc_tpr", pa.list_(pa.float32())),
        pa.field("cell", pa.string()),
        pa.field("created", pa.string()),
        # the saved model, relative to the store root (train.save_models); null when not saved
        pa.field("model_path", pa.string()),
        # the feature set's committed content the fit saw (its manifest's content_fingerprint)
        pa.field("feature_set_content", pa.string()),
        # what the fit was chosen by, off the test split: its score on the validation split (every
        # "best" in featstore is the argmax of it; the test accuracy is then the estimate)
        pa.field("selection_score", pa.float64()),
        pa.field("selection_metric", pa.string()),  # "validation accuracy"
        # the positive-class score of every test image, in the order of y_true (probability)
        pa.field("y_score", pa.list_(pa.float32())),
        # the person in every test image (same order; null where the store has no identities):
        # intervals and paired differences resample people, not images
        pa.field("groups", pa.list_(pa.int64())),
        pa.field("ci_method", pa.string()),  # how ci_low/ci_high were made ("wilson, by identity")
        pa.field("ba_ci_low", pa.float64()),  # balanced accuracy, bootstrap (by identity) 95% CI
        pa.field("ba_ci_high", pa.float64()),
        pa.field("auc_ci_low", pa.float64()),  # ROC AUC, bootstrap (by identity) 95% CI
        pa.field("auc_ci_high", pa.float64()),
        pa.field("brier", pa.float64()),  # Brier score of y_score
        # multi-class targets (train.target: class; featstore.multiclass): the number of classes,
        # their names (y_true / y_pred hold indices into this list), the K x K test confusion
        # matrix (rows: true class, columns: predicted, in the order of ``classes``) and the
        # macro-averaged F1. Null for the binary attribute fits.
        pa.field("n_classes", pa.int64()),
        pa.field("classes", pa.list_(pa.string())),
        pa.field("confusion", pa.list_(pa.list_(pa.int64()))),
        pa.field("macro_f1", pa.float64()),
        # macro-F1 of a multi-class fit, bootstrap (by identity) 95% CI (its balanced accuracy's
        # is ba_ci_low / ba_ci_high); null for binary fits
        pa.field("macro_f1_ci_low", pa.float64()),
        pa.field("macro_f1_ci_high", pa.float64()),
    ]
)

#: Columns of RESULTS_SCHEMA that results tables (and grid cells) written by an earlier
#: featstore lack; :func:`read_results` reads them as null, so old stores stay readable.
RESULTS_ADDED_COLUMNS = (
    "roc_fpr",
    "roc_tpr",
    "selection_score",
    "selection_metric",
    "y_score",
    "groups",
    "ci_method",
    "ba_ci_low",
    "ba_ci_high",
    "auc_ci_low",
    "auc_ci_high",
    "brier",
    "n_classes",
    "classes",
    "confusion",
    "macro_f1",
    "macro_f1_ci_low",
    "macro_f1_ci_high",
)

#: retrieval/feature_set=<set>/: one row per (queries, items, metric, k, target, attribute)
#: (featstore/retrieval.py defines the metrics). ``feature_set`` is not a column of the files:
#: it is the hive partition (``retrieval/**/*.parquet`` with hive partitioning), like features.
RETRIEVAL_SCHEMA = pa.schema(
    [
        pa.field("queries", pa.string()),  # split of the query images
        pa.field("items", pa.string()),  # split searched
        pa.field("metric", pa.string()),  # cosine | l2
        pa.field("k", pa.int64()),
        # attribute: one attribute (attribute = its name); mean: the mean of the attribute rows;
        # exact / jaccard: the multi-label variants over all the run's attributes; class: a
        # class-per-folder source (attribute = a class: its queries; "*": every query)
        pa.field("target", pa.string()),
        pa.field("attribute", pa.string()),  # "*" for mean, exact, jaccard and the all-class row
        pa.field("n_queries", pa.int64()),
        pa.field("n_items", pa.int64()),
        pa.field("n_relevant_queries", pa.int64()),  # queries with >= 1 relevant item (mAP's)
        pa.field("top_k_accuracy", pa.float64()),
        pa.field("top_k_precision", pa.float64()),
        pa.field("map_at_k", pa.float64()),  # null for jaccard (graded relevance)
        pa.field(
            "chance_precision", pa.float64()
        ),  # top-k precision of random items; null: jaccard
        pa.field("dim", pa.int64()),
        pa.field("feature_set_content", pa.string()),  # store.fs_fingerprint of the searched set
        pa.field("created", pa.string()),
    ]
)


#: The labels table's column of the person in each image (CelebA's identity_CelebA.txt; null
#: where the source has none). Bootstrap intervals and custom splits go by it: ~20 images of one
#: person are not 20 independent draws. Labels tables written before it lack it (read as null).
IDENTITY = "identity"


#: The labels table's column of the class of each image (a class-per-folder source: the folder
#: name; null where the source has none, e.g. CelebA). ``train.target: class`` fits it. Labels
#: tables written before it lack it (read as null).
CLASS = "class"


def labels_schema(
    attributes: Sequence[str], *, identity: bool = False, klass: bool = False
) -> pa.Schema:
    """The labels table: image_id, split, [identity,] [class,] one bool column per attribute.
    ingest always writes ``identity`` and ``class`` (null where the source has none)."""
    return pa.schema(
        [
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("split", pa.string(), nullable=False),
            *([pa.field(IDENTITY, pa.int64(), nullable=True)] if identity else []),
            *([pa.field(CLASS, pa.string(), nullable=True)] if klass else []),
            *[pa.field(a, pa.bool_(), nullable=False) for a in attributes],
        ]
    )


def spark_schema(schema: pa.Schema) -> Any:
    """The Spark StructType of an Arrow schema (pyspark imported here only)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)

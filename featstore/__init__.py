"""featstore: Spark batch jobs that turn an image set into a Parquet feature store of CNN
embeddings, and compare classifiers trained on those features."""

from __future__ import annotations

__version__ = "0.1.0"

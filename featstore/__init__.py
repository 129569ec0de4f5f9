"""featstore: Spark batch jobs that turn an image set into a Parquet feature store of CNN
embeddings, and compare classifiers trained on those features."""

from __future__ import annotations

import os as _os

__version__ = "0.1.0"

# A Spark Python worker of a quiet run (FEATSTORE_QUIET=1 comes from the driver, see
# featstore/quiet.py): filter TensorFlow's start-up lines here too, before anything imports it.
if _os.environ.get("FEATSTORE_QUIET") == "1":
    from featstore import quiet as _quiet

    _quiet.install()

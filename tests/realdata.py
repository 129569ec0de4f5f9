"""Where the real CelebA annotation files are (no images): ``$FEATSTORE_CELEBA_ANNOTATIONS``, the
``shared/celeba`` folder beside the checkout, or the workplace's ``/work/shared/celeba``."""

from __future__ import annotations

import os
from pathlib import Path


def real_celeba_dir() -> Path:
    candidates = [
        os.environ.get("FEATSTORE_CELEBA_ANNOTATIONS", ""),
        str(Path(__file__).resolve().parents[2] / "shared" / "celeba"),
        "/work/shared/celeba",
    ]
    for c in candidates:
        if c and (Path(c) / "list_eval_partition.txt").is_file():
            return Path(c)
    return Path(candidates[1])


REAL_CELEBA = real_celeba_dir()

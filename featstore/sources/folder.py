"""Reader of the common image-classification layout: one sub-folder per class.

::

    <root>/<class>/<image file>

image_id is ``"<class>/<file name>"``; the attributes are the class names (sorted), and the labels
are one boolean (one-hot) column per class plus ``class``, the folder name (what
``train.target: class`` fits: one multi-class probe instead of one binary probe per class). There is no split file, so the reader draws a seeded,
stratified train/val/test split: within each class the images (sorted by file name) are shuffled
with a generator seeded by ``(seed, crc32(class name))`` and cut by ``fractions``. The split of a
class therefore depends only on the seed, the class name and its file names (adding a class does
not move the images of another), and every class with at least 3 images has at least one image
in each split whose fraction is above 0.

Every file listed is an image to ingest: the ingest job decodes it with the one decoder of ingest
and extract (:mod:`featstore.decode`), so a PNG (or a BMP, WebP, ... listed with ``extensions``)
is stored, converted to JPEG; a file that does not decode, whatever its name, goes to the errors
table. The extension only selects what is listed.
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from featstore.errors import InputError
from featstore.sources.base import SPLITS, Listing

logger = logging.getLogger(__name__)

#: What is listed by default; any format Pillow decodes is ingested (PNG: converted to JPEG).
DEFAULT_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png")
_RESERVED_CLASS_NAMES = frozenset({"image_id", "split", "identity", "class"})


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        raise InputError(
            f"fractions must be 3 numbers (train, val, test), got {fractions!r}"
        ) from None
    if len(values) != len(SPLITS):
        raise InputError(f"fractions must be 3 numbers (train, val, test), got {fractions!r}")
    if not all(math.isfinite(f) and f >= 0 for f in values):
        raise InputError(f"fractions must be finite and >= 0, got {fractions!r}")
    if not math.isclose(sum(values), 1.0, rel_tol=0, abs_tol=1e-6):
        raise InputError(f"fractions must sum to 1, got {fractions!r} (sum {sum(values):g})")
    if values[0] <= 0:
        raise InputError(f"the train fraction must be > 0, got {fractions!r}")
    return values[0], values[1], values[2]


def _check_extensions(extensions: Sequence[str]) -> tuple[str, ...]:
    if isinstance(extensions, str):
        extensions = (extensions,)
    out: list[str] = []
    for ext in extensions:
        if not isinstance(ext, str) or not ext.strip("."):
            raise InputError(f"bad image extension {ext!r}")
        ext = ext.lower()
        out.append(ext if ext.startswith(".") else "." + ext)
    if not out:
        raise InputError("no image extensions given")
    return tuple(out)


def split_counts(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """How many of ``n`` images go to train, val, test.

    Largest-remainder rounding of ``n * fraction`` (ties go to the earlier split); then, when
    ``n`` is at least the number of splits with a fraction above 0, every such split gets at
    least one image, taken from the largest split.
    """
    exact = [n * f for f in fractions]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(exact)), key=lambda k: (-(exact[k] - counts[k]), k))
    for k in order[: n - sum(counts)]:
        counts[k] += 1
    wanted = [k for k, f in enumerate(fractions) if f > 0]
    if n >= len(wanted):
        for k in wanted:
            if counts[k] == 0:
                donor = max(range(len(counts)), key=lambda j: (counts[j], -j))
                counts[donor] -= 1
                counts[k] += 1
    return counts[0], counts[1], counts[2]


def _class_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def read_folder(
    root: str | os.PathLike[str],
    *,
    seed: int = 0,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
) -> Listing:
    """Read ``<root>/<class>/<image>`` into a :class:`Listing` (source "folder").

    Hidden entries (names starting with ".") are skipped; files with other extensions and
    nested folders inside a class folder are ignored and counted in a log line. Extensions match
    case-insensitively. Raises InputError for a missing root, a root with no class sub-folders,
    a class folder with no images, bad fractions or a bad seed.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be an integer >= 0, got {seed!r}")
    fracs = _check_fractions(fractions)
    exts = _check_extensions(extensions)

    root_path = Path(os.path.abspath(os.fspath(root)))
    classes = _class_folders(root_path)
    ids, splits, class_of = _split_classes(root_path, classes, int(seed), fracs, exts)

    order = np.argsort(np.asarray(ids, dtype=object), kind="stable")
    image_id = np.asarray(ids, dtype=object)[order]
    split = np.asarray(splits, dtype=object)[order]
    cls = np.asarray(class_of, dtype=np.int64)[order]
    images = pd.DataFrame(
        {
            "image_id": image_id,
            "split": split,
            "source_path": [str(root_path / i) for i in image_id],
        }
    )
    labels = pd.DataFrame(
        {"image_id": image_id, "split": split, "class": np.asarray(classes, dtype=object)[cls]}
    )
    for c, name in enumerate(classes):
        labels[name] = cls == c
    counts_by_split = images["split"].value_counts().reindex(SPLITS, fill_value=0)
    logger.info(
        "folder %s: %d images in %d classes (%s), seed %d",
        root_path,
        len(images),
        len(classes),
        ", ".join(f"{s}={int(n)}" for s, n in counts_by_split.items()),
        seed,
    )
    return Listing(
        images=images,
        labels=labels,
        attributes=classes,
        problems=[],
        files=[],
        source="folder",
    )


def _class_folders(root_path: Path) -> list[str]:
    """The class sub-folders of ``root_path``, sorted (files next to them logged and ignored);
    InputError for a missing root, no class folders or a reserved class name."""
    if not root_path.exists():
        raise InputError(f"{root_path}: image folder not found")
    if not root_path.is_dir():
        raise InputError(f"{root_path}: not a folder")

    class_dirs: list[str] = []
    top_files = 0
    with os.scandir(root_path) as it:
        for entry in it:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                class_dirs.append(entry.name)
            else:
                top_files += 1
    if not class_dirs:
        what = "empty folder" if top_files == 0 else f"{top_files} file(s) but"
        raise InputError(
            f"{root_path}: {what} no class sub-folders (expected <root>/<class>/<image>)"
        )
    if top_files:
        logger.info("%s: ignored %d file(s) next to the class folders", root_path, top_files)
    classes = sorted(class_dirs)
    for name in classes:
        if name in _RESERVED_CLASS_NAMES:
            raise InputError(f"{root_path / name}: class name {name!r} is reserved")
    return classes


def _class_files(class_dir: Path, exts: tuple[str, ...]) -> tuple[list[str], int, int]:
    """The image files of one class folder, sorted; how many other files and nested folders
    it holds. InputError when it has no images."""
    files: list[str] = []
    ignored_files = 0
    ignored_dirs = 0
    with os.scandir(class_dir) as it:
        for entry in it:
            if entry.name.startswith("."):
                ignored_files += 1
            elif entry.is_dir():
                ignored_dirs += 1
            elif entry.name.lower().endswith(exts):
                files.append(entry.name)
            else:
                ignored_files += 1
    if not files:
        raise InputError(f"{class_dir}: class folder has no images ({', '.join(exts)})")
    files.sort()
    return files, ignored_files, ignored_dirs


def _split_classes(
    root_path: Path,
    classes: list[str],
    seed: int,
    fracs: tuple[float, float, float],
    exts: tuple[str, ...],
) -> tuple[list[str], list[str], list[int]]:
    """Every image's id, split and class number, class by class (the seeded, stratified split
    of the module docstring)."""
    ids: list[str] = []
    splits: list[str] = []
    class_of: list[int] = []
    ignored_files = 0
    ignored_dirs = 0
    for c, name in enumerate(classes):
        class_dir = root_path / name
        files, n_files, n_dirs = _class_files(class_dir, exts)
        ignored_files += n_files
        ignored_dirs += n_dirs
        counts = split_counts(len(files), fracs)
        if len(files) < len(SPLITS):
            logger.warning(
                "%s: only %d image(s); split %s",
                class_dir,
                len(files),
                dict(zip(SPLITS, counts)),
            )
        order = _class_rng(seed, name).permutation(len(files))
        assigned = np.repeat(np.arange(len(SPLITS)), counts)
        for pos, k in zip(order, assigned):
            ids.append(f"{name}/{files[pos]}")
            splits.append(SPLITS[k])
            class_of.append(c)
    if ignored_files or ignored_dirs:
        logger.info(
            "%s: ignored %d file(s) without an image extension (%s) and %d nested folder(s)",
            root_path,
            ignored_files,
            ", ".join(exts),
            ignored_dirs,
        )
    return ids, splits, class_of

"""Reader of the official CelebA layout.

::

    <root>/img_align_celeba/000001.jpg ... 202599.jpg
    <root>/list_attr_celeba.txt       count line, header of attribute names, rows "<id> 1 -1 ..."
    <root>/list_eval_partition.txt    rows "<id> <0|1|2>" (0 = train, 1 = val, 2 = test)
    <root>/identity_CelebA.txt        optional, rows "<id> <identity>"

The annotation files are parsed vectorised (pandas' C tokenizer) and validated as a whole; only
when the fast path finds something wrong is the file scanned line by line, to name the first bad
line in the :class:`~featstore.errors.AnnotationError`. Line numbers are 1-based and count every
line of the file (the count and header lines included). LF and CRLF line endings, a missing
newline at the end, padding with any number of spaces and trailing blank lines are accepted;
blank lines between rows are not.

The ``read_*`` functions return frames in file order with a fresh RangeIndex, so that row ``i``
is line ``i + 3`` of an attribute file and line ``i + 1`` of a partition or identity file.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from featstore.errors import AnnotationError, InputError
from featstore.sources.base import SPLITS, STAGE_LISTING, ImageProblem, Listing

logger = logging.getLogger(__name__)

IMAGE_DIR = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IDENTITY_FILE = "identity_CelebA.txt"
IMAGE_SUFFIX = ".jpg"

# first data line of each file (1-based)
_ATTR_FIRST_LINE = 3
_PLAIN_FIRST_LINE = 1

_RESERVED_ATTRIBUTE_NAMES = frozenset({"image_id", "split"})

# error texts for per-image problems (the errors table shows them)
MISSING_FILE_ERROR = f"listed in {ATTR_FILE} but file missing"
UNLISTED_FILE_ERROR = "present but not listed in the annotation files"


# ---------------------------------------------------------------------------------------------
# low-level parsing


def _read_lines(path: Path) -> list[str]:
    """The file's lines without line terminators (LF, CRLF or CR), trailing blank lines dropped."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: annotation file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read annotation file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise AnnotationError(str(path), line, "not a text file (invalid UTF-8)") from None
    # str.splitlines would also split on \x0b, \x1c, \u2028 ...; only line terminators count here
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _scan_rows(
    path: Path,
    rows: list[str],
    first_line: int,
    n_values: int,
    allowed: frozenset[str] | None,
    what: str,
) -> None:
    """Slow path: find the first malformed row and raise an AnnotationError naming its line."""
    for i, row in enumerate(rows):
        line = first_line + i
        fields = row.split()
        if not fields:
            raise AnnotationError(str(path), line, "empty line between rows")
        if len(fields) != n_values + 1:
            raise AnnotationError(
                str(path),
                line,
                f"expected an image id and {n_values} {what}, found {len(fields)} fields",
            )
        for j, value in enumerate(fields[1:]):
            if allowed is not None:
                ok = value in allowed
            else:
                try:
                    int(value)
                    ok = True
                except ValueError:
                    ok = False
            if not ok:
                expected = "/".join(sorted(allowed)) if allowed is not None else "an integer"
                raise AnnotationError(
                    str(path),
                    line,
                    f"value {value!r} in field {j + 2} of {fields[0]} is not {expected}",
                )


def _parse_rows(
    path: Path,
    rows: list[str],
    first_line: int,
    n_values: int,
    allowed: tuple[int, ...] | None,
    what: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Parse rows ``<id> v1 ... vn`` into (ids: object array, values: int64 [rows, n]).

    Fast path with pandas' C tokenizer; any irregularity sends the rows through
    :func:`_scan_rows`, which raises with the first bad line.
    """
    allowed_tokens = frozenset(str(v) for v in allowed) if allowed is not None else None
    if not rows:
        return np.empty(0, dtype=object), np.empty((0, n_values), dtype=np.int64)
    try:
        frame = pd.read_csv(
            io.StringIO("\n".join(rows)),
            sep=r"\s+",
            header=None,
            engine="c",
            quoting=csv.QUOTE_NONE,
            skip_blank_lines=False,
            na_filter=False,
            dtype={0: str},
        )
    except (pd.errors.ParserError, ValueError) as exc:
        _scan_rows(path, rows, first_line, n_values, allowed_tokens, what)
        raise AnnotationError(str(path), None, f"cannot parse: {exc}") from None

    regular = (
        frame.shape == (len(rows), n_values + 1)
        and all(frame.dtypes.iloc[k].kind == "i" for k in range(1, n_values + 1))
        and not (frame[0] == "").any()
    )
    if not regular:
        _scan_rows(path, rows, first_line, n_values, allowed_tokens, what)
        raise AnnotationError(str(path), None, "cannot parse the rows")  # pragma: no cover

    ids = frame[0].to_numpy(dtype=object)
    values = frame.iloc[:, 1:].to_numpy(dtype=np.int64)
    if allowed is not None:
        bad = np.ones(values.shape, dtype=bool)
        for v in allowed:  # cheaper than np.isin for a handful of allowed values
            bad &= values != v
        if bad.any():
            row, col = np.argwhere(bad)[0]
            expected = "/".join(str(v) for v in sorted(allowed))
            raise AnnotationError(
                str(path),
                first_line + int(row),
                f"value {str(values[row, col])!r} in field {col + 2} of {ids[row]} is not {expected}",
            )
    _check_ids(path, ids, first_line)
    return ids, values


def _check_ids(path: Path, ids: np.ndarray, first_line: int) -> None:
    """Image ids are plain file names and unique."""
    series = pd.Series(ids, dtype=object)
    joined = "\n".join(ids)  # one scan of all ids instead of a regex per id
    unsafe = series.isin([".", ".."])
    if "/" in joined or "\\" in joined:
        unsafe |= series.str.contains(r"[/\\]", regex=True)
    if unsafe.any():
        row = int(np.flatnonzero(unsafe.to_numpy())[0])
        raise AnnotationError(
            str(path), first_line + row, f"image id {ids[row]!r} is not a plain file name"
        )
    dup = series.duplicated(keep=False).to_numpy()
    if dup.any():
        rows = np.flatnonzero(dup)
        first_dup = int(rows[0])
        image_id = ids[first_dup]
        same = rows[ids[rows] == image_id]
        n_dup = int(series.duplicated(keep="first").sum())
        raise AnnotationError(
            str(path),
            first_line + int(same[1]),
            f"duplicate image id {image_id} (first on line {first_line + int(same[0])}); "
            f"{n_dup} duplicate row(s) in the file",
        )


# ---------------------------------------------------------------------------------------------
# public readers of the single files


def read_attributes(
    path: str | os.PathLike[str], *, check_count: bool = True
) -> tuple[list[str], pd.DataFrame]:
    """Read ``list_attr_celeba.txt``.

    Returns (attribute names in header order, DataFrame[image_id: str, <attribute>: bool ...]) in
    file order. Values 1 -> True, -1 -> False.

    ``check_count=False`` tolerates a count line (line 1) that disagrees with the number of rows
    (it must still be an integer): for truncated copies such as the first 20,000 rows of the
    official file, whose count line still says 202599. The disagreement is logged as a warning.
    """
    path = Path(path)
    lines = _read_lines(path)
    if not lines:
        raise AnnotationError(str(path), None, "empty file: expected a count line and a header")
    count_text = lines[0].strip()
    try:
        count = int(count_text)
    except ValueError:
        raise AnnotationError(
            str(path), 1, f"count line {count_text!r} is not an integer"
        ) from None
    if count < 0:
        raise AnnotationError(str(path), 1, f"count line {count} is negative")
    if len(lines) < 2 or not lines[1].strip():
        raise AnnotationError(str(path), 2, "missing header line of attribute names")
    attributes = lines[1].split()
    _check_header(path, attributes)

    rows = lines[2:]
    ids, values = _parse_rows(
        path, rows, _ATTR_FIRST_LINE, len(attributes), (1, -1), "attribute values (1/-1)"
    )
    if count != len(rows):
        message = f"count line says {count} rows but the file has {len(rows)}"
        if check_count:
            raise AnnotationError(str(path), 1, message)
        logger.warning("%s:1: %s (tolerated: check_count=False)", path, message)

    data: dict[str, np.ndarray] = {"image_id": ids}
    positive = values == 1
    for k, name in enumerate(attributes):
        data[name] = positive[:, k]
    frame = pd.DataFrame(data)
    logger.info("read %d rows x %d attributes from %s", len(frame), len(attributes), path)
    return attributes, frame


def _check_header(path: Path, attributes: list[str]) -> None:
    seen: set[str] = set()
    for name in attributes:
        if name in _RESERVED_ATTRIBUTE_NAMES:
            raise AnnotationError(str(path), 2, f"attribute name {name!r} is reserved")
        if name in seen:
            raise AnnotationError(str(path), 2, f"attribute {name!r} appears twice in the header")
        seen.add(name)
    first = attributes[0]
    if first.lower().endswith(IMAGE_SUFFIX):
        raise AnnotationError(
            str(path), 2, f"expected a header line of attribute names, found a row ({first} ...)"
        )


def read_partition(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read ``list_eval_partition.txt``: DataFrame[image_id: str, split: str] in file order.

    0 -> "train", 1 -> "val", 2 -> "test". No header line.
    """
    path = Path(path)
    lines = _read_lines(path)
    if not lines:
        raise AnnotationError(str(path), None, "empty file: expected rows '<image_id> <0|1|2>'")
    ids, values = _parse_rows(
        path, lines, _PLAIN_FIRST_LINE, 1, (0, 1, 2), "partition value (0/1/2)"
    )
    split = np.asarray(SPLITS, dtype=object)[values[:, 0]]
    frame = pd.DataFrame({"image_id": ids, "split": split})
    logger.info(
        "read %d rows from %s (%s)",
        len(frame),
        path,
        _split_counts(frame["split"]),
    )
    return frame


def _split_counts(split: pd.Series) -> str:
    counts = split.value_counts().reindex(SPLITS, fill_value=0)
    return ", ".join(f"{name}={int(n)}" for name, n in counts.items())


def read_identity(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read ``identity_CelebA.txt``: DataFrame[image_id: str, identity: int64] in file order."""
    path = Path(path)
    lines = _read_lines(path)
    if not lines:
        raise AnnotationError(str(path), None, "empty file: expected rows '<image_id> <identity>'")
    ids, values = _parse_rows(path, lines, _PLAIN_FIRST_LINE, 1, None, "identity (integer)")
    frame = pd.DataFrame({"image_id": ids, "identity": values[:, 0]})
    logger.info(
        "read %d rows, %d identities from %s", len(frame), frame["identity"].nunique(), path
    )
    return frame


# ---------------------------------------------------------------------------------------------
# the whole layout


def _list_images(image_dir: Path) -> tuple[list[str], int]:
    """Names of the *.jpg files in image_dir (one scandir, no stat per file); count of others."""
    names: list[str] = []
    other = 0
    with os.scandir(image_dir) as it:
        for entry in it:
            if entry.name.lower().endswith(IMAGE_SUFFIX) and entry.is_file():
                names.append(entry.name)
            else:
                other += 1
    return names, other


def _first_not_in(ids: pd.Series, others: Iterable[pd.Series]) -> tuple[int, int] | None:
    """(row of the first id not in any of ``others``, how many such ids), or None."""
    known = np.zeros(len(ids), dtype=bool)
    for other in others:
        if len(other) == len(ids) and np.array_equal(ids.to_numpy(), other.to_numpy()):
            return None  # the usual case: same ids in the same order
        known |= ids.isin(other).to_numpy()
    missing = np.flatnonzero(~known)
    if len(missing) == 0:
        return None
    return int(missing[0]), len(missing)


def _cross_check(
    left_path: Path,
    left: pd.Series,
    left_first_line: int,
    right_paths: list[Path],
    rights: list[pd.Series],
) -> None:
    found = _first_not_in(left, rights)
    if found is None:
        return
    row, n = found
    names = " or ".join(p.name for p in right_paths)
    raise AnnotationError(
        str(left_path),
        left_first_line + row,
        f"image id {left.iloc[row]} is not in {names} ({n} id(s) of {left_path.name} are not)",
    )


def read_celeba(root: str | os.PathLike[str], *, check_count: bool = True) -> Listing:
    """Read a CelebA folder (official layout) into a :class:`Listing` (source "celeba").

    Missing folders or annotation files, an empty image folder, malformed annotation files and
    annotation files that disagree on the image ids raise (InputError / AnnotationError). Images
    listed but missing on disk, and ``*.jpg`` files present but not listed, are returned as
    ``problems`` (stage "listing"); the other images are listed normally.
    ``check_count`` is passed to :func:`read_attributes`.
    """
    root_path = Path(os.path.abspath(os.fspath(root)))
    image_dir = _check_layout(root_path)
    on_disk = _images_on_disk(image_dir)
    attributes, labels, files = _read_annotations(root_path, check_count=check_count)
    present, problems = _match_disk(labels, on_disk, image_dir)

    labels = labels.loc[present].reset_index(drop=True)
    images = pd.DataFrame(
        {
            "image_id": labels["image_id"],
            "split": labels["split"],
            "source_path": str(image_dir) + os.sep + labels["image_id"],
        }
    )
    logger.info(
        "celeba %s: %d images (%s), %d attributes",
        root_path,
        len(images),
        _split_counts(images["split"]),
        len(attributes),
    )
    return Listing(
        images=images,
        labels=labels,
        attributes=list(attributes),
        problems=problems,
        files=files,
        source="celeba",
    )


def _check_layout(root_path: Path) -> Path:
    """The image folder of ``root_path``; InputError when the folder, the image folder or a
    required annotation file is not there."""
    if not root_path.exists():
        raise InputError(f"{root_path}: CelebA folder not found")
    if not root_path.is_dir():
        raise InputError(f"{root_path}: not a folder")
    image_dir = root_path / IMAGE_DIR
    if not image_dir.is_dir():
        raise InputError(f"{image_dir}: image folder not found (expected {IMAGE_DIR}/*.jpg)")
    for required in (root_path / ATTR_FILE, root_path / PARTITION_FILE):
        if not required.is_file():
            raise InputError(f"{required}: annotation file not found")
    return image_dir


def _images_on_disk(image_dir: Path) -> list[str]:
    """The ``*.jpg`` names in ``image_dir`` (others logged and ignored); InputError if none."""
    on_disk, n_other = _list_images(image_dir)
    if n_other:
        logger.info("%s: ignored %d entries that are not *.jpg files", image_dir, n_other)
    if not on_disk:
        raise InputError(f"{image_dir}: no *.jpg images in the image folder")
    return on_disk


def _read_annotations(
    root_path: Path, *, check_count: bool
) -> tuple[list[str], pd.DataFrame, list[str]]:
    """The attribute names, the labels table (``image_id``, ``split``, the attributes and, with
    an identity file, ``identity``; sorted by image id) and the annotation files read. The files
    must list the same image ids (AnnotationError naming the first that is not)."""
    attr_path = root_path / ATTR_FILE
    partition_path = root_path / PARTITION_FILE
    identity_path = root_path / IDENTITY_FILE
    attributes, attr = read_attributes(attr_path, check_count=check_count)
    partition = read_partition(partition_path)
    files = [str(attr_path), str(partition_path)]

    _cross_check(
        attr_path, attr["image_id"], _ATTR_FIRST_LINE, [partition_path], [partition["image_id"]]
    )
    _cross_check(
        partition_path, partition["image_id"], _PLAIN_FIRST_LINE, [attr_path], [attr["image_id"]]
    )

    identity = None
    if identity_path.is_file():
        identity = read_identity(identity_path)
        files.append(str(identity_path))
        _cross_check(
            identity_path,
            identity["image_id"],
            _PLAIN_FIRST_LINE,
            [attr_path, partition_path],
            [attr["image_id"], partition["image_id"]],
        )
        n_without = int((~attr["image_id"].isin(identity["image_id"])).sum())
        if n_without:
            logger.warning("%s: %d listed image(s) have no identity", identity_path, n_without)

    if np.array_equal(attr["image_id"].to_numpy(), partition["image_id"].to_numpy()):
        labels = attr.assign(split=partition["split"].to_numpy())  # same order: no join needed
    else:  # ids are unique and the same set in both (checked above)
        labels = attr.merge(partition, on="image_id", how="inner")
    labels = labels[["image_id", "split", *attributes]]
    if identity is not None:  # the person in each image: resampling and splits go by it
        person = identity.set_index("image_id")["identity"]
        labels = labels.assign(identity=labels["image_id"].map(person).astype("Int64"))
    labels = labels.sort_values("image_id", kind="stable", ignore_index=True)
    return attributes, labels, files


def _match_disk(
    labels: pd.DataFrame, on_disk: list[str], image_dir: Path
) -> tuple[np.ndarray, list[ImageProblem]]:
    """Which rows of ``labels`` have their image on disk, and the listing problems: listed but
    missing, present but not listed (sorted by image id; one warning line when any)."""
    on_disk.sort()
    disk = pd.Series(on_disk, dtype=object)
    if np.array_equal(disk.to_numpy(), labels["image_id"].to_numpy()):
        present = np.ones(len(labels), dtype=bool)  # every listed image there, nothing else
        unlisted = np.empty(0, dtype=object)
    else:
        present = labels["image_id"].isin(disk).to_numpy()
        unlisted = disk[~disk.isin(labels["image_id"])].to_numpy()
    prefix = str(image_dir) + os.sep

    missing = labels.loc[~present, ["image_id", "split"]]
    problems = [
        ImageProblem(
            image_id=i,
            source_path=prefix + i,
            stage=STAGE_LISTING,
            error=MISSING_FILE_ERROR,
            split=split,
        )
        for i, split in zip(missing["image_id"], missing["split"])
    ] + [
        ImageProblem(
            image_id=i, source_path=prefix + i, stage=STAGE_LISTING, error=UNLISTED_FILE_ERROR
        )
        for i in unlisted
    ]
    problems.sort(key=lambda p: p.image_id)
    n_missing = int((~present).sum())
    if n_missing or len(unlisted):
        logger.warning(
            "%s: %d listed image(s) missing on disk, %d image(s) present but not listed",
            image_dir.parent,
            n_missing,
            len(unlisted),
        )
    return present, problems

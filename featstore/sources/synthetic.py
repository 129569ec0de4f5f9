"""A synthetic CelebA: drawn faces in the official CelebA layout and file formats.

``generate(out_dir, n)`` writes::

    out_dir/img_align_celeba/000001.jpg ...   RGB JPEG, 178 wide x 218 high
    out_dir/list_attr_celeba.txt              count line, header line, rows; CRLF
    out_dir/list_eval_partition.txt           "000001.jpg 0" rows; LF
    out_dir/identity_CelebA.txt               "000001.jpg 17" rows; LF

The text files copy the official ones byte for byte in style: the attribute file has CRLF line
endings, a header of the 40 names that ends with a space, and rows where the first value follows
the image name after one space and every later value is right-aligned to width 2 after one space
(``000007.jpg 1 -1  1 ...``); it ends with a CRLF. The partition and identity files use LF and,
like the official partition file, have no newline after the last row.

Labels come either from a real ``list_attr_celeba.txt`` (rows sampled with replacement, so the
joint distribution of the 40 attributes is the real one) or from built-in marginal rates
(:data:`MARGINAL_RATES`, from the first 20,000 rows of the official file) with a few dependencies
on ``Male`` and ``Young`` and logical constraints. In the built-in mode ``Attractive`` (like every
attribute in :data:`UNRENDERED_ATTRIBUTES`) is drawn independently of everything else and is not
drawn in the image: a control whose label carries no signal.

The attributes in :data:`RENDERED_ATTRIBUTES` are visible in the image; pose, face size, lighting,
background, colour cast and noise vary from image to image. Every image depends on
``(seed, index)`` (and on the identity it belongs to) only, so the output is byte-identical for any
number of worker processes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from featstore import fsio
from featstore.errors import AnnotationError, InputError
from featstore.sources.base import CELEBA_ATTRIBUTES, CELEBA_SPLIT_SIZES, SPLITS
from featstore.sources.synthetic_faces import (
    _STREAM_LABELS,
    _STREAM_LAYOUT,
    _noise_bank,
    render_image,
)
from featstore.timing import Stopwatch

logger = logging.getLogger(__name__)

IMAGE_DIR = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IDENTITY_FILE = "identity_CelebA.txt"

# Positive rate of each attribute in the first 20,000 rows of the official list_attr_celeba.txt.
MARGINAL_RATES: dict[str, float] = {
    "5_o_Clock_Shadow": 0.112,
    "Arched_Eyebrows": 0.264,
    "Attractive": 0.513,
    "Bags_Under_Eyes": 0.205,
    "Bald": 0.023,
    "Bangs": 0.151,
    "Big_Lips": 0.239,
    "Big_Nose": 0.237,
    "Black_Hair": 0.243,
    "Blond_Hair": 0.149,
    "Blurry": 0.052,
    "Brown_Hair": 0.203,
    "Bushy_Eyebrows": 0.144,
    "Chubby": 0.057,
    "Double_Chin": 0.046,
    "Eyeglasses": 0.065,
    "Goatee": 0.062,
    "Gray_Hair": 0.042,
    "Heavy_Makeup": 0.385,
    "High_Cheekbones": 0.450,
    "Male": 0.422,
    "Mouth_Slightly_Open": 0.479,
    "Mustache": 0.039,
    "Narrow_Eyes": 0.116,
    "No_Beard": 0.832,
    "Oval_Face": 0.279,
    "Pale_Skin": 0.043,
    "Pointy_Nose": 0.276,
    "Receding_Hairline": 0.078,
    "Rosy_Cheeks": 0.063,
    "Sideburns": 0.058,
    "Smiling": 0.479,
    "Straight_Hair": 0.212,
    "Wavy_Hair": 0.316,
    "Wearing_Earrings": 0.186,
    "Wearing_Hat": 0.050,
    "Wearing_Lipstick": 0.471,
    "Wearing_Necklace": 0.122,
    "Wearing_Necktie": 0.074,
    "Young": 0.780,
}

# P(attribute | Male) in the same rows, for the attributes that depend strongly on Male; the rate
# for women is derived so that the marginal rate stays MARGINAL_RATES[attribute].
_MALE_RATES: dict[str, float] = {
    "5_o_Clock_Shadow": 0.266,
    "Arched_Eyebrows": 0.052,
    "Bald": 0.055,
    "Big_Nose": 0.424,
    "Blond_Hair": 0.022,
    "Bushy_Eyebrows": 0.243,
    "Chubby": 0.119,
    "Double_Chin": 0.097,
    "Eyeglasses": 0.120,
    "Heavy_Makeup": 0.003,
    "No_Beard": 0.603,
    "Rosy_Cheeks": 0.005,
    "Sideburns": 0.139,
    "Wearing_Earrings": 0.015,
    "Wearing_Hat": 0.084,
    "Wearing_Lipstick": 0.006,
    "Wearing_Necklace": 0.018,
    "Wearing_Necktie": 0.175,
}
# P(Goatee | Male, facial hair) and P(Mustache | Male, facial hair); women have neither.
_GOATEE_GIVEN_BEARD = 0.367
_MUSTACHE_GIVEN_BEARD = 0.229
# P(Gray_Hair | Young); the rate for the old is derived.
_GRAY_GIVEN_YOUNG = 0.002
_MALE_ONLY = ("5_o_Clock_Shadow", "Bald", "Sideburns", "Wearing_Necktie")

RENDERED_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby",
    "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "Male",
    "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Pale_Skin",
    "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip
UNRENDERED_ATTRIBUTES: tuple[str, ...] = tuple(
    a for a in CELEBA_ATTRIBUTES if a not in RENDERED_ATTRIBUTES
)

_IDX = {a: i for i, a in enumerate(CELEBA_ATTRIBUTES)}
_IMAGES_PER_IDENTITY = 20  # about the official 202,599 / 10,177
_CHUNK = 32  # images per task sent to a worker process


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate` wrote."""

    out_dir: str
    n: int
    split_counts: dict[str, int]
    seconds: float


# ----------------------------------------------------------------------------------------------
# public entry point


def generate(
    out_dir: str | os.PathLike,
    n: int,
    *,
    seed: int = 0,
    labels_from: str | None = None,
    workers: int = 1,
    quality: int = 90,
) -> SynthSummary:
    """Write a synthetic CelebA set of ``n`` images under ``out_dir`` (see the module docstring).

    Deterministic for ``(n, seed, labels_from)``: the files are byte-identical for any ``workers``.
    Raises :class:`InputError` on bad arguments, on an ``out_dir`` whose ``img_align_celeba``
    already holds files, and on an unreadable or malformed ``labels_from`` file.
    """
    clock = Stopwatch()
    _check_args(n, seed, workers, quality)
    out = Path(out_dir)
    img_dir = out / IMAGE_DIR
    if img_dir.is_dir() and any(img_dir.iterdir()):
        raise InputError(f"{img_dir} already holds files; choose an empty output directory")
    if img_dir.exists() and not img_dir.is_dir():
        raise InputError(f"{img_dir} exists and is not a directory")
    real_labels = _read_attr_file(labels_from) if labels_from is not None else None

    splits = _split_sizes(n)
    split_of = np.repeat(np.arange(len(SPLITS), dtype=np.int64), [splits[s] for s in SPLITS])
    identities = _identities(n, seed, splits)
    labels = np.stack([_labels_for(seed, i, real_labels) for i in range(n)])

    try:
        img_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {img_dir}: {exc.strerror or exc}") from None
    logger.info(
        "generating %d synthetic CelebA images in %s (seed=%d, labels=%s, workers=%d)",
        n,
        out,
        seed,
        labels_from or "built-in rates",
        workers,
    )
    jobs = [
        (
            str(img_dir),
            seed,
            quality,
            list(range(lo, min(lo + _CHUNK, n))),
            labels[lo : lo + _CHUNK],
            identities[lo : lo + _CHUNK],
        )
        for lo in range(0, n, _CHUNK)
    ]
    if workers == 1 or len(jobs) == 1:
        for job in jobs:
            _render_chunk(job)
    else:
        # fork where the platform has it: workers start at once and the caller's main module
        # needs no ``if __name__ == "__main__"`` guard; workers only draw and write files.
        methods = multiprocessing.get_all_start_methods()
        Image.init()  # load Pillow's plugins and the noise field once, before forking
        _noise_bank()
        ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        with ctx.Pool(min(workers, len(jobs))) as pool:
            for _ in pool.imap_unordered(_render_chunk, jobs):
                pass

    ids = [_image_id(i) for i in range(n)]
    partition = "\n".join(f"{ids[i]} {split_of[i]}" for i in range(n))
    identity = "\n".join(f"{ids[i]} {identities[i]}" for i in range(n))
    fsio.write_text(out / ATTR_FILE, _attr_text(ids, labels), encoding="ascii")
    fsio.write_text(out / PARTITION_FILE, partition, encoding="ascii")
    fsio.write_text(out / IDENTITY_FILE, identity, encoding="ascii")

    seconds = clock.seconds
    logger.info("wrote %d images in %.1f s (%.0f images/s)", n, seconds, n / max(seconds, 1e-9))
    return SynthSummary(out_dir=str(out), n=n, split_counts=splits, seconds=seconds)


def _check_args(n: int, seed: int, workers: int, quality: int) -> None:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise InputError(f"n must be a positive integer, got {n!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(workers, (int, np.integer)) or isinstance(workers, bool) or workers < 1:
        raise InputError(f"workers must be a positive integer, got {workers!r}")
    if not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise InputError(f"quality must be an integer from 1 to 100, got {quality!r}")


def _image_id(index: int) -> str:
    return f"{index + 1:06d}.jpg"


def _attr_text(ids: Sequence[str], labels: np.ndarray) -> str:
    """The official list_attr_celeba.txt layout, CRLF line endings."""
    vals = np.where(labels, "1", "-1")
    lines = [str(len(ids)), " ".join(CELEBA_ATTRIBUTES) + " "]
    for image_id, row in zip(ids, vals):
        lines.append(f"{image_id} {row[0]}" + "".join(f" {v:>2}" for v in row[1:]))
    return "\r\n".join(lines) + "\r\n"


# ----------------------------------------------------------------------------------------------
# splits, identities, labels


def _split_sizes(n: int) -> dict[str, int]:
    """Contiguous split sizes in the official proportions; each split non-empty when n >= 3."""
    total = sum(CELEBA_SPLIT_SIZES.values())
    sizes = {s: round(n * CELEBA_SPLIT_SIZES[s] / total) for s in ("val", "test")}
    if n >= 3:
        sizes = {s: max(1, v) for s, v in sizes.items()}
    else:
        sizes = {"val": 0, "test": 0}
    return {"train": n - sizes["val"] - sizes["test"], **sizes}


def _identities(n: int, seed: int, splits: dict[str, int]) -> np.ndarray:
    """Identity number of each image: about 20 images each, never across splits, shuffled."""
    rng = np.random.default_rng([seed, _STREAM_LAYOUT])
    counts = [max(1, round(splits[s] / _IMAGES_PER_IDENTITY)) if splits[s] else 0 for s in SPLITS]
    numbers = rng.permutation(sum(counts)) + 1  # identity numbers, not in image order
    out, first = [], 0
    for split, k in zip(SPLITS, counts):
        size = splits[split]
        if not size:
            continue
        # uneven group sizes: every identity gets one image, the rest by random weights
        weights = rng.dirichlet(np.full(k, 2.0))
        per = 1 + rng.multinomial(size - k, weights) if size >= k else np.ones(k, dtype=np.int64)
        members = np.repeat(numbers[first : first + k], per)[:size]
        out.append(rng.permutation(members))
        first += k
    return np.concatenate(out).astype(np.int64)


def _labels_for(seed: int, index: int, real: np.ndarray | None) -> np.ndarray:
    rng = np.random.default_rng([seed, _STREAM_LABELS, index])
    if real is not None:
        return real[rng.integers(len(real))]
    return _sample_labels(rng)


def _rate(attr: str, male: bool) -> float:
    """P(attr | male) with the marginal rate kept for the attributes in _MALE_RATES."""
    p = MARGINAL_RATES[attr]
    if attr not in _MALE_RATES:
        return p
    pm, p_male = MARGINAL_RATES["Male"], _MALE_RATES[attr]
    if male:
        return p_male
    return min(1.0, max(0.0, (p - pm * p_male) / (1.0 - pm)))


def _sample_labels(rng: np.random.Generator) -> np.ndarray:
    """One row of 40 labels from the built-in rates.

    Each attribute is a Bernoulli draw at its marginal rate, except: the attributes in
    _MALE_RATES depend on Male (marginal rate kept); women have no facial hair, sideburns, stubble,
    necktie or bald head; Goatee or Mustache imply not No_Beard; Heavy_Makeup implies
    Wearing_Lipstick; at most one hair colour, Gray_Hair mostly when not Young; Straight_Hair and
    Wavy_Hair exclude each other; Bald excludes Bangs, Straight_Hair, Wavy_Hair and
    Receding_Hairline. The other attributes, Attractive among them, are independent of everything.
    """
    u = rng.random(len(CELEBA_ATTRIBUTES) + 4)
    lab = {a: bool(u[i] < MARGINAL_RATES[a]) for i, a in enumerate(CELEBA_ATTRIBUTES)}
    male, young = lab["Male"], lab["Young"]
    for a in _MALE_RATES:
        lab[a] = bool(u[_IDX[a]] < _rate(a, male))
    if not male:
        for a in _MALE_ONLY:
            lab[a] = False
    # facial hair: women have none; men without No_Beard have a goatee and/or mustache or a beard
    if not male:
        lab["No_Beard"], lab["Goatee"], lab["Mustache"] = True, False, False
    elif lab["No_Beard"]:
        lab["Goatee"] = lab["Mustache"] = False
    else:
        lab["Goatee"] = bool(u[_IDX["Goatee"]] < _GOATEE_GIVEN_BEARD)
        lab["Mustache"] = bool(u[_IDX["Mustache"]] < _MUSTACHE_GIVEN_BEARD)
    # lipstick nearly always comes with heavy makeup; marginal rate of lipstick kept per sex
    if lab["Heavy_Makeup"]:
        lab["Wearing_Lipstick"] = True
    else:
        p_lip, p_mk = _rate("Wearing_Lipstick", male), _rate("Heavy_Makeup", male)
        lab["Wearing_Lipstick"] = bool(u[40] < max(0.0, (p_lip - p_mk) / (1.0 - p_mk)))
    # one hair colour at most; gray hair goes with age, blond hair with women
    pg = MARGINAL_RATES["Gray_Hair"]
    py = MARGINAL_RATES["Young"]
    p_gray = _GRAY_GIVEN_YOUNG if young else (pg - py * _GRAY_GIVEN_YOUNG) / (1.0 - py)
    colours = (
        ("Gray_Hair", p_gray),
        ("Blond_Hair", _rate("Blond_Hair", male)),
        ("Black_Hair", MARGINAL_RATES["Black_Hair"]),
        ("Brown_Hair", MARGINAL_RATES["Brown_Hair"]),
    )
    v, edge = u[41], 0.0
    for a, p in colours:
        lab[a] = bool(edge <= v < edge + p)
        edge += p
    # hair texture: straight and wavy exclude each other; a bald head has neither, and no bangs
    v = u[42]
    lab["Straight_Hair"] = bool(v < MARGINAL_RATES["Straight_Hair"])
    lab["Wavy_Hair"] = bool(
        MARGINAL_RATES["Straight_Hair"]
        <= v
        < MARGINAL_RATES["Straight_Hair"] + MARGINAL_RATES["Wavy_Hair"]
    )
    if lab["Bald"]:
        lab["Bangs"] = lab["Straight_Hair"] = lab["Wavy_Hair"] = lab["Receding_Hairline"] = False
    return np.array([lab[a] for a in CELEBA_ATTRIBUTES], dtype=bool)


def _read_attr_file(path: str | os.PathLike) -> np.ndarray:
    """Rows of a list_attr_celeba.txt as a bool matrix in CELEBA_ATTRIBUTES column order.

    Tolerant of CRLF, of any run of spaces, of a count line that disagrees with the rows (a
    truncated copy) and of 0/1 instead of -1/1 values.
    """
    where = str(path)
    try:
        with open(path, "rb") as fh:
            head = [fh.readline().decode("ascii") for _ in range(2)]
    except OSError as exc:
        raise InputError(f"cannot read labels_from file {where}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise AnnotationError(where, None, "not an ASCII text file") from None
    try:
        int(head[0].strip())
    except ValueError:
        raise AnnotationError(where, 1, f"expected the row count, got {head[0][:40]!r}") from None
    names = head[1].split()
    missing = [a for a in CELEBA_ATTRIBUTES if a not in names]
    if missing:
        raise AnnotationError(where, 2, f"header lacks attribute(s) {', '.join(missing[:3])}")
    try:
        frame = pd.read_csv(path, sep=r"\s+", skiprows=2, header=None, engine="c")
    except pd.errors.EmptyDataError:
        raise AnnotationError(where, None, "no label rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise AnnotationError(where, None, f"cannot parse the rows: {first}") from None
    if frame.shape[1] != len(names) + 1:
        raise AnnotationError(
            where, 3, f"expected {len(names) + 1} fields per row, got {frame.shape[1]}"
        )
    values = frame.iloc[:, [names.index(a) + 1 for a in CELEBA_ATTRIBUTES]]
    short = values.isna().to_numpy()
    if short.any():
        r = int(np.argwhere(short)[0][0])
        raise AnnotationError(where, r + 3, f"expected {len(names) + 1} fields, the row is short")
    ok = values.isin((1, -1, 0)).to_numpy()
    if not ok.all():
        r, c = (int(v) for v in np.argwhere(~ok)[0])
        raise AnnotationError(where, r + 3, f"value {values.iat[r, c]!r} is not 1 or -1")
    return values.to_numpy() == 1


# ----------------------------------------------------------------------------------------------
# rendering (the drawing itself: featstore.sources.synthetic_faces)


def _render_chunk(job: tuple) -> int:
    img_dir, seed, quality, indices, labels, identities = job
    for index, lab, ident in zip(indices, labels, identities):
        data = render_image(seed, index, lab, int(ident), quality=quality)
        with open(os.path.join(img_dir, _image_id(index)), "wb") as fh:
            fh.write(data)
    return len(indices)

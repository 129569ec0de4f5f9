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

import io
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from featstore.errors import AnnotationError, InputError
from featstore.sources.base import (
    CELEBA_ATTRIBUTES,
    CELEBA_IMAGE_SIZE,
    CELEBA_SPLIT_SIZES,
    SPLITS,
)

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
_HEIGHT, _WIDTH = CELEBA_IMAGE_SIZE
# The face is drawn on a larger canvas, rotated, then cropped: no empty corners after rotation.
_CANVAS_W, _CANVAS_H = _WIDTH + 44, _HEIGHT + 40
_MAX_ANGLE = 7.0
_MAX_SHIFT = 5
_IMAGES_PER_IDENTITY = 20  # about the official 202,599 / 10,177
_CHUNK = 32  # images per task sent to a worker process
# independent random streams per image
_STREAM_LABELS, _STREAM_RENDER, _STREAM_IDENTITY, _STREAM_LAYOUT = 0, 1, 2, 3

_HAIR_COLOURS: dict[str, tuple[int, int, int]] = {
    "Black_Hair": (28, 24, 24),
    "Blond_Hair": (226, 192, 112),
    "Brown_Hair": (112, 72, 42),
    "Gray_Hair": (172, 172, 176),
}
_OTHER_HAIR = ((150, 62, 32), (186, 98, 52), (70, 52, 44), (128, 100, 84))
_SKIN_LIGHT, _SKIN_DARK, _SKIN_PALE = (226, 186, 158), (116, 76, 56), (244, 226, 214)
_HAT_COLOURS = (
    (30, 30, 36), (40, 50, 90), (150, 30, 30), (30, 90, 60), (200, 200, 205), (90, 60, 40),
    (20, 20, 20), (60, 60, 70),
)  # fmt: skip
_LIPSTICK = ((196, 22, 44), (170, 20, 70), (210, 60, 90), (140, 16, 36))
_SHADOW = ((110, 60, 150), (60, 90, 170), (120, 80, 60), (150, 70, 120))


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
    start = time.perf_counter()
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
    _write_text(out / ATTR_FILE, _attr_text(ids, labels))
    _write_text(out / PARTITION_FILE, "\n".join(f"{ids[i]} {split_of[i]}" for i in range(n)))
    _write_text(out / IDENTITY_FILE, "\n".join(f"{ids[i]} {identities[i]}" for i in range(n)))

    seconds = time.perf_counter() - start
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


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(text.encode("ascii"))
    os.replace(tmp, path)


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
# rendering


def _render_chunk(job: tuple) -> int:
    img_dir, seed, quality, indices, labels, identities = job
    for index, lab, ident in zip(indices, labels, identities):
        data = render_image(seed, index, lab, int(ident), quality=quality)
        with open(os.path.join(img_dir, _image_id(index)), "wb") as fh:
            fh.write(data)
    return len(indices)


def render_image(
    seed: int, index: int, labels: np.ndarray, identity: int, *, quality: int = 90
) -> bytes:
    """JPEG bytes of one synthetic face for a row of 40 labels (CELEBA_ATTRIBUTES order)."""
    rng = np.random.default_rng([seed, _STREAM_RENDER, index])
    traits = np.random.default_rng([seed, _STREAM_IDENTITY, identity]).random(8)
    lab = {a: bool(labels[i]) for i, a in enumerate(CELEBA_ATTRIBUTES)}
    canvas = _background(rng)
    _Face(canvas, rng, traits, lab).draw()

    # rotation about the canvas centre, shift and crop in one affine resampling (nearest
    # neighbour: Pillow's bilinear affine costs more than everything else together; the
    # photometric step smooths the result)
    angle = math.radians(rng.uniform(-_MAX_ANGLE, _MAX_ANGLE))
    dx, dy = (float(v) for v in rng.integers(-_MAX_SHIFT, _MAX_SHIFT + 1, size=2))
    cos, sin = math.cos(angle), math.sin(angle)
    ccx, ccy = _CANVAS_W / 2, _CANVAS_H / 2
    ox, oy = dx - _WIDTH / 2, dy - _HEIGHT / 2  # output pixel -> offset from the canvas centre
    coeffs = (cos, sin, ccx + cos * ox + sin * oy, -sin, cos, ccy - sin * ox + cos * oy)
    img = canvas.transform((_WIDTH, _HEIGHT), Image.AFFINE, coeffs, resample=Image.NEAREST)
    blur = rng.uniform(2.2, 3.6)  # drawn either way: later draws do not depend on Blurry
    if lab["Blurry"]:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    img = _photometric(img, rng)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _background(rng: np.random.Generator) -> Image.Image:
    """A smooth random colour field: a few colours on a coarse grid, upsampled."""
    base = rng.uniform(30, 235, size=3)
    base = 0.55 * base + 0.45 * base.mean()  # muted, like most photographs
    grid = base + rng.normal(0, 24, size=(3, 3, 3))
    small = Image.fromarray(np.clip(grid, 0, 255).astype(np.uint8), "RGB")
    return small.resize((_CANVAS_W, _CANVAS_H), Image.BILINEAR)


_NOISE_BANK: np.ndarray | None = None
_NOISE_PAD = 64


def _noise_bank() -> np.ndarray:
    """A fixed field of standard normal noise; each image reads it at a random offset."""
    global _NOISE_BANK
    if _NOISE_BANK is None:
        shape = (_HEIGHT + _NOISE_PAD, _WIDTH + _NOISE_PAD, 3)
        _NOISE_BANK = np.random.default_rng(20151201).standard_normal(shape, dtype=np.float32)
    return _NOISE_BANK


_ROWS = np.linspace(-0.5, 0.5, _HEIGHT, dtype=np.float32)
_COLS3 = np.repeat(np.linspace(-0.5, 0.5, _WIDTH, dtype=np.float32), 3)  # per pixel and channel


def _photometric(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Lighting gradient, brightness, contrast, colour cast and sensor noise.

    Works on the (height, width * 3) view so every numpy loop is long and contiguous.
    """
    gx, gy = (np.float32(v) for v in rng.uniform(-0.45, 0.45, size=2))
    contrast = np.float32(rng.uniform(0.8, 1.15))
    cast = rng.uniform(0.93, 1.07, size=3).astype(np.float32) * np.float32(rng.uniform(0.8, 1.15))
    oy, ox = (int(v) for v in rng.integers(0, _NOISE_PAD, size=2))
    sigma = np.float32(rng.uniform(2.0, 7.0))
    cast3 = np.tile(cast, _WIDTH)
    light = np.multiply.outer(gy * _ROWS, cast3)
    light += (1.0 + gx * _COLS3) * cast3  # (1 + gx x + gy y) * cast
    arr = np.asarray(img, dtype=np.float32).reshape(_HEIGHT, _WIDTH * 3)
    arr[1:] += arr[:-1]  # 2 x 2 box filter: softens the aliased edges of the drawing
    arr[:, 3:] += arr[:, :-3]
    arr[0] *= 2  # the first row and column had nothing to add
    arr[:, :3] *= 2
    arr *= contrast * np.float32(0.25)  # contrast about mid-grey
    arr += np.float32(128.0) * (1 - contrast)
    arr *= light
    noise = _noise_bank()[oy : oy + _HEIGHT, ox : ox + _WIDTH].reshape(_HEIGHT, _WIDTH * 3)
    arr += noise * sigma
    np.clip(arr, 0, 255, out=arr)
    return Image.fromarray(arr.astype(np.uint8).reshape(_HEIGHT, _WIDTH, 3), "RGB")


def _jitter(rng: np.random.Generator, colour: Sequence[float], amount: float = 12.0) -> tuple:
    c = np.asarray(colour, dtype=float) * rng.uniform(0.88, 1.12) + rng.normal(0, amount, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def _shade(colour: Sequence[int], factor: float, alpha: int | None = None) -> tuple:
    c = tuple(int(min(255, max(0, v * factor))) for v in colour[:3])
    return (*c, alpha) if alpha is not None else c


class _Face:
    """Draws one face on the canvas; coordinates in face units around the face centre."""

    def __init__(
        self, canvas: Image.Image, rng: np.random.Generator, traits: np.ndarray, lab: dict
    ) -> None:
        self.d = ImageDraw.Draw(canvas, "RGBA")
        self.rng = rng
        self.lab = lab
        self.traits = traits
        self.s = (1.1 + 0.16 * traits[0]) * rng.uniform(0.94, 1.06)
        self.cx = _CANVAS_W / 2 + rng.normal(0, 1.5)
        self.cy = _CANVAS_H / 2 + 6 + rng.normal(0, 1.5)
        male = lab["Male"]
        self.hw = 34 + 4 * traits[1] + (3 if male else 0) + (6 if lab["Chubby"] else 0)
        self.hh = 47 + 4 * traits[2]
        self.eye_dx = 14 + 2.5 * traits[3]
        # colours
        if lab["Pale_Skin"]:
            skin = _jitter(rng, _SKIN_PALE, 4)
        else:
            t = min(1.0, traits[4] ** 1.7 + rng.normal(0, 0.04))  # mostly light, some dark
            tone = [a + (b - a) * max(0.0, t) for a, b in zip(_SKIN_LIGHT, _SKIN_DARK)]
            skin = _jitter(rng, tone, 6)
        if not lab["Young"]:
            grey = sum(skin) / 3
            skin = tuple(int(0.8 * c + 0.2 * grey) for c in skin)
        self.skin = skin
        named = [c for a, c in _HAIR_COLOURS.items() if lab[a]]
        if named:
            hair = tuple(sum(c[i] for c in named) / len(named) for i in range(3))
        else:
            hair = _OTHER_HAIR[int(traits[5] * len(_OTHER_HAIR)) % len(_OTHER_HAIR)]
        self.hair = _jitter(rng, hair, 10)
        self.long_hair = (not lab["Bald"]) and rng.random() < (0.08 if male else 0.9)

    # coordinate helpers
    def p(self, x: float, y: float) -> tuple[float, float]:
        return (self.cx + self.s * x, self.cy + self.s * y)

    def box(self, x0: float, y0: float, x1: float, y1: float) -> list[float]:
        x0, x1 = min(x0, x1), max(x0, x1)
        return [*self.p(x0, min(y0, y1)), *self.p(x1, max(y0, y1))]

    def w(self, width: float) -> int:
        return max(1, round(width * self.s))

    def draw(self) -> None:
        lab = self.lab
        self.body()
        if self.long_hair:
            self.hair_back()
        self.ears()
        self.face()
        if lab["5_o_Clock_Shadow"]:
            self.stubble()
        if not lab["No_Beard"] and not (lab["Goatee"] or lab["Mustache"]):
            self.beard()
        if not lab["Young"]:
            self.wrinkles()
        if lab["Rosy_Cheeks"]:
            self.cheeks()
        self.eyes()
        self.brows()
        self.nose()
        if lab["Goatee"]:
            self.goatee()
        self.mouth()
        if lab["Mustache"]:
            self.mustache()
        self.hair_top()
        if lab["Eyeglasses"]:
            self.glasses()
        if lab["Wearing_Hat"]:
            self.hat()

    # parts, back to front
    def body(self) -> None:
        rng, d, lab = self.rng, self.d, self.lab
        shirt = _jitter(rng, rng.uniform(30, 220, size=3), 0)
        d.ellipse(self.box(-95, 78, 95, 190), fill=shirt)
        d.rectangle(self.box(-15, 20, 15, 88), fill=_shade(self.skin, 0.92))
        d.ellipse(self.box(-15, 78, 15, 96), fill=_shade(self.skin, 0.92))
        if lab["Wearing_Necktie"]:
            white = _jitter(rng, (235, 235, 235), 6)
            d.polygon(
                [
                    self.p(-26, 80),
                    self.p(0, 104),
                    self.p(26, 80),
                    self.p(14, 118),
                    self.p(-14, 118),
                ],
                fill=white,
            )
            tie = _jitter(rng, _HAT_COLOURS[int(rng.integers(len(_HAT_COLOURS)))], 10)
            d.polygon(
                [
                    self.p(-6, 94),
                    self.p(6, 94),
                    self.p(3, 100),
                    self.p(10, 150),
                    self.p(0, 160),
                    self.p(-10, 150),
                    self.p(-3, 100),
                ],
                fill=tie,
            )
        if lab["Wearing_Necklace"]:
            metal = _jitter(rng, (226, 190, 70) if rng.random() < 0.6 else (215, 215, 225), 8)
            d.arc(self.box(-22, 58, 22, 100), 20, 160, fill=metal, width=self.w(3))
            d.ellipse(self.box(-4, 96, 4, 104), fill=metal)

    def hair_back(self) -> None:
        hw, hh = self.hw, self.hh
        drop = 60 + 30 * self.traits[6]
        self.d.rounded_rectangle(
            self.box(-hw - 14, -hh - 10, hw + 14, drop), radius=self.w(26), fill=self.hair
        )

    def ears(self) -> None:
        hw, d = self.hw, self.d
        ear = _shade(self.skin, 0.9)
        for side in (-1, 1):
            x = side * (hw - 1)
            d.ellipse(self.box(x - 7, -14, x + 7, 12), fill=ear)
        if self.lab["Wearing_Earrings"]:
            metal = _jitter(
                self.rng, (232, 196, 60) if self.rng.random() < 0.7 else (225, 225, 235), 8
            )
            for side in (-1, 1):
                x = side * (hw + 1)
                d.ellipse(self.box(x - 5, 12, x + 5, 22), fill=metal)
                d.ellipse(self.box(x - 2, 15, x + 2, 19), fill=_shade(metal, 0.6))

    def face(self) -> None:
        hw, hh, d, lab = self.hw, self.hh, self.d, self.lab
        d.ellipse(self.box(-hw, -hh, hw, hh), fill=self.skin)
        if lab["Male"]:  # square jaw
            d.rounded_rectangle(self.box(-hw, -5, hw, hh - 2), radius=self.w(16), fill=self.skin)
        if lab["Double_Chin"]:
            d.arc(
                self.box(-18, hh - 14, 18, hh + 6),
                20,
                160,
                fill=_shade(self.skin, 0.75),
                width=self.w(2),
            )
        if lab["Bald"]:  # shine on the scalp
            d.ellipse(self.box(-14, -hh + 3, 8, -hh + 13), fill=(255, 255, 255, 70))

    def stubble(self) -> None:
        hw, hh = self.hw, self.hh
        self.d.chord(self.box(-hw, -hh, hw, hh), 10, 170, fill=(50, 45, 55, 70))

    def beard(self) -> None:
        hw, hh = self.hw, self.hh
        self.d.chord(self.box(-hw - 1, -hh - 2, hw + 1, hh + 4), 5, 175, fill=(*self.hair, 235))

    def wrinkles(self) -> None:
        line = _shade(self.skin, 0.68)
        d, w = self.d, self.w(1)
        for y in (-32, -27):
            d.arc(self.box(-16, y, 16, y + 8), 200, 340, fill=line, width=w)
        for side in (-1, 1):
            x = side * (self.eye_dx + 10)
            d.line([self.p(x, -10), self.p(x + side * 5, -13)], fill=line, width=w)
            d.line([self.p(x, -6), self.p(x + side * 5, -4)], fill=line, width=w)
            d.line([self.p(side * 9, 14), self.p(side * 15, 30)], fill=line, width=w)

    def cheeks(self) -> None:
        for side in (-1, 1):
            x = side * 21
            self.d.ellipse(self.box(x - 9, 6, x + 9, 20), fill=(235, 70, 90, 110))

    def eyes(self) -> None:
        d, lab, rng = self.d, self.lab, self.rng
        eh = 2.2 if lab["Narrow_Eyes"] else 4.2
        iris = _jitter(
            rng, ((70, 45, 25), (60, 90, 130), (80, 110, 70))[int(self.traits[7] * 3) % 3], 6
        )
        for side in (-1, 1):
            x = side * self.eye_dx
            if lab["Heavy_Makeup"]:
                shadow = _SHADOW[int(rng.integers(len(_SHADOW)))]
                d.ellipse(self.box(x - 11, -17, x + 11, -5), fill=(*shadow, 150))
            if lab["Bags_Under_Eyes"]:
                d.arc(
                    self.box(x - 8, -8, x + 8, 2),
                    20,
                    160,
                    fill=(*_shade(self.skin, 0.6), 200),
                    width=self.w(2),
                )
            d.ellipse(self.box(x - 8, -8 - eh, x + 8, -8 + eh), fill=(240, 240, 236))
            r = min(3.2, eh)
            d.ellipse(self.box(x - r, -8 - r, x + r, -8 + r), fill=iris)
            d.ellipse(self.box(x - 1.3, -9.3, x + 1.3, -6.7), fill=(10, 10, 10))
            if lab["Heavy_Makeup"]:
                d.arc(
                    self.box(x - 9, -9 - eh, x + 9, -7 + eh),
                    180,
                    360,
                    fill=(10, 10, 10),
                    width=self.w(2),
                )

    def brows(self) -> None:
        d, lab = self.d, self.lab
        colour = _shade(self.hair, 0.75) if sum(self.hair) > 360 else self.hair
        width = self.w(4.5 if lab["Bushy_Eyebrows"] else 2)
        for side in (-1, 1):
            x0, x1 = side * (self.eye_dx - 8), side * (self.eye_dx + 9)
            if lab["Arched_Eyebrows"]:
                mid = side * (self.eye_dx + 2)
                pts = [self.p(x0, -17), self.p(mid, -23), self.p(x1, -18)]
            else:
                pts = [self.p(x0, -18), self.p(x1, -19)]
            d.line(pts, fill=colour, width=width, joint="curve")

    def nose(self) -> None:
        d = self.d
        big = self.lab["Big_Nose"]
        nw, nl = (9, 17) if big else (5, 13)
        dark = _shade(self.skin, 0.78)
        d.line([self.p(-2, -4), self.p(-nw * 0.6, nl)], fill=dark, width=self.w(1.5))
        d.ellipse(self.box(-nw, nl - 2, nw, nl + 4), fill=_shade(self.skin, 0.86))
        d.ellipse(self.box(-nw + 1, nl, -nw + 4, nl + 3), fill=_shade(self.skin, 0.55))
        d.ellipse(self.box(nw - 4, nl, nw - 1, nl + 3), fill=_shade(self.skin, 0.55))

    def goatee(self) -> None:
        hh = self.hh
        self.d.ellipse(self.box(-10, hh - 20, 10, hh + 1), fill=self.hair)
        self.d.rectangle(self.box(-4, 33, 4, hh - 10), fill=self.hair)

    def mustache(self) -> None:
        self.d.polygon(
            [
                self.p(-17, 27),
                self.p(-10, 20),
                self.p(0, 22),
                self.p(10, 20),
                self.p(17, 27),
                self.p(10, 25),
                self.p(0, 27),
                self.p(-10, 25),
            ],
            fill=self.hair,
        )

    def mouth(self) -> None:
        d, lab, rng = self.d, self.lab, self.rng
        if lab["Wearing_Lipstick"]:
            lips = _jitter(rng, _LIPSTICK[int(rng.integers(len(_LIPSTICK)))], 8)
        else:
            lips = tuple(
                int(0.75 * c + 0.25 * t) for c, t in zip(_shade(self.skin, 0.8), (170, 80, 80))
            )
        lip = 4.5 if lab["Big_Lips"] else 2.5
        dark, teeth = (45, 15, 20), (245, 242, 232)
        y = 31
        if lab["Smiling"]:
            hw = 21
            for side in (-1, 1):  # raised cheeks catch the light
                d.ellipse(
                    self.box(side * 21 - 9, 2, side * 21 + 9, 16),
                    fill=(*_shade(self.skin, 1.2), 160),
                )
            d.chord(
                self.box(-hw - lip, y - 10 - lip / 2, hw + lip, y + 14 + lip), 0, 180, fill=lips
            )
            d.chord(self.box(-hw, y - 10, hw, y + 14), 0, 180, fill=teeth)
            if lab["Mouth_Slightly_Open"]:  # a dark gap below the upper teeth
                d.chord(self.box(-hw + 5, y - 2, hw - 5, y + 11), 0, 180, fill=dark)
            d.line(
                [self.p(-hw - 1, y + 2), self.p(hw + 1, y + 2)], fill=lips, width=self.w(lip / 1.5)
            )
            line = _shade(self.skin, 0.7)
            for side in (-1, 1):  # smile lines
                d.arc(
                    self.box(side * 22 - 6, y - 14, side * 22 + 6, y + 6),
                    *((300, 60) if side > 0 else (120, 240)),
                    fill=line,
                    width=self.w(1.5),
                )
        else:
            hw = 12
            if lab["Mouth_Slightly_Open"]:
                d.ellipse(self.box(-hw - 1, y - 3 - lip, hw + 1, y + 5 + lip), fill=lips)
                d.ellipse(self.box(-hw + 3, y - 2, hw - 3, y + 4), fill=dark)
            else:
                d.ellipse(self.box(-hw, y - lip, hw, y + lip), fill=lips)
                d.line(
                    [self.p(-hw, y + 0.5), self.p(hw, y + 0.5)],
                    fill=_shade(lips, 0.55),
                    width=self.w(1),
                )

    def hair_top(self) -> None:
        d, lab, hw, hh = self.d, self.lab, self.hw, self.hh
        if lab["Bald"]:  # a fringe over the ears only
            for side in (-1, 1):
                x = side * hw
                d.chord(
                    self.box(x - 6, -24, x + 6, 6),
                    90 if side > 0 else 270,
                    270 if side > 0 else 90,
                    fill=self.hair,
                )
            return
        line = -hh + (3 if lab["Receding_Hairline"] else 13)  # the hairline: bottom of the cap
        d.chord(self.box(-hw - 4, -hh - 12, hw + 4, 2 * line + hh + 12), 180, 360, fill=self.hair)
        if lab["Sideburns"]:
            for side in (-1, 1):
                x = side * (hw - 3)
                d.rectangle(self.box(x, line - 6, x + side * 6, 10), fill=self.hair)
        elif self.long_hair:  # long hair frames the face
            for side in (-1, 1):
                x = side * hw
                d.rectangle(self.box(x, line - 6, x + side * 8, 30), fill=self.hair)
        if lab["Bangs"]:
            pts = [self.p(-hw + 2, line - 8)]
            teeth = 7
            for k in range(teeth + 1):
                x = -hw + 4 + k * (2 * hw - 8) / teeth
                pts.append(self.p(x, -22 if k % 2 == 0 else -26))
            pts.append(self.p(hw - 2, line - 8))
            d.polygon(pts, fill=self.hair)

    def glasses(self) -> None:
        d, rng = self.d, self.rng
        dark = rng.random() < 0.8
        frame = _jitter(rng, (20, 20, 24) if dark else (190, 160, 90), 8)
        sun = rng.random() < 0.12
        lens = (20, 20, 30, 210) if sun else (205, 220, 235, 70)
        width = self.w(4)
        for side in (-1, 1):
            x = side * self.eye_dx
            d.ellipse(self.box(x - 12, -18, x + 12, 2), fill=lens, outline=frame, width=width)
            d.line(
                [self.p(side * (self.eye_dx + 11), -10), self.p(side * (self.hw + 2), -8)],
                fill=frame,
                width=width,
            )
        d.arc(
            self.box(-self.eye_dx + 9, -13, self.eye_dx - 9, -3), 200, 340, fill=frame, width=width
        )

    def hat(self) -> None:
        d, rng, hw, hh = self.d, self.rng, self.hw, self.hh
        colour = _jitter(rng, _HAT_COLOURS[int(rng.integers(len(_HAT_COLOURS)))], 12)
        band = _shade(colour, 0.55)
        if rng.random() < 0.6:  # brimmed hat
            d.rounded_rectangle(
                self.box(-hw + 2, -hh - 30, hw - 2, -hh + 18), radius=self.w(14), fill=colour
            )
            d.rectangle(self.box(-hw + 2, -hh + 8, hw - 2, -hh + 17), fill=band)
            d.ellipse(self.box(-hw - 22, -hh + 12, hw + 22, -hh + 26), fill=colour)
            d.rectangle(self.box(-hw + 4, -hh + 26, hw - 4, -hh + 38), fill=(0, 0, 0, 90))
        else:  # knit cap down to the brows
            d.chord(self.box(-hw - 5, -hh - 22, hw + 5, -hh + 60), 180, 360, fill=colour)
            d.rectangle(self.box(-hw - 5, -hh + 12, hw + 5, -hh + 24), fill=band)

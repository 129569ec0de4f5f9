"""A synthetic class-per-folder image set: ``out_dir/<class>/<n>.jpg``, K classes that differ
visibly and are imbalanced (what ``featstore synth --layout folder`` writes).

Class ``k`` draws one shape (circle, square, triangle, cross, ring, diamond, ...) in its own hue
on a noisy background of random brightness; position, size, rotation of the hue and noise vary
per image. The class sizes fall geometrically from the first class to the last, so that the
largest is ``imbalance`` times the smallest (10 by default: the seven-emotion set of the
original study had over 7,000 images in one class and under 1,000 in another). Every image
depends on ``(seed, class, index)`` only: the output is the same on every run.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from featstore.errors import InputError
from featstore.timing import Stopwatch

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond", "bar", "dot")


@dataclass(frozen=True)
class FolderSynthSummary:
    out_dir: str
    n: int
    class_counts: dict[str, int]
    seconds: float


def class_sizes(n: int, classes: int, imbalance: float = 10.0) -> list[int]:
    """Images per class: geometric from the largest (first) to the smallest (last), the ratio
    of the two at least ``imbalance``, every class at least 3 images (one per split)."""
    if classes < 2:
        raise InputError(f"--classes must be at least 2, got {classes}")
    if imbalance < 1:
        raise InputError(f"imbalance must be >= 1, got {imbalance}")
    w = imbalance ** (-np.arange(classes) / (classes - 1))
    sizes = np.maximum(3, np.floor(n * w / w.sum())).astype(int)
    sizes[0] = max(sizes[0], int(np.ceil(imbalance * sizes[-1])))
    return [int(s) for s in sizes]


def class_name(k: int) -> str:
    return f"{SHAPES[k % len(SHAPES)]}{'' if k < len(SHAPES) else k // len(SHAPES)}"


def render(k: int, classes: int, rng: np.random.Generator, size: int) -> Image.Image:
    """One image of class ``k``: its shape in its hue, jittered, on a noisy background."""
    bg = rng.uniform(50, 150)
    pixels = np.clip(rng.normal(bg, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels, "RGB")
    hue = (k / classes + rng.normal(0, 0.03)) % 1.0
    colour = tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.85, rng.uniform(0.7, 1.0)))
    r = size * rng.uniform(0.25, 0.4)
    cx, cy = rng.uniform(r, size - r, 2)
    draw = ImageDraw.Draw(img)
    box = (cx - r, cy - r, cx + r, cy + r)
    shape = SHAPES[k % len(SHAPES)]
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    elif shape == "cross":
        w = r / 3
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=colour)
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=max(2, int(r / 3)))
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
    elif shape == "bar":
        draw.rectangle((cx - r, cy - r / 4, cx + r, cy + r / 4), fill=colour)
    else:
        draw.ellipse((cx - r / 2, cy - r / 2, cx + r / 2, cy + r / 2), fill=colour)
    return img


def generate_folder(
    out_dir: str | Path,
    n: int,
    *,
    classes: int = 5,
    seed: int = 0,
    size: int = 64,
    imbalance: float = 10.0,
) -> FolderSynthSummary:
    """Write ``out_dir/<class>/<i>.jpg`` (``size`` x ``size`` RGB JPEGs) for ``classes``
    classes of :func:`class_sizes` images (about ``n`` in all)."""
    t0 = Stopwatch()
    out = Path(out_dir)
    counts = {}
    for k, count in enumerate(class_sizes(n, classes, imbalance)):
        name = class_name(k)
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            rng = np.random.default_rng([seed, k, i])
            render(k, classes, rng, size).save(folder / f"{i:05d}.jpg", quality=90)
        counts[name] = count
    return FolderSynthSummary(str(out), sum(counts.values()), counts, t0.seconds)

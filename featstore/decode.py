"""The one image decoder of ingest and extract: bytes -> RGB pixels, with one rule for what is an
image. Pillow and numpy only (no Spark, no TensorFlow): the embedder's decode worker processes and
the ingest executors both import it.

The rule: data that Pillow decodes completely is an image, whatever its format (JPEG, PNG, BMP,
WebP, TIFF, GIF -- its first frame --, ...) and mode (L, LA, P, RGBA, CMYK, I;16, ...), and a
name that does not match its format (a PNG saved as ``.jpg``) does not matter; it is converted to
RGB. Empty, unidentifiable, truncated or corrupt data, and images above ``max_pixels`` (the
decompression-bomb guard), are not: :class:`DecodeError`, whose ``reason`` is one short line.
Truncated images are never patched up (``ImageFile.LOAD_TRUNCATED_IMAGES`` stays off).

- :func:`open_rgb`: the decoded, RGB Pillow image; what
  ``featstore.decodepool.decode_image`` resizes.
- :func:`ingest_image`: what the ingest job stores for one file's bytes. JPEG bytes are stored
  unchanged (bit for bit: never re-encoded); any other decodable format is converted to RGB and
  re-encoded as JPEG (quality :data:`STORE_JPEG_QUALITY`), so the images table holds JPEG bytes
  only; what is not an image is an error for the errors table. So an image ingest accepts is one
  the embedder decodes, and the other way round.
"""

from __future__ import annotations

import io
import warnings
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from featstore.errors import FeatstoreError

#: Images above this many pixels are refused before decoding (decompression-bomb guard).
MAX_PIXELS = 50_000_000
#: JPEG quality of the images ingest converts from another format.
STORE_JPEG_QUALITY = 95
#: Pillow format names whose bytes are JPEG (MPO: a JPEG with extra pictures appended, as
#: cameras write; its first picture is the image) and are stored as they are.
JPEG_FORMATS = frozenset({"JPEG", "MPO"})
#: :func:`open_rgb` with ``draft``: a JPEG at least this many times larger than the target in
#: both directions is decoded at a reduced DCT scale.
DRAFT_FACTOR = 2


class DecodeError(FeatstoreError):
    """One image could not be turned into pixels; ``str(exc)`` is a short one-line reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class IngestImage(NamedTuple):
    """What ingest keeps of one file: ``content`` (JPEG bytes, None on error), the image's
    ``width`` and ``height`` (0 on error) and ``error`` (None, or the one-line reason)."""

    content: bytes | None
    width: int
    height: int
    error: str | None


def one_line(text: str, limit: int = 160) -> str:
    """``text`` on one line (whitespace collapsed), cut to ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _sniff(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    return "image"


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` in mode RGB (itself when it already is): palette and transparency through RGBA
    (Pillow warns otherwise), 16-bit and float grayscale scaled from their actual range."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("P", "PA") or (mode in ("L", "LA") and "transparency" in img.info):
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
        img = Image.fromarray(a.round().astype(np.uint8), "L")
    return img.convert("RGB")


def _open(data: bytes | None) -> Image.Image:
    """``Image.open`` with every failure as a :class:`DecodeError` (the pixels not read yet)."""
    if data is None:
        raise DecodeError("missing content (null)")
    if len(data) == 0:
        raise DecodeError("empty content")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DecodeError("image too large (decompression bomb guard)") from None
    except UnidentifiedImageError:
        raise DecodeError("not an image (cannot identify)") from None
    except Exception as exc:  # Pillow plugins raise OSError, SyntaxError, ValueError, ...
        kind = _sniff(data)
        if "truncated" in str(exc).lower():
            raise DecodeError(f"truncated {kind} (header)") from None
        raise DecodeError(one_line(f"corrupt {kind} header: {exc}")) from None


def _decode_rgb(
    data: bytes | None, max_pixels: int, draft: tuple[int, int] | None
) -> tuple[Image.Image, Image.Image, str]:
    """(the opened source image, its RGB pixels, its format); the caller closes the source."""
    img = _open(data)
    fmt = img.format or "image"
    try:
        w0, h0 = img.size
        if w0 <= 0 or h0 <= 0:
            raise DecodeError(f"empty {fmt} ({w0}x{h0})")
        if w0 * h0 > max_pixels:
            raise DecodeError(f"image too large ({w0}x{h0} > {max_pixels / 1e6:g} MP)")
        if (
            draft is not None
            and fmt in JPEG_FORMATS
            and w0 >= DRAFT_FACTOR * draft[0]
            and h0 >= DRAFT_FACTOR * draft[1]
        ):
            # DCT-domain downscale (1/2, 1/4, 1/8) to the smallest size still >= target.
            img.draft("RGB", (int(draft[0]), int(draft[1])))
        try:
            img.load()
        except OSError as exc:
            if "truncated" in str(exc).lower():
                raise DecodeError(f"truncated {fmt}") from None
            raise DecodeError(one_line(f"corrupt {fmt}: {exc}")) from None
        except Exception as exc:
            raise DecodeError(one_line(f"corrupt {fmt}: {type(exc).__name__}: {exc}")) from None
        try:
            rgb = to_rgb(img)
        except Exception as exc:
            raise DecodeError(one_line(f"cannot convert {fmt} {img.mode}: {exc}")) from None
    except BaseException:
        img.close()
        raise
    return img, rgb, fmt


def open_rgb(
    data: bytes | None, *, max_pixels: int = MAX_PIXELS, draft: tuple[int, int] | None = None
) -> Image.Image:
    """Image bytes -> the decoded image in mode RGB (loaded; its ``format`` is the source's).

    ``draft = (width, height)``: the size the caller will resize to; a JPEG at least
    :data:`DRAFT_FACTOR` times larger in both directions is decoded at a reduced DCT scale
    (``Image.draft``), never below that size. Raises :class:`DecodeError` (see the module doc).
    """
    img, rgb, fmt = _decode_rgb(data, max_pixels, draft)
    if rgb is img:
        return img  # already RGB and loaded: the caller closes it
    img.close()
    rgb.format = fmt  # what callers name in their messages
    return rgb


def ingest_image(data: bytes | None, *, max_pixels: int = MAX_PIXELS) -> IngestImage:
    """What ingest stores for one file's bytes: ``(content, width, height, error)``.

    A JPEG that decodes: its bytes, unchanged. Any other format that decodes: converted to RGB and
    re-encoded as JPEG (quality :data:`STORE_JPEG_QUALITY`; transparency dropped, a GIF's first
    frame). Otherwise ``(None, 0, 0, reason)``, reason one line. The whole image is decoded, so a
    truncated file is an error here and not at extract time. Never raises for bad data.
    """
    try:
        img, rgb, fmt = _decode_rgb(data, max_pixels, None)
    except DecodeError as exc:
        return IngestImage(None, 0, 0, exc.reason)
    try:
        width, height = img.size
        if fmt in JPEG_FORMATS:
            assert data is not None
            return IngestImage(bytes(data), width, height, None)
        buf = io.BytesIO()
        try:
            rgb.save(buf, "JPEG", quality=STORE_JPEG_QUALITY)
        except Exception as exc:  # not expected for RGB pixels; still one line, not a crash
            return IngestImage(None, 0, 0, one_line(f"cannot re-encode {fmt} as JPEG: {exc}"))
        return IngestImage(buf.getvalue(), width, height, None)
    finally:
        if rgb is not img:
            rgb.close()
        img.close()

"""featstore.decode: the one decoder of ingest and extract, on generated images; and the ingest
job on a class-per-folder set of PNGs, a PNG named .jpg and a garbage file."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, features

from featstore import decode, embed, store
from featstore.config import IngestConfig
from featstore.ingest import ingest
from featstore.sources.folder import read_folder

W, H = 48, 40


def picture(seed: int = 0, size: tuple[int, int] = (W, H)) -> Image.Image:
    """An RGB picture with structure (gradients, 16-pixel blocks of a seeded colour, a little
    noise), so re-encoding can be checked to keep the pixels close."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    block = rng.integers(0, 120, (h // 16 + 1, w // 16 + 1, 3))[yy // 16, xx // 16]
    ramp = np.stack(
        [xx * 120 // max(w - 1, 1), yy * 120 // max(h - 1, 1), (xx + yy) * 60 // max(w + h - 2, 1)],
        axis=-1,
    )
    arr = block + ramp + rng.integers(-2, 3, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def paletted(img: Image.Image) -> Image.Image:
    """Mode P with an adaptive palette and no dithering (dither noise does not survive JPEG)."""
    return img.convert("P", palette=Image.Palette.ADAPTIVE, colors=128, dither=Image.Dither.NONE)


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16)


def stored_format(data: bytes) -> str | None:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return img.format


# --------------------------------------------------------------------------- ingest_image


def test_jpeg_is_stored_bit_for_bit():
    data = encode(picture(1), "JPEG", quality=80)
    got = decode.ingest_image(data)
    assert got.error is None and (got.width, got.height) == (W, H)
    assert got.content == data  # not re-encoded


def test_grayscale_and_cmyk_jpegs_are_stored_bit_for_bit():
    for img in (picture(2).convert("L"), picture(2).convert("CMYK")):
        data = encode(img, "JPEG", quality=85)
        got = decode.ingest_image(data)
        assert (got.content, got.width, got.height, got.error) == (data, W, H, None)


def test_png_saved_as_jpg_is_converted_to_jpeg():
    src = picture(3)
    png = encode(src, "PNG")  # what a .jpg holding PNG data reads as: the name plays no part
    got = decode.ingest_image(png)
    assert got.error is None and (got.width, got.height) == (W, H)
    assert got.content is not None and got.content != png
    assert stored_format(got.content) == "JPEG"
    diff = np.abs(pixels(got.content) - np.asarray(src, dtype=np.int16))
    assert diff.mean() < 3  # quality 95: the picture, not something else


def test_rgba_png_is_converted_to_rgb_jpeg():
    rgba = picture(4).convert("RGBA")
    alpha = np.full((H, W), 255, np.uint8)
    alpha[:, : W // 2] = 0  # half transparent: dropped, the colour channels are kept
    rgba.putalpha(Image.fromarray(alpha, "L"))
    got = decode.ingest_image(encode(rgba, "PNG"))
    assert got.error is None and (got.width, got.height) == (W, H)
    with Image.open(io.BytesIO(got.content)) as img:
        assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (W, H))
    diff = np.abs(pixels(got.content) - np.asarray(rgba.convert("RGB"), dtype=np.int16))
    assert diff.mean() < 3


def test_grayscale_png_is_converted_to_jpeg_with_equal_channels():
    gray = picture(5).convert("L")
    got = decode.ingest_image(encode(gray, "PNG"))
    assert got.error is None and (got.width, got.height) == (W, H)
    rgb = pixels(got.content)
    assert stored_format(got.content) == "JPEG" and rgb.shape == (H, W, 3)
    assert np.abs(rgb[..., 0] - rgb[..., 2]).max() <= 2  # gray stays gray
    assert np.abs(rgb[..., 1] - np.asarray(gray, dtype=np.int16)).mean() < 3


@pytest.mark.parametrize("kind", ["BMP", "GIF", "WEBP", "TIFF", "PNG-16bit", "PNG-palette"])
def test_other_formats_and_modes_are_converted(kind):
    src = picture(6)
    if kind == "WEBP" and not features.check("webp"):
        pytest.skip("Pillow built without WebP")
    data = {
        "BMP": lambda: encode(src, "BMP"),
        "GIF": lambda: encode(paletted(src), "GIF"),
        "WEBP": lambda: encode(src, "WEBP", lossless=True),
        "TIFF": lambda: encode(src, "TIFF"),
        "PNG-16bit": lambda: encode(src.convert("L").convert("I;16"), "PNG"),
        "PNG-palette": lambda: encode(src.quantize(64), "PNG"),
    }[kind]()
    got = decode.ingest_image(data)
    assert got.error is None and (got.width, got.height) == (W, H)
    assert stored_format(got.content) == "JPEG"
    assert pixels(got.content).std() > 20  # a picture, not a blank


def test_gif_keeps_its_first_frame():
    first, second = Image.new("RGB", (W, H), (250, 10, 10)), Image.new("RGB", (W, H), (10, 10, 250))
    buf = io.BytesIO()
    first.save(buf, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    got = decode.ingest_image(buf.getvalue())
    assert got.error is None
    r, _, b = pixels(got.content).reshape(-1, 3).mean(axis=0)
    assert r > 200 and b < 60


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty content"),
        (None, "missing content (null)"),
        (b"\x00\x01garbage bytes" * 40, "not an image (cannot identify)"),
        (encode(picture(7, (160, 120)), "JPEG", quality=90)[:1500], "truncated JPEG"),
        (encode(picture(7, (160, 120)), "JPEG", quality=90)[:200], "truncated JPEG (header)"),
        (encode(picture(7, (160, 120)), "PNG")[:3000], "truncated PNG"),
    ],
    ids=["empty", "null", "garbage", "truncated-jpeg", "truncated-jpeg-header", "truncated-png"],
)
def test_bad_data_is_one_line_error(data, reason):
    got = decode.ingest_image(data)
    assert got == decode.IngestImage(None, 0, 0, reason)


def test_too_many_pixels_is_an_error():
    got = decode.ingest_image(encode(picture(8), "PNG"), max_pixels=W * H - 1)
    assert (got.content, got.error) == (None, f"image too large ({W}x{H} > 0.001919 MP)")


# --------------------------------------------------------------------------- one rule


def test_ingest_accepts_exactly_what_the_embedder_decodes():
    src = picture(9)
    other = np.asarray(picture(19), dtype=np.int16)
    assert np.abs(other - np.asarray(src, dtype=np.int16)).mean() > 20  # the bound below means it
    inputs = [
        encode(src, "JPEG"),
        encode(src, "PNG"),
        encode(src.convert("RGBA"), "PNG"),
        encode(src.convert("L"), "PNG"),
        encode(src, "BMP"),
        encode(paletted(src), "GIF"),
        b"",
        b"not an image" * 20,
        encode(src, "JPEG")[:300],
        encode(src, "PNG")[:500],
    ]
    for data in inputs:
        got = decode.ingest_image(data)
        try:
            arr = embed.decode_image(data, (H, W))
        except embed.DecodeError as exc:
            assert got.error == exc.reason and got.content is None
        else:
            assert got.error is None and arr.shape == (H, W, 3)
            # what the embedder reads from the store decodes to about the same pixels (another
            # picture is ~40 away; JPEG at quality 95 of a 128-colour GIF about 3.5)
            again = embed.decode_image(got.content, (H, W)).astype(np.int16)
            assert np.abs(again - arr.astype(np.int16)).mean() < 5


def test_open_rgb_gives_loaded_rgb_with_the_source_format():
    with decode.open_rgb(encode(picture(10).convert("RGBA"), "PNG")) as img:
        assert (img.mode, img.size, img.format) == ("RGB", (W, H), "PNG")
    with decode.open_rgb(encode(picture(10), "JPEG")) as img:
        assert (img.mode, img.format) == ("RGB", "JPEG")
    assert embed.DecodeError is decode.DecodeError  # one error type for both


def test_decode_imports_pillow_and_numpy_only():
    code = (
        "import sys\n"
        "for name in ('pyspark', 'tensorflow', 'keras', 'jax', 'torch'):\n"
        "    sys.modules[name] = None\n"
        "import featstore.decode, featstore.ingest  # ingest: the executors' side\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )


# --------------------------------------------------------------------------- ingest job


def test_folder_of_pngs_ingests_with_conversion_and_errors(spark, tmp_path, caplog):
    root = tmp_path / "shapes"
    files: dict[str, bytes] = {}
    for c, cls in enumerate(("circle", "square")):
        for i in range(4):
            files[f"{cls}/{i}.png"] = encode(picture(20 + 4 * c + i), "PNG")
    files["circle/renamed.jpg"] = encode(picture(30), "PNG")  # PNG data under a .jpg name
    files["square/broken.jpg"] = b"GIF89a but then nothing sensible" * 8  # garbage
    files["square/real.jpg"] = encode(picture(31), "JPEG", quality=90)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)

    listed = read_folder(root).images["image_id"].tolist()
    assert sorted(listed) == sorted(files)
    st = tmp_path / "store"
    with caplog.at_level(logging.WARNING, logger="featstore.ingest"):
        summary = ingest(spark, IngestConfig(source="folder", path=str(root)), str(st))

    layout = store.Layout(st)
    images = pq.read_table(layout.images).to_pandas().set_index("image_id")
    errors = store.read_errors(st, "images").to_pandas().set_index("image_id")
    assert sorted(images.index) == sorted(set(files) - {"square/broken.jpg"})
    assert errors.index.tolist() == ["square/broken.jpg"]
    assert errors.loc["square/broken.jpg", "stage"] == "decode"
    assert errors.loc["square/broken.jpg", "error"] == "not an image (cannot identify)"
    assert "square/broken.jpg" in caplog.text
    assert (summary.ok, summary.errors) == (len(images), len(errors))
    assert summary.ok + summary.errors == len(listed)

    for image_id, row in images.iterrows():
        content = bytes(row["content"])
        assert stored_format(content) == "JPEG", image_id
        assert (row["width"], row["height"]) == (W, H)
        assert Path(row["source_path"]) == root / image_id
    assert bytes(images.loc["square/real.jpg", "content"]) == files["square/real.jpg"]
    renamed = bytes(images.loc["circle/renamed.jpg", "content"])
    assert renamed != files["circle/renamed.jpg"]
    assert np.abs(pixels(renamed) - pixels(files["circle/renamed.jpg"])).mean() < 3

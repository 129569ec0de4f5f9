"""featstore.embed: decoding, the Embedder against Keras called directly, pipelining, config.

Small models and inputs (vgg16 at 32x32, mobilenetv2 at 64x64), random or saved weights; each
embedder is built once per module.
"""

from __future__ import annotations

import ast
import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image, ImageDraw

from featstore import embed, forward, models
from featstore.embed import DecodeError, EmbedConfig, Embedder, decode_image, validate_config
from featstore.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
VGG = EmbedConfig(model="vgg16", weights="random", input_size="32x32", batch_size=4, seed=0)


# --------------------------------------------------------------------------- images


def face(seed: int = 0, size: tuple[int, int] = (178, 218), noise: bool = True) -> Image.Image:
    """A CelebA-sized (w, h) face-like picture: background, skin ellipse, eyes, mouth, noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = Image.new("RGB", size, tuple(int(c) for c in rng.integers(0, 256, 3)))
    d = ImageDraw.Draw(img)
    cx, cy = w / 2 + rng.normal(0, w * 0.03), h / 2 + rng.normal(0, h * 0.03)
    skin = tuple(int(c) for c in rng.integers([150, 100, 80], [255, 200, 170]))
    d.ellipse([cx - 0.3 * w, cy - 0.36 * h, cx + 0.3 * w, cy + 0.36 * h], fill=skin)
    for ex in (cx - 0.12 * w, cx + 0.12 * w):
        d.ellipse([ex - 0.05 * w, cy - 0.1 * h, ex + 0.05 * w, cy - 0.06 * h], fill=(40, 30, 30))
    d.rectangle([cx - 0.1 * w, cy + 0.15 * h, cx + 0.1 * w, cy + 0.18 * h], fill=(150, 40, 50))
    if not noise:
        return img
    arr = np.asarray(img).astype(np.int16) + rng.integers(-12, 13, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def encode(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def jpeg(seed: int = 0) -> bytes:
    return encode(face(seed), quality=90)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb shape)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    return [jpeg(i) for i in range(7)]


@pytest.fixture(scope="module")
def big() -> tuple[Image.Image, bytes]:
    img = face(3, size=(3000, 3000), noise=False)
    return img, encode(img, quality=80)


# --------------------------------------------------------------------------- decode


def test_decode_jpeg_native_size_is_not_resized():
    img = face(1)
    got = decode_image(encode(img, quality=95), (218, 178))
    ref = np.asarray(Image.open(io.BytesIO(encode(img, quality=95))).convert("RGB"))
    assert got.dtype == np.uint8 and got.shape == (218, 178, 3)
    np.testing.assert_array_equal(got, ref)


def test_decode_converts_modes_to_rgb():
    img = face(2)
    gray = decode_image(encode(img.convert("L")), (64, 64))
    assert gray.shape == (64, 64, 3)
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    for data in (
        encode(img.convert("CMYK")),
        encode(img, "PNG"),
        encode(img.convert("RGBA"), "PNG"),
        encode(img.convert("P"), "GIF"),
        encode(img.convert("I;16"), "PNG"),
    ):
        out = decode_image(data, (64, 64))
        assert out.shape == (64, 64, 3) and out.dtype == np.uint8
        assert out.std() > 5  # a picture, not a blank


def test_decode_large_jpeg_uses_draft_and_resizes(big):
    img, data = big
    got = decode_image(data, (224, 224))
    ref = np.asarray(img.resize((224, 224), Image.Resampling.BILINEAR))
    assert got.shape == (224, 224, 3)
    assert np.abs(got.astype(int) - ref.astype(int)).mean() < 6  # DCT downscale ~ resize


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (None, "missing content (null)"),
        (b"", "empty content"),
        (b"\x00\x01garbage" * 50, "not an image (cannot identify)"),
        (jpeg(4)[:4000], "truncated JPEG"),
        (jpeg(4)[:300], "truncated JPEG (header)"),
        (png_claiming(20_000, 20_000), "image too large (decompression bomb guard)"),
        (png_claiming(8000, 8000), "image too large (8000x8000 > 50 MP)"),
    ],
)
def test_decode_errors(data, reason):
    with pytest.raises(DecodeError) as err:
        decode_image(data, (64, 64))
    assert err.value.reason == reason


def test_decode_pixel_cap_is_configurable():
    with pytest.raises(DecodeError, match="image too large"):
        decode_image(jpeg(5), (64, 64), max_pixels=10_000)


# --------------------------------------------------------------------------- embedder vs Keras


def _direct(base: keras.Model, family: str, contents: list[bytes], hw: tuple[int, int]):
    """The reference: Pillow decode + resize, preprocess_input on the host, base, mean pool."""
    h, w = hw
    x = np.stack(
        [
            np.asarray(
                Image.open(io.BytesIO(c)).convert("RGB").resize((w, h), Image.Resampling.BILINEAR)
            )
            for c in contents
        ]
    ).astype("float32")
    x = getattr(keras.applications, family).preprocess_input(x)
    return keras.ops.convert_to_numpy(base(x, training=False)).mean(axis=(1, 2))


def _close(got: np.ndarray, ref: np.ndarray, rel: float) -> None:
    assert got.shape == ref.shape
    scale = float(np.abs(ref).max())
    assert scale > 0
    err = float(np.abs(got - ref).max())
    assert err <= rel * scale, f"max abs error {err:.3g} > {rel} x {scale:.3g}"


@pytest.mark.parametrize(
    ("model", "ctor", "family", "size"),
    [
        # 96: below half the 178x218 source, so decode is exact (no JPEG draft) + bilinear
        ("vgg16", keras.applications.VGG16, "vgg16", 96),
        ("mobilenetv2", keras.applications.MobileNetV2, "mobilenet_v2", 96),
    ],
)
def test_embedder_equals_keras_called_directly(tmp_path, jpegs, model, ctor, family, size):
    keras.utils.set_random_seed(11)
    base = ctor(include_top=False, weights=None, input_shape=(size, size, 3))
    path = tmp_path / f"{model}.weights.h5"
    base.save_weights(path)
    cfg = EmbedConfig(model=model, weights=str(path), input_size=f"{size}x{size}", batch_size=4)
    with Embedder(cfg) as emb:
        res = emb.embed(jpegs)
        assert emb.weights_info.source == "file"
        assert emb.describe()["weights_sha256"] == models.file_sha256(path)
    np.testing.assert_array_equal(res.ok_index, np.arange(len(jpegs)))
    assert res.errors == []
    assert res.embeddings.dtype == np.float32
    _close(res.embeddings, _direct(base, family, jpegs, (size, size)), 1e-4)


@pytest.fixture(scope="module")
def vgg():
    with Embedder(VGG) as emb:
        yield emb


def test_same_seed_same_embeddings(vgg, jpegs):
    again = Embedder(VGG)
    other = Embedder(EmbedConfig(**{**VGG.__dict__, "seed": 1}))
    a, b, c = (e.embed(jpegs).embeddings for e in (vgg, again, other))
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3 * np.abs(a).max()


def test_several_layers_in_one_pass(vgg, jpegs):
    both = Embedder(EmbedConfig(**{**VGG.__dict__, "layers": ("block5_pool", "block3_pool")}))
    only3 = Embedder(EmbedConfig(**{**VGG.__dict__, "layers": ("block3_pool",)}))
    assert (vgg.dim, only3.dim, both.dim) == (512, 256, 768)
    assert both.layers == ("block5_pool", "block3_pool")
    e = both.embed(jpegs).embeddings
    _close(e[:, :512], vgg.embed(jpegs).embeddings, 1e-6)
    _close(e[:, 512:], only3.embed(jpegs).embeddings, 1e-6)


def test_layers_may_be_a_comma_string():
    assert EmbedConfig(layers="block5_pool, block4_pool").layers == ("block5_pool", "block4_pool")


def test_bad_and_odd_images(vgg, big):
    img = face(6)
    contents = [
        jpeg(0),  # 0 ok
        b"",  # 1 error
        jpeg(1)[:3000],  # 2 error
        b"\x89\x50not-an-image" * 40,  # 3 error
        encode(img.convert("L")),  # 4 ok (grayscale)
        encode(img.convert("CMYK")),  # 5 ok (CMYK JPEG)
        encode(img, "PNG"),  # 6 ok (PNG bytes where a JPEG was expected)
        encode(img.convert("RGBA"), "PNG"),  # 7 ok
        big[1],  # 8 ok (3000x3000, decoded at 1/8 scale then resized)
        None,  # 9 error
        encode(img.convert("P"), "GIF"),  # 10 ok
    ]
    res = vgg.embed(contents)
    assert res.ok_index.tolist() == [0, 4, 5, 6, 7, 8, 10]
    assert res.errors == [
        (1, "empty content"),
        (2, "truncated JPEG"),
        (3, "not an image (cannot identify)"),
        (9, "missing content (null)"),
    ]
    assert len(res.ok_index) + len(res.errors) == len(contents) == res.n_inputs
    assert res.embeddings.shape == (7, vgg.dim)
    assert np.isfinite(res.embeddings).all()
    # the PNG and the JPEG-decoded RGB of the same picture land close together
    assert np.abs(res.embeddings[3] - res.embeddings[4]).max() < 0.2 * np.abs(res.embeddings).max()


def test_every_forward_pass_has_the_batch_shape(vgg, jpegs, monkeypatch):
    shapes = []
    real = vgg._forward.dispatch

    def spy(x):
        shapes.append(x.shape)
        return real(x)

    monkeypatch.setattr(vgg._forward, "dispatch", spy)
    res = vgg.embed([*jpegs[:5], b"", jpegs[5]])  # 6 ok -> sub-batches of 4 (3 ok + 1 bad) and 3
    assert res.embeddings.shape[0] == 6
    assert shapes == [(4, 32, 32, 3)] * 2


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's traced pass")
def test_the_warm_up_on_one_image_traces_the_pass_every_batch_runs(jpegs):
    emb = Embedder(VGG, warmup=True)
    traced = emb._traced
    assert traced is not None  # TensorFlow on CPU: no XLA
    assert traced.experimental_get_tracing_count() == 1
    pixels = np.random.default_rng(3).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    got = emb.embed_arrays(pixels)  # a full batch of 4 and a padded one of 2
    emb.embed(jpegs)
    assert traced.experimental_get_tracing_count() == 1  # no batch traced again
    # Like with like: Keras' own predict on the very batches the embedder ran (the last one
    # padded to 4 rows). A batch of 2 is another shape, so other kernels and last-bit differences
    # (seen on an AMD EPYC host: 423 of 3,072 values, max 2.1e-7): the promise is "same shape,
    # same bits" within one path, and agreement to float32 rounding across paths.
    padded = np.zeros_like(pixels[:4])
    padded[:2] = pixels[4:]
    ref = np.concatenate(
        [
            np.asarray(emb.model.predict_on_batch(pixels[:4])),
            np.asarray(emb.model.predict_on_batch(padded))[:2],
        ]
    )
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(emb.embed_arrays(pixels), got)  # same shapes: bitwise equal


def test_embed_iter_matches_embed_per_batch(vgg, jpegs):
    batches = [jpegs[:3], [], [jpegs[3], None, *jpegs[4:7], b"junk"], jpegs[:1]]
    got = list(vgg.embed_iter(iter(batches)))
    assert len(got) == len(batches)
    for batch, res in zip(batches, got):
        one = vgg.embed(batch)
        np.testing.assert_array_equal(res.ok_index, one.ok_index)
        assert res.errors == one.errors
        np.testing.assert_allclose(res.embeddings, one.embeddings, rtol=1e-6, atol=0)
    assert got[1].embeddings.shape == (0, vgg.dim)
    assert got[2].errors == [(1, "missing content (null)"), (5, "not an image (cannot identify)")]


def test_process_pool_decoding_gives_the_same(vgg, jpegs):
    batch = [*jpegs, b"", *jpegs[:3]]
    with Embedder(EmbedConfig(**{**VGG.__dict__, "decode_workers": 2})) as pooled:
        res = list(pooled.embed_iter([batch, batch[:2]]))
    ref = vgg.embed(batch)
    np.testing.assert_array_equal(res[0].ok_index, ref.ok_index)
    assert res[0].errors == ref.errors == [(7, "empty content")]
    np.testing.assert_allclose(res[0].embeddings, ref.embeddings, rtol=1e-6, atol=0)
    assert res[1].embeddings.shape == (2, vgg.dim)


def test_stats_accumulate(jpegs):
    emb = Embedder(VGG)
    emb.embed([*jpegs[:5], None])
    s = emb.stats
    assert (s.batches, s.images, s.errors, s.forward_calls) == (1, 5, 1, 2)
    assert s.model_s > 0 and s.decode_s > 0 and s.wall_s >= s.model_s
    assert s.as_dict()["images_per_s"] > 0


def test_bfloat16_runs_and_is_close_to_float32(vgg, jpegs):
    f32 = vgg.embed(jpegs).embeddings
    bf16 = (
        Embedder(EmbedConfig(**{**VGG.__dict__, "precision": "bfloat16"})).embed(jpegs).embeddings
    )
    assert bf16.dtype == np.float32
    assert keras.config.dtype_policy().name == "float32"
    _close(bf16, f32, 0.1)  # bf16 keeps ~3 significant digits
    cos = (bf16 * f32).sum(1) / np.linalg.norm(bf16, axis=1) / np.linalg.norm(f32, axis=1)
    assert cos.min() > 0.99


# --------------------------------------------------------------------------- config, cache


def test_describe(vgg):
    d = vgg.describe()
    assert d["model"] == "vgg16" and d["layers"] == ["block5_pool"] and d["pooling"] == "avg"
    assert d["input_hw"] == [32, 32] and d["dim"] == 512 and d["preprocessing"] == "caffe"
    assert d["weights_source"] == "random" and d["weights_sha256"] is None and d["seed"] == 0
    assert d["backend"] == keras.backend.backend() and d["keras_version"] == keras.version()
    assert vgg.input_hw == (32, 32)


def test_validate_config_agrees_with_embedder(vgg):
    d = validate_config(VGG)
    assert d == vgg.describe()
    flat = validate_config(
        EmbedConfig(**{**VGG.__dict__, "layers": ("block4_pool",), "pooling": "flatten"})
    )
    assert flat["dim"] == 2 * 2 * 512


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": "vgg17"}, "unknown model 'vgg17'"),
        ({"layers": ("block9_pool",)}, "unknown layer 'block9_pool' for vgg16"),
        ({"pooling": "mean"}, "unknown pooling 'mean'"),
        ({"precision": "fp8"}, "unknown precision 'fp8'"),
        ({"input_size": "16x16"}, "too small"),
        ({"input_size": "huge"}, "bad input size"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"decode_workers": -1}, "decode_workers must be an integer >= 0"),
        ({"weights": "/nowhere/x.weights.h5"}, "weights file not found"),
        ({"weights": "imagenet"}, "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        ({"model": "nasnetmobile", "weights": "imagenet", "input_size": "native"}, "224x224"),
    ],
)
def test_validate_config_errors(tmp_path, monkeypatch, change, message):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match=message) as err:
        validate_config(EmbedConfig(**{**VGG.__dict__, **change}))
    assert "\n" not in str(err.value)


def test_get_embedder_builds_once_per_config():
    embed.clear_embedder_cache()
    try:
        a = embed.get_embedder(VGG)
        assert embed.get_embedder(EmbedConfig(**VGG.__dict__)) is a
        assert embed.get_embedder(EmbedConfig(**{**VGG.__dict__, "seed": 5})) is not a
    finally:
        embed.clear_embedder_cache()


# --------------------------------------------------------------------------- import hygiene


@pytest.mark.parametrize(
    "module",
    [
        "featstore/embed.py",
        "featstore/decodepool.py",
        "featstore/models.py",
        "featstore/shmring.py",
    ],
)
def test_no_tensorflow_or_spark_imports(module):
    tree = ast.parse((ROOT / module).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"tensorflow", "pyspark", "jax", "torch"}


def test_import_embed_without_pyspark_is_light():
    code = (
        "import sys; sys.modules['pyspark'] = None; sys.modules['tensorflow'] = None; "
        "import featstore.embed; assert 'keras' not in sys.modules, 'keras imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


def test_the_decode_thread_never_imports(tmp_path):
    """Pillow imports its plugins on the first open (all of them for an unidentified file); the
    pool does that on the thread that starts it, so the decode thread imports nothing while the
    worker's main thread may be importing (the deadlock in bench/RESULTS.md, "The hang")."""
    code = r"""
import importlib.abc, io, sys, threading
seen = []
class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        seen.append((threading.current_thread().name, name))
        return None
from PIL import Image
sys.meta_path.insert(0, Spy())
from featstore.embed import DecodePool
png, gif, cmyk = io.BytesIO(), io.BytesIO(), io.BytesIO()
Image.new("RGB", (9, 7), "red").save(png, "PNG")
Image.new("P", (9, 7)).save(gif, "GIF")
Image.new("CMYK", (40, 30)).save(cmyk, "JPEG")
pool = DecodePool((8, 8))
out = list(pool.map([[b"garbage, no image format", png.getvalue()],
                     [gif.getvalue(), b"", cmyk.getvalue(), cmyk.getvalue()[:200]]]))
assert [len(b.ok_index) for b in out] == [1, 2], out
on_decode = sorted({n for t, n in seen if t.startswith("featstore-decode")})
assert not on_decode, on_decode
assert any(n.startswith("PIL.") for t, n in seen), "the spy saw no Pillow import at all"
print("ok")
"""
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


class _Deferred(forward.Forward):
    """A forward pass that reads its input only when fetched, as an asynchronous device may:
    what the pipeline hands it must stay untouched until it fetches (pads, shared-memory
    slots). It records the order of dispatches and fetches."""

    def __init__(self, fn, log):
        super().__init__(fn)
        self.log = log

    def dispatch(self, x):
        self.log.append("dispatch")
        return x  # a reference, not a copy

    def fetch(self, handle):
        self.log.append("fetch")
        return np.asarray(self._fn(handle), dtype=np.float32)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_overlapped_pass_gives_what_the_synchronous_one_gives(jpegs, workers):
    cfg = EmbedConfig(**{**VGG.__dict__, "decode_workers": workers})
    batches = [jpegs[:3], [], [jpegs[3], None, *jpegs[4:7], b"junk", *jpegs[:4]], jpegs[5:]]
    with Embedder(cfg) as sync, Embedder(cfg) as late:
        sync._forward = forward.make_forward(sync.model, sync.input_hw, mode="sync")
        log: list[str] = []
        late._forward = _Deferred(late.model.predict_on_batch, log)
        ref = list(sync.embed_iter(batches))
        got = list(late.embed_iter(batches))
    # one batch late: every fetch but the last follows the next dispatch
    assert log[:3] == ["dispatch", "dispatch", "fetch"] and log[-2:] == ["fetch", "fetch"]
    assert log.count("dispatch") == log.count("fetch") == sync.stats.forward_calls
    for r, g in zip(ref, got, strict=True):
        np.testing.assert_array_equal(g.ok_index, r.ok_index)
        assert g.errors == r.errors
        np.testing.assert_array_equal(g.embeddings, r.embeddings)  # same path, same shapes


def test_the_backend_pass_agrees_with_predict_on_batch(vgg, jpegs):
    """The backend's own pass (TensorFlow: the traced function; JAX: jit, async dispatch)
    against predict_on_batch: other code paths, so agreement to float32 rounding."""
    sync = Embedder(VGG)
    sync._forward = forward.make_forward(sync.model, sync.input_hw, mode="sync")
    batches = [jpegs, jpegs[:2]]
    for r, g in zip(sync.embed_iter(batches), vgg.embed_iter(batches), strict=True):
        np.testing.assert_array_equal(g.ok_index, r.ok_index)
        np.testing.assert_allclose(g.embeddings, r.embeddings, rtol=1e-5, atol=1e-6)


def test_gpu_decode_where_unavailable_falls_back_to_the_cpu_with_one_line(
    vgg, jpegs, caplog, monkeypatch
):
    from featstore import gpudecode

    monkeypatch.setattr(gpudecode, "available", lambda: "torch sees no CUDA device")
    with caplog.at_level("WARNING", logger="featstore.gpudecode"):
        emb = Embedder(EmbedConfig(**{**VGG.__dict__, "decode": "gpu"}))
    assert [r.getMessage() for r in caplog.records] == [
        "decode=gpu unavailable (torch sees no CUDA device): decoding on the CPU"
    ]
    assert isinstance(emb._decoder, embed.DecodePool)
    res, ref = emb.embed([*jpegs[:3], b""]), vgg.embed([*jpegs[:3], b""])
    assert res.errors == ref.errors == [(3, "empty content")]
    np.testing.assert_allclose(res.embeddings, ref.embeddings, rtol=1e-6, atol=0)
    with pytest.raises(ConfigError, match="decode must be cpu or gpu"):
        validate_config(EmbedConfig(**{**VGG.__dict__, "decode": "tpu"}))

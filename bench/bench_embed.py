#!/usr/bin/env python
"""Embedder benchmark: decode-only, model-only and end-to-end images/s in one run.

Standalone: generates ``--n`` synthetic CelebA-sized (178x218) JPEGs in memory, needs no Spark,
no dataset and no weights (``--weights random`` by default), and imports featstore from this
checkout (no pip install), so it runs as is on a machine with JAX and Keras but no TensorFlow::

    python bench/bench_embed.py --model mobilenetv2 --input-size default --n 256
    KERAS_BACKEND=jax python bench/bench_embed.py --model vgg16 --input-size native \\
        --precision bfloat16 --batch-size 256 --n 20000 --decode-workers 16

Figures printed:
  decode   JPEG bytes -> uint8 at the model input size, with --decode-workers (0 = one thread)
  model    uint8 already in memory -> float32 embeddings (after a warm-up pass)
  e2e      Embedder.embed_iter from JPEG bytes (decode overlapped with the model)
and the ratios e2e/model (how close the pipeline gets to the model's ceiling) and e2e/decode.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="mobilenetv2")
    p.add_argument("--input-size", default="default", help="default | native | HxW")
    p.add_argument("--layers", default="", help="comma-separated; empty = model default")
    p.add_argument("--pooling", default="avg", choices=["avg", "max", "flatten"])
    p.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--weights", default="random", help="random | imagenet | PATH")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--n", type=int, default=256, help="images per measurement")
    p.add_argument("--decode-workers", type=int, default=0, help="0 = one background thread")
    p.add_argument(
        "--rows-per-batch", type=int, default=1024, help="input batch size for e2e (Arrow batch)"
    )
    p.add_argument("--unique", type=int, default=512, help="distinct JPEGs generated (cycled)")
    p.add_argument(
        "--backend",
        choices=["tensorflow", "jax", "torch"],
        help="sets KERAS_BACKEND before Keras is imported (note: otherwise the environment's "
        "KERAS_BACKEND, default tensorflow, is used)",
    )
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def synthetic_jpegs(n: int, seed: int = 0, size: tuple[int, int] = (178, 218)) -> list[bytes]:
    """Face-like 178x218 JPEGs: coloured background, skin ellipse, eyes, mouth, sensor noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for _ in range(n):
        bg = rng.uniform(0, 255, 3)
        grad = (yy / h)[..., None] * rng.uniform(-60, 60, 3)
        img = np.broadcast_to(bg, (h, w, 3)) + grad
        cx, cy = w / 2 + rng.normal(0, 5), h / 2 + rng.normal(0, 6)
        face = ((xx - cx) / (0.3 * w)) ** 2 + ((yy - cy) / (0.36 * h)) ** 2 <= 1
        img[face] = rng.uniform([150, 100, 80], [255, 200, 170])
        for ex in (cx - 0.12 * w, cx + 0.12 * w):
            eye = ((xx - ex) / (0.05 * w)) ** 2 + ((yy - cy + 0.08 * h) / (0.02 * h)) ** 2 <= 1
            img[eye] = (40, 30, 30)
        mouth = (abs(xx - cx) < 0.1 * w) & (abs(yy - cy - 0.17 * h) < 0.015 * h)
        img[mouth] = (150, 40, 50)
        img = img + rng.normal(0, 6, img.shape)
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def describe_device(backend: str) -> str:
    try:
        if backend == "jax":
            import jax

            return f"jax {jax.__version__} devices={jax.devices()}"
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_logical_devices("GPU")
            return f"tensorflow {tf.__version__} " + (
                f"gpus={[d.name for d in gpus]}" if gpus else "cpu only"
            )
        if backend == "torch":
            import torch

            dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu only"
            return f"torch {torch.__version__} {dev}"
    except Exception as exc:  # the benchmark still runs
        return f"{backend} (device query failed: {exc})"
    return backend


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("nan")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import keras
    import numpy as np

    from featstore.embed import DecodePool, EmbedConfig, Embedder

    backend = keras.backend.backend()
    print(f"backend   {backend}  keras {keras.version()}  python {platform.python_version()}")
    print(f"device    {describe_device(backend)}")
    print(f"cpus      {os.cpu_count()}  decode_workers={args.decode_workers}")

    t0 = time.perf_counter()
    unique = synthetic_jpegs(min(args.unique, args.n), seed=args.seed)
    contents = [unique[i % len(unique)] for i in range(args.n)]
    mean_kb = sum(map(len, unique)) / len(unique) / 1024
    print(
        f"data      {args.n} JPEGs 178x218 ({len(unique)} distinct, {mean_kb:.1f} KB avg), "
        f"made in {time.perf_counter() - t0:.1f}s"
    )

    cfg = EmbedConfig(
        model=args.model,
        layers=args.layers,
        pooling=args.pooling,
        weights=args.weights,
        input_size=args.input_size,
        batch_size=args.batch_size,
        precision=args.precision,
        decode_workers=args.decode_workers,
        seed=args.seed,
    )
    t0 = time.perf_counter()
    emb = Embedder(cfg)
    build_s = time.perf_counter() - t0
    h, w = emb.input_hw
    print(
        f"model     {args.model} {h}x{w} {args.precision} layers={','.join(emb.layers)} "
        f"dim={emb.dim} batch={args.batch_size} weights={emb.weights_info.source} "
        f"(built in {build_s:.1f}s)"
    )

    bs = args.batch_size
    chunks = [contents[i : i + bs] for i in range(0, args.n, bs)]

    # decode only (the pool is started and warmed on a few chunks first)
    with DecodePool(emb.input_hw, args.decode_workers) as pool:
        for _ in pool.map(chunks[: max(1, args.decode_workers)]):
            pass
        t0 = time.perf_counter()
        kept: list[np.ndarray] = []  # a few thousand distinct images for the model-only pass
        n_dec = 0
        for d in pool.map(chunks):
            n_dec += len(d.images)
            if sum(map(len, kept)) < 2048:
                kept.append(d.images.copy())
            d.release()  # the shared-memory slot goes back to the decoders
        decode_s = time.perf_counter() - t0
    images = np.resize(np.concatenate(kept), (n_dec, h, w, 3))

    # model only, uint8 already in memory
    t0 = time.perf_counter()
    emb.warmup()
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = emb.embed_arrays(images)
    model_s = time.perf_counter() - t0
    assert out.shape == (n_dec, emb.dim) and np.isfinite(out).all()

    # end to end from JPEG bytes
    emb.stats.reset()
    rows = args.rows_per_batch
    batches = [contents[i : i + rows] for i in range(0, args.n, rows)]
    t0 = time.perf_counter()
    n_ok = sum(len(r.ok_index) for r in emb.embed_iter(batches))
    e2e_s = time.perf_counter() - t0
    stats = emb.stats
    emb.close()

    dec, mod, e2e = rate(n_dec, decode_s), rate(n_dec, model_s), rate(n_ok, e2e_s)
    print(f"warm-up   {warm_s:.2f}s (first forward pass: compile/jit)")
    print(f"decode    {dec:9.1f} img/s  ({n_dec} in {decode_s:.2f}s)")
    print(f"model     {mod:9.1f} img/s  ({n_dec} in {model_s:.2f}s, uint8 in memory)")
    print(f"e2e       {e2e:9.1f} img/s  ({n_ok} in {e2e_s:.2f}s, JPEG bytes -> embeddings)")
    print(f"ratios    e2e/model {e2e / mod:.2f}   e2e/decode {e2e / dec:.2f}")
    print(
        f"e2e split decode busy {stats.decode_s:.2f}s, model {stats.model_s:.2f}s, "
        f"model waited for decode {stats.decode_wait_s:.2f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

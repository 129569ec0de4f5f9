"""``extract.decode: gpu``: JPEG batches decoded by nvJPEG on the GPU through torchvision
(``torchvision.io.decode_jpeg(list, device="cuda")``), where torch with CUDA is present.

Not the default: it has not been measured end to end against the CPU pool (issue 26). It gives
host ``uint8`` batches like :class:`featstore.decodepool.DecodePool` (so the Keras-only embedder
stays as it is), decoding one chunk ahead on a background thread. What the GPU does not take --
not a JPEG, above the pixel cap, or a chunk nvJPEG refuses -- is decoded on the CPU by
:func:`featstore.decodepool.decode_image`, with its errors per image. A resize (only when the
JPEG's size is not the model's) is bilinear with antialiasing on the GPU, so pixels may differ
slightly from Pillow's; a JPEG Pillow calls truncated may be decoded by nvJPEG.
"""

from __future__ import annotations

import io
import logging
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image

from featstore.decode import MAX_PIXELS, one_line
from featstore.timing import Stopwatch

logger = logging.getLogger(__name__)


def available() -> str | None:
    """None when nvJPEG through torchvision can run here, else why not (one line)."""
    try:
        import torch
        import torchvision.io  # noqa: F401
    except Exception as exc:
        return one_line(f"torchvision not importable ({type(exc).__name__}: {exc})")
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    return None


class GpuDecoder:
    """The same ``map(chunks)`` / ``close()`` as :class:`featstore.decodepool.DecodePool`."""

    depth = 2

    def __init__(self, hw: tuple[int, int], *, max_pixels: int = MAX_PIXELS) -> None:
        import torch

        self.hw = (int(hw[0]), int(hw[1]))
        self.max_pixels = max_pixels
        self._torch = torch
        self._executor: ThreadPoolExecutor | None = None

    @classmethod
    def create(cls, hw: tuple[int, int], *, max_pixels: int = MAX_PIXELS) -> GpuDecoder | None:
        """A decoder, or None after one log line saying why the CPU decodes instead."""
        why = available()
        if why is not None:
            logger.warning("decode=gpu unavailable (%s): decoding on the CPU", why)
            return None
        return cls(hw, max_pixels=max_pixels)

    def _gpu_ok(self, data: bytes | None) -> bool:
        if not data or data[:3] != b"\xff\xd8\xff":
            return False
        try:
            with Image.open(io.BytesIO(data)) as img:  # the header only: the pixel cap
                w, h = img.size
                return img.mode in ("RGB", "L") and 0 < w * h <= self.max_pixels
        except Exception:
            return False

    def decode(self, contents: Sequence[bytes | None]) -> Any:
        from torchvision.io import ImageReadMode, decode_jpeg

        from featstore.decodepool import DecodedBatch, decode_batch

        torch = self._torch
        t0 = Stopwatch()
        h, w = self.hw
        on_gpu = [i for i, d in enumerate(contents) if self._gpu_ok(d)]
        pixels: dict[int, np.ndarray] = {}
        if on_gpu:
            try:
                data = [torch.frombuffer(bytearray(contents[i]), dtype=torch.uint8) for i in on_gpu]
                imgs = decode_jpeg(data, mode=ImageReadMode.RGB, device="cuda")
                out = []
                for img in imgs:  # (3, H, W) uint8 on the GPU
                    if tuple(img.shape[1:]) != (h, w):
                        img = (
                            torch.nn.functional.interpolate(
                                img[None].float(),
                                size=(h, w),
                                mode="bilinear",
                                antialias=True,
                                align_corners=False,
                            )[0]
                            .round()
                            .clamp(0, 255)
                            .to(torch.uint8)
                        )
                    out.append(img.permute(1, 2, 0))
                host = torch.stack(out).cpu().numpy()  # one copy back for the chunk
                pixels = dict(zip(on_gpu, host))
            except Exception as exc:  # the chunk goes to the CPU, image by image
                logger.debug("nvJPEG refused a chunk (%s): CPU decode", one_line(str(exc)))
                pixels = {}
        rest = [i for i in range(len(contents)) if i not in pixels]
        cpu = decode_batch([contents[i] for i in rest], self.hw, max_pixels=self.max_pixels)
        cpu_ok = {rest[j]: cpu.images[k] for k, j in enumerate(cpu.ok_index)}
        ok = sorted([*pixels, *cpu_ok])
        images = np.empty((len(ok), h, w, 3), dtype=np.uint8)
        for k, i in enumerate(ok):
            images[k] = pixels[i] if i in pixels else cpu_ok[i]
        errors = sorted((rest[j], why) for j, why in cpu.errors)
        return DecodedBatch(images, np.asarray(ok, dtype=np.int64), errors, t0.seconds)

    def map(self, chunks: Iterable[Sequence[bytes | None]]) -> Iterator[Any]:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="featstore-nvjpeg")
        pending: deque[Future[Any]] = deque()
        try:
            for chunk in chunks:
                pending.append(self._executor.submit(self.decode, list(chunk)))
                if len(pending) >= self.depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

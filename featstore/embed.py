"""The batch embedder: JPEG bytes -> float32 embedding matrix. No Spark in here.

Keras 3 API plus numpy and Pillow only, so it runs unchanged on ``KERAS_BACKEND=tensorflow``,
``jax`` or ``torch``. Keras itself is imported lazily: ``import featstore.embed`` costs numpy,
Pillow and the config's dataclasses (and PyYAML, which :mod:`featstore.config` reads configs
with); the decode worker processes import numpy and Pillow only (:mod:`featstore.decodepool`,
where the decoding and the :class:`DecodePool` are).

Pipeline (see DESIGN.md "Speed"): the input is cut into sub-batches of ``batch_size``; sub-batch
``k+1`` is decoded (a background thread, or a pool of worker processes) while sub-batch ``k`` runs
through the model as ``uint8``; the cast and preprocessing happen inside the model, on the device.
Every forward call has the same shape (the last sub-batch is padded), so a jitted backend
compiles once.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from featstore.config import EmbedConfig
from featstore.decode import DecodeError
from featstore.decodepool import (
    DecodedBatch,
    DecodePool,
    DecodePoolError,
    decode_batch,
    decode_image,
)
from featstore.errors import ConfigError
from featstore.timing import Stopwatch

__all__ = [
    "DecodeError",
    "DecodePool",
    "DecodePoolError",
    "DecodedBatch",
    "EmbedConfig",
    "EmbedResult",
    "EmbedStats",
    "Embedder",
    "base_cost",
    "check_config",
    "clear_embedder_cache",
    "decode_batch",
    "decode_image",
    "get_embedder",
    "validate_config",
]

if TYPE_CHECKING:
    import keras

    from featstore.modelspecs import ModelSpec, WeightsInfo

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- results


@dataclass
class EmbedResult:
    """Embeddings of one input batch: row ``i`` belongs to input position ``ok_index[i]``."""

    embeddings: np.ndarray  # float32 (n_ok, dim)
    ok_index: np.ndarray  # int64 (n_ok,), increasing
    errors: list[tuple[int, str]]  # (position, reason), increasing positions
    n_inputs: int = 0

    def __post_init__(self) -> None:
        if len(self.ok_index) + len(self.errors) != self.n_inputs:
            raise AssertionError(
                f"{len(self.ok_index)} ok + {len(self.errors)} errors != {self.n_inputs} inputs"
            )


@dataclass
class EmbedStats:
    """Accumulated timings. ``decode_s`` is decoder busy time (summed over workers);
    ``decode_wait_s`` is how long the model side sat waiting for decoded images."""

    batches: int = 0
    images: int = 0
    errors: int = 0
    forward_calls: int = 0
    decode_s: float = 0.0
    decode_wait_s: float = 0.0
    model_s: float = 0.0
    wall_s: float = 0.0

    def reset(self) -> None:
        for f in self.__dataclass_fields__:
            setattr(self, f, type(getattr(self, f))())

    def as_dict(self) -> dict[str, float]:
        d: dict[str, float] = asdict(self)
        d["images_per_s"] = self.images / self.wall_s if self.wall_s > 0 else 0.0
        return d


@dataclass(frozen=True)
class _Chunk:
    batch: int
    start: int
    contents: Sequence[bytes | None]
    last: bool
    n_inputs: int


@dataclass
class _Acc:
    embeddings: list[np.ndarray] = field(default_factory=list)
    ok_index: list[np.ndarray] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)


# --------------------------------------------------------------------------- embedder


@dataclass(frozen=True)
class _Resolved:
    spec: ModelSpec
    input_hw: tuple[int, int]
    layers: tuple[str, ...]
    weights: WeightsInfo


def _resolve_config(cfg: EmbedConfig) -> _Resolved:
    """Cheap checks of every field (no model built, no Keras imported)."""
    from featstore import modelspecs as models

    if not isinstance(cfg.batch_size, int) or cfg.batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {cfg.batch_size!r}")
    if not isinstance(cfg.decode_workers, int) or cfg.decode_workers < 0:
        raise ConfigError(f"decode_workers must be an integer >= 0, got {cfg.decode_workers!r}")
    if cfg.decode not in ("cpu", "gpu"):
        raise ConfigError(f"decode must be cpu or gpu, got {cfg.decode!r}")
    if not isinstance(cfg.seed, int):
        raise ConfigError(f"seed must be an integer, got {cfg.seed!r}")
    if cfg.pooling not in models.POOLINGS:
        raise ConfigError(f"unknown pooling '{cfg.pooling}'; known: {', '.join(models.POOLINGS)}")
    if cfg.precision not in models.PRECISIONS:
        raise ConfigError(
            f"unknown precision '{cfg.precision}'; known: {', '.join(models.PRECISIONS)}"
        )
    spec = models.get_spec(cfg.model)
    weights_kind = str(cfg.weights).strip().lower()
    hw = models.resolve_input_size(spec, cfg.input_size, weights=weights_kind)
    winfo = models.resolve_weights(spec, cfg.weights, input_hw=hw)
    if winfo.source == "imagenet" and spec.imagenet_hw and hw != spec.imagenet_hw:
        models.resolve_input_size(spec, cfg.input_size, weights="imagenet")  # raises
    layers = cfg.layers or (spec.default_layer,)
    return _Resolved(spec, hw, layers, winfo)


@functools.lru_cache(maxsize=16)
def _checked_base(
    name: str, input_hw: tuple[int, int], layers: tuple[str, ...], pooling: str
) -> tuple[int, int, int]:
    """Build the base (random weights) once per process to check layer names; returns the
    embedding width, the base's parameter count and its FLOPs per image
    (:func:`featstore.models.count_flops`). Weights are resolved afresh on every call."""
    from featstore import models

    spec = models.get_spec(name)
    base = models.build_base(spec, input_hw=input_hw, weights=models.WeightsInfo("random"))
    models.check_layers(spec, [lyr.name for lyr in base.layers], layers)
    dim = int(sum(models.pooled_dim(base.get_layer(n).output.shape, pooling) for n in layers))
    return dim, int(base.count_params()), int(models.count_flops(base))


def _checked_dim(
    name: str, input_hw: tuple[int, int], layers: tuple[str, ...], pooling: str
) -> int:
    return _checked_base(name, input_hw, layers, pooling)[0]


def base_cost(cfg: EmbedConfig) -> dict[str, int]:
    """The conv base's ``params`` (``count_params()``, ``include_top=False``) and ``flops`` (one
    forward pass of one image at the configured input size), from the same base
    :func:`validate_config` builds (built once per process and settings)."""
    r = _resolve_config(cfg)
    _, params, flops = _checked_base(r.spec.name, tuple(r.input_hw), tuple(r.layers), cfg.pooling)
    return {"params": params, "flops": flops}


def check_config(cfg: EmbedConfig) -> dict[str, Any]:
    """The checks of :func:`validate_config` that need no Keras: every field, the model name,
    the input size, the weights (the file exists and is HDF5; imagenet: in the Keras cache) and
    the layer names (from the generated table, :func:`featstore.modelspecs.known_layers`; when
    it cannot say, :func:`validate_config` checks them by building the base). Raises
    :class:`ConfigError` with one line; returns the settings that need no model (no ``dim``,
    ``backend`` or ``keras_version``)."""
    from featstore import modelspecs

    r = _resolve_config(cfg)
    checked = modelspecs.check_layers_static(r.spec, r.layers)
    return {**_settings(cfg, r), "layers_checked": checked}


def _settings(cfg: EmbedConfig, r: _Resolved) -> dict[str, Any]:
    """The resolved settings that need no model (shared by check_config and validate_config)."""
    return {
        "model": r.spec.name,
        "layers": list(r.layers),
        "pooling": cfg.pooling,
        "input_hw": list(r.input_hw),
        "preprocessing": r.spec.preprocessing,
        "precision": cfg.precision,
        "batch_size": cfg.batch_size,
        "weights_source": r.weights.source,
        "weights_path": r.weights.path,
        "weights_sha256": r.weights.sha256,
        "seed": cfg.seed if r.weights.source == "random" else None,
    }


def validate_config(cfg: EmbedConfig) -> dict[str, Any]:
    """Check everything an :class:`Embedder` would need, before any Spark work.

    Raises :class:`ConfigError` with one clear line. Builds the base with random weights (no
    weights file is loaded) to check layer names and compute the embedding width. Returns the
    resolved settings (the fields of :meth:`Embedder.describe` that need no model).
    """
    r = _resolve_config(cfg)
    from featstore import modelspecs

    modelspecs.check_layers_static(r.spec, r.layers)  # the same message with or without Keras
    dim = _checked_dim(r.spec.name, tuple(r.input_hw), tuple(r.layers), cfg.pooling)
    return _describe(cfg, r, int(dim))


def _describe(cfg: EmbedConfig, r: _Resolved, dim: int) -> dict[str, Any]:
    import keras

    return {
        **_settings(cfg, r),
        "dim": dim,
        "backend": keras.backend.backend(),
        "keras_version": keras.version(),
    }


class Embedder:
    """Builds the extractor once; turns batches of image bytes into float32 embeddings.

    Not thread-safe: use one per thread (``get_embedder`` gives one per process and config).
    """

    def __init__(self, config: EmbedConfig | None = None, *, warmup: bool = False) -> None:
        from featstore import models

        self.config = cfg = config if config is not None else EmbedConfig()
        self._resolved = r = _resolve_config(cfg)
        self._spec = r.spec
        self._input_hw = r.input_hw
        self._layers = r.layers
        self._weights = r.weights
        t0 = Stopwatch()
        self.model: keras.Model = models.build_extractor(
            r.spec,
            input_hw=r.input_hw,
            layers=r.layers,
            pooling=cfg.pooling,
            weights=r.weights,
            precision=cfg.precision,
            seed=cfg.seed,
        )
        self._dim = int(self.model.output.shape[-1])
        h, w = r.input_hw
        # two padding buffers: a padded batch may still be in the model (one batch late)
        # while the next one is padded
        self._pads = [np.zeros((cfg.batch_size, h, w, 3), dtype=np.uint8) for _ in range(2)]
        self._pad_turn = 0
        self._decoder: Any = None
        if cfg.decode == "gpu":
            from featstore import gpudecode

            self._decoder = gpudecode.GpuDecoder.create(r.input_hw)
        if self._decoder is None:
            self._decoder = DecodePool(r.input_hw, cfg.decode_workers, capacity=cfg.batch_size)
        self.stats = EmbedStats()
        self.users = 0  # get_embedder calls that got this one (a warm-up's counts)
        logger.info(
            "embedder ready in %.1fs: %s",
            t0.seconds,
            {k: v for k, v in self.describe().items() if k != "weights_sha256"},
        )
        if warmup:
            self.warmup()

    # -- properties

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def input_hw(self) -> tuple[int, int]:
        return self._input_hw

    @property
    def layers(self) -> tuple[str, ...]:
        return self._layers

    @property
    def weights_info(self) -> WeightsInfo:
        return self._weights

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    def describe(self) -> dict[str, Any]:
        """What made these embeddings, for the feature-set manifest."""
        return _describe(self.config, self._resolved, self._dim)

    @functools.cached_property
    def facts(self) -> dict[str, Any]:
        """What the extract job's manifest records of the network that ran, measured on this
        model (so the driver need not build it): the embedding width, the backend and Keras
        version, and the conv base's ``params`` and ``flops`` per image (the part of it up to
        the extracted layers, at the configured input size: :func:`featstore.models.count_flops`)."""
        import keras

        from featstore import models

        base = self.model.get_layer(f"{self._spec.name}_features")
        return {
            "dim": self._dim,
            "backend": keras.backend.backend(),
            "keras_version": keras.version(),
            "params": int(base.count_params()),
            "flops": int(models.count_flops(base)),
        }

    # -- model side

    def warmup(self) -> None:
        """One forward pass on zeros: traces/compiles now rather than on the first real batch.
        Where the forward pass takes any batch size (TensorFlow's traced pass) the pass is on
        one image: the trace and the graph's optimization without a whole batch of compute."""
        t0 = Stopwatch()
        rows = 1 if self._forward.any_batch else self.config.batch_size
        self._forward_one(self._pads[0][:rows], rows)
        logger.info(
            "warm-up forward pass (%d rows, %s) %.2fs",
            rows,
            self._forward.name,
            t0.seconds,
        )

    @functools.cached_property
    def _forward(self) -> Any:
        """The backend's forward pass (:func:`featstore.forward.make_forward`): dispatched
        now, fetched one batch later."""
        from featstore import forward

        return forward.make_forward(self.model, self._input_hw)

    @property
    def _traced(self) -> Any:
        """TensorFlow's traced ``tf.function`` where the pass is one, else ``None``."""
        return self._forward.traced

    def _dispatch(self, images: np.ndarray) -> Any:
        """Start the forward pass of up to ``batch_size`` images (padded to the batch shape:
        one compiled shape); returns the handle :meth:`_fetch` takes."""
        k, bs = len(images), self.config.batch_size
        if k < bs:
            pad = self._pads[self._pad_turn]
            self._pad_turn ^= 1
            pad[:k] = images
            pad[k:] = 0
            images = pad
        self.stats.forward_calls += 1
        return self._forward.dispatch(images)

    def _fetch(self, handle: Any, k: int) -> np.ndarray:
        return self._forward.fetch(handle)[:k]

    def _forward_one(self, images: np.ndarray, k: int) -> np.ndarray:
        return self._forward.fetch(self._forward.dispatch(images))[:k]

    def embed_arrays(self, images: np.ndarray) -> np.ndarray:
        """Model only: ``uint8 (n, h, w, 3)`` already decoded -> ``float32 (n, dim)`` (batch
        ``k+1`` dispatched before batch ``k`` is fetched, as in :meth:`embed_iter`)."""
        images = np.asarray(images)
        h, w = self._input_hw
        if images.ndim != 4 or images.shape[1:] != (h, w, 3):
            raise ValueError(f"expected images of shape (n, {h}, {w}, 3), got {images.shape}")
        if images.dtype != np.uint8:
            raise ValueError(f"expected uint8 images, got {images.dtype}")
        t0 = Stopwatch()
        bs = self.config.batch_size
        n = len(images)
        out = np.empty((n, self._dim), dtype=np.float32)
        late: deque[tuple[Any, int, int]] = deque()
        for i in range(0, n, bs):
            sub = images[i : i + bs]
            late.append((self._dispatch(sub), i, len(sub)))
            if len(late) > 1:
                handle, j, k = late.popleft()
                out[j : j + k] = self._fetch(handle, k)
        for handle, j, k in late:
            out[j : j + k] = self._fetch(handle, k)
        self.stats.model_s += t0.seconds
        return out

    # -- bytes in, embeddings out

    def embed(self, contents: Sequence[bytes | None]) -> EmbedResult:
        """Embed one batch of image bytes (decoding overlaps the model sub-batch by sub-batch)."""
        (result,) = self.embed_iter([contents])
        return result

    def embed_iter(self, batches: Iterable[Sequence[bytes | None]]) -> Iterator[EmbedResult]:
        """One :class:`EmbedResult` per input batch, in order, from one pipeline over all of
        them: decoding runs ahead of the model (into the next batches, so it reads from
        ``batches`` before yielding), and each sub-batch's forward pass is fetched only after
        the next one was dispatched, also across input batches: a batch's result is yielded
        while the next batch's first sub-batch is in the model. Call it once over a stream
        (a task's Arrow batches), not once per batch: each call drains the pipeline at its end."""
        started = Stopwatch()
        acc = _Acc()
        meta: deque[_Chunk] = deque()
        late: deque[tuple[Any, _Chunk, DecodedBatch]] = deque()
        decoded_iter = self._decoder.map(self._chunks(batches, meta))

        def settle() -> EmbedResult | None:
            nonlocal acc
            handle, chunk, decoded = late.popleft()
            if handle is not None:
                t = Stopwatch()
                acc.embeddings.append(self._fetch(handle, len(decoded.ok_index)))
                self.stats.model_s += t.seconds
            decoded.release()  # the pixels are in the model's hands: the slot is free
            acc.ok_index.append(decoded.ok_index + chunk.start)
            acc.errors.extend((i + chunk.start, why) for i, why in decoded.errors)
            if not chunk.last:
                return None
            result, acc = self._finish(acc, chunk), _Acc()
            return result

        try:
            while True:
                t0 = Stopwatch()
                decoded = next(decoded_iter, None)
                self.stats.decode_wait_s += t0.seconds
                if decoded is None:
                    break
                chunk = meta.popleft()
                self.stats.decode_s += decoded.seconds
                handle = None
                if len(decoded.ok_index):
                    t = Stopwatch()
                    handle = self._dispatch(decoded.images)
                    self.stats.model_s += t.seconds
                late.append((handle, chunk, decoded))
                while late and (late[0][0] is None or (handle is not None and len(late) > 1)):
                    # fetch one batch late: the newest dispatched batch stays in the model
                    result = settle()
                    if result is not None:
                        self.stats.wall_s += started.seconds
                        yield result
                        started = Stopwatch()
            while late:
                result = settle()
                if result is not None:
                    self.stats.wall_s += started.seconds
                    yield result
                    started = Stopwatch()
        finally:
            for _, _, decoded in late:
                decoded.release()
            decoded_iter.close()
            self.stats.wall_s += started.seconds

    def _chunks(
        self, batches: Iterable[Sequence[bytes | None]], meta: deque[_Chunk]
    ) -> Iterator[Sequence[bytes | None]]:
        bs = self.config.batch_size
        for b, contents in enumerate(batches):
            n = len(contents)
            starts = list(range(0, n, bs)) or [0]
            for s in starts:
                c = _Chunk(b, s, contents[s : s + bs], s == starts[-1], n)
                meta.append(c)
                yield c.contents

    def _finish(self, acc: _Acc, chunk: _Chunk) -> EmbedResult:
        emb = (
            np.concatenate(acc.embeddings)
            if acc.embeddings
            else np.empty((0, self._dim), dtype=np.float32)
        )
        ok = np.concatenate(acc.ok_index) if acc.ok_index else np.empty(0, dtype=np.int64)
        result = EmbedResult(emb, ok, acc.errors, chunk.n_inputs)
        self.stats.batches += 1
        self.stats.images += len(ok)
        self.stats.errors += len(acc.errors)
        logger.debug(
            "batch %d: %d ok, %d errors; totals decode %.2fs, model %.2fs, waited %.2fs",
            chunk.batch,
            len(ok),
            len(acc.errors),
            self.stats.decode_s,
            self.stats.model_s,
            self.stats.decode_wait_s,
        )
        return result

    def close(self) -> None:
        """Stop the decode thread / processes (the model stays usable)."""
        self._decoder.close()

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- per-process cache

_EMBEDDERS: dict[tuple[EmbedConfig, str | None], Embedder] = {}
_EMBEDDERS_LOCK = threading.Lock()


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def get_embedder(
    cfg: EmbedConfig, weights_sha256: str | None = None, *, warm: bool = False
) -> Embedder:
    """The process-wide :class:`Embedder` for ``cfg`` (built on first use, then reused), so a
    reused Python worker builds the model once. ``weights_sha256`` (the weights file's content
    hash, as the driver recorded it) is part of the key: a file rewritten under the same path
    gets a new embedder, not the old weights. Without it, a weights file is hashed here.
    ``warm``: a new embedder also runs its first forward pass (:meth:`Embedder.warmup`: the
    backend traces and compiles then) before any other caller gets it. Each call counts in
    the embedder's ``users``: above 1, the caller found it built (by a warm-up or an earlier
    task of this worker)."""
    if weights_sha256 is None and cfg.weights not in ("imagenet", "random"):
        weights_sha256 = _sha256(cfg.weights) if os.path.isfile(cfg.weights) else None
    key = (cfg, weights_sha256)
    with _EMBEDDERS_LOCK:
        emb = _EMBEDDERS.get(key)
        if emb is None:
            emb = Embedder(cfg, warmup=warm)
            _EMBEDDERS[key] = emb
        emb.users += 1
        return emb


def clear_embedder_cache() -> None:
    with _EMBEDDERS_LOCK:
        for emb in _EMBEDDERS.values():
            emb.close()
        _EMBEDDERS.clear()

"""Conv bases as Keras models: building the base and the extractor, on-device preprocessing.

The registry (name -> constructor, input size, preprocessing, layers, weights files), input
sizes, weights resolution and layer checks are in :mod:`featstore.modelspecs` (no Keras there)
and re-exported here.

Everything here is Keras 3 API (``keras``, ``keras.ops``) plus numpy: no TensorFlow, no Spark,
so the same code runs with ``KERAS_BACKEND=tensorflow``, ``jax`` or ``torch``.

Weights are never downloaded. ``"imagenet"`` is resolved from the Keras cache folder
(``$KERAS_HOME/models`` or ``~/.keras/models``) under the exact file name Keras itself would
store, or from an explicit path to that file; a missing file is a :class:`ConfigError` that
names the file and the folder.

The extractor built by :func:`build_extractor` takes a ``uint8`` RGB batch ``(N, H, W, 3)``;
the cast, the model's ImageNet preprocessing, the base, pooling and concatenation all run
inside the model (on the device), and its single output is ``float32 (N, dim)``.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from featstore.errors import ConfigError

# The registry, input sizes, weights resolution and layer checks need no Keras: they live in
# featstore.modelspecs (what the command line checks before anything heavy starts).
from featstore.modelspecs import (
    CELEBA_HW,
    HDF5_SIGNATURE,
    MAX_INPUT_SIDE,
    MODELS,
    POOLINGS,
    PRECISIONS,
    PREPROCESSING_MODES,
    WEIGHT_SOURCES,
    ModelSpec,
    PoolingName,
    PrecisionName,
    WeightsInfo,
    check_layers,
    file_sha256,
    get_spec,
    keras_models_dir,
    known_counts,
    known_layers,
    known_models,
    resolve_input_size,
    resolve_weights,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CELEBA_HW",
    "HDF5_SIGNATURE",
    "MAX_INPUT_SIDE",
    "MODELS",
    "POOLINGS",
    "PRECISIONS",
    "PREPROCESSING_MODES",
    "WEIGHT_SOURCES",
    "ImagePreprocess",
    "ModelSpec",
    "PoolingName",
    "PrecisionName",
    "WeightsInfo",
    "build_base",
    "build_extractor",
    "check_layers",
    "file_sha256",
    "get_spec",
    "keras_models_dir",
    "known_layers",
    "known_models",
    "list_layers",
    "pooled_dim",
    "preprocess_ops",
    "resolve_input_size",
    "resolve_weights",
]

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
_TORCH_STD_RGB = (0.229, 0.224, 0.225)
_MIXED_POLICY = {"float32": None, "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


# --------------------------------------------------------------------------- preprocessing


def preprocess_ops(x: Any, mode: str) -> Any:
    """ImageNet preprocessing in ``keras.ops`` on a float32 RGB ``(..., 3)`` tensor in [0, 255].

    Same arithmetic as ``keras.applications.<family>.preprocess_input``.
    """
    if mode == "caffe":
        return ops.flip(x, axis=-1) - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=x.dtype)
    if mode == "tf":
        return x / 127.5 - 1.0
    if mode == "torch":
        mean = ops.convert_to_tensor(_TORCH_MEAN_RGB, dtype=x.dtype)
        std = ops.convert_to_tensor(_TORCH_STD_RGB, dtype=x.dtype)
        return (x / 255.0 - mean) / std
    if mode == "none":
        return x
    raise ConfigError(f"unknown preprocessing '{mode}'; known: {', '.join(PREPROCESSING_MODES)}")


@keras.saving.register_keras_serializable(package="featstore")
class ImagePreprocess(keras.layers.Layer):
    """uint8 (or float) RGB in [0, 255] -> float32 preprocessed for the base, on the device."""

    def __init__(self, mode: str, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if mode not in PREPROCESSING_MODES:
            raise ConfigError(
                f"unknown preprocessing '{mode}'; known: {', '.join(PREPROCESSING_MODES)}"
            )
        self.mode = mode

    def call(self, inputs: Any) -> Any:
        return preprocess_ops(ops.cast(inputs, "float32"), self.mode)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def compute_output_spec(self, inputs: Any) -> Any:
        return keras.KerasTensor(inputs.shape, dtype="float32")

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


# --------------------------------------------------------------------------- building


def _snake(name: str) -> str:
    # Same rule as Keras' auto-naming (keras.src.utils.naming.to_snake_case).
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _stabilize_layer_names(model: keras.Model) -> None:
    """Renumber auto-named layers ("activation_451") in model order, as a fresh process would
    ("activation", "activation_1", ...), so layer names do not depend on what was built before."""
    counts: dict[str, int] = defaultdict(int)
    renamed: dict[int, str] = {}
    for i, layer in enumerate(model.layers):
        prefix = _snake(type(layer).__name__)
        if layer.name == prefix or re.fullmatch(re.escape(prefix) + r"_\d+", layer.name):
            k = counts[prefix]
            counts[prefix] += 1
            renamed[i] = prefix if k == 0 else f"{prefix}_{k}"
    if not renamed:
        return
    names = [renamed.get(i, layer.name) for i, layer in enumerate(model.layers)]
    if len(set(names)) != len(names):
        logger.debug("not renumbering layer names of %s: would collide", model.name)
        return
    for i, new in renamed.items():
        model.layers[i].name = new


def _check_choice(what: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"unknown {what} '{value}'; known: {', '.join(allowed)}")


class _DtypePolicy:
    """Context manager: global Keras dtype policy for ``precision``, restored afterwards."""

    def __init__(self, precision: str) -> None:
        self.policy = _MIXED_POLICY[precision]
        self.saved: Any = None

    def __enter__(self) -> None:
        if self.policy is not None:
            self.saved = keras.config.dtype_policy()
            keras.config.set_dtype_policy(self.policy)

    def __exit__(self, *exc: object) -> None:
        if self.policy is not None:
            keras.config.set_dtype_policy(self.saved)


def _efficientnet_stddev_fixup(base: keras.Model) -> None:
    # keras.applications.EfficientNet* built with weights="imagenet" insert an extra
    # Rescaling(1/sqrt(std)) after the Normalization layer (keras issue tensorflow#49930);
    # built with weights=None it is absent. Fold it into the loaded variance instead:
    # (x - m) / sqrt(v * std) == ((x - m) / sqrt(v)) / sqrt(std).
    norms = [lyr for lyr in base.layers if isinstance(lyr, keras.layers.Normalization)]
    if len(norms) != 1:
        raise ConfigError(f"{base.name}: expected one Normalization layer, found {len(norms)}")
    norm = norms[0]
    var = ops.convert_to_numpy(norm.adapt_variance)
    std = np.asarray(_TORCH_STD_RGB, dtype=var.dtype)
    norm.adapt_variance.assign(var * std)
    norm.finalize_state()


def build_base(
    spec: ModelSpec,
    *,
    input_hw: tuple[int, int],
    weights: WeightsInfo,
    precision: str = "float32",
    seed: int = 0,
) -> keras.Model:
    """The ``keras.applications`` base (``include_top=False``) with its weights loaded.

    Always built with ``weights=None`` (no download), then ``load_weights(path)``. Random
    weights are seeded with ``keras.utils.set_random_seed(seed)`` so a seed is reproducible.
    """
    _check_choice("precision", precision, PRECISIONS)
    _check_choice("weights source", weights.source, WEIGHT_SOURCES)
    if weights.source == "imagenet" and spec.imagenet_hw and tuple(input_hw) != spec.imagenet_hw:
        ih, iw = spec.imagenet_hw
        raise ConfigError(f"{spec.name} with imagenet weights needs input size {ih}x{iw}")
    h, w = input_hw
    if weights.source == "random":
        keras.utils.set_random_seed(int(seed))
    with _DtypePolicy(precision):
        base = spec.constructor(include_top=False, weights=None, input_shape=(h, w, 3))
    _stabilize_layer_names(base)
    if weights.source in ("imagenet", "file"):
        if weights.path is None:
            raise ConfigError(f"{weights.source} weights for {spec.name} need a path")
        try:
            base.load_weights(weights.path)
        except Exception as exc:  # Keras raises ValueError/KeyError/OSError variously
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ConfigError(
                f"cannot load weights {weights.path} into {spec.name} "
                f"({type(exc).__name__}: {first[:300]})"
            ) from exc
        if weights.source == "imagenet" and spec.imagenet_fixup == "efficientnet_stddev":
            _efficientnet_stddev_fixup(base)
    logger.info(
        "built %s base %dx%d, %s weights, %s, %d layers",
        spec.name,
        h,
        w,
        weights.source,
        precision,
        len(base.layers),
    )
    return base


def pooled_dim(shape: Sequence[int | None], pooling: str) -> int:
    """Embedding width of one feature map ``(None, h, w, c)`` after ``pooling``."""
    dims = [int(d) for d in shape[1:] if d is not None]
    if len(dims) != len(shape) - 1:
        raise ConfigError(f"feature map shape {tuple(shape)} is not fully known")
    if pooling == "flatten":
        return int(np.prod(dims))
    return dims[-1]


def list_layers(name: str, input_size: str = "default") -> list[str]:
    """All layer names of a base (random weights, nothing loaded), in model order."""
    spec = get_spec(name)
    hw = resolve_input_size(spec, input_size)
    base = build_base(spec, input_hw=hw, weights=WeightsInfo("random"))
    return [layer.name for layer in base.layers]


def _pool_layer(pooling: str, i: int) -> keras.layers.Layer:
    # Pool in float32 even under mixed precision: averaging thousands of positions in bf16
    # would lose digits. The float32 dtype makes the layer cast its input.
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(dtype="float32", name=f"avg_pool_{i}")
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(dtype="float32", name=f"max_pool_{i}")
    return keras.layers.Flatten(dtype="float32", name=f"flatten_{i}")


def build_extractor(
    spec: ModelSpec,
    *,
    input_hw: tuple[int, int],
    layers: Sequence[str] = (),
    pooling: str = "avg",
    weights: WeightsInfo,
    precision: str = "float32",
    seed: int = 0,
) -> keras.Model:
    """uint8 ``(N, h, w, 3)`` RGB -> float32 ``(N, dim)``, everything on the device.

    Several ``layers`` are computed in one pass; each is pooled and the results concatenated
    in the order given. Empty ``layers`` means ``spec.default_layer``.
    """
    _check_choice("pooling", pooling, POOLINGS)
    _check_choice("precision", precision, PRECISIONS)
    layers = tuple(layers) or (spec.default_layer,)
    base = build_base(spec, input_hw=input_hw, weights=weights, precision=precision, seed=seed)
    check_layers(spec, [lyr.name for lyr in base.layers], layers)
    h, w = input_hw
    image = keras.Input(shape=(h, w, 3), dtype="uint8", name="image")
    x = ImagePreprocess(spec.preprocessing, name="preprocess")(image)
    features = keras.Model(
        base.inputs, [base.get_layer(n).output for n in layers], name=f"{spec.name}_features"
    )
    maps = features(x)
    if not isinstance(maps, (list, tuple)):
        maps = [maps]
    pooled = [_pool_layer(pooling, i)(m) for i, m in enumerate(maps)]
    out = (
        pooled[0]
        if len(pooled) == 1
        else keras.layers.Concatenate(axis=-1, dtype="float32", name="concat")(pooled)
    )
    if out.dtype != "float32":
        out = ops.cast(out, "float32")
    model = keras.Model(image, out, name=f"featstore_{spec.name}")
    logger.info(
        "extractor %s layers=%s pooling=%s input=%dx%d precision=%s dim=%d",
        spec.name,
        ",".join(layers),
        pooling,
        h,
        w,
        precision,
        model.output.shape[-1],
    )
    return model


# --------------------------------------------------------------------------- size and cost


def _shape(t: Any) -> tuple[int, ...]:
    return tuple(int(d) if d is not None else 1 for d in t.shape)


def layer_macs(layer: keras.layers.Layer) -> int:
    """Multiply-accumulates of one call of ``layer`` on one image: convolutions (grouped,
    depthwise, separable) and dense layers (on any rank; ConvNeXt's pointwise layers are
    Dense on (h, w, c)). Other layers (normalisation, activations, pooling, additions) cost
    a few operations per element and are not counted."""
    if isinstance(layer, keras.Model):
        return sum(layer_macs(inner) for inner in layer.layers)
    cls = keras.layers
    try:
        inp, out = _shape(layer.input), _shape(layer.output)
    except (AttributeError, ValueError):  # an input layer, or a layer called several times
        return 0
    positions = int(np.prod(out[1:-1])) if len(out) > 2 else 1
    if isinstance(layer, cls.SeparableConv2D):
        kh, kw = layer.kernel_size
        mid = inp[-1] * layer.depth_multiplier
        return positions * (mid * kh * kw + mid * out[-1])
    if isinstance(layer, cls.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return positions * inp[-1] * layer.depth_multiplier * kh * kw
    if isinstance(layer, cls.Conv2D):
        kh, kw = layer.kernel_size
        return positions * out[-1] * kh * kw * inp[-1] // max(1, int(layer.groups))
    if isinstance(layer, cls.Dense):
        return positions * inp[-1] * out[-1]
    return 0


def count_flops(model: keras.Model) -> int:
    """FLOPs of one forward pass of one image: 2 x the multiply-accumulates of the model's
    convolution and dense layers (:func:`layer_macs`), the usual convention."""
    return 2 * sum(layer_macs(layer) for layer in model.layers)


def describe_base(
    name: str, input_size: str = "default", *, use_table: bool = True
) -> dict[str, Any]:
    """A registered base at ``input_size``: its default layer, input size, parameter count and
    FLOPs per image, measured on the Keras model. At the base's default input size the answer
    comes from the generated table (:func:`featstore.modelspecs.known_counts`, measured the same
    way by scripts/gen_model_layers.py) when it covers the installed Keras; otherwise (or with
    ``use_table=False``) the base is built here (random weights; seconds to a minute)."""
    spec = get_spec(name)
    hw = resolve_input_size(spec, input_size)
    if use_table and tuple(hw) == tuple(spec.default_hw):
        known = known_counts(spec.name)
        if known is not None:
            return known
    base = build_base(spec, input_hw=hw, weights=WeightsInfo("random"))
    try:
        return base_facts(spec, hw, base)
    finally:
        del base
        keras.backend.clear_session()


def base_facts(spec: ModelSpec, hw: Sequence[int], base: keras.Model) -> dict[str, Any]:
    """What :func:`describe_base` reports of a built base."""
    return {
        "model": spec.name,
        "default_layer": spec.default_layer,
        "input_hw": list(hw),
        "params": int(base.count_params()),
        "flops": int(count_flops(base)),
        "layers": len(base.layers),
        "preprocessing": spec.preprocessing,
    }

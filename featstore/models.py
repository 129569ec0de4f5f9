"""Conv-base registry: name -> Keras constructor, input size, preprocessing, layers, weights.

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

import hashlib
import logging
import os
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np
from keras import ops

from featstore.errors import ConfigError

logger = logging.getLogger(__name__)

#: CelebA aligned images are 178 wide, 218 high; ``(h, w)`` like every size here.
CELEBA_HW: tuple[int, int] = (218, 178)
PREPROCESSING_MODES = ("caffe", "tf", "torch", "none")
POOLINGS = ("avg", "max", "flatten")
PRECISIONS = ("float32", "bfloat16", "float16")
WEIGHT_SOURCES = ("imagenet", "random", "file")
#: Largest input side accepted; larger inputs are almost certainly a typo.
MAX_INPUT_SIDE = 2048

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
_TORCH_STD_RGB = (0.229, 0.224, 0.225)
_MIXED_POLICY = {"float32": None, "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
_HASH_CHUNK = 1 << 20

PoolingName = Literal["avg", "max", "flatten"]
PrecisionName = Literal["float32", "bfloat16", "float16"]


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ModelSpec:
    """What featstore needs to know about one ``keras.applications`` conv base."""

    name: str
    #: ``keras.applications`` constructor, called with ``include_top=False, weights=None``.
    constructor: Callable[..., Any]
    #: ``keras.applications`` submodule whose ``preprocess_input`` this model expects.
    family: str
    #: Default input ``(h, w)``.
    default_hw: tuple[int, int]
    #: "caffe" (RGB->BGR, minus ImageNet means), "tf" (x/127.5 - 1), "torch" (x/255, mean/std)
    #: or "none" (the base rescales its input itself).
    preprocessing: str
    #: Layer used when none is asked for: the output of the last conv block.
    default_layer: str
    #: File name of the ImageNet no-top weights in the Keras cache (at the default size).
    weights_file: str
    #: Smallest input ``(h, w)`` the architecture accepts.
    min_hw: tuple[int, int] = (32, 32)
    #: With ImageNet weights the input must be exactly this ``(h, w)``.
    imagenet_hw: tuple[int, int] | None = None
    #: ``((side, file name), ...)``: square sizes with their own ImageNet weights file.
    weights_files_by_side: tuple[tuple[int, str], ...] = ()
    #: Graph difference between Keras' ``weights="imagenet"`` build and ``weights=None``.
    imagenet_fixup: str | None = None

    def imagenet_weights_file(self, input_hw: tuple[int, int] | None = None) -> str:
        """The cache file name Keras uses for this base's no-top ImageNet weights."""
        if input_hw is not None and input_hw[0] == input_hw[1]:
            for side, fname in self.weights_files_by_side:
                if side == input_hw[0]:
                    return fname
        return self.weights_file

    def imagenet_weights_files(self) -> tuple[str, ...]:
        return (self.weights_file, *(f for _, f in self.weights_files_by_side))

    def preprocess_input(self) -> Callable[..., Any]:
        """The host-side ``keras.applications.<family>.preprocess_input`` (for tests/reference)."""
        return getattr(keras.applications, self.family).preprocess_input


def _registry() -> dict[str, ModelSpec]:
    apps = keras.applications
    specs: list[ModelSpec] = []
    tf_notop = "_weights_tf_dim_ordering_tf_kernels_notop.h5"
    for name, ctor in (("vgg16", apps.VGG16), ("vgg19", apps.VGG19)):
        specs.append(
            ModelSpec(name, ctor, name, (224, 224), "caffe", "block5_pool", name + tf_notop)
        )
    for name, ctor in (
        ("resnet50", apps.ResNet50),
        ("resnet101", apps.ResNet101),
        ("resnet152", apps.ResNet152),
    ):
        specs.append(
            ModelSpec(
                name, ctor, "resnet", (224, 224), "caffe", "conv5_block3_out", name + tf_notop
            )
        )
    for name, ctor in (
        ("resnet50v2", apps.ResNet50V2),
        ("resnet101v2", apps.ResNet101V2),
        ("resnet152v2", apps.ResNet152V2),
    ):
        specs.append(
            ModelSpec(name, ctor, "resnet_v2", (224, 224), "tf", "post_relu", name + tf_notop)
        )
    specs.append(
        ModelSpec(
            "inceptionv3",
            apps.InceptionV3,
            "inception_v3",
            (299, 299),
            "tf",
            "mixed10",
            "inception_v3" + tf_notop,
            min_hw=(75, 75),
        )
    )
    specs.append(
        ModelSpec(
            "xception",
            apps.Xception,
            "xception",
            (299, 299),
            "tf",
            "block14_sepconv2_act",
            "xception" + tf_notop,
            min_hw=(71, 71),
        )
    )
    mnv2 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{}_no_top.h5"
    specs.append(
        ModelSpec(
            "mobilenetv2",
            apps.MobileNetV2,
            "mobilenet_v2",
            (224, 224),
            "tf",
            "out_relu",
            mnv2.format(224),
            # Keras picks weights trained at the input side when square and one of these.
            weights_files_by_side=tuple((s, mnv2.format(s)) for s in (96, 128, 160, 192, 224)),
        )
    )
    # MobileNetV3 and ConvNeXt end in an unnamed layer; names are renumbered per model
    # (see _stabilize_layer_names) so these are the same in every process.
    specs.append(
        ModelSpec(
            "mobilenetv3small",
            apps.MobileNetV3Small,
            "mobilenet_v3",
            (224, 224),
            "none",
            "activation_17",
            "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
        )
    )
    specs.append(
        ModelSpec(
            "mobilenetv3large",
            apps.MobileNetV3Large,
            "mobilenet_v3",
            (224, 224),
            "none",
            "activation_19",
            "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
        )
    )
    for name, ctor in (
        ("densenet121", apps.DenseNet121),
        ("densenet169", apps.DenseNet169),
        ("densenet201", apps.DenseNet201),
    ):
        specs.append(
            ModelSpec(name, ctor, "densenet", (224, 224), "torch", "relu", name + tf_notop)
        )
    effnet_sides = (224, 240, 260, 300, 380, 456, 528, 600)
    for i, side in enumerate(effnet_sides):
        name = f"efficientnetb{i}"
        specs.append(
            ModelSpec(
                name,
                getattr(apps, f"EfficientNetB{i}"),
                "efficientnet",
                (side, side),
                "none",
                "top_activation",
                f"{name}_notop.h5",
                imagenet_fixup="efficientnet_stddev",
            )
        )
    specs.append(
        ModelSpec(
            "nasnetmobile",
            apps.NASNetMobile,
            "nasnet",
            (224, 224),
            "tf",
            "activation_187",
            "nasnet_mobile_no_top.h5",
            imagenet_hw=(224, 224),
        )
    )
    for size in ("tiny", "small", "base"):
        specs.append(
            ModelSpec(
                f"convnext{size}",
                getattr(apps, f"ConvNeXt{size.capitalize()}"),
                "convnext",
                (224, 224),
                "none",
                "layer_normalization",
                f"convnext_{size}_notop.h5",
            )
        )
    return {s.name: s for s in specs}


MODELS: dict[str, ModelSpec] = _registry()


def known_models() -> list[str]:
    return sorted(MODELS)


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` registered under ``name`` (case-insensitive)."""
    key = str(name).strip().lower()
    try:
        return MODELS[key]
    except KeyError:
        raise ConfigError(f"unknown model '{name}'; known: {', '.join(known_models())}") from None


# --------------------------------------------------------------------------- input size

_HW_RE = re.compile(r"^\s*(\d+)\s*[xX\u00d7]\s*(\d+)\s*$")


def resolve_input_size(
    spec: ModelSpec, input_size: str, *, weights: str | None = None
) -> tuple[int, int]:
    """``"default"`` (the model's), ``"native"`` (CelebA 218x178) or ``"HxW"`` -> ``(h, w)``.

    ``weights`` (the weights setting, e.g. ``"imagenet"``) lets models whose ImageNet weights
    need a fixed size refuse other sizes.
    """
    text = str(input_size).strip().lower()
    if text == "default":
        hw = spec.default_hw
    elif text == "native":
        hw = CELEBA_HW
    else:
        m = _HW_RE.match(text)
        if m is None and text.isdigit():
            hw = (int(text), int(text))
        elif m is None:
            raise ConfigError(
                f"bad input size '{input_size}': expected default, native or HxW (e.g. 224x224)"
            )
        else:
            hw = (int(m.group(1)), int(m.group(2)))
    h, w = hw
    if h < spec.min_hw[0] or w < spec.min_hw[1]:
        raise ConfigError(
            f"input size {h}x{w} too small for {spec.name}: "
            f"at least {spec.min_hw[0]}x{spec.min_hw[1]}"
        )
    if h > MAX_INPUT_SIDE or w > MAX_INPUT_SIDE:
        raise ConfigError(f"input size {h}x{w} too large: at most {MAX_INPUT_SIDE} per side")
    if weights == "imagenet" and spec.imagenet_hw is not None and hw != spec.imagenet_hw:
        ih, iw = spec.imagenet_hw
        raise ConfigError(
            f"{spec.name} with imagenet weights needs input size {ih}x{iw}, got {h}x{w}; "
            f"use --input-size default, or random/file weights"
        )
    return hw


# --------------------------------------------------------------------------- weights


@dataclass(frozen=True)
class WeightsInfo:
    """Where the base's weights come from; recorded in the feature-set manifest."""

    source: str  # "imagenet" | "random" | "file"
    path: str | None = None
    sha256: str | None = None


def keras_models_dir() -> Path:
    """The folder Keras caches application weights in: ``$KERAS_HOME/models`` or
    ``~/.keras/models``."""
    home = os.environ.get("KERAS_HOME")
    root = Path(home).expanduser() if home else Path.home() / ".keras"
    return root / "models"


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, read in 1 MiB chunks; cached per (path, size, mtime)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    cached = _SHA_CACHE.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
            h.update(chunk)
    digest = h.hexdigest()
    _SHA_CACHE[key] = digest
    return digest


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def resolve_weights(
    spec: ModelSpec, weights: str, *, input_hw: tuple[int, int] | None = None
) -> WeightsInfo:
    """``"imagenet"``, ``"random"`` or a path (``.weights.h5`` from ``save_weights`` of the
    same base, or the Keras ImageNet ``.h5`` file itself) -> :class:`WeightsInfo`.

    Never downloads. ``input_hw`` matters only for bases with per-size ImageNet files
    (MobileNetV2).
    """
    text = str(weights).strip()
    if text.lower() == "random":
        return WeightsInfo("random")
    if text.lower() == "imagenet":
        fname = spec.imagenet_weights_file(input_hw)
        folder = keras_models_dir()
        path = folder / fname
        if not path.is_file():
            raise ConfigError(
                f"ImageNet weights for {spec.name} not found: put {fname} in {folder} "
                f"(the Keras cache; KERAS_HOME moves it) or pass --weights /path/to/{fname}; "
                f"featstore never downloads"
            )
        return WeightsInfo("imagenet", str(path), file_sha256(path))
    path = Path(text).expanduser()
    if not (path.name.endswith(".h5") or path.name.endswith(".hdf5")):
        raise ConfigError(
            f"bad weights '{weights}': expected imagenet, random, or a path to a "
            f".weights.h5 (model.save_weights of the {spec.name} base) or the Keras ImageNet .h5"
        )
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path}")
    with open(path, "rb") as fh:
        signature = fh.read(8)
    if signature != HDF5_SIGNATURE:
        raise ConfigError(f"weights file {path} is not an HDF5 file (it does not start with the "
                          "HDF5 signature); pass a .weights.h5 saved by model.save_weights")
    source = "imagenet" if path.name in spec.imagenet_weights_files() else "file"
    return WeightsInfo(source, str(path.resolve()), file_sha256(path))


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


def _suggest_layers(names: Sequence[str], default: str, k: int = 10) -> list[str]:
    pat = re.compile(r"pool|out|relu|act|mixed|concat")
    picked = [n for n in names if pat.search(n)][-k:] or list(names[-k:])
    if default in names and default not in picked:
        picked.append(default)
    return picked


def check_layers(spec: ModelSpec, base_layer_names: Sequence[str], layers: Sequence[str]) -> None:
    """ConfigError for an unknown or repeated layer name."""
    seen: set[str] = set()
    known = set(base_layer_names)
    for name in layers:
        if name in seen:
            raise ConfigError(f"layer '{name}' asked for twice")
        seen.add(name)
        if name not in known:
            hint = ", ".join(_suggest_layers(base_layer_names, spec.default_layer))
            raise ConfigError(
                f"unknown layer '{name}' for {spec.name}; e.g. {hint} "
                f"(list_layers('{spec.name}') shows all {len(base_layer_names)})"
            )


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

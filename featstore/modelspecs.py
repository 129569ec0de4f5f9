"""The conv-base registry without Keras: names, input sizes, preprocessing, default layers,
weights files, and the layer names of every registered base (a table generated from Keras).

Everything here is plain Python (no Keras, TensorFlow, JAX or Spark import), so the command line
checks a model name, an input size, a weights file or a layer name in well under a second, before
anything heavy starts. :mod:`featstore.models` builds the Keras models and re-exports all of this.

The layer-name table (``featstore/model_layers.json``) is written by
``scripts/gen_model_layers.py`` from the Keras version in the lock; it records that version, and
when the installed Keras differs (or a model is missing from it) layers are checked by building
the base instead (after the fast checks; see :func:`featstore.embed.validate_config`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, TypedDict

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

_HASH_CHUNK = 1 << 20

PoolingName = Literal["avg", "max", "flatten"]
PrecisionName = Literal["float32", "bfloat16", "float16"]


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ModelSpec:
    """What featstore needs to know about one ``keras.applications`` conv base."""

    name: str
    #: Name of the ``keras.applications`` constructor (called with ``include_top=False,
    #: weights=None``); :attr:`constructor` looks it up, importing Keras.
    keras_name: str
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

    @property
    def constructor(self) -> Callable[..., Any]:
        """The ``keras.applications`` constructor (imports Keras)."""
        import keras

        return getattr(keras.applications, self.keras_name)

    def preprocess_input(self) -> Callable[..., Any]:
        """The host-side ``keras.applications.<family>.preprocess_input`` (for tests/reference)."""
        import keras

        return getattr(keras.applications, self.family).preprocess_input


class _SpecOptions(TypedDict, total=False):
    """The :class:`ModelSpec` fields with a default, for the bases that need another value."""

    min_hw: tuple[int, int]
    imagenet_hw: tuple[int, int]
    weights_files_by_side: tuple[tuple[int, str], ...]
    imagenet_fixup: str


_TF_NOTOP = "{name}_weights_tf_dim_ordering_tf_kernels_notop.h5"
_NOTOP = "{name}_notop.h5"
_MOBILENETV2 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{}_no_top.h5"

#: The registered bases, one row each: name, ``keras.applications`` constructor, family (whose
#: ``preprocess_input``), default input side (square), preprocessing, default layer, and the
#: ImageNet no-top weights file in the Keras cache (``{name}``: the base's name). Other fields:
#: :data:`_MODEL_OPTIONS`.
_MODEL_ROWS: tuple[tuple[str, str, str, int, str, str, str], ...] = (
    ("vgg16", "VGG16", "vgg16", 224, "caffe", "block5_pool", _TF_NOTOP),
    ("vgg19", "VGG19", "vgg19", 224, "caffe", "block5_pool", _TF_NOTOP),
    ("resnet50", "ResNet50", "resnet", 224, "caffe", "conv5_block3_out", _TF_NOTOP),
    ("resnet101", "ResNet101", "resnet", 224, "caffe", "conv5_block3_out", _TF_NOTOP),
    ("resnet152", "ResNet152", "resnet", 224, "caffe", "conv5_block3_out", _TF_NOTOP),
    ("resnet50v2", "ResNet50V2", "resnet_v2", 224, "tf", "post_relu", _TF_NOTOP),
    ("resnet101v2", "ResNet101V2", "resnet_v2", 224, "tf", "post_relu", _TF_NOTOP),
    ("resnet152v2", "ResNet152V2", "resnet_v2", 224, "tf", "post_relu", _TF_NOTOP),
    ("inceptionv3", "InceptionV3", "inception_v3", 299, "tf", "mixed10",
     "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ("xception", "Xception", "xception", 299, "tf", "block14_sepconv2_act", _TF_NOTOP),
    ("mobilenetv2", "MobileNetV2", "mobilenet_v2", 224, "tf", "out_relu", _MOBILENETV2.format(224)),
    # MobileNetV3 and ConvNeXt end in an unnamed layer; names are renumbered per model
    # (see _stabilize_layer_names) so these are the same in every process.
    ("mobilenetv3small", "MobileNetV3Small", "mobilenet_v3", 224, "none", "activation_17",
     "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
    ("mobilenetv3large", "MobileNetV3Large", "mobilenet_v3", 224, "none", "activation_19",
     "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5"),
    ("densenet121", "DenseNet121", "densenet", 224, "torch", "relu", _TF_NOTOP),
    ("densenet169", "DenseNet169", "densenet", 224, "torch", "relu", _TF_NOTOP),
    ("densenet201", "DenseNet201", "densenet", 224, "torch", "relu", _TF_NOTOP),
    ("efficientnetb0", "EfficientNetB0", "efficientnet", 224, "none", "top_activation", _NOTOP),
    ("efficientnetb1", "EfficientNetB1", "efficientnet", 240, "none", "top_activation", _NOTOP),
    ("efficientnetb2", "EfficientNetB2", "efficientnet", 260, "none", "top_activation", _NOTOP),
    ("efficientnetb3", "EfficientNetB3", "efficientnet", 300, "none", "top_activation", _NOTOP),
    ("efficientnetb4", "EfficientNetB4", "efficientnet", 380, "none", "top_activation", _NOTOP),
    ("efficientnetb5", "EfficientNetB5", "efficientnet", 456, "none", "top_activation", _NOTOP),
    ("efficientnetb6", "EfficientNetB6", "efficientnet", 528, "none", "top_activation", _NOTOP),
    ("efficientnetb7", "EfficientNetB7", "efficientnet", 600, "none", "top_activation", _NOTOP),
    ("nasnetmobile", "NASNetMobile", "nasnet", 224, "tf", "activation_187",
     "nasnet_mobile_no_top.h5"),
    ("convnexttiny", "ConvNeXtTiny", "convnext", 224, "none", "layer_normalization",
     "convnext_tiny_notop.h5"),
    ("convnextsmall", "ConvNeXtSmall", "convnext", 224, "none", "layer_normalization",
     "convnext_small_notop.h5"),
    ("convnextbase", "ConvNeXtBase", "convnext", 224, "none", "layer_normalization",
     "convnext_base_notop.h5"),
)  # fmt: skip

_EFFICIENTNET: _SpecOptions = {"imagenet_fixup": "efficientnet_stddev"}

#: The bases whose other fields differ from :class:`ModelSpec`'s defaults.
_MODEL_OPTIONS: dict[str, _SpecOptions] = {
    "inceptionv3": {"min_hw": (75, 75)},
    "xception": {"min_hw": (71, 71)},
    # Keras picks weights trained at the input side when square and one of these.
    "mobilenetv2": {
        "weights_files_by_side": tuple(
            (s, _MOBILENETV2.format(s)) for s in (96, 128, 160, 192, 224)
        )
    },
    **{f"efficientnetb{i}": _EFFICIENTNET for i in range(8)},
    "nasnetmobile": {"imagenet_hw": (224, 224)},
}


def _registry() -> dict[str, ModelSpec]:
    """:data:`_MODEL_ROWS` and :data:`_MODEL_OPTIONS` as specs by name, in the rows' order."""
    specs = [
        ModelSpec(
            name,
            ctor,
            family,
            (side, side),
            preprocessing,
            layer,
            weights.format(name=name),
            **_MODEL_OPTIONS.get(name, {}),
        )
        for name, ctor, family, side, preprocessing, layer, weights in _MODEL_ROWS
    ]
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
        raise ConfigError(
            f"weights file {path} is not an HDF5 file (it does not start with the "
            "HDF5 signature); pass a .weights.h5 saved by model.save_weights"
        )
    source = "imagenet" if path.name in spec.imagenet_weights_files() else "file"
    return WeightsInfo(source, str(path.resolve()), file_sha256(path))


# --------------------------------------------------------------------------- layers


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


# --------------------------------------------------------------------------- layer-name table

LAYER_TABLE = Path(__file__).resolve().parent / "model_layers.json"


def installed_keras_version() -> str | None:
    """The installed Keras distribution's version, read from its metadata (Keras not imported)."""
    try:
        return metadata.version("keras")
    except metadata.PackageNotFoundError:
        return None


def keras_backend() -> str:
    """The backend Keras runs (or will run) on in this process, without importing Keras: the
    running one when Keras is imported; else ``KERAS_BACKEND``, else ``keras.json``'s
    ``backend`` in ``KERAS_HOME`` (default ``~/.keras``), else ``tensorflow`` — the order Keras
    itself reads them in (keras/src/backend/config.py)."""
    import os
    import sys

    if "keras" in sys.modules:
        import keras

        return str(keras.backend.backend())
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as fh:
            return str(json.load(fh).get("backend") or "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


@functools.lru_cache(maxsize=1)
def _layer_table() -> dict[str, Any]:
    try:
        return json.loads(LAYER_TABLE.read_text())
    except (OSError, ValueError):
        logger.debug("no layer-name table at %s", LAYER_TABLE)
        return {}


def known_layers(name: str) -> list[str] | None:
    """The layer names of base ``name`` in model order, from the generated table, or ``None``
    when the table does not cover it for the installed Keras version (then only building the
    base can tell)."""
    table = _layer_table()
    if not table or table.get("keras_version") != installed_keras_version():
        return None
    names = table.get("models", {}).get(get_spec(name).name)
    return list(names) if names is not None else None


def known_counts(name: str) -> dict[str, Any] | None:
    """What :func:`featstore.models.describe_base` measures of base ``name`` at its default
    input size (parameters, FLOPs per image, layers), from the generated table's ``counts``;
    ``None`` when the table does not cover it for the installed Keras version."""
    table = _layer_table()
    if not table or table.get("keras_version") != installed_keras_version():
        return None
    counts = table.get("counts", {}).get(get_spec(name).name)
    return dict(counts) if counts is not None else None


def check_layers_static(spec: ModelSpec, layers: Sequence[str]) -> bool:
    """:func:`check_layers` against the generated table; False when the table cannot say (the
    caller then checks by building the base)."""
    names = known_layers(spec.name)
    if names is None:
        return False
    check_layers(spec, names, layers)
    return True

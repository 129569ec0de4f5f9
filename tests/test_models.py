"""featstore.models: registry, input sizes, weights resolution, on-device preprocessing, extractor.

Small bases and inputs only (vgg16 at 32x32, efficientnetb0 / mobilenetv3small at 32x32), random
weights, so the module runs in seconds on a 2-core CPU.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from featstore import models
from featstore.errors import ConfigError

REQUIRED = (
    "vgg16 vgg19 resnet50 resnet101 resnet152 inceptionv3 xception mobilenetv2 densenet121 "
    "nasnetmobile " + " ".join(f"efficientnetb{i}" for i in range(8))
).split()


def _rand_images(n: int, hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *hw, 3), dtype=np.uint8)


def _save_legacy_h5(model: keras.Model, path: Path) -> None:
    """Weights in the legacy .h5 layout of the files keras.applications downloads."""
    from keras.src.legacy.saving import legacy_h5_format

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


# --------------------------------------------------------------------------- registry


def test_registry_has_required_models():
    assert set(REQUIRED) <= set(models.known_models())


def test_unknown_model_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown model 'vgg17'; known: .*vgg16"):
        models.get_spec("vgg17")


def test_get_spec_is_case_insensitive():
    assert models.get_spec("VGG16").name == "vgg16"


@pytest.mark.parametrize(
    ("name", "hw", "expected"),
    [
        ("vgg16", None, "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        ("vgg19", None, "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        ("resnet50", None, "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        ("resnet152", None, "resnet152_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        ("resnet50v2", None, "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        ("inceptionv3", None, "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        ("xception", None, "xception_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        ("densenet121", None, "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        ("efficientnetb3", None, "efficientnetb3_notop.h5"),
        ("nasnetmobile", None, "nasnet_mobile_no_top.h5"),
        ("mobilenetv3small", None, "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
        ("convnexttiny", None, "convnext_tiny_notop.h5"),
        ("mobilenetv2", None, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"),
        (
            "mobilenetv2",
            (128, 128),
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_128_no_top.h5",
        ),
        (
            "mobilenetv2",
            (218, 178),
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        ),
    ],
)
def test_imagenet_weights_file_names(name, hw, expected):
    assert models.get_spec(name).imagenet_weights_file(hw) == expected


# --------------------------------------------------------------------------- input size


@pytest.mark.parametrize(
    ("name", "text", "hw"),
    [
        ("vgg16", "default", (224, 224)),
        ("inceptionv3", "default", (299, 299)),
        ("efficientnetb4", "default", (380, 380)),
        ("vgg16", "native", (218, 178)),
        ("vgg16", "160x128", (160, 128)),
        ("vgg16", " 64X64 ", (64, 64)),
        ("vgg16", "96", (96, 96)),
        ("xception", "71x71", (71, 71)),
    ],
)
def test_resolve_input_size(name, text, hw):
    assert models.resolve_input_size(models.get_spec(name), text) == hw


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("inceptionv3", "64x64", "too small for inceptionv3: at least 75x75"),
        ("vgg16", "16x300", "too small"),
        ("vgg16", "4096x4096", "too large"),
        ("vgg16", "big", "bad input size 'big'"),
        ("vgg16", "224x", "bad input size"),
    ],
)
def test_resolve_input_size_errors(name, text, message):
    with pytest.raises(ConfigError, match=message):
        models.resolve_input_size(models.get_spec(name), text)


def test_nasnet_imagenet_needs_224():
    spec = models.get_spec("nasnetmobile")
    with pytest.raises(
        ConfigError, match="nasnetmobile with imagenet weights needs input size 224x224"
    ):
        models.resolve_input_size(spec, "native", weights="imagenet")
    assert models.resolve_input_size(spec, "default", weights="imagenet") == (224, 224)
    assert models.resolve_input_size(spec, "native", weights="random") == (218, 178)


# --------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_on_device_preprocessing_matches_keras_preprocess_input(name):
    """The ops inside the model equal keras.applications.<family>.preprocess_input."""
    spec = models.get_spec(name)
    x = np.random.default_rng(1).uniform(0, 255, (2, 5, 7, 3)).astype("float32")
    expected = np.asarray(spec.preprocess_input()(x.copy()))
    got = keras.ops.convert_to_numpy(models.ImagePreprocess(spec.preprocessing)(x))
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("family", "mode"),
    [("vgg16", "caffe"), ("mobilenet_v2", "tf"), ("densenet", "torch"), ("efficientnet", "none")],
)
def test_preprocess_takes_uint8(family, mode):
    u8 = _rand_images(2, (4, 6))
    expected = getattr(keras.applications, family).preprocess_input(u8.astype("float32"))
    got = keras.ops.convert_to_numpy(models.ImagePreprocess(mode)(u8))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, np.asarray(expected), atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- weights


def test_resolve_weights_random():
    assert models.resolve_weights(models.get_spec("vgg16"), "random") == models.WeightsInfo(
        "random"
    )


def test_imagenet_missing_names_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(ConfigError) as err:
        models.resolve_weights(models.get_spec("vgg16"), "imagenet")
    msg = str(err.value)
    assert "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in msg
    assert str(tmp_path / "models") in msg
    assert "\n" not in msg


def test_mobilenetv2_imagenet_file_depends_on_input_side(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match=re.escape("kernels_1.0_128_no_top.h5")):
        models.resolve_weights(models.get_spec("mobilenetv2"), "imagenet", input_hw=(128, 128))


@pytest.fixture(scope="module")
def vgg_base_h5(tmp_path_factory):
    """A random vgg16 32x32 base, saved like Keras' ImageNet file in a fake KERAS_HOME."""
    home = tmp_path_factory.mktemp("keras_home")
    spec = models.get_spec("vgg16")
    base = models.build_base(spec, input_hw=(32, 32), weights=models.WeightsInfo("random"), seed=7)
    path = home / "models" / spec.weights_file
    _save_legacy_h5(base, path)
    return base, home, path


def test_imagenet_found_in_keras_home_and_hashed(vgg_base_h5, monkeypatch):
    base, home, path = vgg_base_h5
    monkeypatch.setenv("KERAS_HOME", str(home))
    info = models.resolve_weights(models.get_spec("vgg16"), "imagenet")
    assert info.source == "imagenet"
    assert info.path == str(path)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()

    extractor = models.build_extractor(
        models.get_spec("vgg16"), input_hw=(32, 32), pooling="max", weights=info
    )
    x = _rand_images(3, (32, 32))
    ref = base.predict_on_batch(keras.applications.vgg16.preprocess_input(x.astype("float32")))
    got = extractor.predict_on_batch(x)
    np.testing.assert_allclose(got, np.asarray(ref).max(axis=(1, 2)), rtol=1e-4, atol=1e-5)


def test_explicit_weights_paths(vgg_base_h5, tmp_path):
    _, _, imagenet_path = vgg_base_h5
    spec = models.get_spec("vgg16")
    assert models.resolve_weights(spec, str(imagenet_path)).source == "imagenet"
    own = tmp_path / "tuned.weights.h5"
    fake = models.HDF5_SIGNATURE + b"not really weights"  # HDF5 by its signature only
    own.write_bytes(fake)
    info = models.resolve_weights(spec, str(own))
    assert (info.source, info.path) == ("file", str(own.resolve()))
    assert info.sha256 == hashlib.sha256(fake).hexdigest()
    with pytest.raises(ConfigError, match="weights file not found"):
        models.resolve_weights(spec, str(tmp_path / "absent.weights.h5"))
    with pytest.raises(ConfigError, match="bad weights"):
        models.resolve_weights(spec, "weights.pt")
    with pytest.raises(ConfigError, match="cannot load weights"):
        models.build_base(spec, input_hw=(32, 32), weights=info)


def test_efficientnet_imagenet_matches_keras_own_imagenet_graph(tmp_path, monkeypatch):
    """Keras inserts an extra Rescaling for weights='imagenet' in EfficientNet; we fold it."""
    spec = models.get_spec("efficientnetb0")
    donor = models.build_base(spec, input_hw=(32, 32), weights=models.WeightsInfo("random"))
    norm = next(lyr for lyr in donor.layers if isinstance(lyr, keras.layers.Normalization))
    norm.adapt_mean.assign(np.array([0.485, 0.456, 0.406], "float32"))
    norm.adapt_variance.assign(np.array([0.229, 0.224, 0.225], "float32") ** 2)
    norm.finalize_state()
    path = tmp_path / "models" / spec.weights_file
    _save_legacy_h5(donor, path)

    monkeypatch.setattr("keras.src.utils.file_utils.get_file", lambda *a, **k: str(path))
    reference = keras.applications.EfficientNetB0(
        include_top=False, weights="imagenet", input_shape=(32, 32, 3)
    )
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    info = models.resolve_weights(spec, "imagenet")
    ours = models.build_extractor(spec, input_hw=(32, 32), weights=info)

    x = _rand_images(2, (32, 32), seed=3)
    # eager calls: tracing three 240-layer graphs for predict_on_batch costs seconds each
    ref = keras.ops.convert_to_numpy(reference(x.astype("float32"))).mean(axis=(1, 2))
    got = keras.ops.convert_to_numpy(ours(x))
    scale = np.abs(ref).max()
    assert np.abs(got - ref).max() <= 1e-4 * scale
    # and the fold matters: the same weights in the weights=None graph give other outputs
    plain = keras.ops.convert_to_numpy(donor(x.astype("float32"))).mean(axis=(1, 2))
    assert np.abs(plain - ref).max() > 1e-2 * scale


# --------------------------------------------------------------------------- extractor


@pytest.fixture(scope="module")
def vgg_pooled():
    spec = models.get_spec("vgg16")
    out = {}
    for pooling in models.POOLINGS:
        m = models.build_extractor(
            spec,
            input_hw=(32, 32),
            layers=("block4_pool",),
            pooling=pooling,
            weights=models.WeightsInfo("random"),
            seed=3,
        )
        out[pooling] = m
    return out


def test_pooling_dims_and_values(vgg_pooled):
    x = _rand_images(3, (32, 32))
    y = {k: m.predict_on_batch(x) for k, m in vgg_pooled.items()}
    assert {k: v.shape for k, v in y.items()} == {
        "avg": (3, 512),
        "max": (3, 512),
        "flatten": (3, 2 * 2 * 512),
    }
    assert all(v.dtype == np.float32 for v in y.values())
    fmap = y["flatten"].reshape(3, 2, 2, 512)
    np.testing.assert_allclose(y["avg"], fmap.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y["max"], fmap.max(axis=(1, 2)), rtol=1e-6, atol=0)


def test_extractor_takes_uint8(vgg_pooled):
    model = vgg_pooled["avg"]
    assert model.inputs[0].dtype == "uint8"
    assert tuple(model.inputs[0].shape) == (None, 32, 32, 3)


def test_unknown_layer_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        models.build_extractor(
            models.get_spec("vgg16"),
            input_hw=(32, 32),
            layers=("block9_pool",),
            weights=models.WeightsInfo("random"),
        )
    msg = str(err.value)
    assert msg.startswith("unknown layer 'block9_pool' for vgg16; e.g. ")
    assert "block5_pool" in msg and "block4_pool" in msg


def test_repeated_layer_is_an_error():
    with pytest.raises(ConfigError, match="asked for twice"):
        models.build_extractor(
            models.get_spec("vgg16"),
            input_hw=(32, 32),
            layers=("block5_pool", "block5_pool"),
            weights=models.WeightsInfo("random"),
        )


def test_bad_pooling_and_precision():
    spec = models.get_spec("vgg16")
    rnd = models.WeightsInfo("random")
    with pytest.raises(ConfigError, match="unknown pooling 'sum'"):
        models.build_extractor(spec, input_hw=(32, 32), pooling="sum", weights=rnd)
    with pytest.raises(ConfigError, match="unknown precision 'int8'"):
        models.build_extractor(spec, input_hw=(32, 32), precision="int8", weights=rnd)


def test_list_layers():
    names = models.list_layers("vgg16", "32x32")
    assert names[-1] == "block5_pool"
    assert "block3_conv2" in names


def test_layer_names_do_not_depend_on_build_history():
    """MobileNetV3's last layer is auto-named; names are renumbered per model."""
    spec = models.get_spec("mobilenetv3small")
    rnd = models.WeightsInfo("random")
    first = [lyr.name for lyr in models.build_base(spec, input_hw=(32, 32), weights=rnd).layers]
    keras.layers.Activation("relu")  # bumps Keras' global "activation" counter
    second = [lyr.name for lyr in models.build_base(spec, input_hw=(32, 32), weights=rnd).layers]
    assert first == second
    assert first[-1] == spec.default_layer


def test_mixed_precision_restores_global_policy():
    before = keras.config.dtype_policy().name
    m = models.build_extractor(
        models.get_spec("vgg16"),
        input_hw=(32, 32),
        weights=models.WeightsInfo("random"),
        precision="bfloat16",
    )
    assert keras.config.dtype_policy().name == before
    assert m.output.dtype == "float32"
    conv = m.get_layer("vgg16_features").get_layer("block1_conv1")
    assert conv.compute_dtype == "bfloat16"

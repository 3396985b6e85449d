"""Tests of the Keras EfficientNet-Lite0 builders (no torch needed)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer.models import efficientnet_lite

LITE0_PARAMETERS = 4_694_024  # tensors of the PyTorch state dict, num_batches_tracked excluded


def random_images(batch, height, width=None, seed=0):
    shape = (batch, height, width or height, 3)
    return np.random.default_rng(seed).uniform(0.0, 1.0, shape).astype(np.float32)


def test_classifier_has_lite0_parameter_count():
    classifier = efficientnet_lite.build_imagenet_classifier(224)

    assert classifier.count_params() == LITE0_PARAMETERS


def test_backbone_feature_map_shape():
    backbone = efficientnet_lite.build_backbone(64)

    features = backbone(random_images(2, 64), training=False)

    assert tuple(features.shape) == (2, 2, 2, 1280)


def test_backbone_pooled_features_in_relu6_range():
    backbone = efficientnet_lite.build_backbone((64, 96), pooling="avg")

    features = np.asarray(backbone(random_images(2, 64, 96)))

    assert features.shape == (2, 1280)
    assert features.min() >= 0.0
    assert features.max() <= 6.0


def test_default_normalization_output_range():
    backbone = efficientnet_lite.build_backbone(32)
    layer = backbone.get_layer("input_normalization")

    pixels = np.array([[[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]]], np.float32)  # [1, 1, 2, 3]
    extremes = np.asarray(layer(pixels)).reshape(2, 3)

    np.testing.assert_allclose(extremes[0], -127.0 / 128.0, rtol=1e-5)
    np.testing.assert_allclose(extremes[1], 1.0, rtol=1e-5)


def test_unknown_normalization_raises():
    with pytest.raises(ValueError, match="minus_one_to_one"):
        efficientnet_lite.build_backbone(32, normalization="caffe")


def test_build_outputs_float32_probabilities():
    model = efficientnet_lite.build((64, 64), 25, None)

    probabilities = model(random_images(3, 64), training=False)

    assert probabilities.dtype == "float32"
    assert tuple(probabilities.shape) == (3, 25)
    assert float(tf.reduce_min(probabilities)) >= 0.0
    assert float(tf.reduce_max(probabilities)) <= 1.0


def test_build_output_is_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = efficientnet_lite.build((32, 32), 4, "none")
        probabilities = model(random_images(1, 32), training=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")

    assert probabilities.dtype == "float32"


def test_build_rejects_imagenet_weights():
    with pytest.raises(ValueError, match="trainer.convert_weights"):
        efficientnet_lite.build((32, 32), 25, "imagenet")


def test_build_missing_weights_file_names_converter(tmp_path):
    missing = str(tmp_path / "absent.weights.h5")

    with pytest.raises(FileNotFoundError, match="convert_weights"):
        efficientnet_lite.build((32, 32), 25, missing)


def test_build_loads_backbone_weights_under_mirrored_strategy(tmp_path):
    source = efficientnet_lite.build_backbone(32)
    source.get_layer("head_bn").moving_mean.assign(np.full(1280, 0.25, np.float32))
    path = str(tmp_path / "backbone.weights.h5")
    source.save_weights(path)

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = efficientnet_lite.build((64, 64), 25, path)
    backbone = efficientnet_lite.get_backbone(model)

    for expected, loaded in zip(source.weights, backbone.weights):
        np.testing.assert_array_equal(np.asarray(loaded), np.asarray(expected))
    assert float(backbone.get_layer("head_bn").moving_mean[0]) == 0.25


def test_small_image_size_raises():
    with pytest.raises(ValueError, match="at least 32"):
        efficientnet_lite.build_backbone(16)


def test_block_names_cover_every_weighted_layer():
    backbone = efficientnet_lite.build_backbone(32)
    groups = efficientnet_lite.layers_by_block(backbone)
    grouped = {layer.name for layers in groups.values() for layer in layers}

    weighted = {layer.name for layer in backbone.layers if layer.weights}

    assert list(groups) == efficientnet_lite.block_names()
    assert len(groups) == 18
    assert weighted <= grouped


def test_default_weights_path_follows_cache_variable(monkeypatch, tmp_path):
    monkeypatch.setenv(efficientnet_lite.CACHE_ENV_VAR, str(tmp_path))

    path = efficientnet_lite.default_weights_path()

    assert path == str(tmp_path / "efficientnet_lite0.weights.h5")

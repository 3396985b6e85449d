"""Tests of tfpipe.preprocess: JPEG decode, resize and batch augmentation."""

import numpy as np
import pytest
import tensorflow as tf

from shard_fixtures import encode_jpeg
from tfpipe import preprocess


def gradient_jpeg(height: int, width: int) -> bytes:
    rows = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    columns = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    pixels = np.stack([np.broadcast_to(rows, (height, width)),
                       np.broadcast_to(columns, (height, width)),
                       np.full((height, width), 128.0, np.float32)], axis=-1)
    return encode_jpeg(pixels.astype(np.uint8))


@pytest.mark.parametrize("resize_method", ["stretch", "pad"])
def test_decode_shape_dtype_and_range(resize_method):
    images = preprocess.decode_and_resize(tf.constant(gradient_jpeg(60, 40)), (32, 24), resize_method)

    assert images.shape == (32, 24, 3)
    assert images.dtype == tf.float32
    assert float(tf.reduce_min(images)) >= 0.0
    assert float(tf.reduce_max(images)) <= 1.0


def test_decode_in_dataset_map_matches_eager():
    encoded = gradient_jpeg(60, 40)
    eager = preprocess.decode_and_resize(tf.constant(encoded), (16, 16))

    dataset = tf.data.Dataset.from_tensors(encoded).map(
        lambda e: preprocess.decode_and_resize(e, (16, 16))
    )
    mapped = next(iter(dataset))

    np.testing.assert_allclose(mapped.numpy(), eager.numpy(), atol=1e-6)


@pytest.mark.parametrize(
    "stored, target, method, ratio",
    [
        ((444, 300), (224, 224), "stretch", 1),
        ((444, 300), (128, 128), "stretch", 2),
        ((444, 300), (64, 64), "stretch", 4),
        ((444, 300), (32, 32), "stretch", 8),
        ((444, 300), (224, 224), "pad", 1),
        ((444, 300), (128, 128), "pad", 2),
        ((900, 600), (224, 224), "pad", 4),
        ((256, 173), (224, 224), "stretch", 1),
        ((100, 80), (224, 224), "pad", 1),
    ],
    ids=["224-full", "128-half", "64-quarter", "32-eighth", "pad-224", "pad-128", "pad-large",
         "enlarge-one-side", "enlarge-both"],
)
def test_decode_ratio_keeps_enough_pixels(stored, target, method, ratio):
    index = preprocess._decode_ratio_index(tf.constant(stored), tf.constant(target), method)

    assert preprocess._JPEG_RATIOS[int(index)] == ratio


def test_reduced_scale_decode_is_close_to_full_decode():
    encoded = tf.constant(gradient_jpeg(400, 320))
    reduced = preprocess.decode_and_resize(encoded, (50, 40))

    full = tf.image.resize(tf.io.decode_jpeg(encoded, channels=3), (50, 40), antialias=True) / 255.0

    assert float(tf.reduce_mean(tf.abs(reduced - full))) < 0.02


def test_enlarging_decode_is_close_to_full_decode():
    encoded = tf.constant(gradient_jpeg(60, 40))
    enlarged = preprocess.decode_and_resize(encoded, (64, 64))

    full = tf.image.resize(tf.io.decode_jpeg(encoded, channels=3), (64, 64)) / 255.0

    assert float(tf.reduce_mean(tf.abs(enlarged - full))) < 0.02


def test_pad_keeps_aspect_with_zero_borders():
    white = encode_jpeg(np.full((40, 20, 3), 255, np.uint8))
    images = preprocess.decode_and_resize(tf.constant(white), (32, 32), "pad").numpy()

    assert images[:, :7].max() == 0.0
    assert images[:, -7:].max() == 0.0
    assert images[:, 10:22].min() > 0.95


def test_stretch_fills_whole_output():
    white = encode_jpeg(np.full((40, 20, 3), 255, np.uint8))
    images = preprocess.decode_and_resize(tf.constant(white), (32, 32), "stretch").numpy()

    assert images.min() > 0.95


def test_grayscale_jpeg_decodes_to_three_channels():
    buffer = tf.io.encode_jpeg(tf.fill([20, 10, 1], tf.constant(200, tf.uint8)))
    images = preprocess.decode_and_resize(buffer, (8, 8))

    assert images.shape == (8, 8, 3)


def test_unknown_resize_method_raises():
    with pytest.raises(ValueError, match="resize_method"):
        preprocess.decode_and_resize(tf.constant(gradient_jpeg(8, 8)), (4, 4), "crop")


def test_invalid_jpeg_raises():
    with pytest.raises(tf.errors.InvalidArgumentError):
        preprocess.decode_and_resize(tf.constant(b"not a jpeg"), (4, 4))


@pytest.mark.parametrize("resize_method", ["stretch", "pad"])
def test_augment_keeps_shape_and_range(resize_method):
    encoded = tf.constant(gradient_jpeg(60, 40))
    augmented = preprocess.decode_and_augment(encoded, (16, 12), resize_method,
                                              tf.constant([3, 4], tf.int64))

    assert augmented.shape == (16, 12, 3)
    assert float(tf.reduce_min(augmented)) >= 0.0
    assert float(tf.reduce_max(augmented)) <= 1.0


def test_augment_same_seed_same_output():
    encoded = tf.constant(gradient_jpeg(60, 40))

    def augment(seed):
        return preprocess.decode_and_augment(encoded, (16, 12), "stretch",
                                             tf.constant(seed, tf.int64)).numpy()

    np.testing.assert_array_equal(augment([3, 4]), augment([3, 4]))
    assert not np.allclose(augment([3, 4]), augment([5, 6]))


def test_augment_flips_about_half():
    # Columns get brighter to the right, so a flipped image is brighter on the left.
    encoded = tf.constant(gradient_jpeg(48, 48))
    flipped = 0
    for i in range(40):
        image = preprocess.decode_and_augment(encoded, (16, 16), "stretch",
                                              tf.constant([i, 0], tf.int64)).numpy()
        flipped += int(image[:, 0, 1].mean() > image[:, -1, 1].mean())

    assert 8 <= flipped <= 32


def test_augment_crops_keep_most_of_poster():
    # A crop of at least 64% of the area keeps at least 80% of each side, so a
    # uniform poster stays uniform and the 0..255 ramp spans at least 0.8.
    encoded = tf.constant(gradient_jpeg(64, 64))
    for i in range(10):
        image = preprocess.decode_and_augment(encoded, (32, 32), "stretch",
                                              tf.constant([i, 1], tf.int64)).numpy()
        row_span = image[:, :, 0].max() - image[:, :, 0].min()
        assert 0.7 <= row_span < 1.0


def test_augment_image_matches_decoded_shape():
    image = preprocess.decode_and_resize(tf.constant(gradient_jpeg(60, 40)), (16, 12))
    augmented = preprocess.augment_image(image, tf.constant([1, 2], tf.int64))

    assert augmented.shape == (16, 12, 3)
    assert float(tf.reduce_max(augmented)) <= 1.0

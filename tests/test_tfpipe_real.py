"""Tests of tfpipe.build_dataset on shards written from 100 real posters."""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import shard_fixtures
from tfpipe import build_dataset

pytestmark = pytest.mark.real_data

NUM_POSTERS = 100
IMAGE_SIZE = (224, 224)


@pytest.fixture(scope="module")
def real_dir(dataset_dir, tmp_path_factory):
    posters = shard_fixtures.real_posters(dataset_dir, NUM_POSTERS)
    folder = tmp_path_factory.mktemp("real-shards")
    shard_fixtures.write_shards(folder, {"validation": posters}, num_shards=3)
    return folder


@pytest.fixture(scope="module")
def evaluation_batches(real_dir):
    dataset = build_dataset(real_dir, "validation", batch_size=32, image_size=IMAGE_SIZE,
                            training=False, include_ids=True)
    return [(images.numpy(), labels.numpy(), ids.numpy()) for images, labels, ids in dataset]


def test_real_posters_read_once(evaluation_batches):
    ids = [i for _, _, batch_ids in evaluation_batches for i in batch_ids]

    assert len(ids) == NUM_POSTERS
    assert len(set(ids)) == NUM_POSTERS


def test_real_labels_match_csv(dataset_dir, evaluation_batches):
    frame = pd.read_csv(dataset_dir / "train.csv").drop_duplicates("Id").set_index("Id")
    genres = list(frame.columns[1:])
    assert genres == list(shard_fixtures.GENRES)

    for _, labels, ids in evaluation_batches:
        for label_row, poster_id in zip(labels, ids):
            expected = frame.loc[poster_id.decode(), genres].to_numpy(dtype=np.float32)
            np.testing.assert_array_equal(label_row, expected)


def test_real_images_shape_and_range(evaluation_batches):
    images = np.concatenate([batch for batch, _, _ in evaluation_batches])

    assert images.shape == (NUM_POSTERS, 224, 224, 3)
    assert images.min() >= 0.0
    assert images.max() <= 1.0
    assert images.std() > 0.1


def test_real_pad_leaves_side_borders(real_dir):
    images, _ = next(iter(build_dataset(real_dir, "validation", batch_size=8,
                                        image_size=IMAGE_SIZE, training=False,
                                        resize_method="pad")))

    # Posters are taller than wide (about 300x444), so padding fills columns, not rows.
    assert float(tf.reduce_max(images[:, :, :20])) == 0.0
    assert float(tf.reduce_max(images[:, 100:124, 100:124])) > 0.0


def test_real_max_side_shards_match_originals(dataset_dir, tmp_path, evaluation_batches):
    posters = shard_fixtures.real_posters(dataset_dir, 16, max_side=256)
    assert all(p.conversion == "resized_max_side_256" for p in posters)
    shard_fixtures.write_shards(tmp_path, {"validation": posters}, num_shards=1)

    dataset = build_dataset(tmp_path, "validation", batch_size=16, image_size=IMAGE_SIZE,
                            training=False, include_ids=True)
    small_images, _, small_ids = next(iter(dataset))
    originals = {i: image for images, _, ids in evaluation_batches for image, i in zip(images, ids)}
    original_images = np.stack([originals[i] for i in small_ids.numpy()])

    # Shrunk and re-encoded JPEGs differ a little, pixel by pixel, from the originals.
    difference = np.abs(small_images.numpy() - original_images).mean()
    assert difference < 0.035


def test_real_training_batches_augmented(real_dir):
    dataset = build_dataset(real_dir, "validation", batch_size=16, image_size=(128, 128),
                            training=True, seed=0, num_epochs=1)
    batches = [images for images, _ in dataset]

    assert len(batches) == NUM_POSTERS // 16
    assert batches[0].shape == (16, 128, 128, 3)

"""Tests of tfpipe.build_dataset on small synthetic shards."""

import json
import os
from collections import Counter

import numpy as np
import pytest
import tensorflow as tf

import shard_fixtures
from tfpipe import build_dataset, preprocess, schema

IMAGE_SIZE = (16, 16)
NUM_TRAIN = 40
NUM_VALIDATION = 22


@pytest.fixture(scope="module")
def posters():
    return shard_fixtures.synthetic_posters(NUM_TRAIN + NUM_VALIDATION, height=40, width=28)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, posters):
    folder = tmp_path_factory.mktemp("shards")
    shard_fixtures.write_shards(
        folder,
        {"train": posters[:NUM_TRAIN], "validation": posters[NUM_TRAIN:]},
        num_shards={"train": 4, "validation": 3},
    )
    return folder


def ids_of(dataset) -> list:
    return [poster_id.decode() for batch in dataset for poster_id in batch[-1].numpy()]


def train_ids(data_dir, **options) -> list:
    options = {"seed": 3, "num_epochs": 1, "include_ids": True, "augment": False, **options}
    dataset = build_dataset(
        data_dir, "train", batch_size=4, image_size=IMAGE_SIZE, training=True, **options
    )
    return ids_of(dataset)


def test_batch_shapes_and_dtypes(data_dir):
    images, labels = next(iter(build_dataset(
        data_dir, "validation", batch_size=8, image_size=IMAGE_SIZE, training=False
    )))

    assert images.shape == (8, 16, 16, 3)
    assert images.dtype == tf.float32
    assert labels.shape == (8, 25)
    assert labels.dtype == tf.float32


def test_images_in_unit_range(data_dir):
    dataset = build_dataset(data_dir, "train", batch_size=8, image_size=IMAGE_SIZE,
                            training=True, seed=1, num_epochs=1)
    for images, _ in dataset:
        assert float(tf.reduce_min(images)) >= 0.0
        assert float(tf.reduce_max(images)) <= 1.0


def test_labels_match_posters_by_id(data_dir, posters):
    expected = {p.poster_id: p.multi_hot for p in posters}
    dataset = build_dataset(data_dir, "validation", batch_size=5, image_size=IMAGE_SIZE,
                            training=False, include_ids=True)
    for _, labels, ids in dataset:
        for label_row, poster_id in zip(labels.numpy(), ids.numpy()):
            assert tuple(label_row.astype(int)) == expected[poster_id.decode()]


def test_evaluation_reads_each_example_once(data_dir, posters):
    dataset = build_dataset(data_dir, "validation", batch_size=5, image_size=IMAGE_SIZE,
                            training=False, include_ids=True)
    counts = Counter(ids_of(dataset))

    assert sorted(counts) == sorted(p.poster_id for p in posters[NUM_TRAIN:])
    assert set(counts.values()) == {1}


def test_evaluation_keeps_last_partial_batch(data_dir):
    dataset = build_dataset(data_dir, "validation", batch_size=5, image_size=IMAGE_SIZE,
                            training=False)
    sizes = [int(images.shape[0]) for images, _ in dataset]

    assert sizes == [5, 5, 5, 5, 2]


def test_training_drops_last_partial_batch(data_dir):
    dataset = build_dataset(data_dir, "train", batch_size=6, image_size=IMAGE_SIZE,
                            training=True, seed=0, num_epochs=1)

    assert dataset.element_spec[0].shape == (6, 16, 16, 3)
    assert sum(1 for _ in dataset) == NUM_TRAIN // 6


def test_training_repeats_by_default(data_dir):
    dataset = build_dataset(data_dir, "train", batch_size=8, image_size=IMAGE_SIZE,
                            training=True, seed=0)
    batches = sum(1 for _ in dataset.take(3 * NUM_TRAIN // 8))

    assert batches == 3 * NUM_TRAIN // 8


def test_training_epoch_is_a_permutation(data_dir, posters):
    ids = train_ids(data_dir)

    assert sorted(ids) == sorted(p.poster_id for p in posters[:NUM_TRAIN])
    assert ids != sorted(ids)


def test_same_seed_same_order(data_dir):
    assert train_ids(data_dir, seed=11) == train_ids(data_dir, seed=11)


def test_other_seed_other_order(data_dir):
    assert train_ids(data_dir, seed=11) != train_ids(data_dir, seed=12)


def test_order_ignores_global_seed(data_dir):
    before = train_ids(data_dir, seed=11)
    tf.random.set_seed(1234)
    after = train_ids(data_dir, seed=11)

    assert after == before


def test_epochs_differ_in_order(data_dir):
    ids = train_ids(data_dir, num_epochs=2)

    assert ids[:NUM_TRAIN] != ids[NUM_TRAIN:]
    assert sorted(ids[:NUM_TRAIN]) == sorted(ids[NUM_TRAIN:])


def test_start_epoch_reproduces_that_epoch(data_dir):
    two_epochs = train_ids(data_dir, num_epochs=2)
    second_epoch = train_ids(data_dir, start_epoch=1, num_epochs=1)

    assert second_epoch == two_epochs[NUM_TRAIN:]


@pytest.mark.parametrize("skip", [0, 1, 4, 13])
def test_skip_examples_resumes_mid_epoch(data_dir, skip):
    full = train_ids(data_dir, start_epoch=2, num_epochs=2, drop_remainder=False)
    resumed = train_ids(data_dir, start_epoch=2, num_epochs=2, skip_examples=skip,
                        drop_remainder=False)

    assert resumed == full[skip:]


def test_skip_examples_repeats_augmentation(data_dir):
    def images_of(**options):
        dataset = build_dataset(data_dir, "train", batch_size=4, image_size=IMAGE_SIZE,
                                training=True, seed=6, start_epoch=1, num_epochs=1, **options)
        return np.concatenate([images.numpy() for images, _ in dataset])

    full = images_of()
    resumed = images_of(skip_examples=8)

    np.testing.assert_allclose(resumed, full[8:], atol=1e-6)


def test_cycle_length_one_reads_shards_in_turn(data_dir):
    ids = train_ids(data_dir, cycle_length=1, shuffle_buffer=1)
    shard_of = {f"synthetic-{i:05d}": i % 4 for i in range(NUM_TRAIN)}
    shard_sequence = [shard_of[poster_id] for poster_id in ids]

    # Shards are shuffled but read one after another, so each shard forms one run.
    runs = 1 + sum(a != b for a, b in zip(shard_sequence, shard_sequence[1:]))
    assert runs == 4


def test_evaluation_images_are_not_augmented(data_dir, posters):
    images, _, ids = next(iter(build_dataset(
        data_dir, "validation", batch_size=4, image_size=IMAGE_SIZE, training=False,
        include_ids=True,
    )))
    by_id = {p.poster_id: p for p in posters}
    expected = [preprocess.decode_and_resize(by_id[i.decode()].encoded, IMAGE_SIZE)
                for i in ids.numpy()]

    np.testing.assert_allclose(images.numpy(), np.stack(expected), atol=1e-6)


def test_training_images_are_augmented(data_dir):
    plain = build_dataset(data_dir, "train", batch_size=8, image_size=IMAGE_SIZE,
                          training=True, seed=5, num_epochs=1, augment=False)
    augmented = build_dataset(data_dir, "train", batch_size=8, image_size=IMAGE_SIZE,
                              training=True, seed=5, num_epochs=1)
    plain_images, _ = next(iter(plain))
    augmented_images, _ = next(iter(augmented))

    assert not np.allclose(plain_images.numpy(), augmented_images.numpy(), atol=1e-3)


def test_augment_without_training_raises(data_dir):
    with pytest.raises(ValueError, match="augment"):
        build_dataset(data_dir, "validation", batch_size=4, image_size=IMAGE_SIZE,
                      training=False, augment=True)


def test_pad_resize_through_dataset(data_dir):
    images, _ = next(iter(build_dataset(
        data_dir, "validation", batch_size=4, image_size=IMAGE_SIZE, training=False,
        resize_method="pad",
    )))

    # The 40x28 posters fit as 16x11 with zero columns left and right.
    assert float(tf.reduce_max(images[:, :, 0])) == 0.0
    assert float(tf.reduce_max(images[:, :, -1])) == 0.0


def test_map_fn_strategy_matches_unbatch(data_dir):
    def first_epoch(strategy):
        dataset = build_dataset(data_dir, "train", batch_size=8, image_size=IMAGE_SIZE,
                                training=True, seed=2, num_epochs=1, decode_strategy=strategy)
        return np.concatenate([images.numpy() for images, _ in dataset])

    np.testing.assert_allclose(first_epoch("map_fn"), first_epoch("unbatch"), atol=1e-6)


def test_include_ids_false_yields_pairs(data_dir):
    dataset = build_dataset(data_dir, "validation", batch_size=4, image_size=IMAGE_SIZE,
                            training=False)

    assert len(dataset.element_spec) == 2


def test_cache_file_serves_later_epochs(tmp_path, posters):
    data_dir = tmp_path / "shards"
    metadata = shard_fixtures.write_shards(data_dir, {"train": posters[:NUM_TRAIN]})
    cache_prefix = str(tmp_path / "cache" / "posters")
    os.makedirs(tmp_path / "cache")
    options = dict(batch_size=8, image_size=IMAGE_SIZE, training=True, seed=4, num_epochs=1,
                   include_ids=True, cache_file=cache_prefix)
    first = ids_of(build_dataset(data_dir, "train", **options))

    # The cache now contains every example, so zeroed shards of the same size are never read.
    for name in metadata["splits"]["train"]["shards"]:
        shard = data_dir / name
        shard.write_bytes(bytes(shard.stat().st_size))
    second = ids_of(build_dataset(data_dir, "train", start_epoch=1, **{
        **options, "cache_file": cache_prefix}))

    assert sorted(first) == sorted(second)
    assert first != second


def test_gzip_shards_are_read(tmp_path, posters):
    shard_fixtures.write_shards(tmp_path, {"validation": posters[:10]},
                                compression=schema.COMPRESSION_GZIP)
    dataset = build_dataset(tmp_path, "validation", batch_size=4, image_size=IMAGE_SIZE,
                            training=False, include_ids=True)

    assert len(ids_of(dataset)) == 10


def test_unknown_option_raises(data_dir):
    with pytest.raises(TypeError, match="shuffle_bufer"):
        build_dataset(data_dir, "train", batch_size=4, image_size=IMAGE_SIZE, training=True,
                      shuffle_bufer=10)


def test_missing_split_raises(data_dir):
    with pytest.raises(schema.SchemaError, match="test"):
        build_dataset(data_dir, "test", batch_size=4, image_size=IMAGE_SIZE, training=False)


def test_split_without_shards_names_folder(tmp_path, posters):
    metadata = shard_fixtures.write_shards(tmp_path, {"train": posters[:4]})
    metadata["splits"]["train"]["shards"] = []
    shard_fixtures.write_metadata(tmp_path, metadata)

    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        build_dataset(tmp_path, "train", batch_size=4, image_size=IMAGE_SIZE, training=True)


def test_missing_shard_file_is_named(tmp_path, posters):
    metadata = shard_fixtures.write_shards(tmp_path, {"train": posters[:4]})
    missing = metadata["splits"]["train"]["shards"][1]
    os.remove(tmp_path / missing)

    with pytest.raises(FileNotFoundError, match=missing):
        build_dataset(tmp_path, "train", batch_size=4, image_size=IMAGE_SIZE, training=True)


def test_unknown_schema_version_raises(tmp_path, posters):
    shard_fixtures.write_shards(tmp_path, {"train": posters[:4]})
    path = tmp_path / schema.METADATA_FILENAME
    metadata = json.loads(path.read_text())
    metadata["schema_version"] = schema.SCHEMA_VERSION + 1
    path.write_text(json.dumps(metadata))

    with pytest.raises(schema.SchemaError, match="schema_version"):
        build_dataset(tmp_path, "train", batch_size=4, image_size=IMAGE_SIZE, training=True)


def test_reads_shards_through_file_system_scheme(tmp_path, posters):
    # TensorFlow's in-memory ram:// file system replaces gs:// and s3:// here. Paths with a
    # scheme go through tf.io.gfile and the TFRecord reader, never through open().
    metadata = shard_fixtures.write_shards(tmp_path, {"validation": posters[:10]})
    remote_dir = f"ram://{tmp_path.name}"
    tf.io.gfile.makedirs(remote_dir)
    for name in [schema.METADATA_FILENAME, *metadata["splits"]["validation"]["shards"]]:
        tf.io.gfile.copy(str(tmp_path / name), f"{remote_dir}/{name}", overwrite=True)

    dataset = build_dataset(remote_dir, "validation", batch_size=4, image_size=IMAGE_SIZE,
                            training=False, include_ids=True)

    assert sorted(ids_of(dataset)) == sorted(p.poster_id for p in posters[:10])

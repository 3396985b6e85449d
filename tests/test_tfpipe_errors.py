"""Tests of corrupt shards and undecodable images in tfpipe.build_dataset."""

import dataclasses

import pytest
import tensorflow as tf

import shard_fixtures
from tfpipe import build_dataset

IMAGE_SIZE = (16, 16)


def read_all(data_dir, **options) -> list:
    dataset = build_dataset(data_dir, "validation", batch_size=4, image_size=IMAGE_SIZE,
                            training=False, include_ids=True, **options)
    return [poster_id.decode() for _, _, ids in dataset for poster_id in ids.numpy()]


@pytest.fixture
def corrupt_dir(tmp_path):
    """Two shards of 10 posters each; bytes in the middle of the second are flipped."""
    posters = shard_fixtures.synthetic_posters(20, height=40, width=28)
    metadata = shard_fixtures.write_shards(tmp_path, {"validation": posters}, num_shards=2)
    shard = tmp_path / metadata["splits"]["validation"]["shards"][1]
    data = bytearray(shard.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + 8):
        data[i] ^= 0xFF
    shard.write_bytes(bytes(data))
    return tmp_path, shard


def test_corrupt_shard_error_names_file(corrupt_dir):
    data_dir, shard = corrupt_dir

    with pytest.raises(tf.errors.InvalidArgumentError, match=shard.name):
        read_all(data_dir)


def test_truncated_shard_error_names_file(tmp_path):
    posters = shard_fixtures.synthetic_posters(6, height=40, width=28)
    metadata = shard_fixtures.write_shards(tmp_path, {"validation": posters}, num_shards=1)
    shard = tmp_path / metadata["splits"]["validation"]["shards"][0]
    shard.write_bytes(shard.read_bytes()[:-100])

    with pytest.raises(tf.errors.InvalidArgumentError, match="corrupt or truncated"):
        read_all(tmp_path)


def test_ignore_errors_skips_rest_of_corrupt_shard(corrupt_dir, capfd):
    data_dir, shard = corrupt_dir
    ids = read_all(data_dir, ignore_errors=True)

    # The first shard is whole; the second loses the record hit and all after it.
    assert set(f"synthetic-{i:05d}" for i in range(0, 20, 2)) <= set(ids)
    assert 10 <= len(ids) < 20
    assert shard.name in capfd.readouterr().err


@pytest.fixture
def undecodable_dir(tmp_path):
    """Ten posters; the JPEG bytes of posters 3 and 4 are cut short to 40 bytes."""
    posters = shard_fixtures.synthetic_posters(10, height=40, width=28)
    for index in (3, 4):
        posters[index] = dataclasses.replace(posters[index], encoded=posters[index].encoded[:40])
    shard_fixtures.write_shards(tmp_path, {"validation": posters}, num_shards=1)
    return tmp_path


def test_undecodable_image_fails(undecodable_dir):
    with pytest.raises(tf.errors.InvalidArgumentError):
        read_all(undecodable_dir)


def test_ignore_errors_drops_undecodable_images(undecodable_dir, capfd):
    ids = read_all(undecodable_dir, ignore_errors=True)

    assert ids == [f"synthetic-{i:05d}" for i in (0, 1, 2, 5, 6, 7, 8, 9)]
    assert "dropped 2 example(s)" in capfd.readouterr().err

"""Tests of tfpipe.build_dataset across input pipelines, under tf.distribute and the tf.data service."""

import os
import subprocess
import sys
import textwrap
from collections import Counter

import pytest
import tensorflow as tf

import shard_fixtures
from tfpipe import build_dataset
from tfpipe import shards

IMAGE_SIZE = (8, 8)
NUM_POSTERS = 26


@pytest.fixture(scope="module")
def posters():
    return shard_fixtures.synthetic_posters(NUM_POSTERS, height=24, width=16)


def write_split(folder, posters, num_shards) -> str:
    shard_fixtures.write_shards(folder, {"validation": posters, "train": posters},
                                num_shards=num_shards)
    return str(folder)


def pipeline_ids(data_dir, split, pipeline_id, *, training=False, **options) -> list:
    context = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=pipeline_id, num_replicas_in_sync=2
    )
    dataset = build_dataset(data_dir, split, batch_size=6, image_size=IMAGE_SIZE,
                            training=training, input_context=context, include_ids=True, **options)
    return [poster_id.decode() for _, _, ids in dataset for poster_id in ids.numpy()]


@pytest.mark.parametrize("num_shards", [4, 3, 1], ids=["by-file-even", "by-file-odd", "by-example"])
def test_two_pipelines_read_each_example_once(tmp_path, posters, num_shards):
    data_dir = write_split(tmp_path, posters, num_shards)
    first = pipeline_ids(data_dir, "validation", 0)
    second = pipeline_ids(data_dir, "validation", 1)

    counts = Counter(first + second)
    assert sorted(counts) == sorted(p.poster_id for p in posters)
    assert set(counts.values()) == {1}
    assert not set(first) & set(second)


@pytest.mark.parametrize("num_shards", [4, 1], ids=["by-file", "by-example"])
def test_two_training_pipelines_split_each_epoch(tmp_path, posters, num_shards):
    data_dir = write_split(tmp_path, posters, num_shards)
    options = dict(training=True, seed=9, num_epochs=1, drop_remainder=False, augment=False)
    first = pipeline_ids(data_dir, "train", 0, **options)
    second = pipeline_ids(data_dir, "train", 1, **options)

    counts = Counter(first + second)
    assert len(counts) == NUM_POSTERS
    assert set(counts.values()) == {1}


def test_per_replica_batch_from_input_context(tmp_path, posters):
    data_dir = write_split(tmp_path, posters, 2)
    context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                         num_replicas_in_sync=2)
    dataset = build_dataset(data_dir, "train", batch_size=8, image_size=IMAGE_SIZE,
                            training=True, seed=0, input_context=context)

    assert dataset.element_spec[0].shape[0] == 4


def test_mirrored_strategy_feeds_every_replica(tmp_path, posters):
    # Two logical CPUs must be set before TensorFlow starts, hence a fresh process.
    data_dir = write_split(tmp_path, posters, 2)
    script = textwrap.dedent(f"""
        import tensorflow as tf
        from tfpipe import build_dataset

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        distributed = strategy.distribute_datasets_from_function(
            lambda context: build_dataset({data_dir!r}, "validation", batch_size=8,
                                          image_size=(8, 8), training=False,
                                          input_context=context, include_ids=True))
        seen = []
        for _, _, ids in distributed:
            for replica_ids in strategy.experimental_local_results(ids):
                seen.extend(replica_ids.numpy().tolist())
        print("replicas", strategy.num_replicas_in_sync, "examples", len(seen),
              "unique", len(set(seen)))
    """)
    environment = {**os.environ, "PYTHONPATH": os.getcwd(), "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=environment, timeout=120)

    assert result.returncode == 0, result.stderr[-2000:]
    assert f"replicas 2 examples {NUM_POSTERS} unique {NUM_POSTERS}" in result.stdout


def loopback_only_command(command: list) -> list:
    """Return `command` run in a new network namespace with only loopback, when allowed.

    TensorFlow's tf.data service servers listen on every interface (0.0.0.0)
    and take no host option, so where `unshare` works the test runs them where
    loopback is the only interface. Elsewhere (containers without user
    namespaces) the command runs unchanged.
    """
    isolate = ["unshare", "--net", "--map-root-user"]
    probe = subprocess.run([*isolate, "ip", "link", "set", "lo", "up"], capture_output=True)
    if probe.returncode != 0:
        return command
    return [*isolate, "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command]


def test_data_service_with_two_workers(tmp_path, posters):
    data_dir = write_split(tmp_path, posters, 4)
    script = textwrap.dedent(f"""
        from collections import Counter
        import tensorflow as tf
        from tfpipe import build_dataset

        service = tf.data.experimental.service
        dispatcher = service.DispatchServer(service.DispatcherConfig(port=0))
        dispatcher_address = dispatcher.target.split("://")[1]
        workers = [
            service.WorkerServer(service.WorkerConfig(
                dispatcher_address=dispatcher_address, worker_address="127.0.0.1:%port%"))
            for _ in range(2)
        ]
        dataset = build_dataset({data_dir!r}, "train", batch_size=2, image_size=(8, 8),
                                training=True, seed=1, num_epochs=2, include_ids=True,
                                data_service_address=dispatcher.target)
        counts = Counter(i for _, _, ids in dataset for i in ids.numpy().tolist())
        print("examples", len(counts), "reads per example", sorted(set(counts.values())))
    """)
    environment = {**os.environ, "PYTHONPATH": os.getcwd(), "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = loopback_only_command([sys.executable, "-c", script])
    result = subprocess.run(command, capture_output=True, text=True, env=environment,
                            timeout=120)

    assert result.returncode == 0, result.stderr[-2000:]
    assert f"examples {NUM_POSTERS} reads per example [2]" in result.stdout


def test_partition_by_file_and_by_example():
    shard_list = ["a", "b", "c", "d", "e"]

    assert shards.partition_shards(shard_list, 1, 2) == (["b", "d"], True)
    assert shards.partition_shards(shard_list, 0, 5) == (["a"], True)
    assert shards.partition_shards(shard_list, 3, 8) == (shard_list, False)

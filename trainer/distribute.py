"""The tf.distribute strategy factory and the worker roles under it.

Strategy names (`--strategy`):

- `default`: TensorFlow's default strategy, one device, no distribution.
- `one_device`: `OneDeviceStrategy` on the first GPU, or the CPU without one.
- `mirrored`: `MirroredStrategy`, synchronous data parallelism over all local
  GPUs. Without a GPU, it replicates over the logical CPU devices that
  `configure_cpu_replicas` made, or runs one replica when there are none.
- `multi_worker`: `MultiWorkerMirroredStrategy` over the processes that the
  `TF_CONFIG` environment variable lists, each with its local devices.
- `tpu`: `TPUStrategy` on the TPU named by `tpu_address`.
"""

import json
import os

import tensorflow as tf
from absl import logging

STRATEGY_NAMES = ("default", "one_device", "mirrored", "multi_worker", "tpu")


def configure_cpu_replicas(num_replicas: int) -> None:
    """Split the first physical CPU into `num_replicas` logical devices.

    Must run before TensorFlow initialises its devices (before any op or
    strategy is created). Does nothing when `num_replicas` is below 2 or a GPU
    is present, because then `mirrored` replicates over the GPUs.

    Raises:
        RuntimeError: when the devices are already initialised.
    """
    if num_replicas < 2 or tf.config.list_physical_devices("GPU"):
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_replicas)]
    )
    logging.info("Split %s into %d logical CPU devices.", cpu.name, num_replicas)


def make_strategy(name: str, tpu_address: str = "") -> tf.distribute.Strategy:
    """Create the strategy called `name` (see the module docstring).

    Raises:
        ValueError: on an unknown name (the message lists the valid names), or
            for `multi_worker` when `TF_CONFIG` is unset or lists no cluster.
    """
    if name not in STRATEGY_NAMES:
        raise ValueError(f"Unknown strategy {name!r}; valid names are {', '.join(STRATEGY_NAMES)}.")

    # Listing logical devices initialises the runtime, which multi_worker must configure
    # first, so only the branches that need the list ask for it.
    if name == "default":
        strategy = tf.distribute.get_strategy()
    elif name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        strategy = tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    elif name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [device.name for device in gpus or tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
    elif name == "multi_worker":
        _check_tf_config()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu_address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)

    logging.info(
        "Strategy %s (%s) with %d replicas in sync.",
        name,
        type(strategy).__name__,
        strategy.num_replicas_in_sync,
    )
    return strategy


def _check_tf_config() -> None:
    """Raise ValueError unless `TF_CONFIG` names a cluster and this worker's task."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        raise ValueError(
            "--strategy=multi_worker needs the TF_CONFIG environment variable, for example "
            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}.'
        )
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}): {raw!r}") from error
    if not config.get("cluster") or "task" not in config:
        raise ValueError(f"TF_CONFIG must contain 'cluster' and 'task'; got {raw!r}.")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Return True for the one worker that writes outputs (always True outside multi_worker).

    The chief is the `chief` task when the cluster has one, else worker 0.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def worker_name(strategy: tf.distribute.Strategy) -> str:
    """Return `<task_type>_<task_id>` under multi_worker, else `chief`."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return "chief"
    return f"{resolver.task_type}_{resolver.task_id}"

"""Work around two Keras 3.6 `fit` problems under a tf.distribute strategy.

`allow_datasets_from_function`: accept the output of `strategy.distribute_datasets_from_function`.

Keras 3.6 recognises a dataset only when a class in its MRO is named
`DatasetV2` or `DistributedDataset`, so `fit` rejects a
`DistributedDatasetsFromFunction` with "Unrecognized data type" although the
rest of its TensorFlow data path handles it. Upstream Keras added that class
name to the check in February 2025. `allow_datasets_from_function`
widens that one check, and only when the installed Keras still needs it.

`keep_first_batch`: train on the first batch of each `fit` call, which Keras
3.6 otherwise uses only to build metric state; see its docstring.

`average_scalar_logs_across_workers`: under `MultiWorkerMirroredStrategy`,
Keras 3.6 averages the per-replica loss and metric values of each step with
`strategy.reduce("MEAN", value, axis=0)`, which fails on those scalars
("Invalid reduction dimension 0 for input with 0 dimensions").
"""

import tensorflow as tf
from absl import logging


def allow_datasets_from_function() -> None:
    """Patch Keras' `is_tf_dataset` to accept every `tf.distribute.DistributedDataset`."""
    import keras
    from keras.src.trainers import data_adapters

    major, minor = (int(part) for part in keras.version().split(".")[:2])
    # NOTE: 3.9 as the first fixed release is an assumption from the fix's date.
    if (major, minor) >= (3, 9):
        return
    original = data_adapters.is_tf_dataset
    if getattr(original, "accepts_distributed_datasets", False):
        return

    def is_tf_dataset(x):
        return original(x) or isinstance(x, tf.distribute.DistributedDataset)

    is_tf_dataset.accepts_distributed_datasets = True
    data_adapters.is_tf_dataset = is_tf_dataset
    logging.info(
        "Patched keras data_adapters.is_tf_dataset to accept distributed datasets "
        "from functions (Keras before 3.9)."
    )


def keep_first_batch(model, data_batch) -> None:
    """Stop Keras 3.6 `fit` from consuming a training batch to build the compiled metrics.

    For a model created under a strategy scope, `fit` takes the first batch
    of its training iterator to build the loss and metric state
    (`_maybe_symbolic_build`) and then trains on the same iterator, so that
    batch is never trained on. It also averages the batch over replicas,
    which fails for the string ids of `batch_ids_log`. This replaces the
    method on `model` only, building from `data_batch` instead.

    Args:
        model: a compiled Keras model.
        data_batch: `(images, labels)` of one replica batch; zeros of the
            right shape and dtype are enough.
    """

    def maybe_symbolic_build(iterator=None, data_batch_argument=None):
        if model._distribute_strategy is None:
            return
        with model.distribute_strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = maybe_symbolic_build


def average_scalar_logs_across_workers() -> None:
    """Make Keras 3.6 average per-replica step logs with `axis=None` under multi-worker.

    Replaces `reduce_per_replica` in Keras' TensorFlow trainer module for the
    "auto" and "mean" reductions under `MultiWorkerMirroredStrategy` only; other
    strategies and reductions keep Keras' code. Both the scalars that `fit`
    reduces and the result are the mean over all replicas.
    """
    import keras
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    major, minor = (int(part) for part in keras.version().split(".")[:2])
    if (major, minor) >= (3, 9):
        # NOTE: checked on Keras 3.6 only; whether 3.7 and 3.8 need it is unverified.
        return
    original = tf_trainer.reduce_per_replica
    if getattr(original, "averages_scalars", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(
            strategy
        ):
            return tree.map_structure(
                lambda value: strategy.reduce("MEAN", value, axis=None), values
            )
        return original(values, strategy, reduction)

    reduce_per_replica.averages_scalars = True
    tf_trainer.reduce_per_replica = reduce_per_replica

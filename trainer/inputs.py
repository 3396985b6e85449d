"""Input functions of the trainer over `tfpipe.build_dataset`, and the resume arithmetic.

The training stream of each input pipeline is the concatenation of its
epochs, each in an order fixed by `(seed, epoch, pipeline id)`, cut into
batches of `global_batch_size / num_input_pipelines` examples. Keras epochs
are `steps_per_epoch` batches of that stream, so a Keras epoch need not start
on a data epoch boundary. After `global_step` steps a pipeline has consumed
`global_step * batch` examples; `stream_position` turns that into the
`start_epoch` and `skip_examples` that rebuild the stream from there.
"""

from typing import Callable, Optional, Tuple

import numpy as np
import tensorflow as tf
import tqdm
from absl import logging

import tfpipe
from tfpipe import schema, shards


def stream_position(
    global_step: int, pipeline_batch: int, pipeline_examples: int
) -> Tuple[int, int]:
    """Return `(start_epoch, skip_examples)` of a pipeline after `global_step` steps.

    Args:
        global_step: training steps done.
        pipeline_batch: examples one input pipeline contributes per step.
        pipeline_examples: examples in one epoch of that pipeline.
    """
    if pipeline_examples <= 0:
        raise ValueError(f"An input pipeline needs at least one example, got {pipeline_examples}.")
    consumed = global_step * pipeline_batch
    return consumed // pipeline_examples, consumed % pipeline_examples


def pipeline_examples(
    data_dir: str, metadata: dict, split: str, pipeline_id: int, num_pipelines: int
) -> int:
    """Count the examples that input pipeline `pipeline_id` of `num_pipelines` reads per epoch.

    One pipeline reads the whole split (`num_examples` from the metadata).
    Several follow `tfpipe.shards.partition_shards`, as `build_dataset` does:
    the records of whole shards are counted (which reads them once), or every
    `num_pipelines`-th record of the split when the pipelines split by example.
    """
    total = int(metadata["splits"][split]["num_examples"])
    if num_pipelines == 1:
        return total
    shard_list, by_file = shards.partition_shards(
        shards.list_shards(data_dir, metadata, split), pipeline_id, num_pipelines
    )
    if not by_file:
        return len(range(pipeline_id, total, num_pipelines))
    count = 0
    for shard in shard_list:
        records = tf.data.TFRecordDataset(shard.path, compression_type=metadata["compression"])
        count += int(records.reduce(np.int64(0), lambda total, _: total + 1))
    return count


def train_input_fn(
    config, metadata: dict, image_size: Tuple[int, int], global_step: int, include_ids: bool
) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """Return the function that `distribute_datasets_from_function` calls per input pipeline.

    Each pipeline's stream starts where it was after `global_step` steps and
    repeats without end; `fit`'s `steps_per_epoch` bounds it.
    """

    def dataset_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
        num_pipelines = input_context.num_input_pipelines
        pipeline_batch = config.global_batch_size // num_pipelines
        start_epoch, skip_examples, examples = 0, 0, None
        # Only a resumed stream needs the epoch length, which may cost a pass over the shards.
        if global_step > 0:
            examples = pipeline_examples(
                config.data_dir, metadata, "train", input_context.input_pipeline_id, num_pipelines
            )
            start_epoch, skip_examples = stream_position(global_step, pipeline_batch, examples)
        if examples is not None:
            logging.info(
                "Input pipeline %d of %d: step %d is epoch %d after %d of its %d examples.",
                input_context.input_pipeline_id,
                num_pipelines,
                global_step,
                start_epoch,
                skip_examples,
                examples,
            )
        options = dict(
            seed=config.seed,
            num_epochs=None,
            start_epoch=start_epoch,
            skip_examples=skip_examples,
            resize_method=config.resize_method,
            augment=config.augment,
            include_ids=include_ids,
        )
        if config.data_service_address:
            # NOTE: the tf.data service hands out epochs dynamically, so a resumed run
            # repeats or skips some examples of the interrupted epoch.
            options["data_service_address"] = config.data_service_address
        return tfpipe.build_dataset(
            config.data_dir,
            "train",
            batch_size=config.global_batch_size,
            image_size=image_size,
            training=True,
            input_context=input_context,
            **options,
        )

    return dataset_fn


def predict_split(
    model,
    data_dir: str,
    split: str,
    image_size: Tuple[int, int],
    batch_size: int,
    resize_method: str,
    predict_fn: Optional[Callable] = None,
    progress: bool = False,
):
    """Predict every example of `split` once, in shard order.

    Args:
        model: a Keras model on float32 `[batch, height, width, 3]` images in [0, 1].
        predict_fn: a `tf.function` wrapping `model(images, training=False)`;
            built here when None (pass one to reuse its traces across calls).
        progress: show a tqdm progress bar of the examples predicted.

    Returns:
        `(ids, labels, probabilities)`: a list of str, int64 `[n, num_labels]`
        and float32 `[n, num_labels]` NumPy arrays.
    """
    dataset = tfpipe.build_dataset(
        data_dir,
        split,
        batch_size=batch_size,
        image_size=image_size,
        training=False,
        resize_method=resize_method,
        include_ids=True,
    )
    if predict_fn is None:
        predict_fn = make_predict_fn(model)
    ids, labels, probabilities = [], [], []
    total = None
    if progress:
        total = int(schema.read_metadata(data_dir)["splits"][split]["num_examples"])
    with tqdm.tqdm(total=total, unit="img", desc=f"predict {split}", disable=not progress) as bar:
        for images, batch_labels, batch_ids in dataset:
            probabilities.append(predict_fn(images).numpy())
            labels.append(batch_labels.numpy().astype(np.int64))
            ids.extend(i.decode("utf-8") for i in batch_ids.numpy())
            bar.update(len(batch_ids))
    if not ids:
        raise ValueError(f"Split {split!r} in {data_dir} yielded no examples; rerun the Beam job.")
    return ids, np.concatenate(labels), np.concatenate(probabilities).astype(np.float32)


def make_predict_fn(model) -> Callable:
    """Return a `tf.function` computing `model(images, training=False)` as float32."""

    @tf.function(reduce_retracing=True)
    def predict(images):
        return tf.cast(model(images, training=False), tf.float32)

    return predict


def check_splits(metadata: dict, splits) -> None:
    """Raise `schema.SchemaError` unless every split in `splits` has examples."""
    for split in splits:
        info = metadata["splits"].get(split)
        if not info or int(info["num_examples"]) == 0:
            raise schema.SchemaError(
                f"The shards have no {split!r} examples, which training needs; rerun the Beam "
                "job with a non-zero share for that split."
            )

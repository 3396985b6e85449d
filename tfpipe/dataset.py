"""Build the tf.data pipeline that streams batches of posters from the TFRecord shards.

`build_dataset(data_dir, split, batch_size=..., image_size=..., training=...)`
reads `metadata.json` and the shards it lists (local, `gs://` or `s3://`) and
returns a `tf.data.Dataset` of `(images, labels)`:

- images: float32 `[batch, height, width, 3]`, values in [0, 1];
- labels: float32 `[batch, num_labels]` multi-hot, in `metadata["labels"]` order
  (25 genres for the poster dataset);
- with `include_ids=True`, also ids: `tf.string` `[batch]`, the poster ids.

Only the shuffle buffer and a few batches in flight are held in memory, so
memory does not grow with the number of posters. See `docs/tfpipe.md`.
"""

import dataclasses
import random
from typing import Optional

import tensorflow as tf
from absl import logging

from tfpipe import preprocess, schema, shards

AUTOTUNE = tf.data.AUTOTUNE

# Marks an option the caller did not pass, where None is itself a valid value.
_UNSET = object()

# Examples parsed together by one `tf.io.parse_example` call in the "unbatch" decode strategy.
_PARSE_BATCH = 64

DECODE_STRATEGIES = ("unbatch", "map_fn")

# Example positions of epoch e start at e * _EPOCH_POSITIONS (epochs are far smaller).
_EPOCH_POSITIONS = 2**32


@dataclasses.dataclass
class DatasetOptions:
    """Options of `build_dataset`; see its docstring for each field."""

    seed: Optional[int] = None
    num_epochs: object = _UNSET
    start_epoch: int = 0
    skip_examples: int = 0
    resize_method: str = "stretch"
    augment: Optional[bool] = None
    shuffle_buffer: int = 1024
    cycle_length: Optional[int] = None
    drop_remainder: Optional[bool] = None
    ignore_errors: bool = False
    cache_file: Optional[str] = None
    data_service_address: Optional[str] = None
    include_ids: bool = False
    decode_strategy: str = "unbatch"


def build_dataset(
    data_dir,
    split: str,
    *,
    batch_size: int,
    image_size,
    training: bool,
    input_context: Optional[tf.distribute.InputContext] = None,
    **options,
) -> tf.data.Dataset:
    """Return a dataset of `(images, labels)` batches of one split.

    Args:
        data_dir: folder with `metadata.json` and the shards (local, `gs://`, `s3://`).
        split: split name in the metadata, for example "train" or "validation".
        batch_size: GLOBAL batch size. Under `tf.distribute`, each input
            pipeline batches `input_context.get_per_replica_batch_size(batch_size)`.
        image_size: `(height, width)` of the output images, pixels.
        training: True shuffles, augments, repeats and drops the last partial
            batch by default; False reads every example once, in shard order.
        input_context: the `tf.distribute.InputContext` that
            `strategy.distribute_datasets_from_function` passes. Shards are
            split by file among input pipelines when there are at least as
            many shards as pipelines, and by example otherwise, so the
            pipelines read disjoint parts that together cover the split.
        **options: keyword options (an unknown name raises TypeError):
            seed (int or None, default None): seeds the shard order, the
                example shuffle and the augmentation. None draws a fresh seed
                and sets `tf.data.Options.deterministic = False` when training,
                so elements may also come in any order the threads finish.
            num_epochs (int or None): number of epochs yielded, from
                `start_epoch` on; None repeats forever. Default: None when
                training, 1 otherwise.
            start_epoch (int, default 0): index of the first epoch. The order
                of epoch `e` depends only on `(seed, e, input pipeline id)`
                and the options that shape the stream (`shuffle_buffer`,
                `cycle_length`), so a resumed run reproduces it.
            skip_examples (int, default 0): examples of the first epoch to
                drop, counted per input pipeline, before they are parsed or
                decoded. With `start_epoch`, this resumes in the middle of an
                epoch without repeating or skipping an example.
            resize_method ("stretch" or "pad", default "stretch"): see
                `tfpipe.preprocess.decode_and_resize`.
            augment (bool, default `training`): random crop (64-100% of the
                area) and horizontal flip per image; rejected when not training.
            shuffle_buffer (int, default 1024): examples in the shuffle buffer
                when training (about 32 KB each for the original posters).
            cycle_length (int, default min(shards, 8)): shards read at once.
            drop_remainder (bool, default `training`): drop the last partial
                batch, so every batch has a static size (needed by TPUs and
                convenient under `tf.distribute`).
            ignore_errors (bool, default False): skip records that cannot be
                read, parsed or decoded, and log a warning with a running count,
                instead of failing. Example counts are then no longer exact.
            cache_file (str or None, default None): cache the decoded, resized
                examples of this input pipeline in files with this prefix
                (float32, height*width*12 bytes per poster, about 600 KB at
                224x224) and read later epochs from there. Nothing is cached in
                memory. With a cache, shards are read in a fixed order and only
                the example shuffle changes between epochs.
            data_service_address (str or None, default None): address of a
                tf.data service dispatcher, such as "grpc://127.0.0.1:5050".
                The whole pipeline then runs on its workers, which hand out
                epochs dynamically (`ShardingPolicy.DYNAMIC`), so each example
                is read once per epoch but neighbouring epochs overlap and the
                order is not reproducible.
            include_ids (bool, default False): yield `(images, labels, ids)`,
                ids a `tf.string` `[batch]` of poster ids.
            decode_strategy ("unbatch" or "map_fn", default "unbatch"): decode
                each example in a parallel map between parse and batch, or
                decode a whole parsed batch with `tf.map_fn`. Kept for
                `python -m tfpipe.bench`, which compares the two.

    Returns:
        A `tf.data.Dataset` of `(images, labels)` or `(images, labels, ids)`.

    Raises:
        schema.SchemaError: when `metadata.json` is missing, malformed or of an
            unknown schema version, or lacks `split`.
        FileNotFoundError: when the split has no shards or a shard is missing.
        ValueError, TypeError: on an invalid option.
    """
    data_dir = str(data_dir)
    config = _resolve_options(options, training=training)
    shards.register_file_system(data_dir)
    metadata = schema.read_metadata(data_dir)
    shard_list = shards.list_shards(data_dir, metadata, split)
    num_labels = len(metadata["labels"])

    num_pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    batch = input_context.get_per_replica_batch_size(batch_size) if input_context else batch_size
    if batch <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")

    # Static partition of the shards: a pipeline reads its own files every epoch.
    shard_list, by_file = shards.partition_shards(shard_list, pipeline_id, num_pipelines)

    seed = config.seed if config.seed is not None else random.SystemRandom().randrange(2**31)
    logging.info(
        "build_dataset(%s, %r): pipeline %d of %d, %d shards, sharded by %s, batch %d "
        "(global %d), image %s, training=%s, epochs from %d: %s, skip %d, seed %s",
        data_dir, split, pipeline_id, num_pipelines, len(shard_list),
        "file" if by_file else "example", batch, batch_size, tuple(image_size), training,
        config.start_epoch, config.num_epochs if config.num_epochs is not None else "forever",
        config.skip_examples, config.seed,
    )

    stream = _EpochStream(
        shard_list=shard_list,
        compression=metadata["compression"],
        config=config,
        training=training,
        seed=seed,
        pipeline_id=pipeline_id,
        num_pipelines=num_pipelines if not by_file else 1,
    )
    spec = schema.feature_spec(num_labels)
    augment_key = tf.constant([seed, 0x5EED], tf.int64) if config.augment else None
    decoder = _Decoder(image_size, config.resize_method, augment_key)
    if config.cache_file:
        # The name carries what the cached pixels depend on, so other settings never reuse it.
        height, width = (int(side) for side in image_size)
        cache_path = (f"{config.cache_file}.{split}.{height}x{width}.{config.resize_method}"
                      f".pipeline-{pipeline_id}-of-{num_pipelines}")
        dataset = _cached_batches(stream, spec, decoder, config, batch, cache_path)
    else:
        dataset = _decoded_batches(stream.all_epochs(), spec, decoder, config, batch)

    # Multi-hot labels become float32, the dtype of the sigmoid outputs they are compared with.
    if config.include_ids:
        dataset = dataset.map(lambda images, labels, ids: (images, tf.cast(labels, tf.float32), ids))
    else:
        dataset = dataset.map(lambda images, labels, ids: (images, tf.cast(labels, tf.float32)))

    # Keep batches ready while the model runs; AUTOTUNE sizes the buffer.
    dataset = dataset.prefetch(AUTOTUNE)
    dataset = dataset.with_options(_tf_data_options(config, training))

    if config.data_service_address:
        dataset = _distribute_to_service(dataset, config.data_service_address)
    return dataset


def _resolve_options(options: dict, *, training: bool) -> DatasetOptions:
    """Fill in the training-dependent defaults and check every option."""
    known = {field.name for field in dataclasses.fields(DatasetOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"Unknown build_dataset options {unknown}; valid ones: {sorted(known)}.")
    config = DatasetOptions(**options)

    if config.num_epochs is _UNSET:
        config.num_epochs = None if training else 1
    if config.augment is None:
        config.augment = training
    if config.drop_remainder is None:
        config.drop_remainder = training

    if config.augment and not training:
        raise ValueError("augment=True needs training=True; evaluation images are never augmented.")
    if config.num_epochs is not None and config.num_epochs < 1:
        raise ValueError(f"num_epochs must be None or at least 1, got {config.num_epochs}.")
    if config.start_epoch < 0 or config.skip_examples < 0:
        raise ValueError(
            f"start_epoch and skip_examples must be >= 0, got {config.start_epoch} and "
            f"{config.skip_examples}."
        )
    if config.shuffle_buffer < 1:
        raise ValueError(f"shuffle_buffer must be at least 1, got {config.shuffle_buffer}.")
    if config.resize_method not in preprocess.RESIZE_METHODS:
        raise ValueError(
            f"resize_method must be one of {preprocess.RESIZE_METHODS}, got "
            f"{config.resize_method!r}."
        )
    if config.decode_strategy not in DECODE_STRATEGIES:
        raise ValueError(
            f"decode_strategy must be one of {DECODE_STRATEGIES}, got {config.decode_strategy!r}."
        )
    return config


def _tf_data_options(config: DatasetOptions, training: bool) -> tf.data.Options:
    """Return the tf.data options, each set on purpose."""
    options = tf.data.Options()
    # Reproducible order needs determinism; without a seed, training takes whichever
    # element is ready first, which avoids waiting on a slow decode.
    options.deterministic = not (training and config.seed is None)
    options.autotune.enabled = True
    options.experimental_optimization.map_parallelization = True
    options.experimental_optimization.parallel_batch = True
    # build_dataset shards by input pipeline itself; tf.distribute must not shard again.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options


def _distribute_to_service(dataset: tf.data.Dataset, address: str) -> tf.data.Dataset:
    """Run `dataset` on the workers of the tf.data service dispatcher at `address`."""
    logging.info("Sending the input pipeline to the tf.data service at %s", address)
    # DYNAMIC: the dispatcher hands each epoch index (the source split) to one worker,
    # so no example is read twice in an epoch even with several workers.
    dataset = dataset.apply(
        tf.data.experimental.service.distribute(
            processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC,
            service=address,
        )
    )
    return dataset.prefetch(AUTOTUNE)


def _seeded_shuffle(dataset: tf.data.Dataset, buffer_size: int, seed: tf.Tensor):
    """Shuffle `dataset` in an order that depends on `seed` alone.

    `Dataset.shuffle` pairs its seed with TensorFlow's global seed when one is
    set (`tf.random.set_seed`, `keras.utils.set_random_seed`), which would make
    the order depend on the caller. Called while tf.data traces an epoch
    function, this clears the global seed of that function's graph only.
    """
    graph = tf.compat.v1.get_default_graph()
    saved_seed = graph.seed
    graph.seed = None
    try:
        return dataset.shuffle(buffer_size, seed=seed)
    finally:
        graph.seed = saved_seed


class _Decoder:
    """Decode (and, when training with augmentation, augment) one example at a time.

    Augmentation seeds come from the example's position in the stream,
    `epoch * 2**32 + index within the epoch`, so they too depend only on
    `(seed, epoch, pipeline id)` and survive a resume with `skip_examples`.
    """

    def __init__(self, image_size, resize_method: str, augment_key: Optional[tf.Tensor]):
        self.image_size = image_size
        self.resize_method = resize_method
        self.augment_key = augment_key

    def _seed(self, position: tf.Tensor) -> tf.Tensor:
        return tf.random.experimental.stateless_fold_in(self.augment_key, position)

    def decode(self, position: tf.Tensor, encoded: tf.Tensor) -> tf.Tensor:
        """Return float32 `[height, width, 3]` from the JPEG bytes of one example."""
        if self.augment_key is None:
            return preprocess.decode_and_resize(encoded, self.image_size, self.resize_method)
        return preprocess.decode_and_augment(
            encoded, self.image_size, self.resize_method, self._seed(position)
        )

    def augment_decoded(self, position: tf.Tensor, image: tf.Tensor) -> tf.Tensor:
        """Return `image` augmented as `decode` would, for images read from a cache."""
        if self.augment_key is None:
            return image
        return preprocess.augment_image(image, self._seed(position))


class _EpochStream:
    """The serialized records of one input pipeline, epoch by epoch.

    The order of epoch `e` is a pure function of `(seed, e, pipeline_id)`:
    the shard order comes from a stateless shuffle and the example shuffle
    from a seed derived statelessly from the same triple.
    """

    def __init__(self, *, shard_list, compression, config, training, seed, pipeline_id,
                 num_pipelines):
        self.paths = tf.constant([s.path for s in shard_list])
        self.sizes = tf.constant([s.size for s in shard_list], tf.int64)
        self.compression = compression
        self.config = config
        self.shuffle = training
        self.seed = seed
        self.pipeline_id = pipeline_id
        # More than 1 only when pipelines share files and split them by example.
        self.num_pipelines = num_pipelines
        self.cycle_length = config.cycle_length or min(len(shard_list), 8)

    def _epoch_key(self, epoch: tf.Tensor) -> tf.Tensor:
        key = tf.constant([self.seed, self.pipeline_id], tf.int64)
        return tf.cast(tf.random.experimental.stateless_fold_in(key, epoch), tf.int64)

    def shuffle_seed(self, epoch: tf.Tensor) -> tf.Tensor:
        """Return the int64 seed of the example shuffle of `epoch`."""
        key = tf.random.experimental.stateless_fold_in(self._epoch_key(epoch), 1)
        return tf.random.stateless_uniform([], seed=key, minval=None, maxval=None, dtype=tf.int64)

    def records(self, epoch: tf.Tensor, shuffle: bool = True) -> tf.data.Dataset:
        """Return the serialized records of `epoch`, shuffled when training and `shuffle`."""
        epoch = tf.cast(epoch, tf.int64)
        shuffle = shuffle and self.shuffle
        paths, sizes = self.paths, self.sizes

        # Shuffle the shard order per epoch, so interleave mixes other shards each time.
        # Pipelines that split by example must agree on one order, so they keep it.
        if shuffle and self.num_pipelines == 1:
            order = tf.random.experimental.stateless_shuffle(
                tf.range(tf.size(paths)), seed=self._epoch_key(epoch)
            )
            paths, sizes = tf.gather(paths, order), tf.gather(sizes, order)

        # Read several shards at once: hides file latency (remote storage) and mixes
        # examples across shards before the shuffle buffer.
        files = tf.data.Dataset.from_tensor_slices((paths, sizes))
        records = files.interleave(
            lambda path, size: shards.read_shard(
                path, size, compression=self.compression, ignore_errors=self.config.ignore_errors
            ),
            cycle_length=self.cycle_length,
            block_length=1,
            num_parallel_calls=AUTOTUNE,
            # Splitting by example needs the same record order in every pipeline.
            deterministic=True if self.num_pipelines > 1 else None,
        )

        # Fewer shards than pipelines: each pipeline keeps every n-th record.
        if self.num_pipelines > 1:
            records = records.shard(self.num_pipelines, self.pipeline_id)

        # Shuffle examples within the epoch, before repeating, so epochs stay separate.
        if shuffle:
            records = _seeded_shuffle(records, self.config.shuffle_buffer, self.shuffle_seed(epoch))
        return records

    def epochs(self) -> tf.data.Dataset:
        """Return the epoch indices to yield: `start_epoch` on, `num_epochs` of them."""
        start = self.config.start_epoch
        if self.config.num_epochs is None:
            return tf.data.Dataset.range(start, tf.int64.max)
        return tf.data.Dataset.range(start, start + self.config.num_epochs)

    def all_epochs(self) -> tf.data.Dataset:
        """Return (position, record) pairs of every epoch, minus `skip_examples` of the first."""
        start = self.config.start_epoch
        skip = self.config.skip_examples

        def one_epoch(epoch):
            # Positions number the examples of the epoch before any are skipped.
            records = self.records(epoch).enumerate(start=epoch * _EPOCH_POSITIONS)
            # Skipping serialized records costs no parse or decode.
            return records.skip(tf.where(epoch == start, tf.constant(skip, tf.int64), 0))

        return self.epochs().flat_map(one_epoch)


def _parse(positions: tf.Tensor, serialized: tf.Tensor, spec: dict):
    """Parse a `[n]` batch of serialized Examples into (positions, encoded, multi_hot, ids)."""
    features = tf.io.parse_example(serialized, spec)
    return (
        positions,
        features[schema.IMAGE_ENCODED_KEY],
        features[schema.LABEL_MULTI_HOT_KEY],
        features[schema.IMAGE_ID_KEY],
    )


def _decoded_batches(records, spec, decoder: _Decoder, config, batch) -> tf.data.Dataset:
    """Turn (position, record) pairs into batches of (images, multi_hot int64, ids)."""
    if config.decode_strategy == "map_fn":
        # Batch first, so one parse_example call and one map_fn cover the whole batch.
        batches = records.batch(batch, drop_remainder=config.drop_remainder)
        batches = batches.map(lambda p, r: _parse(p, r, spec), num_parallel_calls=AUTOTUNE)
        return batches.map(
            lambda positions, encoded, labels, ids: (
                tf.map_fn(lambda pair: decoder.decode(*pair), (positions, encoded),
                          fn_output_signature=tf.float32, parallel_iterations=16),
                labels,
                ids,
            ),
            num_parallel_calls=AUTOTUNE,
        )

    # Batched parsing is cheaper per example than parse_single_example.
    parsed = records.batch(_PARSE_BATCH).map(
        lambda p, r: _parse(p, r, spec), num_parallel_calls=AUTOTUNE
    )

    # Decode examples one by one across all cores; JPEG decode is the dominant cost.
    decoded = _decode_examples(parsed.unbatch(), decoder.decode, config.ignore_errors)
    return decoded.batch(batch, drop_remainder=config.drop_remainder)


def _decode_examples(examples, decode, ignore_errors: bool) -> tf.data.Dataset:
    """Map `decode(position, encoded)` over (position, encoded, labels, ids) in parallel.

    Returns (image, labels, ids) elements. With `ignore_errors`, examples
    whose decode fails are dropped and a warning gives the running count of
    dropped examples. An example that fails after the last good one of a
    finite stream is dropped without a warning, because the count is only
    updated when the next good one arrives.
    """
    if not ignore_errors:
        return examples.map(
            lambda position, encoded, labels, ids: (decode(position, encoded), labels, ids),
            num_parallel_calls=AUTOTUNE,
        )

    # Index before the decode; a gap in the indices after ignore_errors is a dropped example.
    indexed = examples.enumerate().map(
        lambda index, example: (index, decode(example[0], example[1]), example[2], example[3]),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    survivors = indexed.ignore_errors()

    def count_dropped(state, element):
        expected_index, dropped = state
        index, images, labels, ids = element
        gap = index - expected_index
        dropped = dropped + gap
        warning = tf.cond(
            gap > 0,
            lambda: _warn_dropped(gap, dropped, ids),
            lambda: tf.constant(True),
        )
        with tf.control_dependencies([warning]):
            next_index = tf.identity(index + 1)
        return (next_index, dropped), (images, labels, ids)

    zero = tf.constant(0, tf.int64)
    return survivors.scan((zero, zero), count_dropped)


def _warn_dropped(gap: tf.Tensor, dropped: tf.Tensor, next_id: tf.Tensor) -> tf.Tensor:
    """Log how many examples failed to decode; return True once it is logged."""
    warning = tf.print(
        "ignore_errors: dropped", gap, "example(s) that failed to decode, just before poster",
        next_id, "(", dropped, "in total so far).", output_stream=logging.warning,
    )
    with tf.control_dependencies([warning]):
        return tf.constant(True)


def _cached_batches(stream, spec, decoder: _Decoder, config, batch, cache_path):
    """Decode every example once into a cache file, then shuffle and batch per epoch."""
    logging.info("Caching decoded examples in %s", cache_path)
    plain = lambda position, encoded: preprocess.decode_and_resize(  # noqa: E731
        encoded, decoder.image_size, decoder.resize_method
    )

    # The cache is written in one fixed order, so only the example shuffle varies by epoch.
    fixed_order = stream.records(tf.constant(0, tf.int64), shuffle=False).enumerate()
    parsed = fixed_order.batch(_PARSE_BATCH).map(
        lambda p, r: _parse(p, r, spec), num_parallel_calls=AUTOTUNE
    )
    cached = _decode_examples(parsed.unbatch(), plain, config.ignore_errors).cache(cache_path)

    start = config.start_epoch
    skip = config.skip_examples

    def one_epoch(epoch):
        examples = cached
        if stream.shuffle:
            examples = _seeded_shuffle(examples, config.shuffle_buffer, stream.shuffle_seed(epoch))
        examples = examples.enumerate(start=epoch * _EPOCH_POSITIONS)
        return examples.skip(tf.where(epoch == start, tf.constant(skip, tf.int64), 0))

    examples = stream.epochs().flat_map(one_epoch)
    examples = examples.map(
        lambda position, example: (
            decoder.augment_decoded(position, example[0]), example[1], example[2]
        ),
        num_parallel_calls=AUTOTUNE,
    )
    return examples.batch(batch, drop_remainder=config.drop_remainder)

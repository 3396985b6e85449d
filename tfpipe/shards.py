"""List the shards of a split and read their records, naming any shard that is corrupt.

`tf.data.TFRecordDataset` reports a corrupt or truncated record as
`DataLossError: corrupted record at 11710`, without the file name. Each shard
here is therefore read through `read_shard`, which compares the bytes read
with the file size. When the two differ, it fails with an error that names the
shard, or with `ignore_errors` logs the shard and skips the rest of it.
"""

import dataclasses
import os
from typing import Tuple

import tensorflow as tf
from absl import logging

from tfpipe import schema

# A TFRecord frames each record as: uint64 length, uint32 CRC of the length, the
# data, uint32 CRC of the data.
TFRECORD_FRAMING_BYTES = 16

# Records per block of the size check in read_shard.
_CHECK_BLOCK = 64

# Schemes whose file systems tensorflow-io registers on import.
_TENSORFLOW_IO_SCHEMES = ("s3", "az", "hdfs", "http", "https")


@dataclasses.dataclass(frozen=True)
class Shard:
    """One shard file: its full path and its size in bytes (-1 when unknown)."""

    path: str
    size: int


def register_file_system(path: str) -> None:
    """Import tensorflow-io when `path` uses a scheme that only it provides (s3://, az://)."""
    scheme = path.split("://", 1)[0] if "://" in path else ""
    if scheme in _TENSORFLOW_IO_SCHEMES and scheme not in tf.io.gfile.get_registered_schemes():
        import tensorflow_io  # noqa: F401  (registers the file systems as a side effect)


def list_shards(data_dir: str, metadata: dict, split: str) -> list:
    """Return the `Shard`s of `split` in `metadata` order, with their sizes.

    Raises:
        FileNotFoundError: when the split lists no shard, or a listed shard is missing.
    """
    paths = schema.shard_paths(data_dir, metadata, split)
    if not paths:
        raise FileNotFoundError(
            f"metadata.json in {data_dir} lists no shards for split {split!r}; rerun the "
            "Beam job or pick a split that has examples."
        )

    # Sizes let read_shard tell a shard read to its end from one cut short by an error.
    # GZIP shards hold compressed bytes, so their size cannot be checked that way.
    shards = []
    for path in paths:
        try:
            size = tf.io.gfile.stat(path).length
        except tf.errors.NotFoundError as e:
            raise FileNotFoundError(
                f"Shard {path} listed in {data_dir}/metadata.json was not found; "
                "rerun the Beam job to rewrite the output folder."
            ) from e
        if metadata["compression"] == schema.COMPRESSION_GZIP:
            size = -1
        shards.append(Shard(path, int(size)))
    logging.info("Split %r: %d shards, %d bytes, first %s", split, len(shards),
                 sum(s.size for s in shards), shards[0].path)
    return shards


def partition_shards(shard_list: list, pipeline_id: int, num_pipelines: int) -> Tuple[list, bool]:
    """Return the shards input pipeline `pipeline_id` reads, and whether it owns them whole.

    With at least as many shards as pipelines, each pipeline reads whole shards
    `pipeline_id::num_pipelines` (by file). Otherwise every pipeline reads all
    shards and keeps every `num_pipelines`-th record (by example).
    """
    by_file = len(shard_list) >= num_pipelines
    if by_file:
        return shard_list[pipeline_id::num_pipelines], True
    return shard_list, False


def read_shard(
    path: tf.Tensor, size: tf.Tensor, *, compression: str, ignore_errors: bool
) -> tf.data.Dataset:
    """Return a dataset of the serialized records of one shard.

    Args:
        path: scalar `tf.string`, the shard path.
        size: scalar `tf.int64`, the file size in bytes, or -1 to skip the check
            (compressed shards).
        compression: `schema.COMPRESSION_NONE` or `schema.COMPRESSION_GZIP`.
        ignore_errors: when False, a shard that cannot be read to its end
            raises `tf.errors.InvalidArgumentError` naming the shard after
            its last good record. When True, a warning names the shard and
            the records after the damage are skipped (a TFRecord file cannot
            be resynchronised after a bad length or CRC).

    Returns:
        A dataset of scalar `tf.string` records.
    """
    size = tf.cast(size, tf.int64)
    records = tf.data.TFRecordDataset(path, compression_type=compression, buffer_size=1 << 20)
    # NOTE: GZIP shards skip the size check, so their read errors surface as
    # tf.data's own DataLossError, which does not name the file.
    if compression == schema.COMPRESSION_GZIP:
        return records.ignore_errors(log_warning=True) if ignore_errors else records

    # The read error is swallowed here and reported below with the shard path instead.
    records = records.ignore_errors()

    # The check runs per block of records, which keeps its cost per record small.
    # A final empty block, marked as the end, compares the bytes read with the file size.
    blocks = records.batch(_CHECK_BLOCK).map(lambda block: (block, False))
    end_marker = tf.data.Dataset.from_tensors((tf.constant([], tf.string), True))
    marked = blocks.concatenate(end_marker)

    def count_bytes(bytes_read, element):
        block, is_end = element
        block_bytes = tf.reduce_sum(tf.cast(tf.strings.length(block), tf.int64))
        bytes_read += block_bytes + TFRECORD_FRAMING_BYTES * tf.size(block, tf.int64)
        complete = tf.logical_or(tf.logical_not(is_end), bytes_read == size)
        if ignore_errors:
            report = lambda: _warn_truncated(path, bytes_read, size)  # noqa: E731
        else:
            report = lambda: _raise_truncated(path, bytes_read, size)  # noqa: E731
        check = tf.cond(complete, lambda: tf.constant(True), report)
        with tf.control_dependencies([check]):
            bytes_read = tf.identity(bytes_read)
        return bytes_read, block

    checked = marked.scan(tf.constant(0, tf.int64), count_bytes)
    return checked.unbatch()


def _raise_truncated(path: tf.Tensor, bytes_read: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """Fail with an error naming the damaged shard."""
    message = tf.strings.format(
        "Shard {} is corrupt or truncated: its records end at byte {} of {}. Rewrite "
        "the shard with the Beam job, or pass ignore_errors=True to skip the rest of it.",
        (path, bytes_read, size),
    )
    with tf.control_dependencies([tf.debugging.Assert(False, [message])]):
        return tf.constant(False)


def _warn_truncated(path: tf.Tensor, bytes_read: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """Log a warning naming the damaged shard; return False once it is logged."""
    warning = tf.print(
        "ignore_errors: shard", path, "is corrupt or truncated after byte", bytes_read, "of",
        size, "so its remaining records are skipped.", output_stream=logging.warning,
    )
    with tf.control_dependencies([warning]):
        return tf.constant(False)

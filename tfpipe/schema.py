"""The poster record format: the single owner of Example keys and metadata.

The Beam writer (`beam_jobs`) and the tf.data reader (`tfpipe`) both import
this module, so a change to the format is a change here and nowhere else.

One `tf.train.Example` per poster:

| key                     | dtype  | shape          | content                               |
|-------------------------|--------|----------------|---------------------------------------|
| `image/encoded`         | bytes  | []             | JPEG bytes, RGB (original when valid) |
| `image/format`          | bytes  | []             | always `jpeg`                         |
| `image/height`          | int64  | []             | height of the encoded image, pixels   |
| `image/width`           | int64  | []             | width of the encoded image, pixels    |
| `image/id`              | bytes  | []             | the poster id (IMDB title id)         |
| `image/conversion`      | bytes  | []             | what the writer changed, `` if none   |
| `image/class/multi_hot` | int64  | [num_labels]   | 0/1 per genre, in `labels` order      |

`image/conversion` is a `+`-joined list of steps such as `png_to_jpeg`,
`cmyk_to_rgb` or `resized_max_side_256`, so a reader can tell a re-encoded
poster from an original one.

Next to the shards, `metadata.json` describes the whole output (see
`read_metadata`). Its `schema_version` is checked by every reader.
"""

import json
import os
from typing import Any, Mapping, Sequence

SCHEMA_VERSION = 1

IMAGE_ENCODED_KEY = "image/encoded"
IMAGE_FORMAT_KEY = "image/format"
IMAGE_HEIGHT_KEY = "image/height"
IMAGE_WIDTH_KEY = "image/width"
IMAGE_ID_KEY = "image/id"
IMAGE_CONVERSION_KEY = "image/conversion"
LABEL_MULTI_HOT_KEY = "image/class/multi_hot"

IMAGE_FORMAT_JPEG = b"jpeg"

METADATA_FILENAME = "metadata.json"
REJECTED_DIRNAME = "rejected"
SPLITS = ("train", "validation", "test")

# Compression values as `tf.data.TFRecordDataset` and `tf.io.TFRecordOptions`
# spell them; shards written with GZIP carry the `.gz` suffix.
COMPRESSION_NONE = ""
COMPRESSION_GZIP = "GZIP"


def shard_filename(split: str, shard_index: int, num_shards: int, compression: str = "") -> str:
    """Return the file name of one shard, for example `train.tfrecord-00003-of-00016`.

    Args:
        split: one of `SPLITS`.
        shard_index: 0-based index of the shard.
        num_shards: total number of shards of that split.
        compression: `COMPRESSION_NONE` or `COMPRESSION_GZIP` (adds `.gz`).
    """
    suffix = ".gz" if compression == COMPRESSION_GZIP else ""
    return f"{split}.tfrecord-{shard_index:05d}-of-{num_shards:05d}{suffix}"


def shard_prefix(split: str) -> str:
    """Return the prefix that Beam's `WriteToTFRecord` expands into shard names."""
    return f"{split}.tfrecord"


def make_example(
    *,
    encoded: bytes,
    height: int,
    width: int,
    poster_id: str,
    multi_hot: Sequence[int],
    conversion: str = "",
):
    """Build the `tf.train.Example` of one poster.

    Args:
        encoded: JPEG bytes of a 3-channel RGB image.
        height: image height in pixels.
        width: image width in pixels.
        poster_id: the poster id, stored UTF-8 encoded.
        multi_hot: one 0/1 int per label, in the order of `metadata.json` `labels`.
        conversion: `+`-joined conversion steps, empty when the bytes are original.

    Returns:
        A `tf.train.Example` proto.
    """
    # Imported here so that Beam can pickle the job without TensorFlow loaded.
    import tensorflow as tf

    def bytes_feature(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def int64_feature(values: Sequence[int]) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))

    features = {
        IMAGE_ENCODED_KEY: bytes_feature(encoded),
        IMAGE_FORMAT_KEY: bytes_feature(IMAGE_FORMAT_JPEG),
        IMAGE_HEIGHT_KEY: int64_feature([height]),
        IMAGE_WIDTH_KEY: int64_feature([width]),
        IMAGE_ID_KEY: bytes_feature(poster_id.encode("utf-8")),
        IMAGE_CONVERSION_KEY: bytes_feature(conversion.encode("utf-8")),
        LABEL_MULTI_HOT_KEY: int64_feature([int(v) for v in multi_hot]),
    }
    return tf.train.Example(features=tf.train.Features(feature=features))


def feature_spec(num_labels: int) -> dict:
    """Return the parse spec for `tf.io.parse_example` / `parse_single_example`.

    Args:
        num_labels: length of the multi-hot vector (25 for the poster dataset).

    Returns:
        A dict from key to `tf.io.FixedLenFeature`; parsing yields scalar
        `tf.string`/`tf.int64` tensors and an int64 `[num_labels]` label vector
        (with a leading batch axis under `parse_example`).
    """
    import tensorflow as tf

    return {
        IMAGE_ENCODED_KEY: tf.io.FixedLenFeature([], tf.string),
        IMAGE_FORMAT_KEY: tf.io.FixedLenFeature([], tf.string),
        IMAGE_HEIGHT_KEY: tf.io.FixedLenFeature([], tf.int64),
        IMAGE_WIDTH_KEY: tf.io.FixedLenFeature([], tf.int64),
        IMAGE_ID_KEY: tf.io.FixedLenFeature([], tf.string),
        IMAGE_CONVERSION_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
        LABEL_MULTI_HOT_KEY: tf.io.FixedLenFeature([num_labels], tf.int64),
    }


class SchemaError(ValueError):
    """Raised when `metadata.json` is missing, malformed or of an unknown version."""


def read_metadata(data_dir: str) -> dict:
    """Read and check `DATA_DIR/metadata.json` as the Beam job writes it.

    The keys a reader relies on:
        schema_version: int, equal to `SCHEMA_VERSION`.
        labels: list of label names, the order of `image/class/multi_hot`.
        compression: `COMPRESSION_NONE` or `COMPRESSION_GZIP`.
        splits: dict from split name to a dict with `num_examples` (int),
            `shards` (file names relative to `data_dir`), `label_counts`
            (positives per label, in `labels` order) and `cooccurrence`
            (`[num_labels][num_labels]` counts).
        num_input_rows, rejected (count per reason), image_stats, flags.

    Args:
        data_dir: local or remote (`gs://`, `s3://`) folder of the shards.

    Returns:
        The parsed metadata dict.

    Raises:
        SchemaError: when the file is missing, is not JSON, lacks a key above,
            or has a `schema_version` this code does not read.
    """
    import tensorflow as tf

    # os.path.join keeps `gs://bucket/dir` intact on POSIX, so it serves remote paths too.
    path = os.path.join(data_dir, METADATA_FILENAME)
    if not tf.io.gfile.exists(path):
        raise SchemaError(
            f"{path} not found. Point --data_dir at the output folder of "
            "`python -m beam_jobs.posters_to_tfrecords`."
        )
    with tf.io.gfile.GFile(path, "r") as f:
        text = f.read()
    try:
        metadata = json.loads(text)
    except json.JSONDecodeError as e:
        raise SchemaError(f"{path} is not valid JSON ({e}); rerun the Beam job to rewrite it.") from e

    check_metadata(metadata, source=path)
    return metadata


def check_metadata(metadata: Mapping[str, Any], source: str = METADATA_FILENAME) -> None:
    """Raise `SchemaError` unless `metadata` has the version and keys readers use."""
    version = metadata.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaError(
            f"{source} has schema_version {version!r}, but this code reads version "
            f"{SCHEMA_VERSION}. Rewrite the shards with this version of the Beam job."
        )
    for key in ("labels", "splits", "compression"):
        if key not in metadata:
            raise SchemaError(f"{source} is missing the key {key!r}; rerun the Beam job.")
    for split, info in metadata["splits"].items():
        for key in ("num_examples", "shards"):
            if key not in info:
                raise SchemaError(f"{source}: split {split!r} is missing the key {key!r}.")


def shard_paths(data_dir: str, metadata: Mapping[str, Any], split: str) -> list:
    """Return the full paths of the shards of `split`, in shard order.

    Raises:
        SchemaError: when `split` is not in the metadata.
    """
    splits = metadata["splits"]
    if split not in splits:
        raise SchemaError(f"Split {split!r} not found; the metadata has {sorted(splits)}.")
    return [os.path.join(data_dir, name) for name in splits[split]["shards"]]


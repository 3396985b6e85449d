"""Write small poster shards and their `metadata.json` for tests.

Tests of any stage that read shards can build them here instead of running
the Beam job. Everything goes through `tfpipe.schema`, so the shards have the
same keys and `metadata.json` the same shape as the Beam job's output.

    posters = synthetic_posters(12)                      # or real_posters(dataset_dir, 100)
    metadata = write_shards(tmp_path, {"train": posters[:8], "validation": posters[8:]})
    dataset = tfpipe.build_dataset(tmp_path, "train", batch_size=4, image_size=(16, 16),
                                   training=False)
"""

import dataclasses
import io
import os
from typing import Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd
from PIL import Image

from tfpipe import schema

# The 25 genre columns of the poster dataset's train.csv, in file order.
GENRES = (
    "Action", "Adventure", "Animation", "Biography", "Comedy", "Crime", "Documentary",
    "Drama", "Family", "Fantasy", "History", "Horror", "Music", "Musical", "Mystery", "N/A",
    "News", "Reality-TV", "Romance", "Sci-Fi", "Short", "Sport", "Thriller", "War", "Western",
)


@dataclasses.dataclass(frozen=True)
class Poster:
    """One poster as a shard stores it.

    Attributes:
        poster_id: the id written to `image/id`.
        encoded: JPEG bytes of an RGB image.
        height: image height in pixels.
        width: image width in pixels.
        multi_hot: one 0/1 int per label, in `labels` order.
        conversion: the `image/conversion` steps, empty when `encoded` is the original file.
    """

    poster_id: str
    encoded: bytes
    height: int
    width: int
    multi_hot: tuple
    conversion: str = ""


def encode_jpeg(pixels: np.ndarray, quality: int = 95) -> bytes:
    """Return the JPEG bytes of a uint8 `[height, width, 3]` RGB array."""
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def synthetic_posters(
    count: int,
    *,
    height: int = 24,
    width: int = 16,
    num_labels: int = len(GENRES),
    seed: int = 0,
) -> list:
    """Make `count` posters of random smooth colours with random multi-hot labels.

    Poster `i` has the id `synthetic-{i:05d}`, a `height x width` RGB JPEG and
    one to three positive labels.
    """
    rng = np.random.default_rng(seed)
    posters = []
    for index in range(count):
        # A colour gradient compresses well and survives JPEG without artefacts worth noting.
        corner_colours = rng.integers(0, 256, size=(2, 3))
        ramp = np.linspace(0.0, 1.0, height)[:, None, None]
        column = corner_colours[0] * (1.0 - ramp) + corner_colours[1] * ramp
        pixels = np.broadcast_to(column, (height, width, 3)).astype(np.uint8)

        multi_hot = np.zeros(num_labels, dtype=np.int64)
        positives = rng.choice(num_labels, size=rng.integers(1, 4), replace=False)
        multi_hot[positives] = 1

        posters.append(
            Poster(
                poster_id=f"synthetic-{index:05d}",
                encoded=encode_jpeg(np.ascontiguousarray(pixels)),
                height=height,
                width=width,
                multi_hot=tuple(int(v) for v in multi_hot),
            )
        )
    return posters


def real_posters(dataset_dir, count: int, *, max_side: Optional[int] = None, start: int = 0) -> list:
    """Read `count` posters of the real dataset, in `train.csv` row order.

    Rows whose id was already seen (the CSV repeats a few ids) and rows
    without an image file are passed over, so the result has unique ids.

    Args:
        dataset_dir: folder with `train.csv` and `Images/<Id>.jpg`.
        count: number of posters to return; fewer only when the CSV runs out.
        max_side: when set, shrink each poster so its longer side is at most
            this many pixels and re-encode it (quality 90), marking the
            conversion `resized_max_side_<max_side>`, as the Beam job's
            `--max_side` does.
        start: number of usable rows to pass over first.

    Returns:
        A list of `Poster`, labels in `GENRES` order.
    """
    frame = pd.read_csv(os.path.join(dataset_dir, "train.csv"))
    frame = frame.drop_duplicates(subset="Id", keep="first")
    ids = frame["Id"].tolist()
    label_rows = frame[list(GENRES)].to_numpy(dtype=np.int64)
    posters = []
    usable = 0
    for poster_id, label_row in zip(ids, label_rows):
        path = os.path.join(dataset_dir, "Images", f"{poster_id}.jpg")
        if not os.path.isfile(path):
            continue
        usable += 1
        if usable <= start:
            continue
        with open(path, "rb") as f:
            encoded = f.read()

        image = Image.open(io.BytesIO(encoded))
        width, height = image.size
        conversion = ""
        if max_side is not None and max(width, height) > max_side:
            image = image.convert("RGB")
            image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
            width, height = image.size
            encoded = encode_jpeg(np.asarray(image), quality=90)
            conversion = f"resized_max_side_{max_side}"

        multi_hot = tuple(int(v) for v in label_row)
        posters.append(Poster(poster_id, encoded, height, width, multi_hot, conversion))
        if len(posters) == count:
            break
    return posters


def write_shards(
    data_dir,
    split_posters: Mapping[str, Sequence[Poster]],
    *,
    labels: Sequence[str] = GENRES,
    num_shards: Union[int, Mapping[str, int]] = 2,
    compression: str = schema.COMPRESSION_NONE,
) -> dict:
    """Write each split's posters round-robin into shards, then `metadata.json`.

    Args:
        data_dir: output folder, created if missing.
        split_posters: split name (one of `schema.SPLITS`) to its posters, written in order;
            poster `i` goes to shard `i % num_shards`.
        labels: label names, the order of every poster's `multi_hot`.
        num_shards: shards per split, one int for all splits or a dict per split.
        compression: `schema.COMPRESSION_NONE` or `schema.COMPRESSION_GZIP`.

    Returns:
        The metadata dict written to `data_dir/metadata.json`.
    """
    import tensorflow as tf

    data_dir = os.fspath(data_dir)
    os.makedirs(data_dir, exist_ok=True)
    splits = {}
    for split, posters in split_posters.items():
        shard_count = num_shards[split] if isinstance(num_shards, Mapping) else num_shards
        names = [schema.shard_filename(split, i, shard_count, compression) for i in range(shard_count)]
        options = tf.io.TFRecordOptions(compression_type=compression)
        writers = [tf.io.TFRecordWriter(os.path.join(data_dir, n), options) for n in names]
        for index, poster in enumerate(posters):
            example = schema.make_example(
                encoded=poster.encoded,
                height=poster.height,
                width=poster.width,
                poster_id=poster.poster_id,
                multi_hot=poster.multi_hot,
                conversion=poster.conversion,
            )
            writers[index % shard_count].write(example.SerializeToString())
        for writer in writers:
            writer.close()

        label_matrix = np.array([p.multi_hot for p in posters], dtype=np.int64).reshape(
            len(posters), len(labels)
        )
        splits[split] = {
            "num_examples": len(posters),
            "shards": names,
            "label_counts": label_matrix.sum(axis=0).tolist(),
            "cooccurrence": (label_matrix.T @ label_matrix).tolist(),
        }

    metadata = {
        "schema_version": schema.SCHEMA_VERSION,
        "labels": list(labels),
        "compression": compression,
        "splits": splits,
        "num_input_rows": sum(s["num_examples"] for s in splits.values()),
        "rejected": {},
        "image_stats": {},
        "flags": {"written_by": "tests/shard_fixtures.py"},
    }
    write_metadata(data_dir, metadata)
    return metadata


def write_metadata(data_dir, metadata: Mapping) -> None:
    """Write `metadata` as `data_dir/metadata.json` (used to edit a written one in tests)."""
    import json

    with open(os.path.join(os.fspath(data_dir), schema.METADATA_FILENAME), "w") as f:
        json.dump(metadata, f, indent=2)

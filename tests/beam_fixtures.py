"""Helpers for the Beam job tests: tiny synthetic posters, CSV files, and reading shards back."""

import csv
import io
import pathlib
import struct
import zlib
from typing import Dict, List, Sequence

import numpy as np
from PIL import Image

GENRES = [
    "Action",
    "Adventure",
    "Animation",
    "Biography",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Family",
    "Fantasy",
    "History",
    "Horror",
    "Music",
    "Musical",
    "Mystery",
    "N/A",
    "News",
    "Reality-TV",
    "Romance",
    "Sci-Fi",
    "Short",
    "Sport",
    "Thriller",
    "War",
    "Western",
]
HEADER = ["Id", "Genre", *GENRES]


def image_bytes(
    mode: str = "RGB", size=(12, 16), image_format: str = "JPEG", seed: int = 0
) -> bytes:
    """Encode a small noise image of `mode` and `size` (width, height) as `image_format`."""
    rng = np.random.default_rng(seed)
    width, height = size
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")
    image = rgb.convert(mode) if mode != "RGB" else rgb
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def jpeg_with_exif_orientation(orientation: int, size=(12, 16)) -> bytes:
    """Encode an RGB JPEG of `size` (width, height) carrying an EXIF orientation tag."""
    image = Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8), "RGB")
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    return buffer.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """Return a small grayscale PNG whose header declares `width` x `height` pixels.

    The zero pixel data compresses to a few kilobytes per 100 megapixels, which is the shape of
    a decompression bomb.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return (
            struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def csv_row(poster_id: str, genres: Sequence[str], genre_string=None) -> List[str]:
    """Return the CSV fields of a poster with `genres` set in the one-hot columns."""
    if genre_string is None:
        genre_string = str(list(genres))
    return [poster_id, genre_string, *("1" if name in genres else "0" for name in GENRES)]


def write_csv(
    path: pathlib.Path, rows: Sequence[Sequence[str]], line_ending: str = "\n", bom: bool = False
):
    """Write `rows` under the standard header to `path`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=line_ending)
    writer.writerow(HEADER)
    writer.writerows(rows)
    text = ("\ufeff" if bom else "") + buffer.getvalue()
    path.write_bytes(text.encode("utf-8"))


def write_dataset(
    root: pathlib.Path, posters: Dict[str, bytes], rows: Sequence[Sequence[str]]
) -> pathlib.Path:
    """Create `root/train.csv` and `root/Images/<id>.jpg` from `posters`; returns `root`."""
    images = root / "Images"
    images.mkdir(parents=True, exist_ok=True)
    for poster_id, data in posters.items():
        (images / f"{poster_id}.jpg").write_bytes(data)
    write_csv(root / "train.csv", rows)
    return root


def read_examples(output_dir: pathlib.Path, metadata: dict) -> Dict[str, dict]:
    """Parse every Example of every split; returns id -> dict of numpy values plus `split`."""
    import tensorflow as tf

    from tfpipe import schema

    spec = schema.feature_spec(len(metadata["labels"]))
    examples = {}
    for split in schema.SPLITS:
        paths = schema.shard_paths(str(output_dir), metadata, split)
        dataset = tf.data.TFRecordDataset(paths, compression_type=metadata["compression"])
        for record in dataset:
            parsed = tf.io.parse_single_example(record, spec)
            values = {key: tensor.numpy() for key, tensor in parsed.items()}
            values["split"] = split
            examples[values[schema.IMAGE_ID_KEY].decode("utf-8")] = values
    return examples


def read_json_lines(directory: pathlib.Path) -> List[dict]:
    """Read every `*.jsonl` file under `directory` into one list."""
    import json

    items = []
    for path in sorted(directory.glob("*.jsonl")):
        items.extend(json.loads(line) for line in path.read_text().splitlines() if line)
    return items

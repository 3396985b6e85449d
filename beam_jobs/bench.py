"""Benchmark the poster job against a plain single-process `tf.io.TFRecordWriter` loop.

Run:

    python -m beam_jobs.bench --dataset_dir=DIR [--num_posters=1000]

All variants convert the same first `num_posters` CSV rows with the same per-poster work
(row checks, duplicate handling, `images.prepare_image` with its full decode, Example
serialization):

- `plain_loop`: one process, a for loop and one `tf.io.TFRecordWriter` per shard;
- `beam_1_worker`: the Beam job on the DirectRunner, `--direct_num_workers=1` (in memory);
- `beam_2_workers`: the same with `--direct_num_workers=2 --direct_running_mode=multi_processing`.

For each it prints images/s (wall clock), CPU ms per image (user + system time of this
process and of its finished child processes, so worker processes count) and the wall-clock
rate as a ratio to the plain loop. TensorFlow is imported before any timing starts; Beam
worker processes import it inside their timed run.
"""

import csv
import dataclasses
import os
import resource
import tempfile
import time
from typing import Callable, Dict, List

from absl import app, flags, logging

from beam_jobs import csv_rows, posters_to_tfrecords, records, splits, transforms
from tfpipe import schema

NUM_SHARDS = {"train": 16, "validation": 4, "test": 4}
DEFAULT_FRACTIONS = (0.75, 0.10, 0.15)


@dataclasses.dataclass(frozen=True)
class Measurement:
    """Wall-clock and CPU seconds of one variant, and the examples it wrote."""

    variant: str
    num_examples: int
    wall_s: float
    cpu_s: float

    @property
    def images_per_s(self) -> float:
        return self.num_examples / self.wall_s

    @property
    def cpu_ms_per_image(self) -> float:
        return 1000.0 * self.cpu_s / max(self.num_examples, 1)


def cpu_seconds() -> float:
    """Return user + system CPU seconds of this process and its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(variant: str, convert: Callable[[], int]) -> Measurement:
    """Run `convert` (returns the number of examples written) and time it."""
    logging.info("Benchmark: running %s", variant)
    wall_start, cpu_start = time.perf_counter(), cpu_seconds()
    num_examples = convert()
    measurement = Measurement(
        variant, num_examples, time.perf_counter() - wall_start, cpu_seconds() - cpu_start
    )
    logging.info(
        "Benchmark: %s wrote %d examples in %.2f s", variant, num_examples, measurement.wall_s
    )
    return measurement


def write_subset_csv(dataset_dir: str, num_posters: int, path: str) -> None:
    """Copy the header and the first `num_posters` data rows of `dataset_dir/train.csv`."""
    with open(os.path.join(dataset_dir, "train.csv"), newline="", encoding="utf-8-sig") as source:
        rows = list(zip(range(num_posters + 1), csv.reader(source)))
    with open(path, "w", newline="", encoding="utf-8") as target:
        csv.writer(target).writerows(row for _, row in rows)


def convert_with_plain_loop(csv_path: str, images_dir: str, output_dir: str) -> int:
    """Convert the CSV rows with a for loop and `tf.io.TFRecordWriter`; returns examples written."""
    import tensorflow as tf
    from tqdm import tqdm

    labels = csv_rows.read_header(csv_path)
    bounds = splits.split_bounds(DEFAULT_FRACTIONS)
    kept_rows: Dict[str, records.PosterRow] = {}
    conflicting = set()
    for row in csv_rows.iter_csv_rows(csv_path):
        if row is None:
            continue
        poster_row, rejection, _ = csv_rows.check_row(row, labels)
        if rejection is not None:
            continue
        earlier = kept_rows.get(poster_row.poster_id)
        if earlier is None:
            kept_rows[poster_row.poster_id] = poster_row
        elif earlier.multi_hot != poster_row.multi_hot:
            conflicting.add(poster_row.poster_id)

    writers = {
        split: [
            tf.io.TFRecordWriter(
                os.path.join(output_dir, schema.shard_filename(split, index, count))
            )
            for index in range(count)
        ]
        for split, count in NUM_SHARDS.items()
    }
    written = 0
    for poster_row in tqdm(kept_rows.values(), desc="plain loop", unit="poster"):
        if poster_row.poster_id in conflicting:
            continue
        path = os.path.join(images_dir, f"{poster_row.poster_id}.jpg")
        poster = transforms.load_poster(
            poster_row,
            path,
            max_pixels=posters_to_tfrecords.DEFAULT_MAX_PIXELS,
            max_side=0,
            jpeg_quality=95,
        )
        if isinstance(poster, records.Rejection):
            continue
        split_writers = writers[splits.split_of(poster.poster_id, bounds)]
        split_writers[written % len(split_writers)].write(poster.serialized_example)
        written += 1
    for split_writers in writers.values():
        for writer in split_writers:
            writer.close()
    return written


def convert_with_beam(csv_path: str, images_dir: str, output_dir: str, beam_args: List[str]) -> int:
    """Convert the CSV rows with the Beam job; returns examples written."""
    metadata = posters_to_tfrecords.run(
        [
            f"--csv_path={csv_path}",
            f"--images_dir={images_dir}",
            f"--output_dir={output_dir}",
            *beam_args,
        ]
    )
    return sum(info["num_examples"] for info in metadata["splits"].values())


def run_benchmark(dataset_dir: str, num_posters: int, work_dir: str) -> List[Measurement]:
    """Time the three variants on the first `num_posters` rows; returns their measurements."""
    import tensorflow as tf

    csv_path = os.path.join(work_dir, "train.csv")
    images_dir = os.path.join(dataset_dir, "Images")
    write_subset_csv(dataset_dir, num_posters, csv_path)

    # Read every image once so that no variant pays for a cold page cache, and decode one
    # so that TensorFlow's kernels are initialized before the plain loop is timed.
    last_image = b""
    for row in csv_rows.iter_csv_rows(csv_path):
        if row is not None:
            image_path = os.path.join(images_dir, f"{row.fields[0]}.jpg")
            if os.path.isfile(image_path):
                with open(image_path, "rb") as stream:
                    last_image = stream.read() or last_image
    if last_image:
        tf.io.decode_jpeg(last_image, channels=3)

    variants = [
        ("plain_loop", lambda out: convert_with_plain_loop(csv_path, images_dir, out)),
        (
            "beam_1_worker",
            lambda out: convert_with_beam(
                csv_path, images_dir, out, ["--runner=DirectRunner", "--direct_num_workers=1"]
            ),
        ),
        (
            "beam_2_workers",
            lambda out: convert_with_beam(
                csv_path,
                images_dir,
                out,
                [
                    "--runner=DirectRunner",
                    "--direct_num_workers=2",
                    "--direct_running_mode=multi_processing",
                ],
            ),
        ),
    ]
    measurements = []
    for variant, convert in variants:
        output_dir = os.path.join(work_dir, variant)
        os.makedirs(output_dir)
        measurements.append(measure(variant, lambda: convert(output_dir)))
    return measurements


def format_table(measurements: List[Measurement]) -> str:
    """Return the measurements as a text table with the rate ratio to the first row."""
    reference = measurements[0].images_per_s
    lines = [
        f"{'variant':16} {'images':>7} {'wall s':>8} {'images/s':>9} "
        f"{'CPU ms/image':>13} {'ratio':>6}"
    ]
    for m in measurements:
        lines.append(
            f"{m.variant:16} {m.num_examples:>7} {m.wall_s:>8.2f} {m.images_per_s:>9.1f} "
            f"{m.cpu_ms_per_image:>13.2f} {m.images_per_s / reference:>6.2f}"
        )
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    dataset_dir = flags.FLAGS.dataset_dir or os.environ.get("DATASET_DIR", "")
    if not dataset_dir:
        raise app.UsageError("Set --dataset_dir or DATASET_DIR.")
    with tempfile.TemporaryDirectory(prefix="beam_bench_") as work_dir:
        measurements = run_benchmark(dataset_dir, flags.FLAGS.num_posters, work_dir)
    print(format_table(measurements))


if __name__ == "__main__":
    flags.DEFINE_string(
        "dataset_dir", None, "Folder with train.csv and Images/. Default: $DATASET_DIR."
    )
    flags.DEFINE_integer("num_posters", 1000, "CSV rows to convert in each variant.", lower_bound=1)
    app.run(main)

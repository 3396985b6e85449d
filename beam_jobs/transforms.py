"""DoFns of the poster job: read CSV rows, check them, resolve duplicate ids, load images.

Each DoFn sends rows it cannot use to the `REJECTED` output as `records.Rejection` and repairs
to the `NOTES` output as `records.Note`, so that nothing is dropped without a record. All
counters live in the `METRICS_NAMESPACE` namespace.
"""

import json
import time
import uuid
from typing import Iterable, Iterator, List, Tuple

import apache_beam as beam
from absl import logging
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_jobs import csv_rows, images, records, splits, summary
from tfpipe import schema

METRICS_NAMESPACE = "posters_to_tfrecords"

# Tags of the additional outputs.
REJECTED = "rejected"
NOTES = "notes"
BLANK_LINES = "blank_lines"

LOG_EVERY_POSTERS = 1000


def count_rejection(rejection: records.Rejection) -> records.Rejection:
    Metrics.counter(METRICS_NAMESPACE, f"rejected_{rejection.reason}").inc()
    return rejection


def count_note(note: records.Note) -> records.Note:
    Metrics.counter(METRICS_NAMESPACE, f"note_{note.kind}").inc()
    return note


class ReadCsvRowsDoFn(beam.DoFn):
    """Read the data rows of one CSV file: path -> `records.CsvRow` with its line number.

    One DoFn reads the whole file in order, which keeps line numbers exact. The CSV is small
    next to the images, and a `Reshuffle` after the row checks spreads the image work.
    Each blank line goes to the `BLANK_LINES` output as a 1.
    """

    def __init__(self):
        self._rows_read = Metrics.counter(METRICS_NAMESPACE, "csv_rows_read")
        self._blank_lines = Metrics.counter(METRICS_NAMESPACE, "csv_blank_lines")

    def process(self, csv_path: str) -> Iterator[records.CsvRow]:
        logging.info("Reading CSV rows from %s", csv_path)
        num_rows = 0
        for row in csv_rows.iter_csv_rows(csv_path):
            if row is None:
                self._blank_lines.inc()
                yield beam.pvalue.TaggedOutput(BLANK_LINES, 1)
                continue
            num_rows += 1
            self._rows_read.inc()
            yield row
        logging.info("Read %d CSV data rows from %s", num_rows, csv_path)


class CheckRowsDoFn(beam.DoFn):
    """Check each `records.CsvRow` and emit a `records.PosterRow`, or a rejection."""

    def __init__(self, labels: List[str]):
        self._labels = list(labels)

    def process(self, row: records.CsvRow) -> Iterator[records.PosterRow]:
        poster_row, rejection, notes = csv_rows.check_row(row, self._labels)
        for note in notes:
            yield beam.pvalue.TaggedOutput(NOTES, count_note(note))
        if rejection is not None:
            yield beam.pvalue.TaggedOutput(REJECTED, count_rejection(rejection))
            return
        yield poster_row


class ResolveDuplicatesDoFn(beam.DoFn):
    """Keep one row per id: `(id, [PosterRow, ...])` -> the row to load, or rejections.

    Copies with identical labels: the first line is kept and the others are rejected as
    `duplicate_id`. Copies with different labels: all are rejected, because no copy is more
    trustworthy than another.
    """

    def process(
        self, keyed_rows: Tuple[str, Iterable[records.PosterRow]]
    ) -> Iterator[records.PosterRow]:
        poster_id, rows = keyed_rows
        rows = sorted(rows, key=lambda row: row.line_number)
        if len(rows) == 1:
            yield rows[0]
            return

        lines = ", ".join(str(row.line_number) for row in rows)
        if len({row.multi_hot for row in rows}) > 1:
            for row in rows:
                rejection = records.Rejection(
                    row.line_number,
                    poster_id,
                    records.DUPLICATE_ID_CONFLICTING_LABELS,
                    f"id appears on lines {lines} with different labels; every copy is rejected",
                )
                yield beam.pvalue.TaggedOutput(REJECTED, count_rejection(rejection))
            return

        kept, *others = rows
        for row in others:
            rejection = records.Rejection(
                row.line_number,
                poster_id,
                records.DUPLICATE_ID,
                f"same id and labels as line {kept.line_number}, which was kept",
            )
            yield beam.pvalue.TaggedOutput(REJECTED, count_rejection(rejection))
        yield kept


class LoadPostersDoFn(beam.DoFn):
    """Load and check the image of each `PosterRow` and emit a `records.Poster`.

    The image is `<images_dir>/<id>.jpg`. Files that cannot be used go to `REJECTED`;
    conversions also go to `NOTES` as `image_converted`.
    """

    def __init__(self, images_dir: str, max_pixels: int, max_side: int, jpeg_quality: int):
        self._images_dir = images_dir
        self._max_pixels = max_pixels
        self._max_side = max_side
        self._jpeg_quality = jpeg_quality
        self._posters_loaded = Metrics.counter(METRICS_NAMESPACE, "posters_loaded")
        self._images_converted = Metrics.counter(METRICS_NAMESPACE, "images_converted")
        self._image_bytes = Metrics.distribution(METRICS_NAMESPACE, "image_bytes")

    def setup(self):
        self._num_processed = 0
        self._started = time.monotonic()

    def process(self, row: records.PosterRow) -> Iterator[records.Poster]:
        path = FileSystems.join(self._images_dir, f"{row.poster_id}.jpg")
        result = load_poster(
            row,
            path,
            max_pixels=self._max_pixels,
            max_side=self._max_side,
            jpeg_quality=self._jpeg_quality,
        )
        self._log_progress()

        if isinstance(result, records.Rejection):
            yield beam.pvalue.TaggedOutput(REJECTED, count_rejection(result))
            return

        self._posters_loaded.inc()
        self._image_bytes.update(result.num_bytes)
        if result.conversion:
            self._images_converted.inc()
            note = records.Note(
                row.line_number, row.poster_id, records.IMAGE_CONVERTED, result.conversion
            )
            yield beam.pvalue.TaggedOutput(NOTES, count_note(note))
        yield result

    def _log_progress(self):
        self._num_processed += 1
        if self._num_processed % LOG_EVERY_POSTERS == 0:
            elapsed = time.monotonic() - self._started
            logging.info(
                "This worker loaded %d posters, %.1f posters/s",
                self._num_processed,
                self._num_processed / max(elapsed, 1e-9),
            )


def read_image_file(path: str) -> bytes:
    """Return the bytes of `path`.

    Raises:
        images.ImageRejected: `missing_image` when the file does not exist, or
            `image_read_failed` when it cannot be read for a reason a retry cannot fix
            (permission, a folder in place of a file).
    """
    try:
        with FileSystems.open(path) as stream:
            return stream.read()
    except (PermissionError, IsADirectoryError) as error:
        raise images.ImageRejected(records.IMAGE_READ_FAILED, f"{path}: {error}") from None
    except Exception:
        # Remote file systems raise their own error types for a missing object, so ask
        # the file system. Any other failure, such as a network error, is raised again for
        # the runner to retry the bundle.
        # NOTE: tests cover this path only on the local file system, not on gs:// or s3://.
        if not FileSystems.exists(path):
            raise images.ImageRejected(records.MISSING_IMAGE, f"{path} not found") from None
        raise


def load_poster(
    row: records.PosterRow, path: str, *, max_pixels: int, max_side: int, jpeg_quality: int
):
    """Read, check and encode the image of `row` as a serialized Example.

    Returns:
        A `records.Poster`, or a `records.Rejection` naming why the image was not used.
    """
    try:
        data = read_image_file(path)
        prepared = images.prepare_image(
            data, max_pixels=max_pixels, max_side=max_side, jpeg_quality=jpeg_quality
        )
    except images.ImageRejected as rejected:
        return records.Rejection(row.line_number, row.poster_id, rejected.reason, rejected.detail)

    example = schema.make_example(
        encoded=prepared.encoded,
        height=prepared.height,
        width=prepared.width,
        poster_id=row.poster_id,
        multi_hot=row.multi_hot,
        conversion=prepared.conversion,
    )
    return records.Poster(
        line_number=row.line_number,
        poster_id=row.poster_id,
        multi_hot=row.multi_hot,
        serialized_example=example.SerializeToString(),
        height=prepared.height,
        width=prepared.width,
        num_bytes=len(prepared.encoded),
        conversion=prepared.conversion,
    )


class SplitPartitionFn(beam.PartitionFn):
    """Route each `records.Poster` to its split, in `schema.SPLITS` order."""

    def __init__(self, bounds: Tuple[int, ...]):
        self._bounds = tuple(bounds)

    def partition_for(self, poster: records.Poster, num_partitions: int) -> int:
        return splits.split_index(poster.poster_id, self._bounds)


class WriteMetadataDoFn(beam.DoFn):
    """Write `metadata.json` from the summary, after every shard and JSON lines file exists.

    The written file names arrive as a side input, so this step runs only after the file
    sinks have finalized their output. The row invariant is checked before writing.
    """

    def __init__(self, output_dir: str, labels, compression: str, num_shards, flags, created_at):
        self._output_dir = output_dir
        self._labels = list(labels)
        self._compression = compression
        self._num_shards = dict(num_shards)
        self._flags = dict(flags)
        self._created_at = created_at

    def process(self, job_summary: dict, written_paths: List[str]) -> Iterator[str]:
        written_names = {FileSystems.split(path)[1] for path in written_paths}
        shards = {}
        for split in schema.SPLITS:
            names = [
                schema.shard_filename(split, index, self._num_shards[split], self._compression)
                for index in range(self._num_shards[split])
            ]
            missing = [name for name in names if name not in written_names]
            if missing:
                raise RuntimeError(
                    f"The {split} sink did not report the shards {missing} under "
                    f"{self._output_dir}; metadata.json was not written."
                )
            shards[split] = names

        metadata = summary.build_metadata(
            job_summary,
            labels=self._labels,
            compression=self._compression,
            shards=shards,
            flags=self._flags,
            created_at=self._created_at,
        )
        path = write_json_atomically(self._output_dir, schema.METADATA_FILENAME, metadata)
        logging.info("Wrote %s", path)
        yield path


def write_json_atomically(directory: str, filename: str, content: dict) -> str:
    """Write `content` as JSON to `directory/filename` via a temporary name, return the path."""
    path = FileSystems.join(directory, filename)
    temporary_path = FileSystems.join(directory, f".{filename}.{uuid.uuid4().hex}.tmp")
    with FileSystems.create(temporary_path) as stream:
        stream.write(json.dumps(content, indent=2).encode("utf-8"))
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([temporary_path], [path])
    return path

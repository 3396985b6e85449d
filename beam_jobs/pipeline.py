"""The Beam graph of the poster job, from the CSV path to shards, rejects and metadata.

```
csv path ─ ReadCsvRows ─ CheckRows ─ KeyById ─ GroupById ─ ResolveDuplicates
   ─ SpreadImageWork (Reshuffle) ─ LoadPosters ─ PartitionBySplit ─ ExampleBytes[split]
   ─ WriteShards[split]
rejections (every stage) ─ WriteRejected     notes ─ WriteNotes
events (rows, rejections, notes, examples) ─ Summarize ─ WriteMetadata (after every sink)
```
"""

import dataclasses
import json
from typing import Any, Dict, List, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_jobs import output_dir, summary, transforms
from tfpipe import schema


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """Everything the pipeline needs besides the Beam options.

    Paths may be local or any scheme Beam's `FileSystems` supports (`gs://`, `s3://`).
    """

    csv_path: str
    images_dir: str
    output_dir: str
    split_bounds: Tuple[int, ...]  # cumulative hash buckets, see `splits.split_bounds`
    num_shards: Dict[str, int]  # split -> number of shard files
    compression: str  # schema.COMPRESSION_NONE or schema.COMPRESSION_GZIP
    max_pixels: int  # reject images with more pixels than this, read from the header
    max_side: int  # resize when the longer side exceeds this, in pixels; 0 keeps the size
    jpeg_quality: int  # Pillow quality for re-encoded images
    flags: Dict[str, Any]  # recorded in metadata.json
    created_at: str  # ISO 8601 UTC


def build_pipeline(pipeline: beam.Pipeline, config: JobConfig, labels: List[str]) -> None:
    """Add the poster job to `pipeline`; `labels` are the CSV label columns in order."""
    csv_rows = (
        pipeline
        | "CsvPath" >> beam.Create([config.csv_path])
        | "ReadCsvRows"
        >> beam.ParDo(transforms.ReadCsvRowsDoFn()).with_outputs(
            transforms.BLANK_LINES, main="rows"
        )
    )
    # rows: records.CsvRow; blank_lines: 1 per blank line

    checked = csv_rows.rows | "CheckRows" >> beam.ParDo(
        transforms.CheckRowsDoFn(labels)
    ).with_outputs(transforms.REJECTED, transforms.NOTES, main="rows")
    # rows: records.PosterRow

    unique = (
        checked.rows
        | "KeyById" >> beam.Map(lambda row: (row.poster_id, row))
        | "GroupById" >> beam.GroupByKey()
        | "ResolveDuplicates"
        >> beam.ParDo(transforms.ResolveDuplicatesDoFn()).with_outputs(
            transforms.REJECTED, main="rows"
        )
    )
    # rows: records.PosterRow, one per id

    loaded = (
        unique.rows
        | "SpreadImageWork" >> beam.Reshuffle()
        | "LoadPosters"
        >> beam.ParDo(
            transforms.LoadPostersDoFn(
                config.images_dir, config.max_pixels, config.max_side, config.jpeg_quality
            )
        ).with_outputs(transforms.REJECTED, transforms.NOTES, main="posters")
    )
    # posters: records.Poster with the serialized Example

    posters_by_split = loaded.posters | "PartitionBySplit" >> beam.Partition(
        transforms.SplitPartitionFn(config.split_bounds), len(schema.SPLITS)
    )

    written_paths = []
    example_events = []
    for split, posters in zip(schema.SPLITS, posters_by_split):
        written_paths.append(write_split(posters, split, config))
        example_events.append(
            posters | f"ExampleEvents[{split}]" >> beam.Map(summary.example_event, split)
        )

    rejections = (
        checked[transforms.REJECTED],
        unique[transforms.REJECTED],
        loaded[transforms.REJECTED],
    ) | "AllRejections" >> beam.Flatten()
    notes = (checked[transforms.NOTES], loaded[transforms.NOTES]) | "AllNotes" >> beam.Flatten()
    written_paths.append(
        write_json_lines(
            rejections, "Rejected", schema.REJECTED_DIRNAME, output_dir.REJECTED_FILE_PREFIX, config
        )
    )
    written_paths.append(
        write_json_lines(
            notes, "Notes", output_dir.NOTES_DIRNAME, output_dir.NOTES_FILE_PREFIX, config
        )
    )

    events = [
        csv_rows.rows | "RowEvents" >> beam.Map(lambda _: (summary.ROW_EVENT,)),
        csv_rows[transforms.BLANK_LINES]
        | "BlankLineEvents" >> beam.Map(lambda _: (summary.BLANK_LINE_EVENT,)),
        rejections
        | "RejectedEvents"
        >> beam.Map(lambda rejection: (summary.REJECTED_EVENT, rejection.reason)),
        notes | "NoteEvents" >> beam.Map(lambda note: (summary.NOTE_EVENT, note.kind)),
        *example_events,
    ]
    job_summary = (
        events
        | "AllEvents" >> beam.Flatten()
        | "Summarize" >> beam.CombineGlobally(summary.SummaryCombineFn(len(labels)))
    )
    all_written_paths = written_paths | "AllWrittenPaths" >> beam.Flatten()
    _ = job_summary | "WriteMetadata" >> beam.ParDo(
        transforms.WriteMetadataDoFn(
            config.output_dir,
            labels,
            config.compression,
            config.num_shards,
            config.flags,
            config.created_at,
        ),
        written_paths=beam.pvalue.AsList(all_written_paths),
    )


def write_split(posters, split: str, config: JobConfig):
    """Write the posters of one split as TFRecord shards; returns the written file names.

    `WriteToTFRecord` writes into a temporary folder and renames the shards into place when
    all are complete, so a failed run leaves no partial shard under the final name.
    """
    compressed = config.compression == schema.COMPRESSION_GZIP
    counter = Metrics.counter(transforms.METRICS_NAMESPACE, f"examples_written_{split}")

    def example_bytes(poster) -> bytes:
        counter.inc()
        return poster.serialized_example

    return (
        posters
        | f"ExampleBytes[{split}]" >> beam.Map(example_bytes)
        | f"WriteShards[{split}]"
        >> beam.io.WriteToTFRecord(
            FileSystems.join(config.output_dir, schema.shard_prefix(split)),
            file_name_suffix=".gz" if compressed else "",
            num_shards=config.num_shards[split],
            compression_type=(
                beam.io.filesystem.CompressionTypes.GZIP
                if compressed
                else beam.io.filesystem.CompressionTypes.UNCOMPRESSED
            ),
        )
    )


def write_json_lines(items, label: str, dirname: str, prefix: str, config: JobConfig):
    """Write `records.Rejection` or `records.Note` items as one JSON object per line."""
    return (
        items
        | f"{label}ToJson" >> beam.Map(lambda item: json.dumps(item.to_json_dict(), sort_keys=True))
        | f"Write{label}"
        >> beam.io.WriteToText(
            FileSystems.join(config.output_dir, dirname, prefix),
            file_name_suffix=output_dir.JSON_LINES_SUFFIX,
            num_shards=1,
        )
    )

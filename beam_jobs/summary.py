"""Count rows, examples, rejections and image sizes, and build `metadata.json` from them.

The pipeline turns every outcome into a small event tuple and `SummaryCombineFn` folds them
into one summary dict, whose size does not grow with the number of posters (sizes are
kept as histograms). `build_metadata` gives it the layout `tfpipe.schema.read_metadata`
reads; `check_row_invariant` enforces that every CSV data row is either written or rejected.
"""

import collections
from typing import Any, Dict, List, Mapping, Sequence

import apache_beam as beam

from beam_jobs import records
from tfpipe import schema

# Event tuples, first element is the kind.
ROW_EVENT = "row"  # ("row",): one CSV data row read
BLANK_LINE_EVENT = "blank_line"  # ("blank_line",): a blank line, not a data row
REJECTED_EVENT = "rejected"  # ("rejected", reason)
NOTE_EVENT = "note"  # ("note", kind)
EXAMPLE_EVENT = "example"  # ("example", split, multi_hot, height, width, num_bytes, conversion)


def example_event(poster: records.Poster, split: str) -> tuple:
    return (
        EXAMPLE_EVENT,
        split,
        poster.multi_hot,
        poster.height,
        poster.width,
        poster.num_bytes,
        poster.conversion,
    )


class SummaryCombineFn(beam.CombineFn):
    """Fold event tuples into counts per split, per reject reason, and image histograms."""

    def __init__(self, num_labels: int):
        self._num_labels = num_labels

    def create_accumulator(self) -> Dict[str, Any]:
        import numpy as np

        return {
            "num_input_rows": 0,
            "num_blank_lines": 0,
            "rejected": collections.Counter(),
            "notes": collections.Counter(),
            "num_examples": collections.Counter(),
            "label_counts": {
                split: np.zeros(self._num_labels, np.int64) for split in schema.SPLITS
            },
            "cooccurrence": {
                split: np.zeros((self._num_labels, self._num_labels), np.int64)
                for split in schema.SPLITS
            },
            "heights": collections.Counter(),
            "widths": collections.Counter(),
            "bytes_total": 0,
            "bytes_min": None,
            "bytes_max": None,
            "conversions": collections.Counter(),
        }

    def add_input(self, accumulator: Dict[str, Any], event: tuple) -> Dict[str, Any]:
        import numpy as np

        kind = event[0]
        if kind == ROW_EVENT:
            accumulator["num_input_rows"] += 1
        elif kind == BLANK_LINE_EVENT:
            accumulator["num_blank_lines"] += 1
        elif kind == REJECTED_EVENT:
            accumulator["rejected"][event[1]] += 1
        elif kind == NOTE_EVENT:
            accumulator["notes"][event[1]] += 1
        elif kind == EXAMPLE_EVENT:
            _, split, multi_hot, height, width, num_bytes, conversion = event
            labels = np.asarray(multi_hot, np.int64)
            accumulator["num_examples"][split] += 1
            accumulator["label_counts"][split] += labels
            accumulator["cooccurrence"][split] += np.outer(labels, labels)
            accumulator["heights"][height] += 1
            accumulator["widths"][width] += 1
            accumulator["bytes_total"] += num_bytes
            accumulator["bytes_min"] = min_or_value(accumulator["bytes_min"], num_bytes)
            accumulator["bytes_max"] = max_or_value(accumulator["bytes_max"], num_bytes)
            if conversion:
                accumulator["conversions"][conversion] += 1
        else:
            raise ValueError(f"Unknown summary event kind {kind!r} in {event!r}.")
        return accumulator

    def merge_accumulators(self, accumulators) -> Dict[str, Any]:
        accumulators = iter(accumulators)
        merged = next(accumulators)
        for other in accumulators:
            for key in ("num_input_rows", "num_blank_lines", "bytes_total"):
                merged[key] += other[key]
            for key in ("rejected", "notes", "num_examples", "heights", "widths", "conversions"):
                merged[key].update(other[key])
            for split in schema.SPLITS:
                merged["label_counts"][split] += other["label_counts"][split]
                merged["cooccurrence"][split] += other["cooccurrence"][split]
            merged["bytes_min"] = min_or_value(merged["bytes_min"], other["bytes_min"])
            merged["bytes_max"] = max_or_value(merged["bytes_max"], other["bytes_max"])
        return merged

    def extract_output(self, accumulator: Dict[str, Any]) -> Dict[str, Any]:
        """Return the summary with plain Python ints and lists, ready for JSON."""
        num_images = sum(accumulator["num_examples"].values())
        return {
            "num_input_rows": accumulator["num_input_rows"],
            "num_blank_lines": accumulator["num_blank_lines"],
            "rejected": {
                reason: accumulator["rejected"].get(reason, 0) for reason in records.REJECT_REASONS
            },
            "notes": {kind: accumulator["notes"].get(kind, 0) for kind in records.NOTE_KINDS},
            "splits": {
                split: {
                    "num_examples": accumulator["num_examples"].get(split, 0),
                    "label_counts": accumulator["label_counts"][split].tolist(),
                    "cooccurrence": accumulator["cooccurrence"][split].tolist(),
                }
                for split in schema.SPLITS
            },
            "image_stats": {
                "height": histogram_stats(accumulator["heights"]),
                "width": histogram_stats(accumulator["widths"]),
                "bytes": {
                    "min": accumulator["bytes_min"],
                    "mean": (
                        round(accumulator["bytes_total"] / num_images, 1) if num_images else None
                    ),
                    "max": accumulator["bytes_max"],
                    "total": accumulator["bytes_total"],
                },
                "num_converted": sum(accumulator["conversions"].values()),
                "conversions": dict(sorted(accumulator["conversions"].items())),
            },
        }


def min_or_value(current, value):
    if value is None:
        return current
    return value if current is None else min(current, value)


def max_or_value(current, value):
    if value is None:
        return current
    return value if current is None else max(current, value)


def histogram_stats(histogram: Mapping[int, int]) -> Dict[str, Any]:
    """Return min, median and max of the values counted in `histogram` (None when empty).

    The median is the lower median, the value at 0-based rank (n - 1) // 2, so that it is
    always one of the observed sizes.
    """
    total = sum(histogram.values())
    if not total:
        return {"min": None, "median": None, "max": None}
    median_rank = (total - 1) // 2
    seen = 0
    median = None
    for value in sorted(histogram):
        seen += histogram[value]
        if seen > median_rank:
            median = value
            break
    return {"min": min(histogram), "median": median, "max": max(histogram)}


class InvariantError(RuntimeError):
    """Raised when the written and rejected counts do not add up to the CSV data rows."""


def check_row_invariant(metadata: Mapping[str, Any]) -> None:
    """Raise `InvariantError` unless num_input_rows == sum(num_examples) + sum(rejected)."""
    written = sum(info["num_examples"] for info in metadata["splits"].values())
    rejected = sum(metadata["rejected"].values())
    if metadata["num_input_rows"] != written + rejected:
        raise InvariantError(
            f"{metadata['num_input_rows']} CSV data rows were read, but {written} examples "
            f"were written and {rejected} rows rejected (sum {written + rejected}). This is a "
            "bug in the Beam job: rows were lost or counted twice."
        )


def build_metadata(
    summary: Mapping[str, Any],
    *,
    labels: Sequence[str],
    compression: str,
    shards: Mapping[str, List[str]],
    flags: Mapping[str, Any],
    created_at: str,
) -> Dict[str, Any]:
    """Assemble `metadata.json` in the layout `tfpipe.schema.read_metadata` documents.

    Args:
        summary: the output of `SummaryCombineFn`.
        labels: label names in CSV column order.
        compression: `schema.COMPRESSION_NONE` or `schema.COMPRESSION_GZIP`.
        shards: split -> shard file names relative to the output folder, in shard order.
        flags: the job flags used, for the record.
        created_at: ISO 8601 UTC time when the job started.
    """
    splits = {}
    for split in schema.SPLITS:
        counts = summary["splits"][split]
        splits[split] = {
            "num_examples": counts["num_examples"],
            "shards": list(shards[split]),
            "label_counts": counts["label_counts"],
            "cooccurrence": counts["cooccurrence"],
        }
    metadata = {
        "schema_version": schema.SCHEMA_VERSION,
        "labels": list(labels),
        "compression": compression,
        "num_input_rows": summary["num_input_rows"],
        "num_blank_lines": summary["num_blank_lines"],
        "splits": splits,
        "rejected": dict(summary["rejected"]),
        "notes": dict(summary["notes"]),
        "image_stats": summary["image_stats"],
        "flags": dict(flags),
        "created_at": created_at,
    }
    schema.check_metadata(metadata)
    check_row_invariant(metadata)
    return metadata


def format_summary_table(metadata: Mapping[str, Any]) -> str:
    """Return a plain-text table of examples per split, rejections and notes, for the log."""
    lines = [f"{'':34} {'count':>8}", f"{'CSV data rows':34} {metadata['num_input_rows']:>8}"]
    for split, info in metadata["splits"].items():
        lines.append(
            f"{'written ' + split:34} {info['num_examples']:>8}   {len(info['shards'])} shards"
        )
    for reason, count in metadata["rejected"].items():
        if count:
            lines.append(f"{'rejected ' + reason:34} {count:>8}")
    for kind, count in metadata["notes"].items():
        if count:
            lines.append(f"{'note ' + kind:34} {count:>8}")
    if metadata.get("num_blank_lines"):
        lines.append(f"{'blank lines skipped':34} {metadata['num_blank_lines']:>8}")
    return "\n".join(lines)

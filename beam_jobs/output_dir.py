"""Guard the output folder so that shards of two runs never mix.

All paths go through Beam's `FileSystems`, so local folders, `gs://` and `s3://` behave alike.
"""

from typing import List

from absl import logging
from apache_beam.io.filesystems import FileSystems

from tfpipe import schema

NOTES_DIRNAME = "notes"
REJECTED_FILE_PREFIX = "rejected"
NOTES_FILE_PREFIX = "notes"
JSON_LINES_SUFFIX = ".jsonl"


class OutputExistsError(RuntimeError):
    """Raised when the output folder already contains output of a run and --overwrite is off."""


def output_patterns(output_dir: str) -> List[str]:
    """Return glob patterns of every file a run of the job writes under `output_dir`."""
    return [
        FileSystems.join(output_dir, f"{schema.shard_prefix(split)}-*") for split in schema.SPLITS
    ] + [
        FileSystems.join(output_dir, schema.METADATA_FILENAME),
        FileSystems.join(output_dir, schema.REJECTED_DIRNAME, "*"),
        FileSystems.join(output_dir, NOTES_DIRNAME, "*"),
        # Temporary folders that Beam's file sinks leave behind when a run is killed.
        FileSystems.join(output_dir, "beam-temp-*"),
    ]


def find_existing_outputs(output_dir: str) -> List[str]:
    """Return the paths of earlier job output under `output_dir`, sorted."""
    found = []
    for match in FileSystems.match(output_patterns(output_dir)):
        found.extend(metadata.path for metadata in match.metadata_list)
    return sorted(set(found))


def prepare_output_dir(output_dir: str, overwrite: bool) -> None:
    """Make sure `output_dir` contains no output of an earlier run.

    Raises:
        OutputExistsError: when earlier output exists and `overwrite` is False.
    """
    existing = find_existing_outputs(output_dir)
    if not existing:
        return
    if not overwrite:
        raise OutputExistsError(
            f"{output_dir} already contains {len(existing)} files of an earlier run "
            f"(for example {existing[0]}). Pass --overwrite to delete them first, or choose "
            "another --output_dir."
        )
    logging.info(
        "--overwrite: deleting %d files of an earlier run under %s", len(existing), output_dir
    )
    FileSystems.delete(existing)

"""Shard the poster dataset into TFRecord files of `tf.train.Example`, one per poster.

Run:

    python -m beam_jobs.posters_to_tfrecords --dataset_dir=DIR --output_dir=OUT \
        [--runner=DirectRunner --direct_num_workers=2 --direct_running_mode=multi_processing]

Reads `DIR/train.csv` and `DIR/Images/<Id>.jpg` and writes under OUT:

- `{train,validation,test}.tfrecord-SSSSS-of-NNNNN[.gz]`: Examples in the layout of
  `tfpipe.schema`, split by a hash of the id (`beam_jobs.splits`);
- `rejected/rejected-00000-of-00001.jsonl`: one JSON object per rejected CSV row
  (`line`, `id`, `reason`, `detail`);
- `notes/notes-00000-of-00001.jsonl`: the repairs made on rows that were kept;
- `metadata.json`: labels, counts per split, rejections per reason, image statistics and flags.

Flags this module does not define are passed to Beam's `PipelineOptions`, so the same
command runs on Dataflow, Flink or Spark. The job exits non-zero when the input cannot be
read, when the output folder contains an earlier run (without `--overwrite`), or when no example
was written.
"""

import datetime
import json
import os
import sys
import time
from typing import Any, Dict, List, Sequence, Tuple

import apache_beam as beam
from absl import app, flags, logging
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs import csv_rows, output_dir, pipeline, splits, summary, transforms
from tfpipe import schema

DEFAULT_MAX_PIXELS = 50_000_000
HELP_ARGS = ("--help", "-h", "--helpfull", "-?")


class NoExamplesWrittenError(RuntimeError):
    """Raised when the job ran but every row was rejected."""


def define_flags(flag_values: flags.FlagValues) -> None:
    """Define the job's own flags on `flag_values` (a private set, so other modules' flags
    of the same name cannot clash in one process)."""
    flags.DEFINE_string(
        "dataset_dir",
        None,
        "Folder with train.csv and Images/ (local, gs:// or s3://). Default: $DATASET_DIR.",
        flag_values=flag_values,
    )

    flags.DEFINE_string(
        "csv_path",
        None,
        "CSV of ids and labels. Default: DATASET_DIR/train.csv.",
        flag_values=flag_values,
    )

    flags.DEFINE_string(
        "images_dir",
        None,
        "Folder of <Id>.jpg posters. Default: DATASET_DIR/Images.",
        flag_values=flag_values,
    )

    flags.DEFINE_string(
        "output_dir",
        None,
        "Folder for shards, metadata.json, rejected/ and notes/.",
        flag_values=flag_values,
    )

    flags.DEFINE_float("train_fraction", 0.75, "Share of ids in train.", flag_values=flag_values)

    flags.DEFINE_float(
        "validation_fraction", 0.10, "Share of ids in validation.", flag_values=flag_values
    )

    flags.DEFINE_float("test_fraction", 0.15, "Share of ids in test.", flag_values=flag_values)

    flags.DEFINE_integer(
        "num_train_shards",
        16,
        "Shard files of train. 16 divides evenly among 1, 2, 4, 8 or 16 training workers "
        "that each read their own files.",
        lower_bound=1,
        flag_values=flag_values,
    )

    flags.DEFINE_integer(
        "num_validation_shards",
        4,
        "Shard files of validation.",
        lower_bound=1,
        flag_values=flag_values,
    )

    flags.DEFINE_integer(
        "num_test_shards", 4, "Shard files of test.", lower_bound=1, flag_values=flag_values
    )

    flags.DEFINE_enum(
        "compression",
        "none",
        ["none", "gzip"],
        "Shard compression; gzip adds .gz.",
        flag_values=flag_values,
    )

    flags.DEFINE_integer(
        "max_pixels",
        DEFAULT_MAX_PIXELS,
        "Reject images whose header declares more pixels (width x height) than this, before "
        "decoding them. The default bounds one decoded RGB image to about 150 MB.",
        lower_bound=1,
        flag_values=flag_values,
    )

    flags.DEFINE_integer(
        "max_side",
        0,
        "Resize posters whose longer side exceeds this many pixels, keeping the aspect ratio, "
        "and re-encode them as JPEG; 0 keeps every poster at its size.",
        lower_bound=0,
        flag_values=flag_values,
    )

    flags.DEFINE_integer(
        "jpeg_quality",
        95,
        "JPEG quality (1-95) of re-encoded posters.",
        lower_bound=1,
        upper_bound=95,
        flag_values=flag_values,
    )

    flags.DEFINE_boolean(
        "overwrite",
        False,
        "Delete the shards, metadata.json, rejected/ and notes/ of an earlier run in "
        "--output_dir before writing. Without it, the job stops with an error when the "
        "folder contains earlier output.",
        flag_values=flag_values,
    )


def parse_args(argv: Sequence[str]) -> Tuple[pipeline.JobConfig, bool, List[str]]:
    """Split `argv` (without the program name) into the job config and Beam's arguments.

    Returns:
        (config, overwrite, pipeline_args).

    Raises:
        app.UsageError: when a required flag is missing, a value is invalid, or an argument
            is neither a job flag nor a Beam pipeline option.
    """
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    try:
        pipeline_args = flag_values(["posters_to_tfrecords", *argv], known_only=True)[1:]
    except flags.Error as error:
        raise app.UsageError(str(error)) from error

    dataset_dir = flag_values.dataset_dir or os.environ.get("DATASET_DIR", "")
    csv_path = flag_values.csv_path or (dataset_dir and FileSystems.join(dataset_dir, "train.csv"))
    images_dir = flag_values.images_dir or (dataset_dir and FileSystems.join(dataset_dir, "Images"))
    if not csv_path or not images_dir:
        raise app.UsageError(
            "Set --dataset_dir (or DATASET_DIR), or both --csv_path and --images_dir."
        )
    if not flag_values.output_dir:
        raise app.UsageError("--output_dir is required.")

    fractions = (
        flag_values.train_fraction,
        flag_values.validation_fraction,
        flag_values.test_fraction,
    )
    try:
        bounds = splits.split_bounds(fractions)
    except ValueError as error:
        raise app.UsageError(
            f"{error} Check --train_fraction, --validation_fraction, --test_fraction."
        )

    check_pipeline_args(pipeline_args)
    compression = (
        schema.COMPRESSION_GZIP if flag_values.compression == "gzip" else schema.COMPRESSION_NONE
    )
    num_shards = {
        "train": flag_values.num_train_shards,
        "validation": flag_values.num_validation_shards,
        "test": flag_values.num_test_shards,
    }
    recorded_flags: Dict[str, Any] = {name: flag_values[name].value for name in flag_values}
    recorded_flags.update(
        csv_path=csv_path, images_dir=images_dir, pipeline_args=list(pipeline_args)
    )
    config = pipeline.JobConfig(
        csv_path=csv_path,
        images_dir=images_dir,
        output_dir=flag_values.output_dir,
        split_bounds=bounds,
        num_shards=num_shards,
        compression=compression,
        max_pixels=flag_values.max_pixels,
        max_side=flag_values.max_side,
        jpeg_quality=flag_values.jpeg_quality,
        flags=recorded_flags,
        created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    return config, flag_values.overwrite, list(pipeline_args)


def check_pipeline_args(pipeline_args: Sequence[str]) -> None:
    """Raise `app.UsageError` for arguments that Beam's `PipelineOptions` does not know,
    which Beam itself would only log and drop (a typo such as `--num_train_shard`)."""
    options = PipelineOptions(list(pipeline_args))
    unknown = set(options.get_all_options(retain_unknown_options=True)) - set(
        options.get_all_options()
    )
    if unknown:
        raise app.UsageError(
            f"Unknown flags {sorted(unknown)}: neither a flag of this job nor a Beam pipeline "
            "option. Run with --help for the job's flags."
        )


def run(argv: Sequence[str]) -> dict:
    """Run the job with command-line arguments `argv` (without the program name).

    Returns:
        The contents of the written `metadata.json`.

    Raises:
        app.UsageError: for invalid flags.
        csv_rows.InputError: when the CSV is missing, empty or has an invalid header.
        output_dir.OutputExistsError: when `--output_dir` contains an earlier run and
            `--overwrite` is not set.
        NoExamplesWrittenError: when every row was rejected (metadata.json and rejected/ are
            still written, to show why).
    """
    config, overwrite, pipeline_args = parse_args(argv)
    started = time.monotonic()
    logging.info(
        "Sharding %s (images %s) into %s; shards per split %s, compression %r, pipeline args %s",
        config.csv_path,
        config.images_dir,
        config.output_dir,
        config.num_shards,
        config.compression,
        pipeline_args,
    )

    labels = csv_rows.read_header(config.csv_path)
    logging.info("%d labels from the CSV header: %s", len(labels), ", ".join(labels))
    output_dir.prepare_output_dir(config.output_dir, overwrite)

    beam_pipeline = beam.Pipeline(options=PipelineOptions(pipeline_args))
    pipeline.build_pipeline(beam_pipeline, config, labels)
    result = beam_pipeline.run()
    state = result.wait_until_finish()
    if state != beam.runners.runner.PipelineState.DONE:
        raise RuntimeError(f"The Beam pipeline ended in state {state}; see the runner's log.")

    metadata = read_written_metadata(config.output_dir)
    summary.check_row_invariant(metadata)
    log_results(metadata, result, config, time.monotonic() - started)

    written = sum(info["num_examples"] for info in metadata["splits"].values())
    if written == 0:
        raise NoExamplesWrittenError(
            f"All {metadata['num_input_rows']} CSV rows were rejected; no example was written. "
            f"See the reasons in {FileSystems.join(config.output_dir, schema.REJECTED_DIRNAME)}."
        )
    return metadata


def read_written_metadata(directory: str) -> dict:
    """Read back `metadata.json` from `directory` and check its keys."""
    path = FileSystems.join(directory, schema.METADATA_FILENAME)
    with FileSystems.open(path) as stream:
        metadata = json.loads(stream.read().decode("utf-8"))
    schema.check_metadata(metadata, source=path)
    return metadata


def log_results(metadata: dict, result, config: pipeline.JobConfig, elapsed_s: float) -> None:
    """Log the summary table, the shard pattern per split and the Beam counters."""
    logging.info("Summary of %s:\n%s", config.output_dir, summary.format_summary_table(metadata))
    for split, info in metadata["splits"].items():
        if info["num_examples"] == 0:
            logging.warning(
                "The %s split is empty; check the split fractions and the input.", split
            )
        logging.info(
            "%s: %d examples in %s",
            split,
            info["num_examples"],
            FileSystems.join(
                config.output_dir, f"{schema.shard_prefix(split)}-*-of-{len(info['shards']):05d}*"
            ),
        )
    rows = metadata["num_input_rows"]
    logging.info("%d CSV rows in %.1f s, %.1f rows/s", rows, elapsed_s, rows / max(elapsed_s, 1e-9))

    try:
        counters = result.metrics().query()["counters"]
    except (NotImplementedError, KeyError, AttributeError) as error:
        logging.info("This runner does not report Beam counters (%s)", error)
        return
    for counter in sorted(counters, key=lambda c: c.key.metric.name):
        if counter.key.metric.namespace == transforms.METRICS_NAMESPACE:
            logging.info("counter %s = %s", counter.key.metric.name, counter.committed)


def parse_absl_flags(argv: List[str]) -> List[str]:
    """Parse absl's own flags (`--verbosity`, `--logtostderr`) and return the rest.

    `--help` prints the job's flags, since they live outside absl's global flag set.
    """
    if any(arg in HELP_ARGS for arg in argv[1:]):
        flag_values = flags.FlagValues()
        define_flags(flag_values)
        print(__doc__)
        print(flag_values.get_help())
        print(
            "\nAny other flag goes to Beam's PipelineOptions, e.g. --runner, --direct_num_workers."
        )
        sys.exit(0)
    return flags.FLAGS(argv, known_only=True)


def main(argv: List[str]) -> None:
    try:
        run(argv[1:])
    except (
        csv_rows.InputError,
        output_dir.OutputExistsError,
        NoExamplesWrittenError,
        summary.InvariantError,
    ) as error:
        logging.error("%s", error)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_absl_flags)

"""End-to-end tests of `python -m beam_jobs.posters_to_tfrecords` on synthetic and real posters."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from absl import app
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.gcp.gcsfilesystem import GCSFileSystem

from beam_jobs import csv_rows, output_dir, posters_to_tfrecords, records, splits, summary
from tests import beam_fixtures
from tfpipe import schema

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SMALL_SHARDS = ["--num_train_shards=2", "--num_validation_shards=1", "--num_test_shards=1"]


def build_bad_input_dataset(root: pathlib.Path) -> dict:
    """Write a dataset with one row per kind of bad input; returns the expected outcomes."""
    row = beam_fixtures.csv_row
    posters = {f"good{n}": beam_fixtures.image_bytes("RGB", seed=n) for n in range(12)}
    posters.update(
        gray=beam_fixtures.image_bytes("L"),
        cmyk=beam_fixtures.image_bytes("CMYK"),
        rgba_png=beam_fixtures.image_bytes("RGBA", image_format="PNG"),
        gif=beam_fixtures.image_bytes("P", image_format="GIF"),
        bmp=beam_fixtures.image_bytes("RGB", image_format="BMP"),
        text=b"this is not a poster\n",
        empty=b"",
        truncated=beam_fixtures.image_bytes("RGB", size=(64, 96))[:300],
        bomb=beam_fixtures.png_bomb(3000, 3000),
        dup_same=beam_fixtures.image_bytes("RGB", seed=100),
        dup_conflict=beam_fixtures.image_bytes("RGB", seed=101),
        mismatch=beam_fixtures.image_bytes("RGB", seed=102),
    )
    rows = [row(f"good{n}", ["Drama", "Comedy"] if n % 2 else ["Action"]) for n in range(12)]
    rows += [row(name, ["Horror"]) for name in ("gray", "cmyk", "rgba_png", "gif", "bmp")]
    rows += [row(name, ["Horror"]) for name in ("text", "empty", "truncated", "bomb", "absent")]
    rows += [
        row("../good0", ["Drama"]),
        row("dup_same", ["War"]),
        row("dup_same", ["War"]),
        row("dup_conflict", ["War"]),
        row("dup_conflict", ["Western"]),
        row("mismatch", ["Drama"], genre_string="['Romance']"),
        row("nolabel", []),
        row("good0", ["Drama"])[:10],
        row("good1", ["Drama"]) + ["extra"],
    ]
    bad_cell = row("badcell", ["Drama"])
    bad_cell[5] = "yes"
    rows.append(bad_cell)

    (root / "Images").mkdir(parents=True)
    for poster_id, data in posters.items():
        (root / "Images" / f"{poster_id}.jpg").write_bytes(data)
    beam_fixtures.write_csv(root / "train.csv", rows, line_ending="\r\n", bom=True)
    return {
        "num_rows": len(rows),
        "written": {f"good{n}" for n in range(12)}
        | {"gray", "cmyk", "rgba_png", "gif", "bmp", "dup_same", "mismatch"},
        "rejected": {
            records.NOT_AN_IMAGE: 1,
            records.EMPTY_IMAGE: 1,
            records.UNDECODABLE_IMAGE: 1,
            records.TOO_MANY_PIXELS: 1,
            records.MISSING_IMAGE: 1,
            records.UNSAFE_ID: 1,
            records.DUPLICATE_ID: 1,
            records.DUPLICATE_ID_CONFLICTING_LABELS: 2,
            records.NO_GENRE: 1,
            records.WRONG_FIELD_COUNT: 2,
            records.INVALID_LABEL_VALUE: 1,
        },
        "rows": rows,
        "posters": posters,
    }


@pytest.fixture(scope="module")
def bad_input_run(tmp_path_factory):
    """Run the job once on the bad-input dataset; returns (expected, output_dir, metadata)."""
    root = tmp_path_factory.mktemp("bad_input")
    expected = build_bad_input_dataset(root / "dataset")
    output = root / "out"
    metadata = posters_to_tfrecords.run(
        [
            f"--dataset_dir={root / 'dataset'}",
            f"--output_dir={output}",
            "--max_pixels=1000000",
            *SMALL_SHARDS,
        ]
    )
    return expected, output, metadata


def test_rows_add_up(bad_input_run):
    expected, _, metadata = bad_input_run
    written = sum(info["num_examples"] for info in metadata["splits"].values())

    assert metadata["num_input_rows"] == expected["num_rows"]
    assert metadata["num_input_rows"] == written + sum(metadata["rejected"].values())


def test_rejected_counts_per_reason(bad_input_run):
    expected, _, metadata = bad_input_run
    nonzero = {reason: count for reason, count in metadata["rejected"].items() if count}

    assert nonzero == expected["rejected"]


def test_rejected_file_names_lines(bad_input_run):
    _, output, _ = bad_input_run
    rejected = beam_fixtures.read_json_lines(output / schema.REJECTED_DIRNAME)
    by_line = {item["line"]: item for item in rejected}

    # Line 1 is the header, so the row for "text" (the 18th row) is on line 19.
    assert by_line[19]["id"] == "text"
    assert by_line[19]["reason"] == records.NOT_AN_IMAGE
    assert by_line[24]["reason"] == records.UNSAFE_ID
    assert by_line[26]["reason"] == records.DUPLICATE_ID
    assert all(item["detail"] for item in rejected)


def test_written_ids_and_labels(bad_input_run):
    expected, output, metadata = bad_input_run
    examples = beam_fixtures.read_examples(output, metadata)
    labels_by_id = {
        row[0]: [int(v) for v in row[2:]]
        for row in expected["rows"]
        if row[0] in expected["written"] and len(row) == len(beam_fixtures.HEADER)
    }

    assert set(examples) == expected["written"]
    for poster_id, example in examples.items():
        assert list(example[schema.LABEL_MULTI_HOT_KEY]) == labels_by_id[poster_id]


def test_every_example_decodes_as_rgb_jpeg(bad_input_run):
    _, output, metadata = bad_input_run
    examples = beam_fixtures.read_examples(output, metadata)

    for example in examples.values():
        image = tf.io.decode_jpeg(example[schema.IMAGE_ENCODED_KEY], channels=3)
        assert image.shape == (example[schema.IMAGE_HEIGHT_KEY], example[schema.IMAGE_WIDTH_KEY], 3)
        assert example[schema.IMAGE_FORMAT_KEY] == schema.IMAGE_FORMAT_JPEG


def test_conversions_are_recorded(bad_input_run):
    expected, output, metadata = bad_input_run
    examples = beam_fixtures.read_examples(output, metadata)
    conversions = {pid: ex[schema.IMAGE_CONVERSION_KEY].decode() for pid, ex in examples.items()}

    assert conversions["gray"] == "grayscale_to_rgb"
    assert conversions["cmyk"] == "cmyk_to_rgb"
    assert conversions["rgba_png"] == "png_to_jpeg+rgba_to_rgb"
    assert conversions["gif"] == "gif_to_jpeg+palette_to_rgb"
    assert conversions["bmp"] == "bmp_to_jpeg"
    assert examples["good3"][schema.IMAGE_ENCODED_KEY] == expected["posters"]["good3"]
    assert metadata["image_stats"]["num_converted"] == 5


def test_notes_record_repairs(bad_input_run):
    _, output, metadata = bad_input_run
    notes = beam_fixtures.read_json_lines(output / output_dir.NOTES_DIRNAME)
    kinds = {(note["id"], note["kind"]) for note in notes}

    assert ("mismatch", records.GENRE_STRING_MISMATCH) in kinds
    assert ("cmyk", records.IMAGE_CONVERTED) in kinds
    assert metadata["notes"][records.IMAGE_CONVERTED] == 5


def test_examples_land_in_their_hash_split(bad_input_run):
    _, output, metadata = bad_input_run
    examples = beam_fixtures.read_examples(output, metadata)
    bounds = splits.split_bounds((0.75, 0.10, 0.15))

    for poster_id, example in examples.items():
        assert example["split"] == splits.split_of(poster_id, bounds)


def test_metadata_matches_shards(bad_input_run):
    _, output, metadata = bad_input_run
    examples = beam_fixtures.read_examples(output, metadata)
    read_back = schema.read_metadata(str(output))

    assert read_back == metadata
    assert metadata["splits"]["train"]["shards"] == [
        schema.shard_filename("train", 0, 2),
        schema.shard_filename("train", 1, 2),
    ]
    for split, info in metadata["splits"].items():
        in_split = [ex for ex in examples.values() if ex["split"] == split]
        assert info["num_examples"] == len(in_split)
        label_sum = np.sum([ex[schema.LABEL_MULTI_HOT_KEY] for ex in in_split], axis=0).tolist()
        assert info["label_counts"] == (label_sum if in_split else [0] * 25)
        assert np.array(info["cooccurrence"]).shape == (25, 25)


def test_rerun_without_overwrite_raises(bad_input_run):
    _, output, _ = bad_input_run

    with pytest.raises(output_dir.OutputExistsError, match="--overwrite"):
        posters_to_tfrecords.run(
            [f"--dataset_dir={output.parent / 'dataset'}", f"--output_dir={output}"]
        )


def test_overwrite_gzip_and_max_side(tmp_path):
    expected = build_bad_input_dataset(tmp_path / "dataset")
    output = tmp_path / "out"
    args = [
        f"--dataset_dir={tmp_path / 'dataset'}",
        f"--output_dir={output}",
        "--max_pixels=1000000",
    ]
    posters_to_tfrecords.run([*args, *SMALL_SHARDS])

    metadata = posters_to_tfrecords.run(
        [
            *args,
            "--overwrite",
            "--compression=gzip",
            "--num_train_shards=3",
            "--num_test_shards=1",
            "--num_validation_shards=1",
            "--max_side=8",
        ]
    )

    shard_files = sorted(path.name for path in output.glob("*.tfrecord-*"))
    assert shard_files == sorted(
        name for info in metadata["splits"].values() for name in info["shards"]
    )
    assert all(name.endswith(".gz") for name in shard_files)
    examples = beam_fixtures.read_examples(output, metadata)
    assert set(examples) == expected["written"]
    for example in examples.values():
        assert max(example[schema.IMAGE_HEIGHT_KEY], example[schema.IMAGE_WIDTH_KEY]) == 8
        assert "resized_max_side_8" in example[schema.IMAGE_CONVERSION_KEY].decode()
    assert len(beam_fixtures.read_json_lines(output / schema.REJECTED_DIRNAME)) == sum(
        expected["rejected"].values()
    )


def test_all_rows_rejected_exits_nonzero(tmp_path):
    dataset = tmp_path / "dataset"
    beam_fixtures.write_dataset(dataset, {}, [beam_fixtures.csv_row("absent", ["Drama"])])

    with pytest.raises(SystemExit) as caught:
        posters_to_tfrecords.main(
            [
                "posters_to_tfrecords",
                f"--dataset_dir={dataset}",
                f"--output_dir={tmp_path / 'out'}",
                *SMALL_SHARDS,
            ]
        )

    assert caught.value.code == 1
    assert (
        json.loads((tmp_path / "out" / "metadata.json").read_text())["rejected"]["missing_image"]
        == 1
    )


def test_empty_csv_fails_before_pipeline(tmp_path):
    (tmp_path / "train.csv").write_bytes(b"")

    with pytest.raises(csv_rows.InputError, match="is empty"):
        posters_to_tfrecords.run([f"--dataset_dir={tmp_path}", f"--output_dir={tmp_path / 'out'}"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset_dir=/d"], "--output_dir"),
        (["--dataset_dir=/d", "--output_dir=/o", "--num_train_shard=3"], "num_train_shard"),
        (["--dataset_dir=/d", "--output_dir=/o", "--test_fraction=0.5"], "sum to"),
        (["--dataset_dir=/d", "--output_dir=/o", "--compression=zip"], "compression"),
    ],
    ids=["no_output_dir", "typo_flag", "bad_fractions", "bad_compression"],
)
def test_invalid_flags_raise_usage_error(argv, message):
    with pytest.raises(app.UsageError, match=message):
        posters_to_tfrecords.parse_args(argv)


def test_beam_flags_pass_through():
    _, _, pipeline_args = posters_to_tfrecords.parse_args(
        ["--dataset_dir=/d", "--output_dir=/o", "--runner=DirectRunner", "--direct_num_workers=2"]
    )

    assert pipeline_args == ["--runner=DirectRunner", "--direct_num_workers=2"]


def test_gcs_paths_resolve_without_network():
    config, _, _ = posters_to_tfrecords.parse_args(
        ["--dataset_dir=gs://bucket/posters", "--output_dir=gs://bucket/shards"]
    )

    assert config.csv_path == "gs://bucket/posters/train.csv"
    assert config.images_dir == "gs://bucket/posters/Images"
    assert isinstance(FileSystems.get_filesystem(config.output_dir), GCSFileSystem)
    assert all(
        p.startswith("gs://bucket/shards/") for p in output_dir.output_patterns(config.output_dir)
    )


def test_invariant_check_catches_lost_rows():
    metadata = {
        "num_input_rows": 5,
        "splits": {"train": {"num_examples": 3}},
        "rejected": {records.NO_GENRE: 1},
    }

    with pytest.raises(summary.InvariantError):
        summary.check_row_invariant(metadata)


@pytest.mark.real_data
def test_cli_on_real_posters(dataset_dir, tmp_path):
    """Run the CLI with 2 worker processes on the first 200 rows and compare with the sources."""
    csv_lines = (dataset_dir / "train.csv").read_text().splitlines(keepends=True)[:201]
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("".join(csv_lines))
    output = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "beam_jobs.posters_to_tfrecords",
        f"--csv_path={csv_path}",
        f"--images_dir={dataset_dir / 'Images'}",
        f"--output_dir={output}",
        "--runner=DirectRunner",
        "--direct_num_workers=2",
        "--direct_running_mode=multi_processing",
    ]

    completed = subprocess.run(
        command,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    metadata = schema.read_metadata(str(output))
    source = pd.read_csv(csv_path, dtype={"Id": str}).drop_duplicates("Id").set_index("Id")
    examples = beam_fixtures.read_examples(output, metadata)
    assert metadata["num_input_rows"] == 200
    assert len(examples) == len(source)
    assert len(metadata["splits"]["train"]["shards"]) == 16
    for poster_id, example in examples.items():
        original = (dataset_dir / "Images" / f"{poster_id}.jpg").read_bytes()
        assert example[schema.IMAGE_ENCODED_KEY] == original
        assert (
            list(example[schema.LABEL_MULTI_HOT_KEY])
            == source.loc[poster_id, metadata["labels"]].tolist()
        )
        assert tf.io.decode_jpeg(example[schema.IMAGE_ENCODED_KEY], channels=3).shape[2] == 3

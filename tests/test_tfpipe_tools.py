"""Tests of the tfpipe.show contact sheet and the tfpipe.bench measurements."""

import json

import pytest
from PIL import Image

import shard_fixtures
from tfpipe import bench, schema, show

NUM_POSTERS = 12


@pytest.fixture(scope="module")
def poster_dirs(tmp_path_factory):
    """Shards of 12 synthetic posters, and a dataset folder with the same JPEG files."""
    posters = shard_fixtures.synthetic_posters(NUM_POSTERS, height=48, width=32)
    data_dir = tmp_path_factory.mktemp("shards")
    shard_fixtures.write_shards(data_dir, {"train": posters}, num_shards=3)
    dataset_dir = tmp_path_factory.mktemp("dataset")
    (dataset_dir / "Images").mkdir()
    for poster in posters:
        (dataset_dir / "Images" / f"{poster.poster_id}.jpg").write_bytes(poster.encoded)
    return str(data_dir), str(dataset_dir)


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "augmented"])
def test_show_writes_png(poster_dirs, tmp_path, augment):
    output = tmp_path / "grid.png"
    drawn = show.draw_contact_sheet(poster_dirs[0], "train", str(output), count=6,
                                    augment=augment, image_size=32)

    assert drawn == 6
    with Image.open(output) as image:
        assert image.format == "PNG"
        assert image.width > 200


@pytest.mark.parametrize(
    "measure",
    [bench.measure_limit, bench.measure_tutorial, bench.measure_naive],
    ids=["limit", "tutorial", "naive"],
)
def test_reference_measurements_count_posters(poster_dirs, measure):
    paths = [f"{poster_dirs[1]}/Images/synthetic-{i:05d}.jpg" for i in range(NUM_POSTERS)]
    result = measure(paths, 16, 4)

    # tf.data measurements leave the first batch (4 posters) out of the clock.
    assert result["images"] in (NUM_POSTERS, NUM_POSTERS - 4)
    assert result["images_per_s"] > 0
    assert result["cpu_ms_per_image"] > 0


def test_repeated_metadata_lists_shards_four_times(poster_dirs, tmp_path):
    bench._write_repeated_metadata(poster_dirs[0], "train", str(tmp_path), copies=4)
    metadata = schema.read_metadata(str(tmp_path))

    assert len(metadata["splits"]["train"]["shards"]) == 12
    assert metadata["splits"]["train"]["num_examples"] == 4 * NUM_POSTERS


def test_run_benchmark_reports_ratios(poster_dirs, tmp_path):
    results = bench.run_benchmark(poster_dirs[0], poster_dirs[1], image_size=16, count=12,
                                  batch_size=4, only=["limit", "build_dataset"])

    assert [r["name"] for r in results] == ["limit", "build_dataset"]
    assert results[0]["speed_ratio"] == 1.0
    assert results[1]["peak_rss_mb"] > 0
    assert "| build_dataset |" in bench.format_table(results)
    json.dumps(results)

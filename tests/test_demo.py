"""End-to-end tests of `python -m trainer.demo` and the HTML report it builds."""

import csv
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

NUM_POSTERS = 80


def make_small_dataset(dataset_dir, destination, num_rows):
    """Write a dataset folder with the first `num_rows` rows of the real CSV.

    `Images/` and `samples/` are symlinks to the real folders, so no poster
    is copied.
    """
    destination.mkdir()
    with open(dataset_dir / "train.csv", newline="", encoding="utf-8-sig") as source:
        rows = list(csv.reader(source))[: num_rows + 1]
    with open(destination / "train.csv", "w", newline="", encoding="utf-8") as target:
        csv.writer(target).writerows(rows)
    os.symlink(dataset_dir / "Images", destination / "Images")
    os.symlink(dataset_dir / "samples", destination / "samples")
    return destination


def run_demo(dataset, run_dir, *extra_flags):
    command = [
        sys.executable, "-m", "trainer.demo", f"--dataset_dir={dataset}", f"--run_dir={run_dir}",
        "--model=poster_net", "--image_size=64", "--epochs=1", "--global_batch_size=8",
        "--extra_trainer_flags=--verbose=2", *extra_flags,
    ]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)


@pytest.mark.real_data
@pytest.mark.slow
def test_demo_writes_report_for_real_posters(dataset_dir, tmp_path):
    dataset = make_small_dataset(dataset_dir, tmp_path / "dataset", NUM_POSTERS)
    run_dir = tmp_path / "run"

    completed = run_demo(dataset, run_dir)

    assert completed.returncode == 0, completed.stderr[-4000:]
    report = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "Test metrics" in report
    assert "baseline: label-frequency prior" in report
    assert "data:image/png;base64," in report
    assert "data:image/jpeg;base64," in report
    assert "endgame.jpg" in report

    metadata = json.loads((run_dir / "data" / "metadata.json").read_text())
    written = sum(split["num_examples"] for split in metadata["splits"].values())
    rejected = sum(metadata["rejected"].values())
    assert metadata["num_input_rows"] == NUM_POSTERS
    assert written + rejected == NUM_POSTERS

    stages = [stage["name"] for stage in json.loads((run_dir / "stages.json").read_text())]
    assert stages == ["shard", "train", "predict"]

    samples = json.loads((run_dir / "samples.json").read_text())
    assert len(samples) == 3
    assert all(len(sample["top_3"]) == 3 for sample in samples)

    # A rerun with the same settings reuses the finished stages.
    resumed = run_demo(dataset, run_dir)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    statuses = {stage["name"]: stage["status"] for stage in json.loads((run_dir / "stages.json").read_text())}
    assert statuses["shard"] == "reused"
    assert statuses["train"] == "reused"

    # A second run with other settings into the same folder is rejected.
    rerun = run_demo(dataset, run_dir, "--learning_rate=0.5")
    assert rerun.returncode != 0
    assert "contains a run with other settings (learning_rate differ)" in rerun.stderr


def test_demo_rejects_missing_dataset(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "trainer.demo", f"--dataset_dir={tmp_path}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )

    assert completed.returncode != 0
    assert "has no train.csv" in completed.stderr
    assert "Movies-Poster_Dataset" in completed.stderr

"""A short training run in this process, then its outputs, export and predict CLI."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import shard_fixtures
from tfpipe import preprocess
from trainer import predict
from trainer.config import smoke_config
from trainer.train import train_and_evaluate

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """Train poster_net at 32x32 for 2 epochs of 3 steps on synthetic shards, then evaluate."""
    root = tmp_path_factory.mktemp("smoke")
    posters = shard_fixtures.synthetic_posters(40, height=40, width=28)
    shard_fixtures.write_shards(
        root / "shards", {"train": posters[:24], "validation": posters[24:32], "test": posters[32:]}
    )
    result = train_and_evaluate(smoke_config(str(root / "shards"), str(root / "run")))
    return root, result, posters[32:]


def test_run_writes_outputs(smoke_run):
    root, result, _ = smoke_run
    run = root / "run"
    for name in (
        "config.json",
        "history.csv",
        "checkpoints/best.weights.h5",
        "eval/metrics.json",
        "eval/report.md",
        "eval/predictions.csv",
        "plots/learning_curves.png",
        "plots/per_genre_ap.png",
        "export/saved_model.pb",
        "export/serving_config.json",
    ):
        assert (run / name).is_file(), name
    assert not (run / "backup").exists()
    assert result["total_steps"] == 6


def test_history_has_validation_map(smoke_run):
    root, _, _ = smoke_run
    history = pd.read_csv(root / "run" / "history.csv")
    assert list(history["epoch"]) == [0, 1]
    for column in ("loss", "val_loss", "binary_accuracy", "val_map", "pr_auc", "images_per_second"):
        assert history[column].notna().all(), column


def test_metrics_include_baselines(smoke_run):
    root, _, test_posters = smoke_run
    report = json.loads((root / "run" / "eval" / "metrics.json").read_text())
    for key in ("macro_average_precision", "micro_f1", "hamming_loss", "precision_at_3"):
        assert key in report["model"], key
    assert report["baselines"]["all_zero"]["micro_f1"] == 0.0
    assert report["model"]["num_examples"] == len(test_posters)
    assert len(report["model"]["per_genre"]) == 25


def test_predictions_csv_covers_test_split(smoke_run):
    root, _, test_posters = smoke_run
    frame = pd.read_csv(root / "run" / "eval" / "predictions.csv")
    assert sorted(frame["id"]) == sorted(p.poster_id for p in test_posters)
    assert "p_Drama" in frame.columns


def test_export_signatures_agree(smoke_run):
    root, _, test_posters = smoke_run
    loaded = tf.saved_model.load(str(root / "run" / "export"))
    config = json.loads((root / "run" / "export" / "serving_config.json").read_text())
    encoded = tf.constant([p.encoded for p in test_posters[:3]])

    from_bytes = loaded.signatures["serving_default"](image_bytes=encoded)["probabilities"]
    pixels = tf.stack(
        [
            preprocess.decode_and_resize(e, config["image_size"], config["resize_method"])
            for e in encoded
        ]
    )
    from_images = loaded.signatures["serve_images"](images=pixels)["probabilities"]

    assert from_bytes.shape == (3, 25)
    np.testing.assert_allclose(from_bytes.numpy(), from_images.numpy(), atol=1e-5)
    assert config["labels"] == list(shard_fixtures.GENRES)
    assert len(config["thresholds"]) == 25


def test_predict_cli_reports_bad_file(smoke_run, tmp_path):
    root, _, test_posters = smoke_run
    good = tmp_path / "good.jpg"
    good.write_bytes(test_posters[0].encoded)
    bad = tmp_path / "truncated.jpg"
    bad.write_bytes(test_posters[1].encoded[:40])

    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainer.predict",
            f"--model_dir={root / 'run'}",
            "--format=json",
            str(good),
            str(bad),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 1
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["path"] == str(good)
    assert len(result["top_3"]) == 3
    assert len(result["probabilities"]) == 25
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "truncated.jpg" in errors[0]


def test_predict_text_shows_top_3(smoke_run, tmp_path):
    root, _, test_posters = smoke_run
    folder = tmp_path / "posters"
    folder.mkdir()
    for poster in test_posters[:2]:
        (folder / f"{poster.poster_id}.jpg").write_bytes(poster.encoded)
    serving_function, config = predict.load_predictor(str(root / "run"))
    files, errors = predict.expand_paths([str(folder)])
    results, failures = predict.predict_files(serving_function, config, files)
    assert errors == []
    assert failures == []
    assert len(results) == 2
    assert "top 3:" in predict.format_text(results[0])


@pytest.mark.real_data
def test_short_run_on_real_posters(dataset_dir, tmp_path):
    posters = shard_fixtures.real_posters(dataset_dir, 72, max_side=160)
    shard_fixtures.write_shards(
        tmp_path / "shards",
        {"train": posters[:48], "validation": posters[48:60], "test": posters[60:]},
    )
    config = smoke_config(
        str(tmp_path / "shards"),
        str(tmp_path / "run"),
        image_size=64,
        global_batch_size=8,
        steps_per_epoch=0,
        loss="weighted_bce",
        augment=True,
    )
    result = train_and_evaluate(config)

    assert result["steps_per_epoch"] == 6
    metrics = result["metrics"]
    assert 0.0 <= metrics["macro_average_precision"] <= 1.0
    serving_function, serving_config = predict.load_predictor(str(tmp_path / "run"))
    files, _ = predict.expand_paths([os.path.join(dataset_dir, "samples")])
    results, failures = predict.predict_files(serving_function, serving_config, files)
    assert failures == []
    assert len(results) == len(files)


def test_efficientnet_transfer_phases(smoke_run, tmp_path):
    root, _, _ = smoke_run
    config = smoke_config(
        str(root / "shards"),
        str(tmp_path / "run"),
        model="efficientnet_lite0",
        head_epochs=2,
        fine_tune_epochs=1,
        fine_tune_blocks=1,
        evaluate=False,
    )
    result = train_and_evaluate(config)

    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert list(history["epoch"]) == [0]
    assert result["steps_per_epoch"] == 3

"""Unit tests of the trainer's parts: strategies, models, losses, metrics, resume arithmetic."""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import callbacks, distribute, evaluation, inputs, losses
from trainer.models import build_model, model_names

# Strategy factory


@pytest.mark.parametrize(
    "name, expected_type",
    [
        ("default", "_DefaultDistributionStrategy"),
        ("one_device", "OneDeviceStrategy"),
        ("mirrored", "MirroredStrategy"),
    ],
    ids=["default", "one_device", "mirrored"],
)
def test_strategy_factory_builds_named_strategy(name, expected_type):
    strategy = distribute.make_strategy(name)
    assert type(strategy).__name__ == expected_type
    assert strategy.num_replicas_in_sync >= 1


def test_strategy_factory_lists_valid_names():
    with pytest.raises(ValueError) as error:
        distribute.make_strategy("parameter_server")
    for name in distribute.STRATEGY_NAMES:
        assert name in str(error.value)


def test_multi_worker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.make_strategy("multi_worker")


def test_default_strategy_is_chief():
    assert distribute.is_chief(distribute.make_strategy("default"))


# Models


def test_registry_lists_models():
    assert set(model_names()) == {"poster_cnn", "poster_net", "efficientnet_lite0"}


def test_unknown_model_lists_names():
    with pytest.raises(ValueError, match="poster_cnn"):
        build_model("resnet50", (64, 64), 25)


@pytest.mark.parametrize(
    "name, side", [("poster_cnn", 64), ("poster_net", 48), ("efficientnet_lite0", 64)]
)
def test_model_outputs_probabilities(name, side):
    model = build_model(name, (side, side), 25)
    images = np.random.default_rng(0).random((2, side, side, 3), dtype=np.float32)
    probabilities = model(images, training=False).numpy()
    assert probabilities.shape == (2, 25)
    assert probabilities.dtype == np.float32
    assert np.all((probabilities >= 0) & (probabilities <= 1))


def test_poster_cnn_matches_tutorial_layers():
    model = build_model("poster_cnn", (350, 350), 25)
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    kinds = [type(layer).__name__ for layer in layers]
    block = ["Conv2D", "BatchNormalization", "MaxPooling2D", "Dropout"]
    dense = ["Dense", "BatchNormalization", "Dropout"]
    assert kinds == block * 4 + ["Flatten"] + dense * 2 + ["Dense"]

    convs = [layer for layer in layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [16, 32, 64, 128]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert [d.rate for d in layers if isinstance(d, keras.layers.Dropout)] == [
        0.3,
        0.3,
        0.4,
        0.5,
        0.5,
        0.5,
    ]
    denses = [layer for layer in layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in denses] == [128, 128, 25]
    assert denses[-1].activation.__name__ == "sigmoid"
    # 20x20x128 flattened features into 128 units: 51,200 * 128 + 128 parameters.
    assert denses[0].count_params() == 51200 * 128 + 128


def test_poster_net_is_small():
    model = build_model("poster_net", (160, 160), 25)
    assert 150_000 < model.count_params() < 400_000


def test_mixed_precision_keeps_float32_output():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model("poster_net", (32, 32), 25)
        output = model(np.zeros((1, 32, 32, 3), np.float32), training=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert output.dtype == tf.float32


# Losses

_LABELS = np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32)
_PROBABILITIES = np.array([[0.8, 0.1, 0.3], [0.4, 0.6, 0.2]], dtype=np.float32)


def _bce_by_hand(labels, probabilities, pos_weight):
    terms = pos_weight * labels * np.log(probabilities) + (1 - labels) * np.log(1 - probabilities)
    return -terms.mean()


def test_bce_matches_formula():
    loss = losses.build_loss("bce", {})
    expected = _bce_by_hand(_LABELS, _PROBABILITIES, np.ones(3))
    assert float(loss(_LABELS, _PROBABILITIES)) == pytest.approx(expected, rel=1e-5)


def test_weighted_bce_scales_positive_term():
    train_split = {"num_examples": 100, "label_counts": [50, 10, 0]}
    loss = losses.build_loss("weighted_bce", train_split, pos_weight_cap=5.0)
    weights = np.array([1.0, 5.0, 1.0])  # 50/50 -> 1, 90/10 capped at 5, no positives -> 1
    expected = _bce_by_hand(_LABELS, _PROBABILITIES, weights)
    assert float(loss(_LABELS, _PROBABILITIES)) == pytest.approx(expected, rel=1e-5)


def test_positive_weights_are_capped():
    weights = losses.positive_weights([3600, 2, 0], 7000, cap=10.0)
    np.testing.assert_allclose(weights, [1.0, 10.0, 1.0], rtol=1e-6)


def test_weighted_bce_needs_label_counts():
    with pytest.raises(ValueError, match="label_counts"):
        losses.build_loss("weighted_bce", {"num_examples": 10})


def test_focal_loss_discounts_easy_examples():
    loss = losses.build_loss("focal", {})
    easy = float(loss(np.array([[1.0]]), np.array([[0.95]])))
    hard = float(loss(np.array([[1.0]]), np.array([[0.3]])))
    bce = losses.build_loss("bce", {})
    assert easy / float(bce(np.array([[1.0]]), np.array([[0.95]]))) < 0.01
    assert hard > easy


def test_unknown_loss_lists_names():
    with pytest.raises(ValueError, match="weighted_bce"):
        losses.build_loss("hinge", {})


# Evaluation

_NAMES = ["Drama", "Comedy", "News"]
# Four posters; News has no positive, so its AP and F1 are undefined.
_EVAL_LABELS = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
_EVAL_PROBABILITIES = np.array([[0.9, 0.2, 0.1], [0.7, 0.6, 0.3], [0.2, 0.8, 0.1], [0.1, 0.3, 0.2]])


def test_metrics_on_perfect_ranking():
    metrics = evaluation.compute_metrics(_EVAL_LABELS, _EVAL_PROBABILITIES, label_names=_NAMES)
    assert metrics["macro_average_precision"] == pytest.approx(1.0)
    assert metrics["micro_f1"] == pytest.approx(1.0)
    assert metrics["subset_accuracy"] == pytest.approx(1.0)
    assert metrics["hamming_loss"] == pytest.approx(0.0)


def test_genre_without_positive_is_null():
    metrics = evaluation.compute_metrics(_EVAL_LABELS, _EVAL_PROBABILITIES, label_names=_NAMES)
    news = metrics["per_genre"][2]
    assert news["support"] == 0
    assert news["average_precision"] is None
    assert news["f1"] is None
    assert metrics["num_genres_with_positives"] == 2
    assert json.loads(json.dumps(metrics))["per_genre"][2]["average_precision"] is None


def test_precision_and_recall_at_3():
    metrics = evaluation.compute_metrics(_EVAL_LABELS, _EVAL_PROBABILITIES)
    # The top 3 of 3 genres contain every positive: hits 1, 2, 1, 0 of 3 each.
    assert metrics["precision_at_3"] == pytest.approx((1 + 2 + 1 + 0) / 12)
    assert metrics["recall_at_3"] == pytest.approx(1.0)


def test_binary_accuracy_uses_half():
    probabilities = np.full((4, 3), 0.4)
    metrics = evaluation.compute_metrics(_EVAL_LABELS, probabilities, thresholds=np.full(3, 0.3))
    # At 0.5 nothing is predicted, so accuracy is the share of zeros: 8 of 12.
    assert metrics["binary_accuracy"] == pytest.approx(8 / 12)
    # At the 0.3 thresholds everything is predicted: 4 of 12 right.
    assert metrics["hamming_loss"] == pytest.approx(8 / 12)


def test_thresholds_maximise_f1_and_fall_back():
    labels = np.array([[1, 0], [1, 0], [0, 0], [0, 0]])
    probabilities = np.array([[0.3, 0.9], [0.25, 0.1], [0.2, 0.5], [0.1, 0.4]])
    thresholds = evaluation.tune_thresholds(labels, probabilities, min_positives=2)
    assert thresholds[0] == pytest.approx(0.25)
    assert thresholds[1] == pytest.approx(evaluation.DEFAULT_THRESHOLD)


def test_thresholds_keep_default_for_rare_genres():
    labels = np.array([[1, 0], [0, 0], [0, 0], [0, 0]])
    probabilities = np.array([[0.01, 0.9], [0.005, 0.1], [0.002, 0.5], [0.001, 0.4]])

    thresholds = evaluation.tune_thresholds(labels, probabilities)

    assert thresholds[0] == pytest.approx(evaluation.DEFAULT_THRESHOLD)


def test_baselines_score_as_expected():
    frequencies = np.array([0.5, 0.5, 0.0], dtype=np.float32)
    report = evaluation.evaluate_with_baselines(
        _EVAL_LABELS, _EVAL_PROBABILITIES, _EVAL_LABELS, _EVAL_PROBABILITIES, frequencies, _NAMES
    )
    all_zero = report["baselines"]["all_zero"]
    prior = report["baselines"]["label_prior"]
    assert all_zero["micro_f1"] == 0.0
    assert all_zero["binary_accuracy"] == pytest.approx(8 / 12)
    # A constant score ranks nothing, so its AP is the positive rate (2 of 4 per genre).
    assert prior["macro_average_precision"] == pytest.approx(0.5)
    assert report["model"]["macro_average_precision"] == pytest.approx(1.0)


def test_report_marks_undefined_metrics():
    report = evaluation.evaluate_with_baselines(
        _EVAL_LABELS,
        _EVAL_PROBABILITIES,
        _EVAL_LABELS,
        _EVAL_PROBABILITIES,
        np.array([0.5, 0.5, 0.0]),
        _NAMES,
    )
    text = evaluation.format_report(report, "test")
    assert "| News | 0 | - | - |" in text


# Resume arithmetic and callbacks


def test_stream_position_crosses_epochs():
    # 10 examples per epoch, 4 per step: after 3 steps, 12 consumed = epoch 1, 2 in.
    assert inputs.stream_position(3, 4, 10) == (1, 2)
    assert inputs.stream_position(0, 4, 10) == (0, 0)


def test_nonfinite_loss_names_step_window():
    check = callbacks.StopOnNonFiniteLoss(steps_per_epoch=10, check_every=1)
    check.on_epoch_begin(2)
    check.on_train_batch_end(0, {"loss": 0.7})
    with pytest.raises(callbacks.NonFiniteLossError, match="between global steps 21 and 21"):
        check.on_train_batch_end(1, {"loss": math.nan})


def test_backup_rejects_changed_steps_per_epoch(tmp_path):
    backup_dir = tmp_path / "backup"
    backup_dir.mkdir()
    record = {"epoch": 1, "steps_done_in_epoch": 4, "steps_per_epoch": 12, "weights_file": "x"}
    (backup_dir / callbacks.POSITION_FILENAME).write_text(json.dumps(record))

    assert callbacks.StepBackupAndRestore(str(backup_dir), 2, 12).saved_position() == (1, 4)
    with pytest.raises(ValueError, match="12 steps per epoch"):
        callbacks.StepBackupAndRestore(str(backup_dir), 2, 10).saved_position()


def test_backup_at_epoch_end_resumes_next_epoch(tmp_path):
    backup_dir = tmp_path / "backup"
    backup_dir.mkdir()
    record = {"epoch": 1, "steps_done_in_epoch": 12, "steps_per_epoch": 12, "weights_file": "x"}
    (backup_dir / callbacks.POSITION_FILENAME).write_text(json.dumps(record))
    assert callbacks.StepBackupAndRestore(str(backup_dir), 2, 12).saved_position() == (2, 0)

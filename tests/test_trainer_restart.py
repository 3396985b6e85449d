"""Tests of the check that a restarted run uses the flags of the run it resumes."""

import json

import pytest

from trainer import train
from trainer.config import TrainConfig


def make_config(tmp_path, **overrides):
    return TrainConfig(data_dir=str(tmp_path / "data"), model_dir=str(tmp_path / "model"), **overrides)


def test_first_run_writes_its_flags(tmp_path):
    config = make_config(tmp_path, learning_rate=0.01)
    output_dir = tmp_path / "model"
    output_dir.mkdir()

    train._check_previous_run(config, str(output_dir))

    written = json.loads((output_dir / train.RUN_FLAGS_FILENAME).read_text())
    assert written["learning_rate"] == 0.01
    assert "verbose" not in written


def test_restart_with_same_flags_is_accepted(tmp_path):
    output_dir = tmp_path / "model"
    output_dir.mkdir()
    train._check_previous_run(make_config(tmp_path, epochs=3), str(output_dir))

    train._check_previous_run(make_config(tmp_path, epochs=3, verbose=0, evaluate=False), str(output_dir))


def test_restart_with_other_flags_is_rejected(tmp_path):
    output_dir = tmp_path / "model"
    output_dir.mkdir()
    train._check_previous_run(make_config(tmp_path, epochs=3, model="poster_cnn"), str(output_dir))

    with pytest.raises(ValueError) as raised:
        train._check_previous_run(make_config(tmp_path, epochs=5, model="poster_cnn"), str(output_dir))

    assert "--epochs=3 before, 5 now" in str(raised.value)
    assert "use a new --model_dir" in str(raised.value)


def test_empty_history_has_no_best_value(tmp_path):
    # A run killed during its first epoch leaves history.csv with no rows.
    (tmp_path / train.HISTORY_FILENAME).write_text("")

    assert train._best_so_far(str(tmp_path)) is None


def test_history_best_value_is_the_maximum(tmp_path):
    (tmp_path / train.HISTORY_FILENAME).write_text(f"epoch,{train.MONITOR}\n0,0.2\n1,0.3\n2,0.25\n")

    assert train._best_so_far(str(tmp_path)) == 0.3

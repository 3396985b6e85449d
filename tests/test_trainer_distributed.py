"""Training under real strategies in subprocesses: two CPU replicas, two workers, SIGKILL resume."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

import shard_fixtures
import tfpipe

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
TIMEOUT_S = 240


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Synthetic shards: 48 train, 8 validation, 8 test posters."""
    data_dir = tmp_path_factory.mktemp("shards")
    posters = shard_fixtures.synthetic_posters(64, height=48, width=32)
    shard_fixtures.write_shards(
        data_dir, {"train": posters[:48], "validation": posters[48:56], "test": posters[56:]}
    )
    return data_dir


def _trainer_command(data_dir, model_dir, *flags):
    return [
        sys.executable,
        "-m",
        "trainer",
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
        "--image_size=32",
        "--noaugment",
        "--noevaluate",
        "--verbose=0",
        *flags,
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(processes) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def _read_id_lines(path):
    return [line.split() for line in pathlib.Path(path).read_text().splitlines() if line.strip()]


def test_mirrored_two_cpu_replicas(shards, tmp_path):
    ids_log = tmp_path / "ids.txt"
    command = _trainer_command(
        shards,
        tmp_path / "run",
        "--strategy=mirrored",
        "--num_cpu_replicas=2",
        "--global_batch_size=4",
        "--epochs=2",
        "--steps_per_epoch=3",
        f"--batch_ids_log={ids_log}",
    )
    completed = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["num_replicas_in_sync"] == 2
    assert config["per_replica_batch_size"] == 2
    # One line per replica batch: 6 steps x 2 replicas, 2 ids each.
    lines = _read_id_lines(ids_log)
    assert len(lines) == 12
    assert all(len(line) == 2 for line in lines)
    # The one input pipeline yields replica batches of 2, two per step, from the first on.
    reference = _reference_batches(shards, 2, 12)
    for step in range(6):
        trained = sorted(lines[2 * step] + lines[2 * step + 1])
        expected = sorted(reference[2 * step] + reference[2 * step + 1])
        assert trained == expected, f"step {step}"
    assert len(pd.read_csv(tmp_path / "run" / "history.csv")) == 2


def test_multi_worker_two_processes(shards, tmp_path):
    workers = [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]
    processes = []
    try:
        for index in range(2):
            tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
            env = {**os.environ, "TF_CONFIG": json.dumps(tf_config)}
            command = _trainer_command(
                shards,
                tmp_path / "run",
                "--strategy=multi_worker",
                "--global_batch_size=4",
                "--epochs=1",
                "--steps_per_epoch=3",
            )
            log = open(tmp_path / f"worker{index}.log", "w")
            processes.append(
                subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=log)
            )
        return_codes = [process.wait(timeout=TIMEOUT_S) for process in processes]
    finally:
        _stop(processes)

    assert return_codes == [0, 0], (tmp_path / "worker0.log").read_text()[-3000:]
    chief_config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert chief_config["num_replicas_in_sync"] == 2
    assert len(pd.read_csv(tmp_path / "run" / "history.csv")) == 1
    assert (tmp_path / "run" / "workers" / "worker_1" / "history.csv").is_file()


def _reference_batches(data_dir, batch_size, count):
    """Return the ids of the first `count` training batches of an uninterrupted run."""
    dataset = tfpipe.build_dataset(
        data_dir,
        "train",
        batch_size=batch_size,
        image_size=(8, 8),
        training=True,
        seed=0,
        augment=False,
        include_ids=True,
    )
    return [[i.decode() for i in ids.numpy()] for _, _, ids in dataset.take(count)]


def test_sigkill_resumes_at_saved_step(shards, tmp_path):
    # 48 train posters, batch 4: 12 steps per epoch, 24 in all; a backup every 2 steps.
    ids_log = tmp_path / "ids.txt"
    position_file = tmp_path / "run" / "backup" / "training_metadata.json"
    command = _trainer_command(
        shards,
        tmp_path / "run",
        "--image_size=96",
        "--global_batch_size=4",
        "--epochs=2",
        "--save_every_steps=2",
        f"--batch_ids_log={ids_log}",
    )

    first_log = open(tmp_path / "first_run.log", "w")
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=first_log, stderr=first_log)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        position = None
        while time.monotonic() < deadline and process.poll() is None:
            if position_file.is_file():
                try:
                    position = json.loads(position_file.read_text())
                except json.JSONDecodeError:
                    position = None
                if position and position["epoch"] == 1 and position["steps_done_in_epoch"] >= 2:
                    break
            time.sleep(0.005)
        assert process.poll() is None, "training ended before it could be killed mid-epoch"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        _stop([process])

    saved = json.loads(position_file.read_text())
    saved_step = saved["global_step"]
    assert saved["epoch"] == 1
    assert 0 < saved["steps_done_in_epoch"] < 12
    first_run = _read_id_lines(ids_log)
    with open(ids_log, "a") as f:
        f.write("\n")  # ends a line the kill may have cut short

    completed = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    (tmp_path / "second_run.log").write_text(completed.stderr)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert f"Resuming at epoch 1, step {saved['steps_done_in_epoch']} of 12" in completed.stderr

    second_run = _read_id_lines(ids_log)[len(first_run) :]
    reference = _reference_batches(shards, 4, 24)
    assert first_run[:saved_step] == reference[:saved_step]
    assert len(second_run) == 24 - saved_step
    assert second_run == reference[saved_step:]
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert list(history["epoch"]) == [0, 1]
    assert not (tmp_path / "run" / "backup").exists()

"""Run the whole pipeline on a dataset folder: shard, train, evaluate, predict, report.

    python -m trainer.demo --dataset_dir=../shared/movie-posters [--run_dir=runs/NAME]

`make demo` runs this. Each stage is started as its own command, exactly as a
user would start it, with its output streamed to the terminal:

    convert_weights  python -m trainer.convert_weights   (pretrained model, once per machine)
    shard            python -m beam_jobs.posters_to_tfrecords  (DirectRunner, 2 workers)
    train            python -m trainer --strategy=mirrored ...  (also evaluates and exports)
    predict          python -m trainer.predict --format=json DATASET_DIR/samples
    report           trainer.report.build_report (in this process)

Everything goes into `--run_dir` (default `runs/<UTC timestamp>`):
`data/` (shards, metadata.json, rejected/), `model/` (checkpoints, backup,
TensorBoard logs, history, eval/, plots/, export/), `samples.json`,
`stages.json`, `demo_config.json` and `report.html`.

Rerunning into an existing run folder resumes: finished shard and train
stages are reused, and an interrupted training continues from its last backup. A run folder whose
`demo_config.json` differs from the current flags is rejected, so shards or
checkpoints of two configurations never mix.
"""

import datetime
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Sequence

from absl import app, flags, logging

FLAGS = flags.FLAGS

flags.DEFINE_string("dataset_dir", None, "Dataset folder: train.csv, Images/, samples/.")
flags.DEFINE_string("run_dir", "", "Output folder of this run; empty means runs/<UTC timestamp>.")
flags.DEFINE_string("model", "efficientnet_lite0", "Model from trainer/models.")
flags.DEFINE_integer("image_size", 224, "Side of the square model input, pixels.")
flags.DEFINE_integer("global_batch_size", 32, "Examples per training step over both replicas.")
flags.DEFINE_integer("epochs", 0, "Epochs of end-to-end training after the head phase.")
flags.DEFINE_integer("head_epochs", 200, "Maximum epochs of head training on cached backbone "
                     "features, with early stopping (pretrained model only).")
flags.DEFINE_integer("fine_tune_epochs", 5, "Epochs with the top --fine_tune_blocks backbone "
                     "blocks unfrozen (pretrained model only).")
flags.DEFINE_integer("fine_tune_blocks", 3, "Top backbone blocks to unfreeze for fine-tuning "
                     "(pretrained model only).")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate of the main phase.")
flags.DEFINE_integer("num_cpu_replicas", 2, "Logical CPU devices for the mirrored strategy on a "
                     "machine without a GPU (ignored when GPUs are present).")
flags.DEFINE_integer("shard_workers", 2, "DirectRunner workers of the Beam job.")
flags.DEFINE_list("extra_trainer_flags", [], "More `--flag=value` items passed to `python -m trainer`.")

STAGES_FILENAME = "stages.json"
CONFIG_FILENAME = "demo_config.json"


def run_demo(dataset_dir: str, run_dir: str, config: Dict) -> str:
    """Run every stage into `run_dir` and return the path of `report.html`.

    Raises:
        RuntimeError: when a stage command fails; the message names the stage
            and its command, and the run folder is kept for a rerun.
        ValueError: when `run_dir` contains a run of another configuration.
    """
    os.makedirs(run_dir, exist_ok=True)
    _check_or_write_config(run_dir, config)
    data_dir = os.path.join(run_dir, "data")
    model_dir = os.path.join(run_dir, "model")
    stages: List[Dict] = []
    logging.info("Demo run folder: %s", run_dir)

    weights = None
    if config["model"] == "efficientnet_lite0":
        weights = _pretrained_weights(stages)

    if os.path.exists(os.path.join(data_dir, "metadata.json")):
        logging.info("Shards already written in %s; reusing them.", data_dir)
        stages.append({"name": "shard", "seconds": 0.0, "status": "reused"})
    else:
        _run_stage(stages, "shard", [
            "-m", "beam_jobs.posters_to_tfrecords",
            f"--dataset_dir={dataset_dir}", f"--output_dir={data_dir}",
            "--runner=DirectRunner", f"--direct_num_workers={config['shard_workers']}",
            "--direct_running_mode=multi_processing",
        ])

    train_command = [
        "-m", "trainer", f"--data_dir={data_dir}", f"--model_dir={model_dir}",
        "--strategy=mirrored", f"--num_cpu_replicas={config['num_cpu_replicas']}",
        f"--model={config['model']}", f"--image_size={config['image_size']}",
        f"--global_batch_size={config['global_batch_size']}", f"--epochs={config['epochs']}",
        f"--learning_rate={config['learning_rate']}", "--verbose=1",
    ]
    if weights:
        train_command += [
            f"--weights={weights}", f"--head_epochs={config['head_epochs']}",
            f"--fine_tune_epochs={config['fine_tune_epochs']}",
            f"--fine_tune_blocks={config['fine_tune_blocks']}",
        ]
    train_command += list(config["extra_trainer_flags"])
    finished = all(
        os.path.exists(os.path.join(model_dir, name))
        for name in ("eval/metrics.json", "export/saved_model.pb")
    )
    if finished:
        logging.info("Training already finished in %s; reusing its model and metrics.", model_dir)
        stages.append({"name": "train", "seconds": 0.0, "status": "reused"})
    else:
        _run_stage(stages, "train", train_command)

    samples_dir = os.path.join(dataset_dir, "samples")
    if os.path.isdir(samples_dir):
        output = _run_stage(stages, "predict", [
            "-m", "trainer.predict", f"--model_dir={model_dir}", "--format=json", samples_dir,
        ], capture=True, must_succeed=False)  # A sample that fails to decode must not stop the report.
        samples = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        with open(os.path.join(run_dir, "samples.json"), "w", encoding="utf-8") as f:
            json.dump(samples, f, indent=2)
        for sample in samples:
            top3 = ", ".join(f"{genre} {probability:.2f}" for genre, probability in sample["top_3"])
            logging.info("%s: %s", os.path.basename(sample["path"]), top3)
    else:
        logging.warning("%s not found; no sample posters to predict.", samples_dir)

    from trainer import report

    _write_stages(run_dir, stages)
    report_path = report.build_report(run_dir)
    logging.info("Report: %s", os.path.abspath(report_path))
    return report_path


def _pretrained_weights(stages: List[Dict]) -> str:
    """Return the converted EfficientNet-Lite0 weights, converting them once if needed."""
    from trainer.models import efficientnet_lite

    path = efficientnet_lite.default_weights_path()
    if os.path.exists(path):
        logging.info("Using converted ImageNet weights %s.", path)
        stages.append({"name": "convert_weights", "seconds": 0.0, "status": "cached"})
        return path
    _run_stage(stages, "convert_weights", ["-m", "trainer.convert_weights", f"--output={path}"])
    return path


def _run_stage(
    stages: List[Dict], name: str, arguments: List[str], capture: bool = False,
    must_succeed: bool = True,
) -> str:
    """Run `python ARGUMENTS` as stage `name`, record its duration, and return its stdout if captured.

    A failed stage raises `RuntimeError` unless `must_succeed` is False (then
    its status in `stages` says it failed and the demo goes on).
    """
    command = [sys.executable] + arguments
    logging.info("Stage %s started: %s", name, " ".join(command))
    started = time.monotonic()
    # Google client libraries that Beam imports warn about future Python versions
    # on every worker start; those warnings are not about this run.
    environment = {**os.environ, "PYTHONWARNINGS": "ignore::FutureWarning"}
    completed = subprocess.run(
        command, stdout=subprocess.PIPE if capture else None, text=True, env=environment
    )
    seconds = time.monotonic() - started
    status = "ok" if completed.returncode == 0 else f"failed (exit {completed.returncode})"
    stages.append({"name": name, "seconds": seconds, "status": status})
    logging.info("Stage %s %s in %.1f min.", name, status, seconds / 60)
    if completed.returncode != 0 and must_succeed:
        raise RuntimeError(
            f"Stage {name} failed with exit status {completed.returncode}: {' '.join(command)}. "
            "Fix the cause shown above and rerun with the same --run_dir to resume."
        )
    return completed.stdout or ""


def _check_or_write_config(run_dir: str, config: Dict) -> None:
    path = os.path.join(run_dir, CONFIG_FILENAME)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            previous = json.load(f)
        if previous != config:
            changed = sorted(k for k in set(previous) | set(config) if previous.get(k) != config.get(k))
            raise ValueError(
                f"{run_dir} contains a run with other settings ({', '.join(changed)} differ). "
                "Use a new --run_dir, or the same flags to resume that run."
            )
        logging.info("Resuming the run in %s.", run_dir)
        return
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)


def _write_stages(run_dir: str, stages: List[Dict]) -> None:
    with open(os.path.join(run_dir, STAGES_FILENAME), "w", encoding="utf-8") as f:
        json.dump(stages, f, indent=2)


def main(argv: Sequence[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.dataset_dir or not os.path.exists(os.path.join(FLAGS.dataset_dir, "train.csv")):
        raise app.UsageError(
            f"--dataset_dir={FLAGS.dataset_dir!r} has no train.csv. Get the public dataset with "
            "`git clone https://github.com/laxmimerit/Movies-Poster_Dataset` and point "
            "--dataset_dir (or DATASET_DIR for make demo) at it."
        )
    run_dir = FLAGS.run_dir or os.path.join(
        "runs", datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    )
    config = {
        "dataset_dir": os.path.abspath(FLAGS.dataset_dir),
        "model": FLAGS.model,
        "image_size": FLAGS.image_size,
        "global_batch_size": FLAGS.global_batch_size,
        "epochs": FLAGS.epochs,
        "head_epochs": FLAGS.head_epochs,
        "fine_tune_epochs": FLAGS.fine_tune_epochs,
        "fine_tune_blocks": FLAGS.fine_tune_blocks,
        "learning_rate": FLAGS.learning_rate,
        "num_cpu_replicas": FLAGS.num_cpu_replicas,
        "shard_workers": FLAGS.shard_workers,
        "extra_trainer_flags": list(FLAGS.extra_trainer_flags),
    }
    started = time.monotonic()
    try:
        report_path = run_demo(FLAGS.dataset_dir, run_dir, config)
    except (ValueError, RuntimeError) as error:
        logging.error("Demo stopped: %s", error)
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"Interrupted. Rerun with --run_dir={run_dir} to resume.", file=sys.stderr)
        return 130
    print(f"Done in {(time.monotonic() - started) / 60:.1f} min. Open {os.path.abspath(report_path)}")
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))

"""Measure training throughput with the tfpipe input against an in-memory batch.

    python -m trainer.bench --data_dir=SHARDS [--model=poster_net] [--image_size=0]
        [--global_batch_size=32] [--warmup_steps=5] [--steps=20] [--rounds=2] [--output=FILE.json]

Trains the same compiled model (default strategy) in one process on two
inputs, alternating them `--rounds` times:

- `synthetic`: one random batch repeated (`Dataset.from_tensors(...).repeat()`),
  so the step time is the model's alone;
- `tfpipe`: `tfpipe.build_dataset(..., training=True)` with augmentation,
  as training reads it.

For each it reports images/s (wall clock) and CPU milliseconds per image
(process CPU time over all threads), measured over `--steps` steps after
`--warmup_steps`, the best round of each. The input pipeline's cost is
`1 - tfpipe rate / synthetic rate`. Wall-clock figures vary with other load
on the machine; the two inputs are measured in the same run so their ratio
is comparable.
"""

import json
import time
from typing import Dict

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags, logging

import tfpipe
from tfpipe import schema
from trainer import losses
from trainer.config import DEFAULT_IMAGE_SIZES
from trainer.models import DEFAULT_MODEL, build_model, model_names


class _StepClock(keras.callbacks.Callback):
    """Record wall and CPU time at the end of step `warmup_steps` and of the last step."""

    def __init__(self, warmup_steps: int):
        super().__init__()
        self.warmup_steps = warmup_steps
        self.start = None
        self.end = None

    def on_train_batch_end(self, batch, logs=None):
        if logs is not None and "loss" in logs:
            float(logs["loss"])  # waits for the step to finish
        now = (time.perf_counter(), time.process_time())
        if batch + 1 == self.warmup_steps:
            self.start = now
        self.end = now


def measure(
    model, dataset, *, warmup_steps: int, steps: int, global_batch_size: int
) -> Dict[str, float]:
    """Train `warmup_steps + steps` steps on `dataset`; return the rates of the last `steps`."""
    clock = _StepClock(warmup_steps)
    model.fit(dataset, epochs=1, steps_per_epoch=warmup_steps + steps, callbacks=[clock], verbose=0)
    wall = clock.end[0] - clock.start[0]
    cpu = clock.end[1] - clock.start[1]
    images = steps * global_batch_size
    return {
        "images_per_second": images / wall,
        "cpu_ms_per_image": 1000.0 * cpu / images,
        "seconds_per_step": wall / steps,
    }


def run_benchmark(
    data_dir: str,
    model_name: str,
    image_size: int,
    global_batch_size: int,
    warmup_steps: int,
    steps: int,
    rounds: int,
    seed: int = 0,
) -> Dict:
    """Measure both inputs `rounds` times, alternating; return the best rounds and the cost."""
    metadata = schema.read_metadata(data_dir)
    num_labels = len(metadata["labels"])
    side = image_size or DEFAULT_IMAGE_SIZES[model_name]
    keras.utils.set_random_seed(seed)
    model = build_model(model_name, (side, side), num_labels)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=losses.build_loss("bce", metadata["splits"]["train"]),
        metrics=[keras.metrics.BinaryAccuracy(name="binary_accuracy")],
    )

    rng = np.random.default_rng(seed)
    images = rng.random((global_batch_size, side, side, 3), dtype=np.float32)
    labels = (rng.random((global_batch_size, num_labels)) < 0.1).astype(np.float32)
    inputs = {
        "synthetic": tf.data.Dataset.from_tensors((images, labels)).repeat(),
        "tfpipe": tfpipe.build_dataset(
            data_dir,
            "train",
            batch_size=global_batch_size,
            image_size=(side, side),
            training=True,
            seed=seed,
        ),
    }

    results = {name: [] for name in inputs}
    for round_index in range(rounds):
        for name, dataset in inputs.items():
            figures = measure(
                model,
                dataset,
                warmup_steps=warmup_steps,
                steps=steps,
                global_batch_size=global_batch_size,
            )
            logging.info(
                "Round %d, %s: %.1f images/s, %.2f CPU ms per image.",
                round_index,
                name,
                figures["images_per_second"],
                figures["cpu_ms_per_image"],
            )
            results[name].append(figures)

    best = {name: max(rows, key=lambda r: r["images_per_second"]) for name, rows in results.items()}
    num_train = int(metadata["splits"]["train"]["num_examples"])
    return {
        "model": model_name,
        "image_size": side,
        "global_batch_size": global_batch_size,
        "steps": steps,
        "rounds": rounds,
        "best": best,
        "all_rounds": results,
        "input_cost_fraction": 1.0
        - best["tfpipe"]["images_per_second"] / best["synthetic"]["images_per_second"],
        "estimated_seconds_per_epoch": num_train / best["tfpipe"]["images_per_second"],
        "train_examples": num_train,
    }


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    report = run_benchmark(
        f.data_dir, f.model, f.image_size, f.global_batch_size, f.warmup_steps, f.steps, f.rounds
    )
    for name, figures in report["best"].items():
        print(
            f"{name:9s} {figures['images_per_second']:8.1f} images/s  "
            f"{figures['cpu_ms_per_image']:7.2f} CPU ms/image  "
            f"{figures['seconds_per_step']:.3f} s/step"
        )
    print(
        f"input pipeline cost: {100 * report['input_cost_fraction']:.1f}% of the synthetic rate; "
        f"estimated epoch of {report['train_examples']} examples: "
        f"{report['estimated_seconds_per_epoch']:.0f} s"
    )
    if f.output:
        with open(f.output, "w") as out:
            json.dump(report, out, indent=2)


if __name__ == "__main__":
    flags.DEFINE_string("data_dir", None, "Folder of metadata.json and the shards.")
    flags.DEFINE_enum("model", DEFAULT_MODEL, model_names(), "Model from the registry.")
    flags.DEFINE_integer("image_size", 0, "Square input side in pixels; 0 for the model default.")
    flags.DEFINE_integer("global_batch_size", 32, "Examples per step.")
    flags.DEFINE_integer(
        "warmup_steps",
        5,
        "Steps per measurement before the clock starts " "(tracing, shuffle buffer fill).",
    )
    flags.DEFINE_integer("steps", 20, "Timed steps per measurement.")
    flags.DEFINE_integer("rounds", 2, "Measurements per input, alternating synthetic and tfpipe.")
    flags.DEFINE_string("output", "", "Also write the figures to this JSON file.")
    flags.mark_flag_as_required("data_dir")
    app.run(main)

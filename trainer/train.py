"""Train a poster classifier under a tf.distribute strategy, then evaluate and export it.

`train_and_evaluate(config)` is the whole run; `python -m trainer` calls it
from flags. It reads shards written by `python -m beam_jobs.posters_to_tfrecords`
(through `tfpipe.build_dataset`) and writes into `config.model_dir`:

    config.json                    the settings of the run and the batch arithmetic
    history.csv                    one row per epoch: training and validation metrics
    tensorboard/                   TensorBoard logs
    checkpoints/best.weights.h5    weights of the epoch with the best validation mAP
    backup/                        the step-level backup while training runs
    eval/metrics.json, eval/report.md, eval/predictions.csv    (see trainer/finish.py)
    plots/learning_curves.png, plots/per_genre_ap.png
    export/                        SavedModel plus serving_config.json (see trainer/export.py)

Under `multi_worker`, every worker trains; only the chief writes there, and the
other workers keep their backup and logs under `model_dir/workers/<task>/`.

A restarted run with the same flags resumes from `backup/` at the step it
was saved, with the input stream positioned on the next unseen example.
"""

import dataclasses
import io
import json
import os
from typing import Dict, Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

import tfpipe
from tfpipe import schema
from trainer import callbacks as callbacks_lib
from trainer import distribute, inputs, keras_compat, losses
from trainer.config import TrainConfig
from trainer.models import build_model

HISTORY_FILENAME = "history.csv"
BEST_WEIGHTS = os.path.join("checkpoints", "best.weights.h5")
# The monitored figure of the best checkpoint: validation macro average precision.
MONITOR = "val_map"


def train_and_evaluate(config: TrainConfig) -> Dict:
    """Train, then (on the chief, unless `config.evaluate` is False) evaluate and export.

    Returns:
        A dict with `model_dir`, `steps_per_epoch`, `total_steps`, `is_chief` and,
        after evaluation, `metrics` (the test-split model metrics) and `export_dir`.

    Raises:
        ValueError: on invalid settings (strategy, model, loss, batch size).
        schema.SchemaError: when the shards lack metadata or a needed split.
        callbacks_lib.NonFiniteLossError: when the loss becomes NaN or infinite.
    """
    # Logical CPU devices and the dtype policy must be set before any device or layer exists.
    distribute.configure_cpu_replicas(config.num_cpu_replicas)
    _set_precision_policy(config.mixed_precision)
    strategy = distribute.make_strategy(config.strategy, config.tpu_address)
    chief = distribute.is_chief(strategy)
    output_dir = (
        config.model_dir
        if chief
        else os.path.join(config.model_dir, "workers", distribute.worker_name(strategy))
    )
    tf.io.gfile.makedirs(output_dir)
    _check_previous_run(config, output_dir)
    keras_compat.allow_datasets_from_function()
    keras_compat.average_scalar_logs_across_workers()

    metadata = schema.read_metadata(config.data_dir)
    inputs.check_splits(
        metadata, ("train", "validation", "test") if config.evaluate else ("train", "validation")
    )
    label_names = list(metadata["labels"])
    image_size = config.resolved_image_size()
    steps_per_epoch = _steps_per_epoch(config, metadata, strategy)
    keras.utils.set_random_seed(config.seed)

    with strategy.scope():
        model = build_model(config.model, image_size, len(label_names), config.weights)
        loss_fn = losses.build_loss(config.loss, metadata["splits"]["train"], config.pos_weight_cap)
        _compile(model, config.learning_rate, loss_fn, len(label_names), config.jit_compile)
    logging.info(
        "Model %s: %d parameters, input %s.", config.model, model.count_params(), image_size
    )
    per_replica_batch = config.global_batch_size // strategy.num_replicas_in_sync
    keras_compat.keep_first_batch(
        model,
        (
            tf.zeros((per_replica_batch, *image_size, 3)),
            tf.zeros((per_replica_batch, len(label_names))),
        ),
    )
    backup = callbacks_lib.StepBackupAndRestore(
        os.path.join(output_dir, "backup"), config.save_every_steps, steps_per_epoch
    )
    if uses_transfer_phases(config):
        config = _run_transfer_phases(
            config, strategy, model, loss_fn, metadata, image_size, backup
        )
    if config.batch_ids_log:
        _record_batch_ids(model, config.batch_ids_log)

    # The twin lives outside the strategy, so validation and export need no collective ops.
    eval_model = build_model(config.model, image_size, len(label_names), None)
    _write_run_config(config, output_dir, strategy, steps_per_epoch, image_size)

    _fit(
        config,
        model,
        eval_model,
        loss_fn,
        backup,
        strategy,
        metadata,
        image_size,
        steps_per_epoch,
        output_dir,
    )
    backup.delete()

    result = {
        "model_dir": config.model_dir,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": steps_per_epoch * config.epochs,
        "is_chief": chief,
    }
    if chief and config.evaluate:
        from trainer import finish

        result.update(finish.evaluate_and_export(config, eval_model, model, metadata, image_size))
    return result


def _fit(
    config,
    model,
    eval_model,
    loss_fn,
    backup,
    strategy,
    metadata,
    image_size,
    steps_per_epoch,
    output_dir,
) -> None:
    """Run `model.fit` from the backed-up position (or the start) to the last epoch.

    A run resumed mid-epoch needs two `fit` calls: the rest of the interrupted
    epoch, then the remaining whole epochs, each with its input stream
    positioned at its first global step.
    """
    if config.epochs == 0:
        logging.info("No fit epochs requested; the model keeps its current weights.")
        return
    start_epoch, steps_done = backup.saved_position()
    if start_epoch >= config.epochs:
        logging.info(
            "The backup in %s is past the last epoch; nothing to train.", backup.backup_dir
        )
        return
    if (start_epoch, steps_done) != (0, 0):
        logging.info(
            "Resuming at epoch %d, step %d of %d.", start_epoch, steps_done, steps_per_epoch
        )

    loss_check = callbacks_lib.StopOnNonFiniteLoss(steps_per_epoch)
    callbacks = [
        loss_check,
        callbacks_lib.Throughput(config.global_batch_size),
        callbacks_lib.ValidationMetrics(
            eval_model, _validation_predictor(config, image_size), loss_fn, len(metadata["labels"])
        ),
        keras.callbacks.ModelCheckpoint(
            os.path.join(output_dir, BEST_WEIGHTS),
            monitor=MONITOR,
            mode="max",
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=_best_so_far(output_dir),
        ),
        keras.callbacks.CSVLogger(os.path.join(output_dir, HISTORY_FILENAME), append=True),
        keras.callbacks.TensorBoard(os.path.join(output_dir, "tensorboard"), update_freq="epoch"),
        # Last, so that a backup taken at an epoch end comes after that epoch's CSV row.
        backup,
    ]

    segments = []
    if steps_done > 0:
        segments.append((start_epoch, start_epoch + 1, steps_done))
        start_epoch += 1
    if start_epoch < config.epochs:
        segments.append((start_epoch, config.epochs, 0))

    for first_epoch, end_epoch, skip_steps in segments:
        global_step = first_epoch * steps_per_epoch + skip_steps
        dataset = strategy.distribute_datasets_from_function(
            inputs.train_input_fn(
                config, metadata, image_size, global_step, bool(config.batch_ids_log)
            )
        )
        backup.step_offset = skip_steps
        loss_check.step_offset = skip_steps
        logging.info(
            "Training epochs %d to %d from global step %d (%d steps in the first epoch).",
            first_epoch,
            end_epoch - 1,
            global_step,
            steps_per_epoch - skip_steps,
        )
        model.fit(
            dataset,
            initial_epoch=first_epoch,
            epochs=end_epoch,
            steps_per_epoch=steps_per_epoch - skip_steps,
            callbacks=callbacks,
            verbose=config.verbose,
        )


def _compile(model, learning_rate: float, loss_fn, num_labels: int, jit_compile: bool) -> None:
    """Compile with Adam, the loss, binary accuracy and Keras' multi-label PR-AUC (`pr_auc`)."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=loss_fn,
        metrics=[
            keras.metrics.BinaryAccuracy(name="binary_accuracy"),
            keras.metrics.AUC(curve="PR", multi_label=True, num_labels=num_labels, name="pr_auc"),
        ],
        jit_compile=jit_compile,
    )


def uses_transfer_phases(config: TrainConfig) -> bool:
    """Return True when an efficientnet_lite0 run requests head training or fine-tuning."""
    return config.model == "efficientnet_lite0" and (
        config.head_epochs > 0 or config.fine_tune_epochs > 0
    )


def _run_transfer_phases(
    config, strategy, model, loss_fn, metadata, image_size, backup
) -> TrainConfig:
    """Train the head on cached backbone features, then unfreeze the top blocks.

    Phase 1 (`head_epochs` > 0, skipped when resuming from a backup, which
    already contains its result): freeze the backbone, extract its pooled
    features of the train and validation splits once, and fit the output
    layer on them (`trainer.transfer`). Phase 2 is the usual `fit` loop with
    the top `fine_tune_blocks` blocks trainable (BatchNormalization frozen),
    recompiled at `fine_tune_learning_rate`.

    Returns:
        The config for the `fit` loop: `epochs=fine_tune_epochs` and
        `learning_rate=fine_tune_learning_rate`.
    """
    from trainer import transfer

    resuming = backup.saved_position() != (0, 0)
    if config.head_epochs > 0 and not resuming:
        transfer.freeze_backbone(model)
        features = {}
        for split in ("train", "validation"):
            dataset = tfpipe.build_dataset(
                config.data_dir,
                split,
                batch_size=config.eval_batch_size,
                image_size=image_size,
                training=False,
                resize_method=config.resize_method,
            )
            features[split] = transfer.extract_features(
                transfer.get_backbone(model), dataset, metadata["splits"][split]["num_examples"]
            )
        history = transfer.train_head_on_features(
            model,
            *features["train"],
            *features["validation"],
            epochs=config.head_epochs,
            learning_rate=config.learning_rate,
            loss=loss_fn,
            seed=config.seed,
        )
        logging.info(
            "Head phase: %d epochs, last validation pr_auc %.4f.",
            len(history["loss"]),
            history["val_pr_auc"][-1],
        )

    transfer.unfreeze_top_blocks(model, config.fine_tune_blocks)
    with strategy.scope():
        _compile(
            model,
            config.fine_tune_learning_rate,
            loss_fn,
            len(metadata["labels"]),
            config.jit_compile,
        )
    return dataclasses.replace(
        config, epochs=config.fine_tune_epochs, learning_rate=config.fine_tune_learning_rate
    )


def _steps_per_epoch(config: TrainConfig, metadata: dict, strategy) -> int:
    """Check the batch arithmetic, log it and return the steps per epoch."""
    replicas = strategy.num_replicas_in_sync
    suggestion = max(replicas, config.global_batch_size // replicas * replicas)
    if config.global_batch_size <= 0 or config.global_batch_size % replicas != 0:
        raise ValueError(
            f"--global_batch_size={config.global_batch_size} must be a positive multiple of the "
            f"{replicas} replicas in sync; try {suggestion}."
        )
    num_train = int(metadata["splits"]["train"]["num_examples"])
    full_epoch = num_train // config.global_batch_size
    steps = config.steps_per_epoch or full_epoch
    if steps <= 0:
        raise ValueError(
            f"The train split has {num_train} examples, fewer than one global batch of "
            f"{config.global_batch_size}; lower --global_batch_size."
        )
    logging.info(
        "Global batch %d = %d replicas x per-replica batch %d; %d train examples; %d steps per "
        "epoch%s; %d epochs; %d steps in total.",
        config.global_batch_size,
        replicas,
        config.global_batch_size // replicas,
        num_train,
        steps,
        "" if config.steps_per_epoch == 0 else f" (set by flag; a full epoch is {full_epoch})",
        config.epochs,
        steps * config.epochs,
    )
    return steps


def _set_precision_policy(enabled: bool) -> None:
    """Set Keras' global dtype policy: mixed on request, float32 otherwise."""
    if not enabled:
        keras.mixed_precision.set_global_policy("float32")
        return
    # float16 needs a GPU to be fast; bfloat16 is what CPUs (AVX512_BF16) and TPUs support.
    policy = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(policy)
    logging.info("Mixed precision: %s.", policy)


def _validation_predictor(config: TrainConfig, image_size):
    """Return a function mapping a model to (labels, probabilities) of the validation split."""
    cached = {}

    def predict(model):
        if "fn" not in cached:
            cached["fn"] = inputs.make_predict_fn(model)
        _, labels, probabilities = inputs.predict_split(
            model,
            config.data_dir,
            "validation",
            image_size,
            config.eval_batch_size,
            config.resize_method,
            cached["fn"],
        )
        return labels, probabilities

    return predict


def _best_so_far(output_dir: str) -> Optional[float]:
    """Return the best `val_map` in an existing history.csv, so a resumed run keeps it."""
    path = os.path.join(output_dir, HISTORY_FILENAME)
    if not tf.io.gfile.exists(path):
        return None
    import pandas as pd

    with tf.io.gfile.GFile(path) as f:
        text = f.read()
    # A run stopped during its first epoch leaves an empty history.csv behind.
    if not text.strip():
        return None
    history = pd.read_csv(io.StringIO(text))
    if MONITOR not in history or history[MONITOR].dropna().empty:
        return None
    return float(history[MONITOR].max())


# Flags that may differ when a run is restarted in the same model_dir: they
# change what is logged or evaluated, not the weights or the data order.
RESTART_INDEPENDENT_FIELDS = frozenset(
    {"verbose", "evaluate", "batch_ids_log", "eval_batch_size", "tpu_address", "data_service_address"}
)
RUN_FLAGS_FILENAME = "run_flags.json"


def _check_previous_run(config: TrainConfig, output_dir: str) -> None:
    """Reject a restart whose training flags differ from the run already in `output_dir`.

    The first run writes its flags to `run_flags.json`; a restart with the
    same flags resumes from the backup, so checkpoints of two configurations
    never mix.

    Raises:
        ValueError: naming the flags that differ, and what to do instead.
    """
    flags_now = {
        key: value
        for key, value in dataclasses.asdict(config).items()
        if key not in RESTART_INDEPENDENT_FIELDS
    }
    path = os.path.join(output_dir, RUN_FLAGS_FILENAME)
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            flags_before = json.load(f)
        changed = sorted(
            key for key in set(flags_before) | set(flags_now)
            if flags_before.get(key) != flags_now.get(key)
        )
        if changed:
            details = ", ".join(
                f"--{key}={flags_before.get(key)!r} before, {flags_now.get(key)!r} now" for key in changed
            )
            raise ValueError(
                f"{output_dir} contains a run trained with other flags ({details}). "
                "Restart with the same flags to resume it, or use a new --model_dir."
            )
        logging.info("Restarting the run in %s with the same flags.", output_dir)
        return
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(flags_now, f, indent=2)


def _write_run_config(
    config: TrainConfig, output_dir: str, strategy, steps_per_epoch, image_size
) -> None:
    record = {
        **dataclasses.asdict(config),
        "resolved_image_size": list(image_size),
        "num_replicas_in_sync": strategy.num_replicas_in_sync,
        "per_replica_batch_size": config.global_batch_size // strategy.num_replicas_in_sync,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": steps_per_epoch * config.epochs,
        "dtype_policy": keras.mixed_precision.global_policy().name,
    }
    with tf.io.gfile.GFile(os.path.join(output_dir, "config.json"), "w") as f:
        json.dump(record, f, indent=2)


def _record_batch_ids(model, path: str) -> None:
    """Make each training step append its batch's poster ids to `path`, one line per replica batch.

    For tests of resuming: the dataset then yields `(images, labels, ids)`,
    and the ids are written before the step updates the weights.
    """
    original_train_step = model.train_step

    def write_ids(ids):
        with open(path, "a") as f:
            f.write(" ".join(i.decode("utf-8") for i in ids.numpy()) + "\n")
        return np.int64(0)

    def train_step(data):
        images, labels, ids = data
        written = tf.py_function(write_ids, [ids], Tout=tf.int64)
        with tf.control_dependencies([written]):
            images = tf.identity(images)
        return original_train_step((images, labels))

    model.train_step = train_step

"""Keras callbacks of the training loop: step-level backup, loss check, throughput."""

import json
import math
import os
import time
from typing import Callable, Optional, Tuple

import keras
import tensorflow as tf
from absl import logging

POSITION_FILENAME = "training_metadata.json"


class StepBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` that records the step inside the epoch, so a restart resumes there.

    Keras 3.6's callback writes `{"epoch", "batch"}` next to the weights but
    restores only the epoch, and after a restore it writes epoch 0 until the
    first epoch ends. This subclass:

    - writes `epoch` (the epoch in progress) and `steps_done_in_epoch`, counted
      from the start of the epoch even when this `fit` call began mid-epoch
      (`step_offset`), plus `steps_per_epoch` to catch changed flags;
    - saves at the end of every epoch as well as every `save_freq` steps;
    - writes the weights (with the optimizer state) under a new name, then
      replaces the position file atomically, so a kill while saving leaves the
      previous backup usable;
    - restores the weights once, at the first `fit` call, and leaves the
      starting epoch to the caller (`saved_position` gives it), because the
      caller also has to position the input pipeline.

    Local file systems only: Keras 3.6 writes `.weights.h5` files to local paths.
    """

    def __init__(self, backup_dir: str, save_freq: int, steps_per_epoch: int):
        super().__init__(backup_dir, save_freq=save_freq, delete_checkpoint=False)
        self.steps_per_epoch = steps_per_epoch
        self.step_offset = 0
        self._restore_pending = True
        self._position_path = os.path.join(backup_dir, POSITION_FILENAME)

    def saved_position(self) -> Tuple[int, int]:
        """Return `(epoch, steps_done_in_epoch)` of the backup, `(0, 0)` without one.

        A backup taken after the last step of an epoch resumes at the next epoch, step 0.

        Raises:
            ValueError: when the backup was written with another number of steps per epoch.
        """
        record = self._read_record()
        if record is None:
            return 0, 0
        if record["steps_per_epoch"] != self.steps_per_epoch:
            raise ValueError(
                f"The backup in {self.backup_dir} was written with "
                f"{record['steps_per_epoch']} steps per epoch, but this run has "
                f"{self.steps_per_epoch}. Restart with the flags of the "
                "interrupted run, or delete that folder to start over."
            )
        epoch, steps_done = record["epoch"], record["steps_done_in_epoch"]
        if steps_done >= self.steps_per_epoch:
            return epoch + 1, 0
        return epoch, steps_done

    def on_train_begin(self, logs=None):
        if not self._restore_pending:
            return
        self._restore_pending = False
        record = self._read_record()
        if record is None:
            return
        weights_path = os.path.join(self.backup_dir, record["weights_file"])
        if self.model.optimizer is not None and not self.model.optimizer.built:
            # The backup contains optimizer variables, which must exist before loading.
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(weights_path)
        logging.info(
            "Restored %s: epoch %d, %d steps done in it.",
            weights_path,
            record["epoch"],
            record["steps_done_in_epoch"],
        )

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._should_save_on_batch(batch):
            self._write_backup(self._current_epoch, self.step_offset + batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        self._last_batch_seen = 0
        self._batches_seen_since_last_saving = 0
        self.step_offset = 0
        self._current_epoch = epoch + 1
        self._write_backup(epoch + 1, 0)

    def on_train_end(self, logs=None):
        # The caller deletes the backup once all of its fit calls are done.
        pass

    def delete(self) -> None:
        """Delete the backup folder, once training has finished."""
        if tf.io.gfile.exists(self.backup_dir):
            tf.io.gfile.rmtree(self.backup_dir)

    def _write_backup(self, epoch: int, steps_done: int) -> None:
        tf.io.gfile.makedirs(self.backup_dir)
        global_step = epoch * self.steps_per_epoch + steps_done
        weights_file = f"step-{global_step:09d}.weights.h5"
        self.model.save_weights(os.path.join(self.backup_dir, weights_file), overwrite=True)

        record = {
            "epoch": epoch,
            "batch": max(steps_done - self.step_offset - 1, 0),
            "steps_done_in_epoch": steps_done,
            "steps_per_epoch": self.steps_per_epoch,
            "global_step": global_step,
            "weights_file": weights_file,
        }
        temporary = self._position_path + ".tmp"
        with open(temporary, "w") as f:
            json.dump(record, f)
        os.replace(temporary, self._position_path)

        for name in os.listdir(self.backup_dir):
            if name.endswith(".weights.h5") and name != weights_file:
                os.remove(os.path.join(self.backup_dir, name))
        logging.debug("Backed up epoch %d step %d to %s.", epoch, steps_done, self.backup_dir)

    def _read_record(self) -> Optional[dict]:
        if not os.path.exists(self._position_path):
            return None
        with open(self._position_path) as f:
            return json.load(f)


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss becomes NaN or infinite."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raise `NonFiniteLossError` naming the step window where the loss stopped being finite.

    Keras reports the running mean of the epoch's loss, which stays NaN once
    one step's loss is NaN, so checking every `check_every` steps finds the
    first bad step within that window.
    """

    def __init__(self, steps_per_epoch: int, check_every: int = 1):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.check_every = check_every
        self.step_offset = 0
        self._epoch = 0
        self._last_checked_step = -1

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self.step_offset = 0

    def on_train_batch_end(self, batch, logs=None):
        step = self._epoch * self.steps_per_epoch + self.step_offset + batch
        if (batch + 1) % self.check_every != 0 or logs is None or "loss" not in logs:
            return
        loss = float(logs["loss"])
        if not math.isfinite(loss):
            raise NonFiniteLossError(
                f"The training loss became {loss} between global steps "
                f"{self._last_checked_step + 1} "
                f"and {step} (epoch {self._epoch}). Lower --learning_rate, or check the input "
                "for invalid labels or images."
            )
        self._last_checked_step = step


class Throughput(keras.callbacks.Callback):
    """Log images/s and CPU milliseconds per image of each epoch's training steps.

    Adds `images_per_second` and `cpu_ms_per_image` to the epoch logs, so
    callbacks after this one (the CSV logger) record them. CPU time is the
    whole process's, over all threads, so on a shared machine it measures this
    job alone, unlike wall-clock time.
    """

    def __init__(self, global_batch_size: int):
        super().__init__()
        self.global_batch_size = global_batch_size
        self._steps = 0
        self._start_wall = 0.0
        self._start_cpu = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._steps = 0
        self._start_wall = time.perf_counter()
        self._start_cpu = time.process_time()

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1

    def on_epoch_end(self, epoch, logs=None):
        images = self._steps * self.global_batch_size
        wall = time.perf_counter() - self._start_wall
        cpu = time.process_time() - self._start_cpu
        if images == 0 or wall <= 0:
            return
        logging.info(
            "Epoch %d: %d steps, %d images in %.1f s, %.1f images/s, %.2f CPU ms per image.",
            epoch,
            self._steps,
            images,
            wall,
            images / wall,
            1000.0 * cpu / images,
        )
        if logs is not None:
            logs["images_per_second"] = images / wall
            logs["cpu_ms_per_image"] = 1000.0 * cpu / images


class ValidationMetrics(keras.callbacks.Callback):
    """Score the whole validation split after each epoch and add the results to the logs.

    Copies the weights into `eval_model`, a twin built outside the
    distribution strategy, and predicts every validation example once, so
    the figures cover the whole split on every worker alike. Adds to the
    epoch logs (for the callbacks after this one: checkpoint, CSV, TensorBoard):

    - `val_loss`: the training loss function on the validation predictions;
    - `val_binary_accuracy`: at threshold 0.5;
    - `val_map`: macro average precision over genres with a validation
      positive (scikit-learn), the figure the best checkpoint is chosen by;
    - `val_pr_auc`: Keras' `AUC(curve="PR", multi_label=True)`, the same
      approximation that the training metric `pr_auc` reports, for curves
      that compare training and validation like for like.
    """

    def __init__(self, eval_model, predict: Callable, loss_fn, num_labels: int):
        super().__init__()
        self.eval_model = eval_model
        self.predict = predict
        self.loss_fn = loss_fn
        self.num_labels = num_labels

    def on_epoch_end(self, epoch, logs=None):
        from trainer import evaluation

        self.eval_model.set_weights(self.model.get_weights())
        labels, probabilities = self.predict(self.eval_model)

        metrics = evaluation.compute_metrics(labels, probabilities)
        pr_auc = keras.metrics.AUC(curve="PR", multi_label=True, num_labels=self.num_labels)
        pr_auc.update_state(labels, probabilities)
        results = {
            "val_loss": float(self.loss_fn(labels.astype("float32"), probabilities)),
            "val_binary_accuracy": metrics["binary_accuracy"],
            "val_map": (
                metrics["macro_average_precision"]
                if metrics["macro_average_precision"] is not None
                else float("nan")
            ),
            "val_pr_auc": float(pr_auc.result()),
        }
        logging.info(
            "Epoch %d validation (%d examples): %s",
            epoch,
            len(labels),
            ", ".join(f"{k} {v:.4f}" for k, v in results.items()),
        )
        if logs is not None:
            logs.update(results)

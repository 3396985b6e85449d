"""Command-line flags of `python -m trainer`, one per `TrainConfig` field."""

from absl import flags

from trainer import distribute, losses
from trainer.config import DEFAULT_IMAGE_SIZES, TrainConfig
from trainer.models import DEFAULT_MODEL, model_names

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Define the trainer's flags (call once, before `app.run`)."""
    flags.DEFINE_string(
        "data_dir",
        None,
        "Folder of metadata.json and the TFRecord shards "
        "written by beam_jobs.posters_to_tfrecords (local, gs:// or s3://).",
    )
    flags.DEFINE_string(
        "model_dir",
        None,
        "Output folder (a local or mounted path): history, "
        "checkpoints, backup, TensorBoard logs, eval/, plots/, export/.",
    )
    flags.DEFINE_enum(
        "strategy",
        "default",
        distribute.STRATEGY_NAMES,
        "tf.distribute strategy; multi_worker reads the cluster from TF_CONFIG.",
    )
    flags.DEFINE_enum(
        "model", DEFAULT_MODEL, model_names(), "Model from the registry in trainer/models."
    )
    flags.DEFINE_integer(
        "image_size",
        0,
        "Side of the square input in pixels; 0 uses the model's "
        f"default ({', '.join(f'{k} {v}' for k, v in DEFAULT_IMAGE_SIZES.items())}).",
    )
    flags.DEFINE_integer(
        "global_batch_size",
        32,
        "Examples per step over all replicas and workers; "
        "must be a multiple of the number of replicas.",
    )
    flags.DEFINE_integer("epochs", 10, "Number of epochs.")
    flags.DEFINE_integer(
        "steps_per_epoch",
        0,
        "Steps per epoch; 0 means one pass over the train "
        "split (examples // global batch). Set it for short smoke runs.",
    )
    flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
    flags.DEFINE_enum(
        "loss",
        "bce",
        losses.LOSS_NAMES,
        "bce: binary cross-entropy; weighted_bce: "
        "positive term weighted per genre by negatives/positives (capped); "
        "focal: binary focal cross-entropy, gamma 2.",
    )
    flags.DEFINE_float(
        "pos_weight_cap",
        losses.DEFAULT_POS_WEIGHT_CAP,
        "Largest per-genre positive weight of --loss=weighted_bce.",
    )
    flags.DEFINE_boolean(
        "mixed_precision",
        False,
        "Compute in float16 (GPU) or bfloat16 (CPU, " "TPU) with float32 weights and outputs.",
    )
    flags.DEFINE_boolean("jit_compile", False, "Compile the train step with XLA.")
    flags.DEFINE_integer(
        "seed",
        0,
        "Seed of the initial weights, the per-epoch example order and "
        "the augmentation; a resumed run needs the same seed.",
    )
    flags.DEFINE_string("weights", None, "A .weights.h5 file to initialise the model from.")
    flags.DEFINE_enum(
        "resize_method",
        "stretch",
        ("stretch", "pad"),
        "stretch: scale each side to "
        "the input size; pad: keep the aspect ratio and pad with zeros.",
    )
    flags.DEFINE_boolean(
        "augment",
        True,
        "Random crop (64-100% of the area) and horizontal flip " "of training images.",
    )
    flags.DEFINE_integer(
        "save_every_steps",
        100,
        "Steps between backups to MODEL_DIR/backup, from "
        "which a restarted run resumes (also saved at each epoch end).",
    )
    flags.DEFINE_integer(
        "num_cpu_replicas",
        0,
        "Split the CPU into this many logical devices for "
        "--strategy=mirrored on a machine without a GPU; 0 or 1 leaves it whole.",
    )
    flags.DEFINE_string(
        "data_service_address",
        "",
        "tf.data service dispatcher (grpc://host:port) "
        "that runs the input pipeline; empty reads in this process.",
    )
    flags.DEFINE_string(
        "tpu_address",
        "",
        "TPU name or grpc:// address for --strategy=tpu; empty " "for the TPU of a TPU VM.",
    )
    flags.DEFINE_integer(
        "eval_batch_size",
        64,
        "Examples per batch when predicting the validation " "and test splits.",
    )
    flags.DEFINE_integer(
        "head_epochs",
        0,
        "efficientnet_lite0: epochs training only the new head on "
        "the frozen pretrained backbone, before --epochs of the default training.",
    )
    flags.DEFINE_integer(
        "fine_tune_epochs",
        0,
        "efficientnet_lite0: epochs after unfreezing the top "
        "--fine_tune_blocks blocks (BatchNormalization stays in inference mode).",
    )
    flags.DEFINE_integer(
        "fine_tune_blocks", 2, "efficientnet_lite0: top backbone blocks to unfreeze."
    )
    flags.DEFINE_float(
        "fine_tune_learning_rate",
        1e-4,
        "efficientnet_lite0: Adam learning rate " "while fine-tuning.",
    )
    flags.DEFINE_boolean(
        "evaluate",
        True,
        "After training, evaluate on the test split, write "
        "eval/ and plots/, and export the SavedModel (chief only).",
    )
    flags.DEFINE_integer(
        "verbose", 1, "Keras fit output: 0 silent, 1 progress bar, 2 one line per epoch (for logs)."
    )
    flags.DEFINE_string(
        "batch_ids_log",
        "",
        "For tests: append the poster ids of each trained "
        "batch to this file, one line per replica batch.",
    )
    flags.mark_flags_as_required(["data_dir", "model_dir"])


def config_from_flags() -> TrainConfig:
    """Return a `TrainConfig` with every field taken from the parsed flag of the same name."""
    import dataclasses

    values = {field.name: getattr(FLAGS, field.name) for field in dataclasses.fields(TrainConfig)}
    return TrainConfig(**values)

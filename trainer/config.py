"""Every setting of a training run, with its unit and default, in one dataclass.

`python -m trainer` fills it from flags (`trainer/flags.py`); tests and
notebooks build it directly. `smoke_config` is a variant that finishes in
seconds on small shards.
"""

import dataclasses
from typing import Optional, Tuple

# Input size per model when `image_size` is 0: the tutorial trained at 350x350,
# poster_net is sized for 160x160 on a CPU, EfficientNet-Lite0 was pretrained at 224x224.
DEFAULT_IMAGE_SIZES = {"poster_cnn": 350, "poster_net": 160, "efficientnet_lite0": 224}


@dataclasses.dataclass
class TrainConfig:
    """Settings of one training run; see `docs/trainer.md` for each one."""

    data_dir: str
    model_dir: str
    strategy: str = "default"
    model: str = "poster_net"
    image_size: int = 0  # pixels per side of the square input; 0 picks DEFAULT_IMAGE_SIZES[model]
    global_batch_size: int = 32  # examples per step over all replicas and workers
    epochs: int = 10
    steps_per_epoch: int = 0  # 0 means one pass over the train split (floor of examples / batch)
    learning_rate: float = 1e-3  # Adam step size
    loss: str = "bce"  # bce, weighted_bce or focal
    pos_weight_cap: float = 10.0  # largest positive weight of weighted_bce
    mixed_precision: bool = False  # mixed_float16 on GPU, mixed_bfloat16 on CPU and TPU
    jit_compile: bool = False  # XLA-compile the train step
    seed: int = 0  # seeds weights, per-epoch shuffle order and augmentation
    weights: Optional[str] = (
        None  # .weights.h5 to start from; for efficientnet_lite0 see its module
    )
    resize_method: str = "stretch"  # stretch or pad, as tfpipe.preprocess defines them
    augment: bool = True  # random crop and flip of training images
    save_every_steps: int = 100  # backup cadence in steps, for resuming after a crash
    num_cpu_replicas: int = 0  # logical CPU devices for --strategy=mirrored without a GPU
    data_service_address: str = (
        ""  # tf.data service dispatcher, grpc://host:port; empty reads locally
    )
    tpu_address: str = ""  # --strategy=tpu only; empty for a local TPU VM
    eval_batch_size: int = (
        64  # examples per prediction batch for validation, test and export checks
    )
    head_epochs: int = 0  # efficientnet_lite0: epochs training the head on a frozen backbone
    fine_tune_epochs: int = 0  # efficientnet_lite0: epochs after unfreezing the top blocks
    fine_tune_blocks: int = 2  # efficientnet_lite0: top backbone blocks to unfreeze
    fine_tune_learning_rate: float = 1e-4  # efficientnet_lite0: Adam step size when fine-tuning
    evaluate: bool = True  # evaluate on the test split and export after training (chief only)
    verbose: int = 1  # Keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch
    batch_ids_log: str = ""  # test hook: append the ids of each trained batch to this file

    def resolved_image_size(self) -> Tuple[int, int]:
        """Return `(height, width)` in pixels, applying the per-model default for 0."""
        side = self.image_size or DEFAULT_IMAGE_SIZES.get(self.model, 160)
        return side, side


def smoke_config(data_dir: str, model_dir: str, **overrides) -> TrainConfig:
    """Return a config that trains poster_net at 32x32 for 2 epochs of 3 steps."""
    settings = dict(
        model="poster_net",
        image_size=32,
        global_batch_size=4,
        epochs=2,
        steps_per_epoch=3,
        save_every_steps=2,
        eval_batch_size=8,
        augment=False,
        verbose=0,
    )
    settings.update(overrides)
    return TrainConfig(data_dir=data_dir, model_dir=model_dir, **settings)

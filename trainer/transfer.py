"""Fine-tune a pretrained EfficientNet-Lite0 on a small dataset, cheaply enough for a CPU.

The two phases, in the order the trainer calls them:

1. Head on cached features. Inside `strategy.scope()`, build the model with
   `efficientnet_lite.build(image_size, num_labels, weights=PATH)` and call
   `freeze_backbone(model)`. Run `extract_features(get_backbone(model), dataset)`
   once per split, over unshuffled, unaugmented batches of `(images, labels)`,
   then `train_head_on_features(model, ...)`. The backbone runs once per image
   instead of once per image and epoch, so head epochs take well under a second.
2. Optional fine-tune. `unfreeze_top_blocks(model, n)`, compile again with a
   learning rate about 10x below phase 1 (Keras reads the trainable flags at
   compile time), and `model.fit` on augmented image batches. BatchNormalization
   layers of the backbone stay frozen and in inference mode, because batch
   statistics of small batches would overwrite the ImageNet statistics.

Layers are found by the names `trainer.models.efficientnet_lite` gives them.
"""

import time
from typing import Dict, List, Optional, Tuple, Union

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from tqdm import tqdm

from trainer.models import efficientnet_lite
from trainer.models.efficientnet_lite import get_backbone

# Floor of the per-feature standard deviation used to standardise cached
# features; some ReLU6 channels are almost always 0 on posters.
MIN_FEATURE_STD = 1e-3


def extract_features(
    backbone: keras.Model, dataset: tf.data.Dataset, num_examples: Optional[int] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """Run the backbone once over a dataset and average its feature map over space.

    Args:
        backbone: the model from `build_backbone` or `get_backbone(model)`; its
            output is `[B, h, w, C]` (averaged here) or already pooled `[B, C]`.
        dataset: finite batches of `(images, labels)`: float32 `[B, H, W, 3]`
            in [0, 1] and `[B, num_labels]` labels. Build it without shuffling
            or augmentation, since the features are reused for many epochs.
        num_examples: total images, for the progress bar; optional.

    Returns:
        `(features, labels)`: float32 `[N, C]` (C = 1280) and float32 `[N, num_labels]`.

    Raises:
        ValueError: when the dataset yields no batch.
    """

    # NOTE: the backbone runs in this process on the default device, not replicated across
    # the devices of a tf.distribute strategy, so extraction uses one GPU at most.
    @tf.function(reduce_retracing=True)
    def pooled_features(images):
        outputs = backbone(images, training=False)
        if len(outputs.shape) == 4:
            outputs = tf.reduce_mean(outputs, axis=[1, 2])
        return outputs

    features: List[np.ndarray] = []
    labels: List[np.ndarray] = []
    wall_start, cpu_start = time.monotonic(), time.process_time()
    logging.info("Extracting %s features", backbone.name)
    with tqdm(total=num_examples, unit="img", desc="features") as progress:
        for batch in dataset:
            images, batch_labels = batch[0], batch[1]
            features.append(pooled_features(images).numpy().astype(np.float32))
            labels.append(np.asarray(batch_labels, dtype=np.float32))
            progress.update(len(labels[-1]))

    if not features:
        raise ValueError("The dataset yielded no batch; check the split and its shards.")
    count = sum(len(f) for f in features)
    wall, cpu = time.monotonic() - wall_start, time.process_time() - cpu_start
    logging.info(
        "Extracted features of %d images in %.1f s: %.1f images/s, %.1f ms CPU time per image",
        count,
        wall,
        count / max(wall, 1e-9),
        1000.0 * cpu / count,
    )
    return np.concatenate(features), np.concatenate(labels)


def _output_layer(model: keras.Model) -> keras.layers.Dense:
    """Return the model's last Dense layer, the classification head."""
    dense_layers = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if not dense_layers:
        raise ValueError(f"Model {model.name!r} has no Dense output layer to train.")
    return dense_layers[-1]


def _dropout_rate(model: keras.Model) -> float:
    rates = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    return rates[-1] if rates else 0.0


def train_head_on_features(
    model: keras.Model,
    train_features: np.ndarray,
    train_labels: np.ndarray,
    val_features: np.ndarray,
    val_labels: np.ndarray,
    *,
    epochs: int = 200,
    learning_rate: float = 1e-3,
    loss: Union[str, keras.losses.Loss] = "binary_crossentropy",
    batch_size: int = 256,
    l2: float = 1e-2,
    patience: int = 15,
    seed: int = 0,
) -> Dict[str, List[float]]:
    """Train the model's output layer on cached features, then write it back into the model.

    A separate model, dropout followed by a Dense layer like the model's own,
    learns from standardised features (zero mean, unit variance per feature,
    statistics from `train_features`). The standardisation is then folded into
    the weights: kernel / std and bias - (mean / std) @ kernel. So the model
    computes the same outputs from raw backbone features, without an extra
    layer. Early stopping keeps the epoch with the best validation
    `pr_auc` (Keras' multi-label PR AUC, close to macro average precision).

    Args:
        model: a model from `efficientnet_lite.build`; its last Dense layer is replaced.
        train_features, val_features: float32 `[N, C]` from `extract_features`.
        train_labels, val_labels: `[N, num_labels]` multi-hot labels.
        epochs: maximum passes over the features.
        learning_rate: Adam step size.
        loss: a Keras loss, for example the trainer's weighted binary cross-entropy.
        batch_size: features per step.
        l2: L2 penalty on the kernel (in standardised units); 1e-2 is about the
            C = 3e-4 of a one-vs-rest scikit-learn logistic regression on 5,000 examples
            and 25 labels, because Keras averages the loss over labels.
        patience: epochs without a better validation `pr_auc` before stopping.
        seed: seed of weight initialisation, dropout and shuffling.

    Call it outside `strategy.scope()` where possible. The head is small, and under a
    one-device MirroredStrategy its training ran 5x slower in the tests (18 s against 3.4 s).
    The weights are written into the model's variables in either case.

    Returns:
        The Keras history dict (`loss`, `pr_auc`, `val_loss`, `val_pr_auc` per epoch).

    Raises:
        ValueError: when feature and label counts or widths do not match the model.
    """
    output_layer = _output_layer(model)
    num_features = output_layer.kernel.shape[0]
    num_labels = output_layer.units
    for name, features, labels in (
        ("train", train_features, train_labels),
        ("validation", val_features, val_labels),
    ):
        if features.shape[1:] != (num_features,) or labels.shape[1:] != (num_labels,):
            raise ValueError(
                f"{name} features {features.shape} and labels {labels.shape} do not fit the "
                f"output layer {output_layer.name} ({num_features} inputs, {num_labels} outputs)."
            )
        if len(features) != len(labels):
            raise ValueError(f"{name}: {len(features)} feature rows but {len(labels)} label rows.")

    mean = train_features.mean(axis=0)
    std = np.maximum(train_features.std(axis=0), MIN_FEATURE_STD)

    # Start every bias at the log-odds of its label's training frequency: rare genres
    # (most of them) then begin near their prior instead of at probability 0.5, which
    # Adam would otherwise need hundreds of steps to unlearn.
    frequency = np.clip(train_labels.mean(axis=0), 1.0 / len(train_labels), 1.0 - 1.0 / len(train_labels))
    prior_log_odds = np.log(frequency / (1.0 - frequency)).astype(np.float32)

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(num_features,), name="standardised_features")
    x = keras.layers.Dropout(_dropout_rate(model), seed=seed)(inputs)
    outputs = keras.layers.Dense(
        num_labels,
        activation=output_layer.activation,
        kernel_regularizer=keras.regularizers.L2(l2),
        bias_initializer=keras.initializers.Constant(prior_log_odds),
        dtype="float32",
    )(x)
    head = keras.Model(inputs, outputs, name="head_on_features")
    head.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=loss,
        metrics=[keras.metrics.AUC(curve="PR", multi_label=True, name="pr_auc")],
    )

    start = time.monotonic()
    history = head.fit(
        (train_features - mean) / std,
        train_labels.astype(np.float32),
        validation_data=((val_features - mean) / std, val_labels.astype(np.float32)),
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        verbose=0,
        callbacks=[
            keras.callbacks.EarlyStopping(
                monitor="val_pr_auc", mode="max", patience=patience, restore_best_weights=True
            )
        ],
    ).history
    best_epoch = int(np.argmax(history["val_pr_auc"]))
    logging.info(
        "Trained the head on %d feature vectors for %d epochs in %.1f s; best epoch %d, "
        "validation pr_auc %.4f, loss %.4f",
        len(train_features),
        len(history["loss"]),
        time.monotonic() - start,
        best_epoch + 1,
        history["val_pr_auc"][best_epoch],
        history["val_loss"][best_epoch],
    )

    kernel, bias = (np.asarray(w) for w in head.layers[-1].get_weights())
    raw_kernel = kernel / std[:, None]
    raw_bias = bias - (mean / std) @ kernel
    output_layer.set_weights([raw_kernel.astype(np.float32), raw_bias.astype(np.float32)])
    return history


def freeze_backbone(model: keras.Model) -> None:
    """Make every backbone layer non-trainable; BatchNormalization then runs in inference mode.

    Keras 3 BatchNormalization (3.6 read) uses its moving statistics, and leaves
    them unchanged, whenever the layer is not trainable, also under `fit`. Compile
    the model again after this call.
    """
    backbone = get_backbone(model)
    backbone.trainable = False
    logging.info("Froze %s: %d layers", backbone.name, len(backbone.layers))


def unfreeze_top_blocks(model: keras.Model, num_blocks: int) -> List[str]:
    """Make the top `num_blocks` backbone units trainable, except their BatchNormalization.

    Units, from the top: `head` (the 1x1 convolution to 1280 channels),
    `block15`, `block14`, ... `block0`, `stem` (see `efficientnet_lite.block_names`).
    Every other backbone layer is frozen, and every BatchNormalization layer stays
    frozen, so it keeps running in inference mode with the ImageNet statistics.
    Compile the model again after this call.

    Args:
        num_blocks: 0 (freeze the whole backbone) to 18 (all units).

    Returns:
        The names of the unfrozen units, from the top.

    Raises:
        ValueError: when `num_blocks` is outside [0, 18].
    """
    names = efficientnet_lite.block_names()
    if not 0 <= num_blocks <= len(names):
        raise ValueError(f"num_blocks must be in [0, {len(names)}], not {num_blocks}.")
    backbone = get_backbone(model)
    top_units = list(reversed(names))[:num_blocks]

    # Setting the sub-model trainable sets every layer in it; then each layer is set on its own.
    backbone.trainable = True
    for layer in backbone.layers:
        layer.trainable = False
    groups = efficientnet_lite.layers_by_block(backbone)
    for unit in top_units:
        for layer in groups[unit]:
            layer.trainable = not isinstance(layer, keras.layers.BatchNormalization)

    num_trainable = sum(int(np.prod(w.shape)) for w in backbone.trainable_weights)
    logging.info(
        "Unfroze %d backbone units %s: %d trainable backbone parameters",
        len(top_units),
        top_units,
        num_trainable,
    )
    return top_units

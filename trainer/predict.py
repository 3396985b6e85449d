"""Predict the genres of poster files with an exported SavedModel.

    python -m trainer.predict --model_dir=RUN PATH... [--format=text|json] [--batch_size=32]

PATH is a JPEG file or a folder (its .jpg/.jpeg files, not recursive).
`--model_dir` is a training output folder (its `export/` is used) or an
export folder itself. Only the SavedModel and its `serving_config.json` are
read, so no trainer model code is needed.

Text output, per poster: the top-3 genres with probabilities, then the genres
whose probability reaches their tuned threshold. JSON output (one object per
line): `path`, `top_3`, `predicted` and every genre's `probabilities`. A file
that cannot be read or decoded gets a one-line error on stderr naming it, the
other files are still predicted, and the exit status is 1.
"""

import json
import os
import re
import sys
from typing import Dict, List, Sequence, Tuple

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from trainer import export

JPEG_SUFFIXES = (".jpg", ".jpeg")
TOP_K = 3


def load_predictor(model_dir: str):
    """Load the SavedModel under `model_dir` (or `model_dir/export`) and its serving config.

    Returns:
        `(serving_function, serving_config)`: the bytes signature, called as
        `serving_function(image_bytes=tf.string [batch])`, and the config dict.
    """
    export_dir = os.path.join(model_dir, "export")
    if not tf.io.gfile.exists(os.path.join(export_dir, "saved_model.pb")):
        export_dir = model_dir
    config = export.read_serving_config(export_dir)
    loaded = tf.saved_model.load(export_dir)
    return loaded.signatures[export.BYTES_SIGNATURE], config


def expand_paths(paths: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Expand folders into their JPEG files, sorted.

    Returns:
        `(files, errors)`: files to predict, and one message per path that is
        neither a file nor a folder.
    """
    files, errors = [], []
    for path in paths:
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if n.lower().endswith(JPEG_SUFFIXES))
            if not names:
                errors.append(f"{path}: folder has no .jpg or .jpeg files")
            files.extend(os.path.join(path, name) for name in names)
        elif os.path.isfile(path):
            files.append(path)
        else:
            errors.append(f"{path}: not found")
    return files, errors


def predict_files(serving_function, config: Dict, files: Sequence[str], batch_size: int = 32):
    """Predict every file; a file that fails gets an error instead of a result.

    Each file is first read and decoded on its own with the ops the serving
    signature uses (`extract_jpeg_shape`, `decode_jpeg`), and a batch that
    still fails is retried file by file, so one bad file does not fail the
    others.

    Returns:
        `(results, errors)`: a list of dicts with `path`, `top_3` (genre,
        probability pairs), `predicted` (genres at or above their threshold)
        and `probabilities` (genre to probability); and a list of one-line
        error messages naming the failed files.
    """
    labels = config["labels"]
    thresholds = np.asarray(config["thresholds"], dtype=np.float32)
    readable, errors = [], []
    for path in files:
        try:
            with open(path, "rb") as f:
                data = f.read()
            # Decoding the header and pixels here rejects a bad file before it joins a batch.
            tf.image.extract_jpeg_shape(data)
            tf.io.decode_jpeg(data, channels=3)
        except (OSError, tf.errors.InvalidArgumentError) as error:
            message = _short_message(error)
            errors.append(f"{path}: cannot read or decode as JPEG ({message})")
            logging.error("Failed to read or decode %s: %s", path, message)
            continue
        readable.append((path, data))

    results = []
    for start in range(0, len(readable), batch_size):
        chunk = readable[start : start + batch_size]
        try:
            scored = list(zip(chunk, _score(serving_function, config, chunk)))
        except tf.errors.InvalidArgumentError:
            scored, chunk_errors = _score_one_by_one(serving_function, config, chunk)
            errors.extend(chunk_errors)
        for (path, _), row in scored:
            top = np.argsort(-row, kind="stable")[:TOP_K]
            results.append(
                {
                    "path": path,
                    "top_3": [[labels[k], float(row[k])] for k in top],
                    "predicted": [labels[k] for k in np.flatnonzero(row >= thresholds)],
                    "probabilities": {label: float(p) for label, p in zip(labels, row)},
                }
            )
    return results, errors


def _score(serving_function, config: Dict, chunk) -> np.ndarray:
    """Return float32 `[len(chunk), num_labels]` probabilities of `(path, bytes)` pairs."""
    input_name = config["signatures"][export.BYTES_SIGNATURE]["input"]
    outputs = serving_function(**{input_name: tf.constant([data for _, data in chunk])})
    return outputs[config["output"]].numpy()


def _score_one_by_one(serving_function, config: Dict, chunk):
    """Score each file of a failed batch alone; return the scored pairs and the errors."""
    scored, errors = [], []
    for item in chunk:
        try:
            scored.append((item, _score(serving_function, config, [item])[0]))
        except tf.errors.InvalidArgumentError as error:
            message = _short_message(error)
            errors.append(f"{item[0]}: the model failed on it ({message})")
            logging.error("The model failed on %s: %s", item[0], message)
    return scored, errors


def _short_message(error: Exception) -> str:
    """Return the first line of an error without TensorFlow's function and op names."""
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\]", "", text)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


def format_text(result: Dict) -> str:
    """Render one result: the top 3 genres with probabilities, then the thresholded genres."""
    top = ", ".join(f"{genre} {probability:.3f}" for genre, probability in result["top_3"])
    predicted = ", ".join(result["predicted"]) or "(none above threshold)"
    return f"{result['path']}\n  top 3: {top}\n  predicted: {predicted}"


def main(argv):
    paths = argv[1:]
    if not paths:
        raise app.UsageError("Give at least one poster file or folder.")
    try:
        serving_function, config = load_predictor(flags.FLAGS.model_dir)
    except (FileNotFoundError, OSError) as error:
        print(
            f"error: no exported model in --model_dir={flags.FLAGS.model_dir} ({error}). "
            "Point it at a training output folder that contains export/.",
            file=sys.stderr,
        )
        return 2
    files, errors = expand_paths(paths)
    results, predict_errors = predict_files(serving_function, config, files, flags.FLAGS.batch_size)
    errors += predict_errors

    for result in results:
        if flags.FLAGS.format == "json":
            print(json.dumps(result))
        else:
            print(format_text(result))
    for message in errors:
        print(f"error: {message}", file=sys.stderr)
    logging.info("Predicted %d files, %d failed.", len(results), len(errors))
    return 1 if errors else 0


def define_flags() -> None:
    flags.DEFINE_string(
        "model_dir", None, "Training output folder (with export/) or an export folder."
    )
    flags.DEFINE_enum(
        "format",
        "text",
        ("text", "json"),
        "text: top 3 and thresholded genres per "
        "poster; json: one JSON object per line with every genre's probability.",
    )
    flags.DEFINE_integer("batch_size", 32, "Posters per call of the SavedModel.")
    flags.mark_flag_as_required("model_dir")


if __name__ == "__main__":
    define_flags()
    app.run(lambda argv: sys.exit(main(argv)))

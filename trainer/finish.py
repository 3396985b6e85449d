"""After training: evaluate the best checkpoint on the test split, plot, and export.

Writes into `model_dir`:

    eval/metrics.json       `{"model", "baselines": {"all_zero", "label_prior"}, ...}` as
                            `trainer.evaluation.evaluate_with_baselines` returns them, plus
                            the checkpoint evaluated and the thresholds' source
    eval/report.md          the same as Markdown tables
    eval/predictions.csv    one row per test poster: id, true genres, predicted genres
                            (above threshold), then one probability column per genre
    plots/learning_curves.png, plots/per_genre_ap.png
    export/                 see trainer/export.py
"""

import json
import os
from typing import Dict

import numpy as np
import pandas as pd
import tensorflow as tf
from absl import logging

from trainer import evaluation, export, inputs, plots

EVAL_DIRNAME = "eval"
PLOTS_DIRNAME = "plots"
EXPORT_DIRNAME = "export"


def evaluate_and_export(config, eval_model, trained_model, metadata: dict, image_size) -> Dict:
    """Load the best weights into `eval_model`, evaluate, plot and export.

    `eval_model` is a twin of `trained_model` built outside the strategy; it
    takes the best checkpoint when one was written, else the final weights.

    Returns:
        `{"metrics": model metrics on the test split, "export_dir": path}`.
    """
    from trainer.train import BEST_WEIGHTS, HISTORY_FILENAME

    eval_model.set_weights(trained_model.get_weights())
    best_path = os.path.join(config.model_dir, BEST_WEIGHTS)
    checkpoint = "final weights"
    if os.path.exists(best_path):
        eval_model.load_weights(best_path)
        checkpoint = best_path
    logging.info("Evaluating %s on the test split.", checkpoint)

    predict_fn = inputs.make_predict_fn(eval_model)
    predict = lambda split: inputs.predict_split(  # noqa: E731
        eval_model,
        config.data_dir,
        split,
        image_size,
        config.eval_batch_size,
        config.resize_method,
        predict_fn,
        progress=config.verbose == 1,
    )
    _, validation_labels, validation_probabilities = predict("validation")
    test_ids, test_labels, test_probabilities = predict("test")

    train = metadata["splits"]["train"]
    frequencies = evaluation.label_frequencies(train["label_counts"], train["num_examples"])
    label_names = list(metadata["labels"])
    report = evaluation.evaluate_with_baselines(
        test_labels,
        test_probabilities,
        validation_labels,
        validation_probabilities,
        frequencies,
        label_names,
    )
    report.update(
        split="test",
        checkpoint=checkpoint,
        thresholds_tuned_on="validation",
        model_name=config.model,
        image_size=list(image_size),
    )
    thresholds = [row["threshold"] for row in report["model"]["per_genre"]]

    eval_dir = os.path.join(config.model_dir, EVAL_DIRNAME)
    tf.io.gfile.makedirs(eval_dir)
    with tf.io.gfile.GFile(os.path.join(eval_dir, "metrics.json"), "w") as f:
        json.dump(report, f, indent=2)
    with tf.io.gfile.GFile(os.path.join(eval_dir, "report.md"), "w") as f:
        f.write(evaluation.format_report(report, f"Test-split evaluation of {config.model}"))
    _write_predictions(
        os.path.join(eval_dir, "predictions.csv"),
        test_ids,
        test_labels,
        test_probabilities,
        label_names,
        np.asarray(thresholds),
    )
    model_metrics = report["model"]
    logging.info(
        "Test: macro AP %s, micro AP %s, micro F1 %.3f (label prior: macro AP %s).",
        _fmt(model_metrics["macro_average_precision"]),
        _fmt(model_metrics["micro_average_precision"]),
        model_metrics["micro_f1"],
        _fmt(report["baselines"]["label_prior"]["macro_average_precision"]),
    )

    plots_dir = os.path.join(config.model_dir, PLOTS_DIRNAME)
    history_path = os.path.join(config.model_dir, HISTORY_FILENAME)
    if tf.io.gfile.exists(history_path):
        plots.learning_curves(history_path, os.path.join(plots_dir, "learning_curves.png"))
    else:
        logging.warning("No %s (no fit epochs ran), so no learning curves are drawn.", history_path)
    plots.per_genre_ap(
        os.path.join(eval_dir, "metrics.json"), os.path.join(plots_dir, "per_genre_ap.png")
    )

    export_dir = export.export_model(
        eval_model,
        os.path.join(config.model_dir, EXPORT_DIRNAME),
        image_size=image_size,
        resize_method=config.resize_method,
        labels=label_names,
        thresholds=thresholds,
        model_name=config.model,
    )
    return {
        "metrics": {k: v for k, v in model_metrics.items() if k != "per_genre"},
        "export_dir": export_dir,
    }


def _write_predictions(path, ids, labels, probabilities, label_names, thresholds) -> None:
    """Write one row per poster: id, true and predicted genres ("|"-joined), probabilities."""
    names = np.asarray(label_names)
    frame = pd.DataFrame(
        {
            "id": ids,
            "true_genres": ["|".join(names[row.astype(bool)]) for row in labels],
            "predicted_genres": ["|".join(names[row >= thresholds]) for row in probabilities],
        }
    )
    probability_columns = pd.DataFrame(probabilities, columns=[f"p_{name}" for name in label_names])
    frame = pd.concat([frame, probability_columns], axis=1)
    with tf.io.gfile.GFile(path, "w") as f:
        frame.to_csv(f, index=False, float_format="%.5f")


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"

"""Plots of a finished or running training, drawn from the files it wrote.

    learning_curves(history_csv, output_png)   loss, binary accuracy and mAP per epoch
    per_genre_ap(metrics_json, output_png)      test average precision per genre, with the prior

Both read only the files, so plots can be redrawn from a copied model_dir:

    python -m trainer.plots --model_dir=DIR
"""

import json
import os

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import pandas as pd  # noqa: E402
from absl import app, flags, logging  # noqa: E402

# (panel title, training column, validation columns)
_PANELS = (
    ("Loss", "loss", ("val_loss",)),
    ("Binary accuracy (threshold 0.5)", "binary_accuracy", ("val_binary_accuracy",)),
    ("Mean average precision", "pr_auc", ("val_pr_auc", "val_map")),
)
_LABELS = {
    "pr_auc": "training, Keras PR-AUC (approximation)",
    "val_pr_auc": "validation, Keras PR-AUC (approximation)",
    "val_map": "validation, macro AP (scikit-learn)",
}


def read_history(history_csv: str) -> pd.DataFrame:
    """Read history.csv, keeping the last row of an epoch that a resumed run logged twice."""
    history = pd.read_csv(history_csv)
    return history.drop_duplicates(subset="epoch", keep="last").sort_values("epoch")


def learning_curves(history_csv: str, output_png: str) -> str:
    """Draw training and validation loss, binary accuracy and mAP per epoch into `output_png`."""
    history = read_history(history_csv)
    epochs = history["epoch"] + 1
    figure, axes = plt.subplots(1, len(_PANELS), figsize=(5 * len(_PANELS), 4))
    for axis, (title, train_column, validation_columns) in zip(axes, _PANELS):
        for column, style in [(train_column, "o-")] + [(c, "s--") for c in validation_columns]:
            if column in history:
                label = _LABELS.get(
                    column, "validation" if column.startswith("val_") else "training"
                )
                axis.plot(epochs, history[column], style, label=label)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    figure.tight_layout()
    _save(figure, output_png)
    return output_png


def per_genre_ap(metrics_json: str, output_png: str) -> str:
    """Draw a bar per genre: test average precision of the model and of the label prior.

    Genres without a test positive have no bar and are marked "n/a".
    """
    with open(metrics_json) as f:
        report = json.load(f)
    rows = report["model"]["per_genre"]
    prior_rows = report["baselines"]["label_prior"]["per_genre"]
    names = [row["genre"] for row in rows]
    model_ap = [row["average_precision"] or 0.0 for row in rows]
    prior_ap = [row["average_precision"] or 0.0 for row in prior_rows]

    figure, axis = plt.subplots(figsize=(12, 4.5))
    positions = range(len(names))
    axis.bar([p - 0.2 for p in positions], model_ap, width=0.4, label="model")
    axis.bar([p + 0.2 for p in positions], prior_ap, width=0.4, label="label-frequency prior")
    for position, row in zip(positions, rows):
        if row["average_precision"] is None:
            axis.text(position, 0.01, "n/a", ha="center", fontsize="x-small", rotation=90)
    axis.set_xticks(list(positions))
    axis.set_xticklabels(
        [f"{n} ({r['support']})" for n, r in zip(names, rows)], rotation=70, ha="right"
    )
    axis.set_ylabel("average precision (test)")
    macro = report["model"]["macro_average_precision"]
    axis.set_title(
        f"Per-genre average precision, macro {macro:.3f}" if macro is not None else "Per-genre AP"
    )
    axis.legend()
    figure.tight_layout()
    _save(figure, output_png)
    return output_png


def _save(figure, output_png: str) -> None:
    os.makedirs(os.path.dirname(output_png) or ".", exist_ok=True)
    figure.savefig(output_png, dpi=110)
    plt.close(figure)
    logging.info("Wrote %s", output_png)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    model_dir = flags.FLAGS.model_dir
    plots_dir = os.path.join(model_dir, "plots")
    learning_curves(
        os.path.join(model_dir, "history.csv"), os.path.join(plots_dir, "learning_curves.png")
    )
    metrics = os.path.join(model_dir, "eval", "metrics.json")
    if os.path.exists(metrics):
        per_genre_ap(metrics, os.path.join(plots_dir, "per_genre_ap.png"))


if __name__ == "__main__":
    # Defined here, not at import, because trainer's own flags also have --model_dir.
    flags.DEFINE_string("model_dir", None, "Folder of a training run (with history.csv and eval/).")
    flags.mark_flag_as_required("model_dir")
    app.run(main)

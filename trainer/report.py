"""Build `report.html`: one self-contained page that summarises a finished run.

The page is rebuilt from the files the stages write, so it can be regenerated
for any finished run folder:

    python -m trainer.report --run_dir=runs/20261204T210000Z

Inputs, relative to `--run_dir` (the layout `python -m trainer.demo` writes):

    data/metadata.json        the Beam job's counts, labels and rejections
    model/history.csv         per-epoch training history (optional)
    model/eval/metrics.json   test metrics of the model and both baselines
    model/eval/predictions.csv  per-poster probabilities on the test split
    model/plots/*.png         learning curves and per-genre AP bars
    stages.json               stage names and durations in seconds (optional)
    samples.json              a list of `trainer.predict --format=json` results (optional)

Posters of the example grid are read from the test shards, so the page needs
no access to the original images. Every image is embedded as base64, so the
file can be mailed or archived on its own.
"""

import base64
import html
import io
import json
import os
import sys
from typing import Dict, List, Optional, Sequence

from absl import app, flags, logging

METRIC_COLUMNS = (
    ("macro_average_precision", "macro AP"),
    ("micro_average_precision", "micro AP"),
    ("micro_f1", "micro F1"),
    ("macro_f1", "macro F1"),
    ("precision_at_3", "precision@3"),
    ("recall_at_3", "recall@3"),
    ("hamming_loss", "Hamming loss"),
    ("subset_accuracy", "subset accuracy"),
    ("binary_accuracy", "binary accuracy"),
)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1, h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img.plot { max-width: 100%; }
.grid { display: flex; flex-wrap: wrap; gap: 10px; }
.poster { width: 160px; font-size: 12px; }
.poster img { width: 160px; }
.hit { color: #1a7f37; } .miss { color: #b42318; } .muted { color: #777; }
"""


def build_report(run_dir: str, compare: Optional[Dict[str, str]] = None, num_posters: int = 24) -> str:
    """Write `RUN_DIR/report.html` and return its path.

    Args:
        run_dir: the run folder (layout in the module docstring).
        compare: optional display name -> model folder of other runs on the
            same split, whose test metrics join the metrics table.
        num_posters: number of test posters in the example grid.
    """
    metadata = _read_json(os.path.join(run_dir, "data", "metadata.json"))
    model_dir = os.path.join(run_dir, "model")
    metrics = _read_json(os.path.join(model_dir, "eval", "metrics.json"))
    stages = _read_json(os.path.join(run_dir, "stages.json"))
    samples = _read_json(os.path.join(run_dir, "samples.json"))

    sections = [f"<h1>Poster genre run <code>{html.escape(os.path.basename(os.path.abspath(run_dir)))}</code></h1>"]
    if stages:
        sections.append(_stages_section(stages))
    if metadata:
        sections.append(_dataset_section(metadata))
    sections.append(_plot_section("Learning curves", os.path.join(model_dir, "plots", "learning_curves.png")))
    if metrics:
        sections.append(_metrics_section(metrics, compare or {}))
    sections.append(_plot_section("Average precision per genre (test split)",
                                  os.path.join(model_dir, "plots", "per_genre_ap.png")))
    predictions_path = os.path.join(model_dir, "eval", "predictions.csv")
    if metadata and os.path.exists(predictions_path):
        sections.append(_poster_grid_section(run_dir, metadata, predictions_path, num_posters))
    if samples:
        sections.append(_samples_section(samples))

    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Poster genre run</title>"
        f"<style>{STYLE}</style></head><body>" + "\n".join(sections) + "</body></html>"
    )
    path = os.path.join(run_dir, "report.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    logging.info("Wrote %s (%.0f KB).", path, len(page) / 1024)
    return path


def _read_json(path: str):
    if not os.path.exists(path):
        logging.warning("%s not found; its section of the report is left out.", path)
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _stages_section(stages: Sequence[Dict]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(stage['name'])}</td><td>{stage['seconds'] / 60:.1f}</td>"
        f"<td>{html.escape(stage.get('status', ''))}</td></tr>"
        for stage in stages
    )
    total = sum(stage["seconds"] for stage in stages)
    return (
        "<h2>Stages</h2><table><tr><th>stage</th><th>minutes</th><th>status</th></tr>"
        f"{rows}<tr><th>total</th><th>{total / 60:.1f}</th><th></th></tr></table>"
    )


def _dataset_section(metadata: Dict) -> str:
    labels = metadata["labels"]
    splits = metadata["splits"]
    split_names = list(splits)

    count_rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{splits[name]['num_examples']}</td>"
        f"<td>{len(splits[name]['shards'])}</td></tr>"
        for name in split_names
    )
    rejected = metadata.get("rejected", {})
    rejected_rows = "".join(
        f"<tr><td>{html.escape(reason)}</td><td>{count}</td></tr>" for reason, count in sorted(rejected.items())
    ) or "<tr><td>none</td><td>0</td></tr>"

    genre_header = "".join(f"<th>{html.escape(name)}</th>" for name in split_names)
    genre_rows = "".join(
        f"<tr><td>{html.escape(label)}</td>"
        + "".join(f"<td>{splits[name]['label_counts'][index]}</td>" for name in split_names)
        + "</tr>"
        for index, label in enumerate(labels)
    )
    return (
        "<h2>Dataset</h2>"
        f"<p>{metadata.get('num_input_rows', '?')} CSV rows in; "
        f"{sum(s['num_examples'] for s in splits.values())} examples written; "
        f"{sum(rejected.values())} rejected.</p>"
        "<table><tr><th>split</th><th>examples</th><th>shards</th></tr>" + count_rows + "</table>"
        "<h3>Rejected rows by reason</h3><table><tr><th>reason</th><th>rows</th></tr>"
        + rejected_rows + "</table>"
        "<h3>Positives per genre</h3><table><tr><th>genre</th>" + genre_header + "</tr>"
        + genre_rows + "</table>"
    )


def _plot_section(title: str, png_path: str) -> str:
    if not os.path.exists(png_path):
        return f"<h2>{html.escape(title)}</h2><p class='muted'>{html.escape(png_path)} was not written.</p>"
    with open(png_path, "rb") as f:
        encoded = base64.b64encode(f.read()).decode("ascii")
    return f"<h2>{html.escape(title)}</h2><img class='plot' src='data:image/png;base64,{encoded}'>"


def _metrics_section(metrics: Dict, compare: Dict[str, str]) -> str:
    columns = [("this run: " + str(metrics.get("model_name", "model")), metrics["model"])]
    for name, other_model_dir in compare.items():
        other = _read_json(os.path.join(other_model_dir, "eval", "metrics.json"))
        if other:
            columns.append((name, other["model"]))
    columns.append(("baseline: label-frequency prior", metrics["baselines"]["label_prior"]))
    columns.append(("baseline: all-zero", metrics["baselines"]["all_zero"]))

    header = "".join(f"<th>{html.escape(name)}</th>" for name, _ in columns)
    rows = "".join(
        f"<tr><td>{label}</td>" + "".join(f"<td>{_format(values.get(key))}</td>" for _, values in columns) + "</tr>"
        for key, label in METRIC_COLUMNS
    )
    return (
        "<h2>Test metrics</h2><p>Thresholds per genre were tuned on the validation split. "
        "Undefined values (a genre with no positive) show as n/a.</p>"
        f"<table><tr><th>metric</th>{header}</tr>{rows}</table>"
    )


def _format(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}"


def _poster_grid_section(run_dir: str, metadata: Dict, predictions_path: str, num_posters: int) -> str:
    import pandas as pd

    predictions = pd.read_csv(predictions_path, keep_default_na=False).head(num_posters)
    requested_ids = set(predictions["id"].astype(str))
    thumbnails = _read_thumbnails(os.path.join(run_dir, "data"), metadata, requested_ids)

    probability_columns = [f"p_{label}" for label in metadata["labels"]]
    cards = []
    for _, row in predictions.iterrows():
        poster_id = str(row["id"])
        true_genres = [g for g in str(row["true_genres"]).split("|") if g]
        predicted = [g for g in str(row["predicted_genres"]).split("|") if g]
        top3 = sorted(zip(metadata["labels"], (row[c] for c in probability_columns)), key=lambda p: -p[1])[:3]

        predicted_html = ", ".join(
            f"<span class='{'hit' if g in true_genres else 'miss'}'>{html.escape(g)}</span>" for g in predicted
        ) or "<span class='muted'>none above threshold</span>"
        top3_html = ", ".join(f"{html.escape(g)} {p:.2f}" for g, p in top3)
        image = thumbnails.get(poster_id)
        image_html = f"<img src='data:image/jpeg;base64,{image}'>" if image else "<p class='muted'>no image</p>"
        cards.append(
            f"<div class='poster'>{image_html}<b>{html.escape(poster_id)}</b><br>"
            f"true: {html.escape(', '.join(true_genres))}<br>predicted: {predicted_html}<br>"
            f"<span class='muted'>top 3: {top3_html}</span></div>"
        )
    return (
        "<h2>Test posters</h2><p>Predicted genres in green are correct, in red wrong.</p>"
        f"<div class='grid'>{''.join(cards)}</div>"
    )


def _read_thumbnails(data_dir: str, metadata: Dict, requested_ids: set) -> Dict[str, str]:
    """Return id -> base64 JPEG thumbnail (at most 160x240 px) for the `requested_ids` test posters."""
    import tensorflow as tf
    from PIL import Image

    from tfpipe import schema

    spec = {
        schema.IMAGE_ID_KEY: tf.io.FixedLenFeature([], tf.string),
        schema.IMAGE_ENCODED_KEY: tf.io.FixedLenFeature([], tf.string),
    }
    records = tf.data.TFRecordDataset(
        schema.shard_paths(data_dir, metadata, "test"), compression_type=metadata["compression"] or None
    )
    thumbnails = {}
    for record in records:
        example = tf.io.parse_single_example(record, spec)
        poster_id = example[schema.IMAGE_ID_KEY].numpy().decode("utf-8")
        if poster_id not in requested_ids:
            continue
        image = Image.open(io.BytesIO(example[schema.IMAGE_ENCODED_KEY].numpy())).convert("RGB")
        image.thumbnail((160, 240))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        thumbnails[poster_id] = base64.b64encode(buffer.getvalue()).decode("ascii")
        if len(thumbnails) == len(requested_ids):
            break
    return thumbnails


def _samples_section(samples: List[Dict]) -> str:
    """Render `trainer.predict --format=json` results: `path`, `top_3` pairs, `predicted`."""
    rows = []
    for item in samples:
        top3 = ", ".join(f"{html.escape(genre)} {probability:.2f}" for genre, probability in item["top_3"])
        above = ", ".join(html.escape(genre) for genre in item["predicted"]) or "none"
        rows.append(
            f"<tr><td>{html.escape(os.path.basename(item['path']))}</td><td>{top3}</td><td>{above}</td></tr>"
        )
    return (
        "<h2>New posters (samples/)</h2><table><tr><th>poster</th><th>top 3</th>"
        "<th>above threshold</th></tr>" + "".join(rows) + "</table>"
    )


FLAGS = flags.FLAGS


def main(argv: Sequence[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    compare = {}
    for item in FLAGS.compare:
        name, _, path = item.partition("=")
        if not path:
            raise app.UsageError(f"--compare takes NAME=MODEL_DIR, got {item!r}.")
        compare[name] = path
    print(build_report(FLAGS.run_dir, compare, FLAGS.num_posters))
    return 0


if __name__ == "__main__":
    flags.DEFINE_string("run_dir", None, "Run folder written by `python -m trainer.demo`.")
    flags.DEFINE_multi_string("compare", [], "NAME=MODEL_DIR of another run on the same split, "
                              "added to the metrics table; repeatable.")
    flags.DEFINE_integer("num_posters", 24, "Test posters shown in the example grid.")
    flags.mark_flags_as_required(["run_dir"])
    sys.exit(app.run(main))

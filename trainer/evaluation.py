"""Multi-label metrics, decision thresholds and baselines, from predictions and labels.

Everything here works on NumPy arrays: `labels` 0/1 `[num_examples, num_labels]`
and `probabilities` float `[num_examples, num_labels]` in [0, 1]. Formulas come
from scikit-learn except precision@k and recall@k, which it lacks.

Which threshold each metric uses:
- `binary_accuracy`: 0.5 for every genre, as Keras' `BinaryAccuracy` and the
  original tutorial report it (the all-zero guess scores about 0.907 on posters).
- `micro_f1`, `macro_f1`, per-genre F1, `hamming_loss`, `subset_accuracy`:
  the per-genre thresholds passed in, tuned on the validation split by
  `tune_thresholds`.
- average precision, precision@3 and recall@3: no threshold (ranking metrics).

A genre without a positive example in the evaluated split has undefined
average precision and F1: it is reported as None (null in JSON) and left out of
the macro averages.
"""

from typing import Dict, List, Optional, Sequence

import numpy as np
from sklearn import metrics as skmetrics

DEFAULT_THRESHOLD = 0.5
# A threshold tuned on one or two validation positives fits those posters, not
# the genre: with a single Reality-TV positive it fell to 2e-5 and marked a
# third of the test posters Reality-TV. Rarer genres keep DEFAULT_THRESHOLD.
MIN_POSITIVES_TO_TUNE = 5
TOP_K = 3

SUMMARY_KEYS = (
    "macro_average_precision",
    "micro_average_precision",
    "micro_f1",
    "macro_f1",
    "hamming_loss",
    "subset_accuracy",
    "precision_at_3",
    "recall_at_3",
    "binary_accuracy",
)


def tune_thresholds(
    labels: np.ndarray, probabilities: np.ndarray, min_positives: int = MIN_POSITIVES_TO_TUNE
) -> np.ndarray:
    """Choose per-genre decision thresholds that maximise F1 on these examples.

    Use the validation split only, never the split you report on.

    Args:
        labels: `[num_examples, num_labels]` multi-hot labels.
        probabilities: `[num_examples, num_labels]` scores in [0, 1].
        min_positives: genres with fewer positives than this keep `DEFAULT_THRESHOLD`.

    Returns:
        float32 `[num_labels]`; `DEFAULT_THRESHOLD` for a genre with fewer than
        `min_positives` positives.
    """
    labels, probabilities = _check_shapes(labels, probabilities)
    thresholds = np.full(labels.shape[1], DEFAULT_THRESHOLD, dtype=np.float32)
    for k in range(labels.shape[1]):
        if labels[:, k].sum() < max(1, min_positives):
            continue
        precision, recall, candidates = skmetrics.precision_recall_curve(
            labels[:, k], probabilities[:, k]
        )
        # The last precision/recall pair has no threshold (recall 0 at +inf).
        precision, recall = precision[:-1], recall[:-1]
        f1 = np.divide(
            2 * precision * recall,
            precision + recall,
            out=np.zeros_like(precision),
            where=(precision + recall) > 0,
        )
        thresholds[k] = candidates[int(np.argmax(f1))]
    return thresholds


def compute_metrics(
    labels: np.ndarray,
    probabilities: np.ndarray,
    thresholds: Optional[np.ndarray] = None,
    label_names: Optional[Sequence[str]] = None,
) -> Dict:
    """Compute the summary metrics and the per-genre table.

    Args:
        labels: 0/1 `[num_examples, num_labels]`.
        probabilities: `[num_examples, num_labels]` in [0, 1].
        thresholds: `[num_labels]` decision thresholds; 0.5 for all when None.
        label_names: genre names; `label_<k>` when None.

    Returns:
        A JSON-ready dict: every key of `SUMMARY_KEYS` (None where undefined),
        `num_examples`, `num_genres_with_positives`, and `per_genre`, a list of
        dicts with `genre`, `support`, `average_precision`, `f1`, `threshold`.
    """
    labels, probabilities = _check_shapes(labels, probabilities)
    num_labels = labels.shape[1]
    if thresholds is None:
        thresholds = np.full(num_labels, DEFAULT_THRESHOLD, dtype=np.float32)
    thresholds = np.asarray(thresholds, dtype=np.float32).reshape(num_labels)
    if label_names is None:
        label_names = [f"label_{k}" for k in range(num_labels)]

    support = labels.sum(axis=0)
    defined = support > 0
    predictions = (probabilities >= thresholds[None, :]).astype(np.int64)

    per_genre_ap = [
        (
            float(skmetrics.average_precision_score(labels[:, k], probabilities[:, k]))
            if defined[k]
            else None
        )
        for k in range(num_labels)
    ]
    per_genre_f1 = [
        (
            float(skmetrics.f1_score(labels[:, k], predictions[:, k], zero_division=0.0))
            if defined[k]
            else None
        )
        for k in range(num_labels)
    ]

    summary = {
        "num_examples": int(labels.shape[0]),
        "num_genres_with_positives": int(defined.sum()),
        "macro_average_precision": _mean_or_none([ap for ap in per_genre_ap if ap is not None]),
        "micro_average_precision": (
            float(skmetrics.average_precision_score(labels.ravel(), probabilities.ravel()))
            if defined.any()
            else None
        ),
        "micro_f1": float(
            skmetrics.f1_score(labels, predictions, average="micro", zero_division=0.0)
        ),
        "macro_f1": _mean_or_none([f1 for f1 in per_genre_f1 if f1 is not None]),
        "hamming_loss": float(skmetrics.hamming_loss(labels, predictions)),
        "subset_accuracy": float(skmetrics.accuracy_score(labels, predictions)),
        "binary_accuracy": float(
            np.mean((probabilities >= DEFAULT_THRESHOLD) == labels.astype(bool))
        ),
        **_top_k_metrics(labels, probabilities, TOP_K),
    }
    summary["per_genre"] = [
        {
            "genre": str(name),
            "support": int(support[k]),
            "average_precision": per_genre_ap[k],
            "f1": per_genre_f1[k],
            "threshold": float(thresholds[k]),
        }
        for k, name in enumerate(label_names)
    ]
    return summary


def label_frequencies(label_counts: Sequence[int], num_examples: int) -> np.ndarray:
    """Return float32 `[num_labels]`: the fraction of training posters with each genre."""
    if num_examples <= 0:
        raise ValueError(f"The training split needs at least one example, got {num_examples}.")
    return np.asarray(label_counts, dtype=np.float32) / float(num_examples)


def baseline_probabilities(name: str, frequencies: np.ndarray, num_examples: int) -> np.ndarray:
    """Score `num_examples` posters with a baseline that ignores the image.

    Args:
        name: `all_zero` (probability 0 for every genre) or `label_prior`
            (every poster scored with the training-split genre frequencies).
        frequencies: float `[num_labels]` from `label_frequencies`.
        num_examples: rows of the output.

    Returns:
        float32 `[num_examples, num_labels]`.
    """
    frequencies = np.asarray(frequencies, dtype=np.float32)
    if name == "all_zero":
        return np.zeros((num_examples, frequencies.size), dtype=np.float32)
    if name == "label_prior":
        return np.broadcast_to(frequencies, (num_examples, frequencies.size)).copy()
    raise ValueError(f"Unknown baseline {name!r}; valid names are all_zero, label_prior.")


BASELINE_NAMES = ("all_zero", "label_prior")


def evaluate_with_baselines(
    test_labels: np.ndarray,
    test_probabilities: np.ndarray,
    validation_labels: np.ndarray,
    validation_probabilities: np.ndarray,
    train_frequencies: np.ndarray,
    label_names: Sequence[str],
) -> Dict:
    """Evaluate a model and both baselines on the test split, thresholds tuned on validation.

    The label-prior baseline gets its own thresholds tuned on the validation
    split the same way, so the comparison is like for like. Because it gives
    every poster the same score per genre, tuning can only choose between
    predicting the genre for all posters or for none. The all-zero baseline keeps 0.5, so it
    predicts no genre (tuning would turn it into "every genre for everyone").

    Returns:
        `{"model": metrics, "baselines": {"all_zero": metrics, "label_prior": metrics}}`
        with metrics as `compute_metrics` returns them.
    """
    thresholds = tune_thresholds(validation_labels, validation_probabilities)
    report = {"model": compute_metrics(test_labels, test_probabilities, thresholds, label_names)}

    report["baselines"] = {}
    for name in BASELINE_NAMES:
        test_scores = baseline_probabilities(name, train_frequencies, len(test_labels))
        if name == "all_zero":
            baseline_thresholds = np.full(len(label_names), DEFAULT_THRESHOLD, dtype=np.float32)
        else:
            validation_scores = baseline_probabilities(
                name, train_frequencies, len(validation_labels)
            )
            baseline_thresholds = tune_thresholds(validation_labels, validation_scores)
        report["baselines"][name] = compute_metrics(
            test_labels, test_scores, baseline_thresholds, label_names
        )
    return report


def format_report(report: Dict, title: str) -> str:
    """Render `evaluate_with_baselines` output as a Markdown report."""
    model = report["model"]
    baselines = report["baselines"]
    columns = ["model", *baselines]
    lines = [
        f"# {title}",
        "",
        f"{model['num_examples']} posters, {model['num_genres_with_positives']} genres with at "
        "least one positive. Thresholds per genre were tuned on the validation split; "
        "binary accuracy uses 0.5. A dash marks a metric that is undefined on this split.",
        "",
        "| metric | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for key in SUMMARY_KEYS:
        values = [model[key]] + [baselines[name][key] for name in baselines]
        lines.append(f"| {key} | " + " | ".join(_format_number(v) for v in values) + " |")

    lines += [
        "",
        "## Per genre",
        "",
        "| genre | support | average precision | F1 | threshold | prior AP |",
        "|---|---|---|---|---|---|",
    ]
    prior = baselines.get("label_prior", {}).get("per_genre", [{}] * len(model["per_genre"]))
    for row, prior_row in zip(model["per_genre"], prior):
        lines.append(
            f"| {row['genre']} | {row['support']} | {_format_number(row['average_precision'])} | "
            f"{_format_number(row['f1'])} | {row['threshold']:.3f} | "
            f"{_format_number(prior_row.get('average_precision'))} |"
        )
    return "\n".join(lines) + "\n"


def _top_k_metrics(
    labels: np.ndarray, probabilities: np.ndarray, k: int
) -> Dict[str, Optional[float]]:
    """Return precision@k over all posters and recall@k over posters with a positive."""
    k = min(k, labels.shape[1])
    # Stable sort, so ties (as in the baselines) break towards the lower genre index.
    top_k = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    hits = np.take_along_axis(labels, top_k, axis=1).sum(axis=1)
    positives = labels.sum(axis=1)
    has_positive = positives > 0
    return {
        f"precision_at_{TOP_K}": float(np.mean(hits / k)) if len(labels) else None,
        f"recall_at_{TOP_K}": (
            float(np.mean(hits[has_positive] / positives[has_positive]))
            if has_positive.any()
            else None
        ),
    }


def _check_shapes(labels, probabilities):
    labels = np.asarray(labels).astype(np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if labels.ndim != 2 or labels.shape != probabilities.shape:
        raise ValueError(
            f"labels and probabilities must both be [num_examples, num_labels]; got "
            f"{labels.shape} and {probabilities.shape}."
        )
    return labels, probabilities


def _mean_or_none(values: List[float]) -> Optional[float]:
    return float(np.mean(values)) if values else None


def _format_number(value) -> str:
    return "-" if value is None else f"{value:.3f}"

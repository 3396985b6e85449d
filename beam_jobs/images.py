"""Check one poster file and turn it into RGB JPEG bytes that `tf.io.decode_jpeg` reads.

A valid RGB JPEG keeps its original bytes. Anything else that Pillow can decode (PNG, GIF,
BMP, TIFF, WebP, or a JPEG in grayscale, CMYK or with an EXIF rotation) is converted to RGB
and re-encoded as JPEG, and the steps are named in `PreparedImage.conversion`, for example
`png_to_jpeg+rgba_to_rgb`. Files that cannot be used raise `ImageRejected` with a reason from
`beam_jobs.records`.

Pillow and TensorFlow are imported inside the functions, so that Beam can pickle the job
without loading them.
"""

import dataclasses
import io
from typing import List, Tuple

from beam_jobs import records

# Formats Pillow may open. Others (EPS and PDF need Ghostscript, for example) are rejected
# as not an image instead of running an external decoder on untrusted input.
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")
# Pillow's JPEG opener reports multi-picture JPEGs (from some cameras) as MPO.
JPEG_FORMATS = ("JPEG", "MPO")

EXIF_ORIENTATION_TAG = 0x0112
# EXIF orientations that turn the image by 90 degrees, so width and height swap.
SWAPPING_ORIENTATIONS = (5, 6, 7, 8)

# Pillow mode -> conversion step name for modes that `convert("RGB")` handles directly.
MODE_STEPS = {
    "1": "bilevel_to_rgb",
    "L": "grayscale_to_rgb",
    "P": "palette_to_rgb",
    "CMYK": "cmyk_to_rgb",
    "YCbCr": "ycbcr_to_rgb",
    "RGBX": "rgbx_to_rgb",
}
# Modes with an alpha channel; they are composited onto white, as a page shows them.
ALPHA_MODE_STEPS = {
    "RGBA": "rgba_to_rgb",
    "RGBa": "rgba_to_rgb",
    "LA": "grayscale_alpha_to_rgb",
    "La": "grayscale_alpha_to_rgb",
    "PA": "palette_alpha_to_rgb",
}
HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageRejected(Exception):
    """Raised when a poster file cannot be written; `reason` is one of `records.REJECT_REASONS`."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class PreparedImage:
    """RGB JPEG bytes of a poster, their size in pixels, and the conversion steps applied."""

    encoded: bytes
    height: int
    width: int
    conversion: str


def prepare_image(
    data: bytes, *, max_pixels: int, max_side: int = 0, jpeg_quality: int = 95
) -> PreparedImage:
    """Validate a poster file and return RGB JPEG bytes for the Example.

    Args:
        data: the bytes of the file as stored.
        max_pixels: reject images whose header declares more than this many pixels
            (width x height), before any pixel is decoded; this stops decompression bombs.
        max_side: when > 0, resize images whose longer side exceeds it to exactly that
            length, keeping the aspect ratio; 0 keeps the size.
        jpeg_quality: Pillow JPEG quality (1-95) for re-encoded images.

    Raises:
        ImageRejected: the file is empty, not an image, undecodable, too large, or of a
            pixel mode that has no RGB conversion.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageRejected(records.EMPTY_IMAGE, "the file is empty (0 bytes)")

    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise ImageRejected(
            records.NOT_AN_IMAGE,
            f"not a {'/'.join(ALLOWED_FORMATS)} image; the file starts with {data[:16]!r}",
        ) from None
    except Image.DecompressionBombError as error:
        # NOTE: Pillow raises this itself above twice `Image.MAX_IMAGE_PIXELS` (about 179
        # million pixels in Pillow 13), so a --max_pixels above that has no effect.
        raise ImageRejected(records.TOO_MANY_PIXELS, str(error)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageRejected(records.UNDECODABLE_IMAGE, f"cannot read the header: {error}") from None

    width, height = image.size
    if width * height > max_pixels:
        raise ImageRejected(
            records.TOO_MANY_PIXELS,
            f"{width}x{height} = {width * height} pixels, more than --max_pixels={max_pixels}",
        )

    is_jpeg = image.format in JPEG_FORMATS
    orientation = read_exif_orientation(image) if is_jpeg else 1
    needs_resize = max_side > 0 and max(width, height) > max_side
    if is_jpeg and image.mode == "RGB" and orientation == 1 and not needs_resize:
        encoded, steps = data, []
    else:
        encoded, steps = convert_to_rgb_jpeg(image, orientation, max_side, jpeg_quality)

    decoded_height, decoded_width = check_decodes_as_jpeg(encoded)
    if not steps and (decoded_height, decoded_width) != (height, width):
        raise ImageRejected(
            records.UNDECODABLE_IMAGE,
            f"the header says {width}x{height} but the JPEG decodes to "
            f"{decoded_width}x{decoded_height}",
        )
    return PreparedImage(encoded, decoded_height, decoded_width, "+".join(steps))


def read_exif_orientation(image) -> int:
    """Return the EXIF orientation 2..8 of a JPEG that needs rotating, else 1."""
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except (OSError, SyntaxError, ValueError, EOFError):
        # A malformed EXIF block does not stop decoding; the pixels are used as stored.
        return 1
    return orientation if orientation in range(2, 9) else 1


def convert_to_rgb_jpeg(
    image, orientation: int, max_side: int, jpeg_quality: int
) -> Tuple[bytes, List[str]]:
    """Decode `image` (an opened Pillow image), convert it to RGB and encode it as JPEG.

    `orientation` is the EXIF orientation (1 = upright); `max_side` 0 keeps the size.

    Returns:
        The JPEG bytes and the list of conversion step names.
    """
    from PIL import Image, ImageOps

    steps = []
    if image.format not in JPEG_FORMATS:
        steps.append(f"{image.format.lower()}_to_jpeg")
    if getattr(image, "n_frames", 1) > 1:
        steps.append("first_frame")

    width, height = image.size
    needs_resize = max_side > 0 and max(width, height) > max_side
    if needs_resize:
        target = resized_size(width, height, max_side)
        # For a JPEG, libjpeg then decodes at 1/2, 1/4 or 1/8 scale when that is still
        # at least the target size, which saves most of the decode time.
        image.draft("RGB", target)

    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageRejected(records.UNDECODABLE_IMAGE, f"cannot decode: {error}") from None

    if orientation != 1:
        image = ImageOps.exif_transpose(image)
        steps.append("exif_rotate")
        if orientation in SWAPPING_ORIENTATIONS and needs_resize:
            target = (target[1], target[0])

    image, mode_step = convert_mode_to_rgb(image)
    if mode_step:
        steps.append(mode_step)

    if needs_resize:
        # `target` comes from the size in the header: draft decoding rounds the size up
        # per axis, so the drafted size no longer has the exact aspect ratio.
        image = image.resize(target, Image.Resampling.LANCZOS)
        steps.append(f"resized_max_side_{max_side}")

    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=jpeg_quality)
    return buffer.getvalue(), steps


def convert_mode_to_rgb(image):
    """Return `(rgb_image, step_name)`; `step_name` is None when `image` is already RGB."""
    from PIL import Image

    mode = image.mode
    if mode == "RGB":
        return image, None
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "PA"
    if mode in ALPHA_MODE_STEPS:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB"), ALPHA_MODE_STEPS[mode]
    if mode in HIGH_BIT_DEPTH_MODES:
        return high_bit_depth_to_rgb(image), "grayscale_16bit_to_rgb"
    if mode in MODE_STEPS:
        return image.convert("RGB"), MODE_STEPS[mode]
    raise ImageRejected(
        records.UNSUPPORTED_IMAGE_MODE,
        f"Pillow mode {mode!r} has no conversion to RGB here; convert the file to an RGB JPEG",
    )


def high_bit_depth_to_rgb(image):
    """Scale a 16- or 32-bit grayscale image to 8 bits and return it as RGB."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(image, dtype=np.float64)
    # 16-bit files store 0..65535; Pillow opens some of them as 32-bit mode "I".
    full_scale = 65535.0 if pixels.max(initial=0) > 255 else 255.0
    eight_bit = np.clip(np.round(pixels * (255.0 / full_scale)), 0, 255).astype(np.uint8)
    return Image.fromarray(eight_bit, mode="L").convert("RGB")


def resized_size(width: int, height: int, max_side: int) -> Tuple[int, int]:
    """Return (width, height) scaled so that the longer side is `max_side`, aspect kept."""
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def check_decodes_as_jpeg(encoded: bytes) -> Tuple[int, int]:
    """Decode `encoded` the way the tf.data reader does and return (height, width).

    Raises:
        ImageRejected: when `tf.io.decode_jpeg(encoded, channels=3)` fails, for example on a
            truncated file.
    """
    import tensorflow as tf

    try:
        decoded = tf.io.decode_jpeg(encoded, channels=3)
    except tf.errors.InvalidArgumentError as error:
        message = error.message.splitlines()[0] if error.message else str(error)
        raise ImageRejected(
            records.UNDECODABLE_IMAGE, f"tf.io.decode_jpeg failed: {message}"
        ) from None
    return int(decoded.shape[0]), int(decoded.shape[1])

"""Tests of `beam_jobs.images`: one case per kind of bad or unusual poster file."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from beam_jobs import images, records
from tests import beam_fixtures

MAX_PIXELS = 1_000_000


def prepare(data: bytes, **kwargs) -> images.PreparedImage:
    return images.prepare_image(data, max_pixels=kwargs.pop("max_pixels", MAX_PIXELS), **kwargs)


def test_rgb_jpeg_keeps_original_bytes():
    data = beam_fixtures.image_bytes("RGB", size=(12, 16))

    prepared = prepare(data)

    assert prepared.encoded == data
    assert prepared.conversion == ""
    assert (prepared.height, prepared.width) == (16, 12)


@pytest.mark.parametrize(
    "mode, image_format, expected_conversion",
    [
        ("L", "JPEG", "grayscale_to_rgb"),
        ("CMYK", "JPEG", "cmyk_to_rgb"),
        ("RGB", "PNG", "png_to_jpeg"),
        ("RGBA", "PNG", "png_to_jpeg+rgba_to_rgb"),
        ("LA", "PNG", "png_to_jpeg+grayscale_alpha_to_rgb"),
        ("I;16", "PNG", "png_to_jpeg+grayscale_16bit_to_rgb"),
        ("P", "GIF", "gif_to_jpeg+palette_to_rgb"),
        ("RGB", "BMP", "bmp_to_jpeg"),
        ("RGB", "WEBP", "webp_to_jpeg"),
        ("RGB", "TIFF", "tiff_to_jpeg"),
    ],
    ids=[
        "gray_jpeg",
        "cmyk_jpeg",
        "png",
        "rgba_png",
        "gray_alpha_png",
        "png_16bit",
        "gif",
        "bmp",
        "webp",
        "tiff",
    ],
)
def test_conversion_yields_rgb_jpeg(mode, image_format, expected_conversion):
    data = beam_fixtures.image_bytes(mode, size=(12, 16), image_format=image_format)

    prepared = prepare(data)

    assert prepared.conversion == expected_conversion
    decoded = tf.io.decode_jpeg(prepared.encoded, channels=3)
    assert decoded.shape == (16, 12, 3)
    assert Image.open(io.BytesIO(prepared.encoded)).mode == "RGB"


def test_rgba_is_composited_on_white():
    transparent = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    buffer = io.BytesIO()
    transparent.save(buffer, format="PNG")

    prepared = prepare(buffer.getvalue())

    pixels = tf.io.decode_jpeg(prepared.encoded, channels=3).numpy()
    assert pixels.min() >= 250


def test_sixteen_bit_png_is_scaled_to_eight_bits():
    ramp = np.full((4, 4), 65535, np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")

    prepared = prepare(buffer.getvalue())

    pixels = tf.io.decode_jpeg(prepared.encoded, channels=3).numpy()
    assert pixels.min() >= 250


def test_exif_rotation_is_applied():
    data = beam_fixtures.jpeg_with_exif_orientation(6, size=(12, 16))

    prepared = prepare(data)

    assert prepared.conversion == "exif_rotate"
    assert (prepared.height, prepared.width) == (12, 16)


def test_max_side_resizes_keeping_aspect():
    data = beam_fixtures.image_bytes("RGB", size=(300, 450))

    prepared = prepare(data, max_side=100)

    assert prepared.conversion == "resized_max_side_100"
    assert (prepared.height, prepared.width) == (100, 67)
    assert tf.io.decode_jpeg(prepared.encoded, channels=3).shape == (100, 67, 3)


def test_max_side_leaves_small_image_alone():
    data = beam_fixtures.image_bytes("RGB", size=(30, 45))

    prepared = prepare(data, max_side=100)

    assert prepared.encoded == data


def rejection_reason(data: bytes, **kwargs) -> str:
    with pytest.raises(images.ImageRejected) as caught:
        prepare(data, **kwargs)
    return caught.value.reason


def test_empty_file_is_rejected():
    assert rejection_reason(b"") == records.EMPTY_IMAGE


def test_text_file_is_rejected():
    assert rejection_reason(b"<html><body>404 Not Found</body></html>") == records.NOT_AN_IMAGE


@pytest.mark.parametrize("keep_fraction", [0.5, 0.95], ids=["half", "missing_tail"])
def test_truncated_jpeg_is_rejected(keep_fraction):
    data = beam_fixtures.image_bytes("RGB", size=(64, 96))

    reason = rejection_reason(data[: int(len(data) * keep_fraction)])

    assert reason == records.UNDECODABLE_IMAGE


def test_truncated_header_is_rejected():
    data = beam_fixtures.image_bytes("RGB", size=(64, 96))

    assert rejection_reason(data[:40]) == records.UNDECODABLE_IMAGE


def test_decompression_bomb_rejected_from_header():
    bomb = beam_fixtures.png_bomb(8_000, 7_500)

    assert len(bomb) < 1_000_000
    assert rejection_reason(bomb, max_pixels=50_000_000) == records.TOO_MANY_PIXELS


def test_max_pixels_is_inclusive():
    data = beam_fixtures.image_bytes("RGB", size=(10, 10))

    assert prepare(data, max_pixels=100).encoded == data
    assert rejection_reason(data, max_pixels=99) == records.TOO_MANY_PIXELS


def test_unsupported_mode_is_rejected():
    buffer = io.BytesIO()
    Image.new("F", (4, 4)).save(buffer, format="TIFF")

    assert rejection_reason(buffer.getvalue()) == records.UNSUPPORTED_IMAGE_MODE

"""Element types that flow between the stages of the poster Beam job, and the reject reasons.

Every CSV data row ends either as one written Example or as one `Rejection`, so that
`num_input_rows == sum(num_examples) + sum(rejected)` holds in `metadata.json`. A `Note`
records a repair on a row that was kept.
"""

import dataclasses
from typing import Tuple

# Reasons a row is rejected; the keys of `metadata.json` `rejected` and the Beam counters
# `rejected_<reason>`. `docs/beam_job.md` explains each choice.
WRONG_FIELD_COUNT = "wrong_field_count"
INVALID_ENCODING = "invalid_encoding"
MISSING_ID = "missing_id"
UNSAFE_ID = "unsafe_id"
INVALID_LABEL_VALUE = "invalid_label_value"
NO_GENRE = "no_genre"
DUPLICATE_ID = "duplicate_id"
DUPLICATE_ID_CONFLICTING_LABELS = "duplicate_id_conflicting_labels"
MISSING_IMAGE = "missing_image"
IMAGE_READ_FAILED = "image_read_failed"
EMPTY_IMAGE = "empty_image"
NOT_AN_IMAGE = "not_an_image"
UNDECODABLE_IMAGE = "undecodable_image"
TOO_MANY_PIXELS = "too_many_pixels"
UNSUPPORTED_IMAGE_MODE = "unsupported_image_mode"

REJECT_REASONS = (
    WRONG_FIELD_COUNT,
    INVALID_ENCODING,
    MISSING_ID,
    UNSAFE_ID,
    INVALID_LABEL_VALUE,
    NO_GENRE,
    DUPLICATE_ID,
    DUPLICATE_ID_CONFLICTING_LABELS,
    MISSING_IMAGE,
    IMAGE_READ_FAILED,
    EMPTY_IMAGE,
    NOT_AN_IMAGE,
    UNDECODABLE_IMAGE,
    TOO_MANY_PIXELS,
    UNSUPPORTED_IMAGE_MODE,
)

# Repairs on kept rows; the keys of `metadata.json` `notes`.
GENRE_STRING_MISMATCH = "genre_string_mismatch"
GENRE_STRING_UNPARSABLE = "genre_string_unparsable"
IMAGE_CONVERTED = "image_converted"

NOTE_KINDS = (GENRE_STRING_MISMATCH, GENRE_STRING_UNPARSABLE, IMAGE_CONVERTED)


@dataclasses.dataclass(frozen=True)
class CsvRow:
    """One CSV data row as read: 1-based line number where it starts, and its raw fields."""

    line_number: int
    fields: Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class PosterRow:
    """A CSV row that passed the row checks: id and 0/1 labels in `labels` order."""

    line_number: int
    poster_id: str
    multi_hot: Tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Poster:
    """A poster ready to write: the serialized `tf.train.Example` and the facts for metadata.

    `height` and `width` are pixels of the encoded JPEG, `num_bytes` its length in bytes,
    `conversion` the `+`-joined steps applied (empty for the original bytes).
    """

    line_number: int
    poster_id: str
    multi_hot: Tuple[int, ...]
    serialized_example: bytes
    height: int
    width: int
    num_bytes: int
    conversion: str


@dataclasses.dataclass(frozen=True)
class Rejection:
    """A CSV row that was not written, with the reason (one of `REJECT_REASONS`)."""

    line_number: int
    poster_id: str
    reason: str
    detail: str

    def to_json_dict(self) -> dict:
        return {
            "line": self.line_number,
            "id": self.poster_id,
            "reason": self.reason,
            "detail": self.detail,
        }


@dataclasses.dataclass(frozen=True)
class Note:
    """A repair made on a row that was written (kind is one of `NOTE_KINDS`)."""

    line_number: int
    poster_id: str
    kind: str
    detail: str

    def to_json_dict(self) -> dict:
        return {
            "line": self.line_number,
            "id": self.poster_id,
            "kind": self.kind,
            "detail": self.detail,
        }

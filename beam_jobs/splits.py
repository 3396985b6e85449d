"""Assign each poster id to train, validation or test by a stable hash of the id.

The split depends only on the id and the fractions, never on row order, on the other rows
or on a random seed. A title therefore never lands in two splits, reruns give the same
split, and adding rows to the CSV leaves the split of every existing id where it was.
"""

import hashlib
from typing import Sequence, Tuple

from tfpipe import schema

NUM_BUCKETS = 10_000


def split_bounds(fractions: Sequence[float]) -> Tuple[int, ...]:
    """Turn split fractions into cumulative bucket bounds, one per split in `schema.SPLITS`.

    With the default fractions (0.75, 0.10, 0.15) the bounds are (7500, 8500, 10000): buckets
    0..7499 go to train, 7500..8499 to validation and 8500..9999 to test.

    Raises:
        ValueError: when a fraction is negative or the fractions do not sum to 1.
    """
    if len(fractions) != len(schema.SPLITS):
        raise ValueError(f"Expected {len(schema.SPLITS)} fractions, got {list(fractions)}.")
    if any(fraction < 0 for fraction in fractions):
        raise ValueError(f"Split fractions must be >= 0, got {list(fractions)}.")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(
            f"Split fractions {list(fractions)} sum to {sum(fractions)}; they must sum to 1."
        )

    bounds = []
    cumulative = 0.0
    for fraction in fractions:
        cumulative += fraction
        bounds.append(round(cumulative * NUM_BUCKETS))
    bounds[-1] = NUM_BUCKETS
    return tuple(bounds)


def bucket_of(poster_id: str) -> int:
    """Return the bucket 0..9999 of `poster_id`: the first 8 bytes of SHA-256, mod 10,000.

    Example: SHA-256 of `tt0086425` starts with the bytes 0x356455d76ef04759, which is
    3847294365448816473; mod 10,000 that is bucket 6473, below 7500, so train.
    """
    digest = hashlib.sha256(poster_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % NUM_BUCKETS


def split_of(poster_id: str, bounds: Sequence[int]) -> str:
    """Return the split name of `poster_id` for bounds from `split_bounds`."""
    bucket = bucket_of(poster_id)
    for split, bound in zip(schema.SPLITS, bounds):
        if bucket < bound:
            return split
    raise AssertionError(f"bucket {bucket} is not below the last bound {bounds[-1]}")


def split_index(poster_id: str, bounds: Sequence[int]) -> int:
    """Return the position of `split_of(poster_id, bounds)` in `schema.SPLITS`."""
    return schema.SPLITS.index(split_of(poster_id, bounds))

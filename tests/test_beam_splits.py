"""Tests of `beam_jobs.splits`: the hash split is stable and follows the fractions."""

import collections

import pytest

from beam_jobs import splits

DEFAULT_BOUNDS = splits.split_bounds((0.75, 0.10, 0.15))


def test_default_bounds():
    assert DEFAULT_BOUNDS == (7500, 8500, 10000)


def test_worked_example_bucket():
    assert splits.bucket_of("tt0086425") == 6473
    assert splits.split_of("tt0086425", DEFAULT_BOUNDS) == "train"


def test_split_is_stable_when_rows_are_added():
    ids = [f"tt{n:07d}" for n in range(2000)]
    before = {poster_id: splits.split_of(poster_id, DEFAULT_BOUNDS) for poster_id in ids}

    more_ids = [f"nm{n:07d}" for n in range(500)] + ids
    after = {poster_id: splits.split_of(poster_id, DEFAULT_BOUNDS) for poster_id in more_ids}

    assert all(after[poster_id] == split for poster_id, split in before.items())


def test_split_sizes_follow_fractions():
    ids = [f"tt{n:07d}" for n in range(20_000)]

    counts = collections.Counter(splits.split_of(poster_id, DEFAULT_BOUNDS) for poster_id in ids)

    assert abs(counts["train"] / 20_000 - 0.75) < 0.015
    assert abs(counts["validation"] / 20_000 - 0.10) < 0.015
    assert abs(counts["test"] / 20_000 - 0.15) < 0.015


def test_zero_fraction_split_gets_nothing():
    bounds = splits.split_bounds((0.9, 0.0, 0.1))
    ids = [f"tt{n:07d}" for n in range(2000)]

    assert all(splits.split_of(poster_id, bounds) != "validation" for poster_id in ids)


@pytest.mark.parametrize(
    "fractions",
    [(0.8, 0.1, 0.2), (1.1, -0.05, -0.05), (0.5, 0.5)],
    ids=["sum_above_one", "negative", "two_fractions"],
)
def test_invalid_fractions_raise(fractions):
    with pytest.raises(ValueError):
        splits.split_bounds(fractions)

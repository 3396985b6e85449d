"""Shared fixtures: where the real poster dataset is.

`DATASET_DIR` names the dataset folder (train.csv, Images/, samples/). When it
is unset, `../shared/movie-posters` beside the repository is used if present.
Tests marked `real_data` are skipped without a dataset on a developer machine,
and fail under CI (`CI=true`), where the dataset must be present.
"""

import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def find_dataset_dir():
    """Return the dataset folder as a `pathlib.Path`, or None when not found."""
    configured = os.environ.get("DATASET_DIR", "")
    candidates = [pathlib.Path(configured)] if configured else [REPO_ROOT.parent / "shared" / "movie-posters"]
    for candidate in candidates:
        if (candidate / "train.csv").is_file():
            return candidate.resolve()
    return None


@pytest.fixture(scope="session")
def dataset_dir():
    """The real dataset folder; skips (or fails under CI) when it is missing."""
    found = find_dataset_dir()
    if found is None:
        message = (
            "Real poster dataset not found: set DATASET_DIR to a copy of "
            "https://github.com/laxmimerit/Movies-Poster_Dataset"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found

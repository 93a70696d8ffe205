"""Which datasets exist and where their files go: plain data, importable without torch."""

from __future__ import annotations

import os
from pathlib import Path

DATASET_NAMES = ("kmnist", "mnist", "fashion-mnist")
DATA_ENV = "KMNIST_SEARCH_DATA"
RAW_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DataUnavailableError(RuntimeError):
    """The dataset files are missing, unreadable or corrupt; the message says what to do."""


def default_data_dir() -> Path:
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "kmnist-search"

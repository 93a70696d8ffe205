"""Which datasets exist and where their files go: plain data, importable without torch.

A dataset choice is a file source (kmnist, mnist, fashion-mnist) plus an optional label
grouping, e.g. seed 004's four merged MNIST classes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SOURCES = ("kmnist", "mnist", "fashion-mnist")
DATA_ENV = "KMNIST_SEARCH_DATA"
# label order; KMNIST's are torchvision's `KMNIST.classes`, Fashion-MNIST's its `FashionMNIST.classes`
CLASS_NAMES = {
    "kmnist": ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    "mnist": ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9"),
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"),
}
# the hiragana KMNIST's romanised names stand for, as its users know them
KMNIST_CHARACTERS = ("お", "き", "す", "つ", "な", "は", "ま", "や", "れ", "を")
RAW_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class DataUnavailableError(RuntimeError):
    """The dataset files are missing, unreadable or corrupt; the message says what to do."""


@dataclass(frozen=True)
class DatasetChoice:
    name: str
    source: str  # which files to read
    groups: tuple[tuple[int, ...], ...] | None = None  # new class i = the original labels in groups[i]

    @property
    def num_classes(self) -> int:
        return 10 if self.groups is None else len(self.groups)

    def label_map(self) -> list[int]:
        """original label -> grouped label."""
        if self.groups is None:
            return list(range(10))
        mapping = [-1] * 10
        for new, members in enumerate(self.groups):
            for original in members:
                mapping[original] = new
        return mapping

    def class_names(self, characters: bool = True) -> tuple[str, ...]:
        """One name per label: KMNIST's hiragana with their romanisation ("お (o)"), or the
        romanisation alone (`characters=False`: for figures when no font can draw them);
        a merged class names its members ("2/3/5/8")."""
        names = CLASS_NAMES[self.source]
        if self.source == "kmnist" and characters:
            names = tuple(f"{char} ({roman})" for char, roman in zip(KMNIST_CHARACTERS, names, strict=True))
        if self.groups is None:
            return names
        return tuple("/".join(names[original] for original in members) for members in self.groups)


DATASET_CHOICES = {
    choice.name: choice
    for choice in (
        DatasetChoice("kmnist", "kmnist"),
        DatasetChoice("mnist", "mnist"),
        DatasetChoice("fashion-mnist", "fashion-mnist"),
        # seed 004 experiment 2: {0,6}, {1,7}, {2,3,5,8}, {4,9}
        DatasetChoice("mnist-merged4", "mnist", ((0, 6), (1, 7), (2, 3, 5, 8), (4, 9))),
    )
}
DATASET_NAMES = tuple(DATASET_CHOICES)


def default_data_dir() -> Path:
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "kmnist-search"

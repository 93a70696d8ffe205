"""Datasets as tensors on the training device.

Files are read through torchvision (which also downloads them for users who have a
network). The search sees a stratified train/validation split of the training set;
only `load_test_split` touches the test set.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torchvision import datasets
from torchvision.datasets.mnist import read_image_file, read_label_file
from torchvision.datasets.utils import download_and_extract_archive

from objectives.datasets import DATA_ENV, DATASET_CHOICES, RAW_FILES, DataUnavailableError

SOURCE_CLASSES: dict[str, type[datasets.MNIST]] = {
    "kmnist": datasets.KMNIST,
    "mnist": datasets.MNIST,
    "fashion-mnist": datasets.FashionMNIST,
}


@dataclass(frozen=True)
class TensorSplit:
    images: torch.Tensor  # float32, (N, 1, 28, 28), normalised, on the training device
    labels: torch.Tensor  # int64, (N,), on the training device

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class SearchData:
    train: TensorSplit
    val: TensorSplit
    num_classes: int
    mean: float
    std: float
    split_hash: str  # identifies which images went to validation


def raw_folder(source: str, data_dir: Path) -> Path:
    return Path(data_dir) / SOURCE_CLASSES[source].__name__ / "raw"


def _extract_local_archives(folder: Path) -> None:
    """Decompress the .gz files of a raw folder that have no IDX file beside them yet.

    torchvision reads only decompressed IDX files; a user who copied the .gz files in should
    not need network access for torchvision to "download" them. Each file is written under a
    temporary name and renamed into place, so processes starting together on a fresh folder
    (workers, `--jobs`) never read a half-written file, and a failed decompression leaves no
    file that would later pass for a complete one.
    """
    if not folder.is_dir():
        return
    for archive in folder.glob("*.gz"):
        target = archive.with_suffix("")
        if target.exists():
            continue
        handle, partial = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(handle, "wb") as out, gzip.open(archive, "rb") as source:
                shutil.copyfileobj(source, out, 1 << 20)
            os.replace(partial, target)
        finally:
            Path(partial).unlink(missing_ok=True)


def load_raw(dataset: str, data_dir: Path, train: bool,
             download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 28, 28) and int64 labels (grouped if the choice groups them).

    Reads the raw IDX files only, never torchvision's `processed/*.pt` caches (torch.save files);
    with `download`, missing files are first fetched from torchvision's mirrors."""
    if dataset not in DATASET_CHOICES:
        raise DataUnavailableError(
            f"unknown dataset {dataset!r}: use one of {', '.join(DATASET_CHOICES)}"
        )
    choice = DATASET_CHOICES[dataset]
    images, labels = _load_source(choice.source, data_dir, train, download)
    return images, torch.tensor(choice.label_map())[labels]


def _missing(folder: Path) -> list[str]:
    names = (*RAW_FILES[True], *RAW_FILES[False])
    return [f"{name}.gz" for name in names if not (folder / name).exists()]


def _fetch(source: str, folder: Path) -> None:
    """torchvision's download: its mirrors and checksums, files into the raw folder."""
    dataset_class = SOURCE_CLASSES[source]
    folder.mkdir(parents=True, exist_ok=True)
    # torchvision prints each failed mirror; the one-line error of the caller says it all
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        for filename, md5 in dataset_class.resources:
            if (folder / filename.removesuffix(".gz")).exists():
                continue
            for mirror in dataset_class.mirrors:
                try:
                    download_and_extract_archive(f"{mirror}{filename}", download_root=str(folder),
                                                 filename=filename, md5=md5)
                    break
                except Exception:  # this mirror failed: try the next one
                    continue


def _load_source(source: str, data_dir: Path, train: bool,
                 download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    folder = raw_folder(source, data_dir)
    try:
        _extract_local_archives(folder)
    except (OSError, EOFError) as error:
        raise DataUnavailableError(f"cannot decompress the files in {folder}: {error}") from None
    if download and _missing(folder):
        with contextlib.suppress(OSError):  # the missing files are named below
            _fetch(source, folder)
    missing = _missing(folder)
    if missing:
        tried = " and the download failed" if download else ""
        raise DataUnavailableError(
            f"{source} files missing{tried}: put {', '.join(missing)} into {folder}/ "
            f"(or set --data-dir / {DATA_ENV} to a folder holding them)"
        )
    image_name, label_name = RAW_FILES[train]
    try:
        images = read_image_file(str(folder / image_name))
        labels = read_label_file(str(folder / label_name)).long()
    except Exception:  # torchvision's readers assert on malformed headers
        raise DataUnavailableError(
            f"{source} files in {folder} are unreadable or corrupt: delete them and download "
            "again, or rebuild the root"
        ) from None
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise DataUnavailableError(
            f"{source} files in {folder} do not hold 28x28 images with one label each: rebuild them"
        )
    return images, labels


def split_indices(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/validation indices, fixed by `seed`."""
    indices = np.arange(len(labels))
    train_idx, val_idx = train_test_split(
        indices, test_size=val_fraction, random_state=seed, stratify=labels
    )
    return np.sort(train_idx), np.sort(val_idx)


def nested_stratified_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """A random order of the indices whose every prefix keeps the class proportions (to one
    image per class): its first n are a stratified subset, and smaller subsets nest in larger."""
    rng = np.random.default_rng(seed)
    rank = np.empty(len(labels))
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        rank[members] = (np.arange(len(members)) + rng.random()) / len(members)
    return np.lexsort((rng.random(len(labels)), rank))


def take(split: TensorSplit, indices: np.ndarray) -> TensorSplit:
    index = torch.as_tensor(indices, device=split.images.device)
    return TensorSplit(split.images[index], split.labels[index])


def to_device(images: torch.Tensor, labels: torch.Tensor, mean: float, std: float,
              device: torch.device) -> TensorSplit:
    # normalise once, on the device, so every epoch only slices
    x = images.to(device).unsqueeze(1).float().div_(255.0).sub_(mean).div_(std)
    return TensorSplit(x, labels.to(device))


def pixel_stats(images: torch.Tensor) -> tuple[float, float]:
    x = images.float().div(255.0)
    return float(x.mean()), float(x.std())


def load_search_data(dataset: str, data_dir: Path, val_fraction: float, seed: int,
                     device: torch.device) -> SearchData:
    """The training set split into train and validation parts, held on `device`."""
    images, labels = load_raw(dataset, data_dir, train=True)
    train_idx, val_idx = split_indices(labels.numpy(), val_fraction, seed)
    mean, std = pixel_stats(images[train_idx])
    digest = hashlib.sha256(f"{dataset}:{len(labels)}:".encode() + val_idx.tobytes()).hexdigest()
    return SearchData(
        train=to_device(images[train_idx], labels[train_idx], mean, std, device),
        val=to_device(images[val_idx], labels[val_idx], mean, std, device),
        num_classes=DATASET_CHOICES[dataset].num_classes,
        mean=mean,
        std=std,
        split_hash=digest[:16],
    )


def load_test_split(dataset: str, data_dir: Path, mean: float, std: float,
                    device: torch.device) -> TensorSplit:
    images, labels = load_raw(dataset, data_dir, train=False)
    return to_device(images, labels, mean, std, device)


# --- writing IDX files: builds small dataset roots from real or synthetic images ---

def write_idx_images(path: Path, images: np.ndarray) -> None:
    n, rows, cols = images.shape
    header = struct.pack(">IIII", 0x0803, n, rows, cols)
    with gzip.open(path, "wb") as f:
        f.write(header + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    header = struct.pack(">II", 0x0801, len(labels))
    with gzip.open(path, "wb") as f:
        f.write(header + labels.astype(np.uint8).tobytes())


def write_root(data_dir: Path, source: str, train: tuple[np.ndarray, np.ndarray],
               test: tuple[np.ndarray, np.ndarray]) -> Path:
    """Write a torchvision-layout root (`<data_dir>/<Dataset>/raw/*.gz`)."""
    folder = raw_folder(source, data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for is_train, (images, labels) in ((True, train), (False, test)):
        image_name, label_name = RAW_FILES[is_train]
        write_idx_images(folder / f"{image_name}.gz", images)
        write_idx_labels(folder / f"{label_name}.gz", labels)
    return folder


def read_idx_gz(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, = struct.unpack(">I", raw[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def build_root_from_test_images(idx_folder: Path, data_dir: Path, test_fraction: float = 0.2,
                                seed: int = 0, source: str = "kmnist") -> Path:
    """A dataset root made only of the official test images, split stratified into train/test.

    Used where the official training images cannot be had (these machines).
    """
    try:
        images = read_idx_gz(Path(idx_folder) / "t10k-images-idx3-ubyte.gz")
        labels = read_idx_gz(Path(idx_folder) / "t10k-labels-idx1-ubyte.gz")
    except (OSError, EOFError, struct.error, ValueError) as error:
        raise DataUnavailableError(
            f"cannot read t10k-images/labels-idx*-ubyte.gz in {idx_folder}: {error}"
        ) from None
    train_idx, test_idx = split_indices(labels, test_fraction, seed)
    return write_root(data_dir, source, (images[train_idx], labels[train_idx]),
                      (images[test_idx], labels[test_idx]))

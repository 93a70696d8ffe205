"""One configuration trained and tested once per cross-validation fold (the re-evaluation of
the top trials, search/reevaluate.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from objectives.data import pixel_stats, to_device
from objectives.models import build_model, model_config
from objectives.training import evaluate, seed_everything, train, train_settings


def fold_accuracies(family: str, params: Mapping[str, Any], epochs: int, seed: int, images: torch.Tensor,
                    labels: torch.Tensor, num_classes: int, splits: Sequence[tuple[np.ndarray, np.ndarray]],
                    device: torch.device, precision: str = "fp32") -> list[float]:
    """Held-out accuracy per fold: each fold normalises by its own training part's pixels, as
    the search does, and trains from seed + fold number."""
    accuracies = []
    for fold, (train_idx, test_idx) in enumerate(splits):
        mean, std = pixel_stats(images[train_idx])
        train_split = to_device(images[train_idx], labels[train_idx], mean, std, device)
        test_split = to_device(images[test_idx], labels[test_idx], mean, std, device)
        seed_everything(seed + fold)
        model = build_model(model_config(family, params, num_classes)).to(device)
        train(model, train_split, None, train_settings(params, epochs, seed + fold, precision=precision))
        accuracies.append(evaluate(model, test_split, precision).accuracy)
    return accuracies

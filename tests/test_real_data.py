"""Real handwriting: kmnist-7k, the first 7,011 official KMNIST training images."""

import pytest
import torch

from objectives.data import load_search_data
from objectives.models import MLPConfig, build_model
from objectives.training import TrainSettings, seed_everything, train

pytestmark = pytest.mark.slow


def test_mlp_learns_real_kmnist_above_85_percent(real_kmnist_root):
    data = load_search_data("kmnist", real_kmnist_root, 1 / 6, seed=0, device=torch.device("cpu"))
    assert len(data.train) + len(data.val) == 7011
    seed_everything(0)
    model = build_model(MLPConfig((512, 256), dropout=0.2))
    history = train(model, data.train, data.val,
                    TrainSettings(epochs=5, batch_size=128, learning_rate=1e-3))
    assert max(r.val_accuracy for r in history) > 0.85

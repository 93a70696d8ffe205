"""Model families built from plain dataclass configurations (no Optuna here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

IMAGE_SIZE = 28


@dataclass(frozen=True)
class MLPConfig:
    hidden_layers: tuple[int, ...]
    dropout: float = 0.0
    num_classes: int = 10
    dropout_placement: str = "every"  # after "every" hidden layer, or only the "first"


@dataclass(frozen=True)
class ConvBlock:
    channels: int
    kernel_size: int
    padding: int = 0
    pool: str = "max"  # "max", "avg" or "none"
    pool_kernel: int = 2
    pool_stride: int = 2


@dataclass(frozen=True)
class CNNConfig:
    blocks: tuple[ConvBlock, ...]
    dense_layers: tuple[int, ...] = ()
    dropout: float = 0.0
    num_classes: int = 10


ModelConfig = MLPConfig | CNNConfig


def build_mlp(config: MLPConfig) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    width = IMAGE_SIZE * IMAGE_SIZE
    if config.dropout_placement not in ("every", "first"):
        raise ValueError(f"unknown dropout placement {config.dropout_placement!r}: use every or first")
    for index, hidden in enumerate(config.hidden_layers):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        if config.dropout > 0 and (config.dropout_placement == "every" or index == 0):
            layers.append(nn.Dropout(config.dropout))
        width = hidden
    layers.append(nn.Linear(width, config.num_classes))
    return nn.Sequential(*layers)


def _pool(block: ConvBlock) -> nn.Module:
    if block.pool == "max":
        return nn.MaxPool2d(block.pool_kernel, block.pool_stride)
    if block.pool == "avg":
        return nn.AvgPool2d(block.pool_kernel, block.pool_stride)
    if block.pool == "none":
        return nn.Identity()
    raise ValueError(f"unknown pool {block.pool!r}: use max, avg or none")


def build_cnn(config: CNNConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels, size = 1, IMAGE_SIZE
    for block in config.blocks:
        layers += [
            nn.Conv2d(channels, block.channels, block.kernel_size, padding=block.padding),
            nn.ReLU(),
            _pool(block),
        ]
        channels = block.channels
        size = size + 2 * block.padding - block.kernel_size + 1
        if block.pool != "none":
            size = (size - block.pool_kernel) // block.pool_stride + 1
        if size < 1:
            raise ValueError(f"the conv blocks shrink a {IMAGE_SIZE}x{IMAGE_SIZE} image to nothing")
    layers.append(nn.Flatten())
    if config.dropout > 0:
        layers.append(nn.Dropout(config.dropout))
    width = channels * size * size
    for hidden in config.dense_layers:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        if config.dropout > 0:
            layers.append(nn.Dropout(config.dropout))
        width = hidden
    layers.append(nn.Linear(width, config.num_classes))
    return nn.Sequential(*layers)


def build_model(config: ModelConfig) -> nn.Sequential:
    return build_mlp(config) if isinstance(config, MLPConfig) else build_cnn(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_config(family: str, params: Mapping[str, Any], num_classes: int) -> ModelConfig:
    """Map a trial's (or a documented experiment's) parameters to a model configuration."""
    if family == "mlp":
        return MLPConfig(tuple(params["hidden_layers"]), params.get("dropout", 0.0), num_classes,
                         params.get("dropout_placement", "every"))
    if family == "cnn":
        blocks = tuple(b if isinstance(b, ConvBlock) else ConvBlock(**b) for b in params["conv_blocks"])
        return CNNConfig(
            blocks, tuple(params.get("dense_layers", ())), params.get("dropout", 0.0), num_classes
        )
    raise ValueError(f"unknown model family {family!r}")

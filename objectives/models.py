"""Model families built from plain dataclass configurations (no Optuna here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from spaces.base import REPORTS_DEFAULTS

IMAGE_SIZE = 28
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}
MLP_DROPOUT_PLACEMENTS = ("every", "first")
CNN_DROPOUT_PLACEMENTS = ("head", "blocks", "both")


class InvalidModelError(ValueError):
    """A configuration that describes no usable model (e.g. conv blocks that shrink the image away)."""


@dataclass(frozen=True)
class MLPConfig:
    hidden_layers: tuple[int, ...]
    dropout: float = 0.0
    num_classes: int = 10
    dropout_placement: str = "every"  # after "every" hidden layer, or only the "first"
    activation: str = "relu"
    batch_norm: bool = False  # between each hidden linear layer and its activation


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
    activation: str = "relu"
    batch_norm: bool = False  # after every convolution and dense layer
    convs_per_block: int = 1  # convolutions (same channels) before each block's pool
    dropout_placement: str = "head"  # on the classifier "head", after each conv "blocks", or "both"
    global_pool: bool = False  # average each channel before the head instead of flattening


ModelConfig = MLPConfig | CNNConfig


class Dropout(nn.Dropout):
    """nn.Dropout with its CPU mask drawn by torch.rand: torch's CPU dropout draws it with
    bernoulli_, which took 2.7x as long as rand on this CPU (benchmarks/loop_overheads.py).
    Same keep probability (float32 uniforms); other draws. Other devices keep torch's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.device.type != "cpu" or not 0 < self.p < 1:
            return super().forward(x)
        keep = torch.rand(x.shape) >= self.p
        return x * keep.to(x.dtype).mul_(1 / (1 - self.p))


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise InvalidModelError(f"unknown activation {name!r}: use {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def _dense(width: int, hidden: int, activation: str, batch_norm: bool) -> list[nn.Module]:
    # the bias is redundant when batch norm follows: its shift does the same job
    layers: list[nn.Module] = [nn.Linear(width, hidden, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(hidden))
    return [*layers, _activation(activation)]


def build_mlp(config: MLPConfig) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    width = IMAGE_SIZE * IMAGE_SIZE
    if config.dropout_placement not in MLP_DROPOUT_PLACEMENTS:
        raise InvalidModelError(f"unknown dropout placement {config.dropout_placement!r}: "
                                f"use {' or '.join(MLP_DROPOUT_PLACEMENTS)}")
    for index, hidden in enumerate(config.hidden_layers):
        layers += _dense(width, hidden, config.activation, config.batch_norm)
        if config.dropout > 0 and (config.dropout_placement == "every" or index == 0):
            layers.append(Dropout(config.dropout))
        width = hidden
    layers.append(nn.Linear(width, config.num_classes))
    return nn.Sequential(*layers)


POOLS: dict[str, type[nn.Module]] = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
SEPARABLE_POOL_FROM = 5  # smaller windows are faster in one op (benchmarks/loop_overheads.py)


def _pool(block: ConvBlock) -> nn.Module:
    if block.pool == "none":
        return nn.Identity()
    if block.pool not in POOLS:
        raise InvalidModelError(f"unknown pool {block.pool!r}: use max, avg or none")
    pool, k, s = POOLS[block.pool], block.pool_kernel, block.pool_stride
    if k < SEPARABLE_POOL_FROM:
        return pool(k, s)
    # a k x k window is a k x 1 window of 1 x k windows: the same output (max exactly, mean up
    # to rounding) from 2k reads per output instead of k^2; no parameters, same state dict
    return nn.Sequential(pool((1, k), (1, s)), pool((k, 1), (s, 1)))


def build_cnn(config: CNNConfig) -> nn.Sequential:
    if config.dropout_placement not in CNN_DROPOUT_PLACEMENTS:
        raise InvalidModelError(f"unknown dropout placement {config.dropout_placement!r}: "
                                f"use {', '.join(CNN_DROPOUT_PLACEMENTS)}")
    drop_blocks = config.dropout > 0 and config.dropout_placement in ("blocks", "both")
    drop_head = config.dropout > 0 and config.dropout_placement in ("head", "both")
    layers: list[nn.Module] = []
    channels, size = 1, IMAGE_SIZE
    for block in config.blocks:
        for _ in range(config.convs_per_block):
            layers.append(nn.Conv2d(channels, block.channels, block.kernel_size,
                                    padding=block.padding, bias=not config.batch_norm))
            if config.batch_norm:
                layers.append(nn.BatchNorm2d(block.channels))
            layers.append(_activation(config.activation))
            channels = block.channels
            size = size + 2 * block.padding - block.kernel_size + 1
        layers.append(_pool(block))
        if block.pool != "none":
            size = (size - block.pool_kernel) // block.pool_stride + 1
        if size < 1:
            raise InvalidModelError(f"the conv blocks shrink a {IMAGE_SIZE}x{IMAGE_SIZE} image to "
                                    "nothing: use fewer or gentler pools")
        if drop_blocks:
            layers.append(Dropout(config.dropout))
    if config.global_pool:
        layers.append(nn.AdaptiveAvgPool2d(1))
        size = 1
    layers.append(nn.Flatten())
    if drop_head:
        layers.append(Dropout(config.dropout))
    width = channels * size * size
    for hidden in config.dense_layers:
        layers += _dense(width, hidden, config.activation, config.batch_norm)
        if drop_head:
            layers.append(Dropout(config.dropout))
        width = hidden
    layers.append(nn.Linear(width, config.num_classes))
    return nn.Sequential(*layers)


def build_model(config: ModelConfig) -> nn.Sequential:
    return build_mlp(config) if isinstance(config, MLPConfig) else build_cnn(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_mflops(model: nn.Module) -> float:
    """Floating-point operations (millions) of one image's forward pass, counted by torch."""
    was_training = model.training
    model.eval()  # batch norm needs no batch statistics this way
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE))
    model.train(was_training)
    return counter.get_total_flops() / 1e6


def model_config(family: str, params: Mapping[str, Any], num_classes: int) -> ModelConfig:
    """Map a trial's (or a documented experiment's) parameters to a model configuration.

    Knobs a configuration does not name keep the reports' choices (ReLU, no batch norm).
    """
    params = {**REPORTS_DEFAULTS, **params}
    common = {"activation": params["activation"], "batch_norm": bool(params["batch_norm"])}
    if family == "mlp":
        return MLPConfig(tuple(params["hidden_layers"]), params.get("dropout", 0.0), num_classes,
                         params.get("dropout_placement", "every"), **common)
    if family == "cnn":
        blocks = tuple(b if isinstance(b, ConvBlock) else ConvBlock(**b) for b in params["conv_blocks"])
        return CNNConfig(
            blocks, tuple(params.get("dense_layers", ())), params.get("dropout", 0.0), num_classes,
            convs_per_block=params["convs_per_block"],
            dropout_placement=params.get("dropout_placement", "head"),
            global_pool=bool(params["global_pool"]), **common,
        )
    raise ValueError(f"unknown model family {family!r}")

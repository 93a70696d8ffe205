"""Random affine augmentation of a whole batch on its own device (no per-sample Python work)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmentation:
    max_shift: int = 0  # pixels, in each direction
    max_rotation: float = 0.0  # degrees, either way

    @property
    def enabled(self) -> bool:
        return self.max_shift > 0 or self.max_rotation > 0


def random_affine(images: torch.Tensor, augmentation: Augmentation, background: torch.Tensor,
                  generator: torch.Generator) -> torch.Tensor:
    """Shift and rotate each image of an (N, C, H, W) batch by its own random amount.

    Pixels moved in from outside the image take the `background` value (normalised black),
    so the batch keeps its statistics; labels are untouched by construction.
    """
    n, _, height, width = images.shape
    device = images.device

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(n, device=device, generator=generator) * 2 - 1) * limit

    angle = uniform(math.radians(augmentation.max_rotation))
    # affine_grid works in [-1, 1] coordinates: one pixel is 2 / size
    shift_x = uniform(augmentation.max_shift * 2 / width)
    shift_y = uniform(augmentation.max_shift * 2 / height)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, shift_x], dim=1),
                         torch.stack([sin, cos, shift_y], dim=1)], dim=1)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    moved = F.grid_sample(images - background, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)
    return moved + background

"""On-the-fly augmentation of uint8 batches as tensor ops: the same code runs on CPU and GPU."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from convnest_viewer.inference.card import PreprocessSpec


@dataclass
class AugmentConfig:
    """Ranges of the random transforms (0 disables one)."""

    rotation_degrees: float = 15.0
    scale: float = 0.12  # zoom in/out by up to this fraction (a random crop when zooming in)
    translate: float = 0.08  # shift by up to this fraction of the size
    hflip: float = 0.5  # probability of a left-right flip
    brightness: float = 0.1
    contrast: float = 0.15
    gamma: float = 0.15


def augment(images: torch.Tensor, spec: PreprocessSpec, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Return normalised float inputs (N, C, S, S) from uint8 images (N, 1, S, S) with random transforms."""
    n = images.shape[0]
    device = images.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=generator, device=device) * (high - low) + low

    x = images.float() / 255.0
    angle = uniform(-config.rotation_degrees, config.rotation_degrees) * (math.pi / 180)
    scale = uniform(1 - config.scale, 1 + config.scale)
    shift_x, shift_y = uniform(-config.translate, config.translate) * 2, uniform(-config.translate, config.translate) * 2
    flip = torch.where(torch.rand(n, generator=generator, device=device) < config.hflip, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, shift_x], 1), torch.stack([sin * flip, cos, shift_y], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gamma = torch.exp(uniform(-config.gamma, config.gamma)).view(n, 1, 1, 1)
    contrast = uniform(1 - config.contrast, 1 + config.contrast).view(n, 1, 1, 1)
    brightness = uniform(-config.brightness, config.brightness).view(n, 1, 1, 1)
    x = x.clamp(0, 1) ** gamma
    x = ((x - 0.5) * contrast + 0.5 + brightness).clamp(0, 1)
    x = (x - spec.mean[0]) / spec.std[0]
    return x.expand(-1, spec.channels, -1, -1) if spec.channels > 1 else x

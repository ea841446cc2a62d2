"""On-the-fly augmentation of uint8 batches as tensor ops: the same code runs on CPU and GPU.

Besides geometry (rotation, zoom, shift, flip), it varies contrast the way MRI sequences and scanners do:
random monotone or inverted intensity curves (T1 <-> T2/FLAIR-like tissue order, with the background kept
dark), gamma, a smooth multiplicative bias field, blur, lower resolution and noise. Every transform draws its
parameters per image from one generator, so a run is reproducible on any device. (MONAI's and TorchIO's
intensity transforms work one image at a time; these work on the whole batch.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from convnest_viewer.inference.card import PreprocessSpec

CURVE_KNOTS = 6  # control points of a random intensity curve between the background level and white
LUT_SIZE = 256


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
    curve: float = 0.0  # probability of a random intensity curve
    invert: float = 0.0  # probability that such a curve reverses the tissue order (background stays dark)
    bias_field: float = 0.0  # largest log-amplitude of a smooth multiplicative field (0.3: about x0.74-x1.35)
    blur: float = 0.0  # probability of a Gaussian blur (sigma 0.5-1.5 px)
    low_resolution: float = 0.0  # probability of a down-and-up resampling (factor 1.5-3)
    noise: float = 0.0  # largest standard deviation of Gaussian noise (share of white)
    erase: float = 0.0  # probability of hiding one random rectangle (2-15% of the image) under uniform noise

    @classmethod
    def sequences(cls) -> "AugmentConfig":
        """Return the recipe that varies contrast the way sequences do (the bundled model's)."""
        return cls(curve=0.45, invert=0.3, bias_field=0.2, blur=0.15, low_resolution=0.15, noise=0.03)


def augment(images: torch.Tensor, spec: PreprocessSpec, config: AugmentConfig, generator: torch.Generator,
            masks: torch.Tensor | None = None):
    """Return normalised float inputs (N, C, S, S) from uint8 images (N, 1, S, S) with random transforms.

    With uint8 tumour masks (N, 1, M, M) it returns (inputs, masks): the masks as float shares (0-1), moved by the
    same rotation, scale, shift and flip as their images.
    """
    n = images.shape[0]
    device = images.device

    def uniform(low: float, high: float, count: int = n) -> torch.Tensor:
        return torch.rand(count, generator=generator, device=device) * (high - low) + low

    def chance(p: float) -> torch.Tensor:
        return torch.rand(n, generator=generator, device=device) < p

    x = images.float() / 255.0
    if config.curve > 0:
        x = random_curves(x, chance(config.curve), chance(config.invert), generator)
    angle = uniform(-config.rotation_degrees, config.rotation_degrees) * (math.pi / 180)
    scale = uniform(1 - config.scale, 1 + config.scale)
    shift_x, shift_y = uniform(-config.translate, config.translate) * 2, uniform(-config.translate, config.translate) * 2
    flip = torch.where(torch.rand(n, generator=generator, device=device) < config.hflip, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, shift_x], 1), torch.stack([sin * flip, cos, shift_y], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if masks is not None:
        mask_grid = F.affine_grid(theta, [n, 1, *masks.shape[-2:]], align_corners=False)
        masks = F.grid_sample(masks.float() / 255.0, mask_grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if config.bias_field > 0:
        x = x * bias_fields(n, x.shape[-1], config.bias_field, generator, device)
    gamma = torch.exp(uniform(-config.gamma, config.gamma)).view(n, 1, 1, 1)
    contrast = uniform(1 - config.contrast, 1 + config.contrast).view(n, 1, 1, 1)
    brightness = uniform(-config.brightness, config.brightness).view(n, 1, 1, 1)
    x = x.clamp(0, 1) ** gamma
    x = ((x - 0.5) * contrast + 0.5 + brightness).clamp(0, 1)
    if config.blur > 0:
        x = gaussian_blur(x, uniform(0.5, 1.5), chance(config.blur))
    if config.low_resolution > 0:
        x = low_resolution(x, float(uniform(1.5, 3.0, 1)), chance(config.low_resolution))
    if config.noise > 0:
        sigma = uniform(0, config.noise).view(n, 1, 1, 1)
        x = (x + sigma * torch.randn(x.shape, generator=generator, device=device)).clamp(0, 1)
    if config.erase > 0:
        x = random_erasing(x, chance(config.erase), generator)
    x = (x - spec.mean[0]) / spec.std[0]
    x = x.expand(-1, spec.channels, -1, -1) if spec.channels > 1 else x
    return x if masks is None else (x, masks)


def random_curves(x: torch.Tensor, apply: torch.Tensor, invert: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Map intensities in [0, 1] through a random piecewise-linear curve per image (where apply is True).

    The curve keeps values below a background level (3-8% of white) black; above it, it rises through random
    knots or, where invert is True, falls from bright to dark, so tissue order flips as between T1 and T2.
    """
    n, device = x.shape[0], x.device
    background = (torch.rand(n, 1, generator=generator, device=device) * 0.05 + 0.03)
    levels = torch.sort(torch.rand(n, CURVE_KNOTS, generator=generator, device=device), dim=1).values
    top = torch.rand(n, 1, generator=generator, device=device) * 0.3 + 0.7
    low = torch.rand(n, 1, generator=generator, device=device) * 0.15
    rising = low + levels * (top - low)
    knots_y = torch.where(invert.view(n, 1), torch.flip(rising, dims=[1]), rising)
    start = background + 0.04  # the curve's first knot; below `background` everything stays black
    knots_x = start + (1 - start) * torch.linspace(0, 1, CURVE_KNOTS, device=device)
    xs = torch.cat([torch.zeros(n, 1, device=device), background, knots_x], 1)
    ys = torch.cat([torch.zeros(n, 2, device=device), knots_y], 1)
    grid = torch.linspace(0, 1, LUT_SIZE, device=device).expand(n, -1).contiguous()
    segment = torch.searchsorted(xs.contiguous(), grid, right=True).clamp(1, xs.shape[1] - 1)
    x0, x1 = xs.gather(1, segment - 1), xs.gather(1, segment)
    y0, y1 = ys.gather(1, segment - 1), ys.gather(1, segment)
    lut = y0 + (grid - x0) / (x1 - x0).clamp_min(1e-6) * (y1 - y0)
    index = (x.clamp(0, 1) * (LUT_SIZE - 1)).round().long().view(n, -1)
    mapped = lut.gather(1, index).view_as(x)
    return torch.where(apply.view(n, 1, 1, 1), mapped, x)


def bias_fields(n: int, size: int, amplitude: float, generator: torch.Generator, device) -> torch.Tensor:
    """Return smooth multiplicative fields (N, 1, S, S): exp of a random quadratic polynomial in x and y."""
    axis = torch.linspace(-1, 1, size, device=device)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    terms = torch.stack([x, y, x * y, x * x - 1 / 3, y * y - 1 / 3])  # (5, S, S)
    coefficients = (torch.rand(n, 5, generator=generator, device=device) * 2 - 1) * amplitude
    log_field = torch.einsum("nk,kij->nij", coefficients, terms) / 2
    return torch.exp(log_field).unsqueeze(1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, apply: torch.Tensor, radius: int = 4,
                  padding: str = "reflect") -> torch.Tensor:
    """Blur each image with its own Gaussian (sigma in pixels, taps to radius) where apply is True."""
    n = x.shape[0]
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(offsets.view(1, -1) ** 2) / (2 * sigma.view(-1, 1) ** 2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (N, K)
    stacked = x.transpose(0, 1)  # (1, N, S, S): one group per image
    blurred = F.conv2d(F.pad(stacked, (radius, radius, 0, 0), mode=padding), kernel.view(n, 1, 1, -1), groups=n)
    blurred = F.conv2d(F.pad(blurred, (0, 0, radius, radius), mode=padding), kernel.view(n, 1, -1, 1), groups=n)
    return torch.where(apply.view(n, 1, 1, 1), blurred.transpose(0, 1), x)


def low_resolution(x: torch.Tensor, factor: float, apply: torch.Tensor) -> torch.Tensor:
    """Resample images down by a factor and back up (a coarser acquisition) where apply is True."""
    size = x.shape[-1]
    small = F.interpolate(x, size=max(8, round(size / factor)), mode="area")
    restored = F.interpolate(small, size=size, mode="bilinear", align_corners=False)
    return torch.where(apply.view(-1, 1, 1, 1), restored, x)


def random_erasing(x: torch.Tensor, apply: torch.Tensor, generator: torch.Generator,
                   area: tuple[float, float] = (0.02, 0.15), aspect: tuple[float, float] = (0.3, 3.3)) -> torch.Tensor:
    """Hide one random rectangle of each chosen image (N, C, S, S) under uniform noise (random erasing: the model
    cannot lean on any one region, such as the skull base, for its answer)."""
    n, _, height, width = x.shape
    device = x.device
    fraction = torch.rand(n, generator=generator, device=device) * (area[1] - area[0]) + area[0]
    log_aspect = torch.rand(n, generator=generator, device=device) * (math.log(aspect[1]) - math.log(aspect[0])) \
        + math.log(aspect[0])
    ratio = torch.exp(log_aspect)
    box_h = (torch.sqrt(fraction * ratio) * height).clamp(1, height)
    box_w = (torch.sqrt(fraction / ratio) * width).clamp(1, width)
    top = torch.rand(n, generator=generator, device=device) * (height - box_h)
    left = torch.rand(n, generator=generator, device=device) * (width - box_w)
    rows = torch.arange(height, device=device).view(1, height, 1)
    columns = torch.arange(width, device=device).view(1, 1, width)
    inside = ((rows >= top.view(n, 1, 1)) & (rows < (top + box_h).view(n, 1, 1))
              & (columns >= left.view(n, 1, 1)) & (columns < (left + box_w).view(n, 1, 1)) & apply.view(n, 1, 1))
    noise = torch.rand(x.shape, generator=generator, device=device)
    return torch.where(inside.unsqueeze(1), noise, x)

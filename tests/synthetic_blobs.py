"""Synthetic slices whose class is decided by a bright blob, and a tiny model trained on them."""

from __future__ import annotations

import numpy as np
import torch

from convnest_viewer.inference.card import ClassInfo, ModelCard, PreprocessSpec
from convnest_viewer.inference.factory import create_classifier
from convnest_viewer.inference.preprocess import preprocess
from convnest_viewer.io.window import Window

BLOB_CLASSES = [ClassInfo("blob", "Bright blob"), ClassInfo("clean", "No blob", no_finding=True)]
SPEC = PreprocessSpec(size=128, channels=1)
WINDOW = Window.from_range(0.0, 1000.0)


def blob_slice(rng: np.random.Generator, shape: tuple[int, int], with_blob: bool, radius_fraction: float = 0.25):
    """Return (slice in 0..1000 units, blob centre (row, col), blob radius in pixels).

    Every slice holds noise and a bright elliptical ring near its border (a distractor, like a
    skull); a blob slice also holds a brighter disk somewhere in the middle. The disk stays the
    brightest thing after letterbox-v2 brightens the head so that its 99th percentile is near white.
    """
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    image = 150 + 40 * rng.standard_normal(shape).astype(np.float32)
    ring = ((yy - rows / 2) / (rows * 0.46)) ** 2 + ((xx - cols / 2) / (cols * 0.46)) ** 2
    image[(ring > 0.85) & (ring < 1.0)] += 300
    # the grid of a last ConvNeXt stage is 32 input pixels: the blob must span more than a cell
    radius = radius_fraction * max(rows, cols)
    centre = (rng.uniform(0.33, 0.67) * rows, rng.uniform(0.33, 0.67) * cols)
    if with_blob:
        image[(yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2] += 600
    return np.clip(image, 0, 1000), centre, radius


def train_blob_model(seed: int = 0, steps: int = 250, shapes=((128, 128), (96, 160), (160, 112)), lr: float = 1e-3):
    """Train timm's test ConvNeXt for a few seconds to tell blob from clean; return (model, card)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    card = ModelCard(name="blob-test", architecture="test_convnext", classes=BLOB_CLASSES, preprocessing=SPEC)
    model = create_classifier(card)
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        labels = rng.integers(0, 2, size=16)
        inputs = []
        for label in labels:
            shape = shapes[rng.integers(len(shapes))]
            values, _, _ = blob_slice(rng, shape, with_blob=label == 0)
            inputs.append(preprocess(values, WINDOW, SPEC)[0])
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(np.stack(inputs))), torch.from_numpy(labels))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval(), card

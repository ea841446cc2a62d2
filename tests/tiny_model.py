"""A tiny randomly initialised model folder, for tests that need a model but not a good one."""

from __future__ import annotations

from pathlib import Path

import torch

from convnest_viewer.inference.card import ModelCard, PreprocessSpec, default_classes
from convnest_viewer.inference.factory import create_classifier
from convnest_viewer.inference.weights import write_model_folder


def write_tiny_model(folder: Path, size: int = 64, seed: int = 0, shard_bytes: int | None = None,
                     name: str = "tiny-random") -> Path:
    """Write a random timm test ConvNeXt with the four tumour classes as a model folder."""
    torch.manual_seed(seed)
    card = ModelCard(name=name, architecture="test_convnext", classes=default_classes(),
                     preprocessing=PreprocessSpec(size=size, channels=1))
    kwargs = {"shard_bytes": shard_bytes} if shard_bytes else {}
    write_model_folder(create_classifier(card), card, folder, **kwargs)
    return folder

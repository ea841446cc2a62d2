"""One factory builds every classifier architecture over timm, from a model card or a name."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch.nn as nn

    from convnest_viewer.inference.card import ModelCard

# Our names for the architectures we support, mapped to timm's registry names.
ARCHITECTURES = {
    "convnext_atto": "convnext_atto",
    "convnext_femto": "convnext_femto",
    "convnext_pico": "convnext_pico",
    "convnext_nano": "convnext_nano",
    "convnext_tiny": "convnext_tiny",
    "convnext_small": "convnext_small",
    "convnext_base": "convnext_base",
    "resnet152": "resnet152",
    "efficientnetv2_b0": "tf_efficientnetv2_b0",
    "vgg19": "vgg19",
    "vgg19_bn": "vgg19_bn",
    "mobilenetv3_large_100": "mobilenetv3_large_100",
    "test_convnext": "test_convnext",  # timm's 0.2 M-parameter ConvNeXt, for fast tests
}


def create_model(architecture: str, num_classes: int, in_chans: int = 1, drop_path_rate: float = 0.0) -> "nn.Module":
    """Build an untrained model of a supported architecture (never downloads weights)."""
    import timm

    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {', '.join(sorted(ARCHITECTURES))}")
    kwargs = {"pretrained": False, "num_classes": num_classes, "in_chans": in_chans}
    if drop_path_rate and not architecture.startswith("vgg"):
        kwargs["drop_path_rate"] = drop_path_rate
    return timm.create_model(ARCHITECTURES[architecture], **kwargs)


def create_classifier(card: "ModelCard") -> "nn.Module":
    """Build the (untrained) model a card describes: its architecture, classes and channels."""
    return create_model(card.architecture, card.num_classes, card.preprocessing.channels, card.drop_path_rate)


def explain_layer(model: "nn.Module") -> "nn.Module":
    """Return the last feature stage of a timm model, the layer Grad-CAM attributes to."""
    return feature_stages(model)[-1]


def feature_stages(model: "nn.Module") -> list["nn.Module"]:
    """Return a timm model's feature stages, shallow to deep (from its feature_info)."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise ValueError(f"{type(model).__name__} exposes no feature_info to find its stages")
    return [model.get_submodule(stage["module"]) for stage in info]


"""Mask guidance: an auxiliary task that asks the backbone where the tumour is, on slices whose masks we know.

A 1x1 convolution on the backbone's last feature map predicts, per cell, the share of the cell covered by tumour
(the packed masks of training.masks, moved with their images by the augmentation). Its binary cross-entropy,
weighted by TrainConfig.mask_guidance, joins the classification loss on slices with a known mask (tcga-lgg, brats,
healthy heads and mirrored halves; not brain-tumor-mri). The head only shapes training: the exported model is the
plain classifier, so the app, the card and the weights' format do not change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PRIOR_TUMOUR_SHARE = 0.05  # the head starts by predicting this share everywhere (most cells hold no tumour)


class MaskHead(nn.Module):
    """Predict each feature cell's tumour share (as a logit) from the backbone's last feature map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, kernel_size=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.constant_(self.conv.bias, float(torch.logit(torch.tensor(PRIOR_TUMOUR_SHARE))))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.conv(features)


def logits_and_mask_logits(model: nn.Module, head: MaskHead, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return a timm classifier's class logits and the mask head's cell logits from one forward pass."""
    features = model.forward_features(inputs)
    return model.forward_head(features), head(features)


def mask_loss(mask_logits: torch.Tensor, masks: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Return the mean cell-wise binary cross-entropy against tumour shares, over the images whose mask is known.

    masks are (N, 1, M, M) shares in [0, 1], averaged down to the logits' cells; known is (N,) bool. Zero (with a
    gradient path) when no image in the batch has a known mask.
    """
    if mask_logits.shape[0] != masks.shape[0] or known.shape[0] != masks.shape[0]:
        raise ValueError(f"batch sizes differ: logits {mask_logits.shape[0]}, masks {masks.shape[0]}, known {known.shape[0]}")
    targets = F.adaptive_avg_pool2d(masks.float(), mask_logits.shape[-2:])
    per_image = F.binary_cross_entropy_with_logits(mask_logits.float(), targets, reduction="none").mean(dim=(1, 2, 3))
    weights = known.float()
    return (per_image * weights).sum() / weights.sum().clamp(min=1.0)

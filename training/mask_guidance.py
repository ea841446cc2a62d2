"""Mask guidance: an auxiliary task that asks the backbone where the tumour is, on slices whose masks we know.

Per cell of the backbone's last feature map, a tumour logit is compared with the share of the cell covered by
tumour (the packed masks of training.masks, moved with their images by the augmentation). The logit comes from
- "head": an auxiliary 1x1 convolution on the features (the backbone is asked to know where the tumour is), or
- "classifier": the classifier's own head applied to each cell, as tumour log-odds (any tumour class against no
  tumour), so the evidence that decides the slice has to sit on the tumour.
Its binary cross-entropy, weighted by TrainConfig.mask_guidance, joins the classification loss on slices with a
known mask (tcga-lgg, brats, healthy heads and mirrored halves; not brain-tumor-mri). Nothing of it is exported:
the app, the card and the weights' format do not change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MASK_MAPS = ("head", "classifier")
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


def logits_and_mask_logits(model: nn.Module, head: MaskHead | None, inputs: torch.Tensor, no_tumour: int
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return a timm classifier's class logits and per-cell tumour logits (from head, else the classifier's own)."""
    features = model.forward_features(inputs)
    cells = head(features) if head is not None else classifier_cell_log_odds(model, features, no_tumour)
    return model.forward_head(features), cells


def classifier_cell_log_odds(model: nn.Module, features: torch.Tensor, no_tumour: int) -> torch.Tensor:
    """Return (N, 1, H, W) tumour log-odds of a timm ConvNeXt's own head (norm, then fc) applied to each feature cell."""
    head = model.head
    logits = head.fc(head.norm(features).permute(0, 2, 3, 1))  # LayerNorm2d normalises each cell over channels
    tumour = torch.cat([logits[..., :no_tumour], logits[..., no_tumour + 1:]], dim=-1)
    return (torch.logsumexp(tumour, dim=-1) - logits[..., no_tumour]).unsqueeze(1)


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

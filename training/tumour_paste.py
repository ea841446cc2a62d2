"""Tumour copy-paste: a tumour cut from one training slice, blended into a no-tumour slice of the same sequence.

A slice of a whole scan says where in the head it lies (skull base, ventricles, vertex), and in the training scans
tumour sits at some levels and not at others; pasting each tumour, with a feathered edge and the recipient's
intensity, at a random place in another scan's head (another level, another patient, another source) leaves the
tumour itself as the only evidence for the tumour class (after TumorCP, Yang et al., MICCAI 2021). Donors and
recipients are training slices only, with the pack's tumour masks (tcga-lgg, brats; 48 x 48 cells).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from training.augment import gaussian_blur

MIN_DONOR_CELLS = 6  # mask cells (of 48 x 48) over half tumour: smaller tumours are too coarse to cut out
HEAD_LEVEL = 20  # uint8 grey level above which a recipient pixel counts as head
MIN_HEAD_SHARE = 0.3  # a recipient whose head fills less of the image (the edge of a head) gets no tumour
INTERIOR = 31 / 224  # side (share of the image) of the square around the centre that must be head
MIN_KEPT = 0.8  # share of the tumour's mask that must land inside the head, else the slice is left as it was


@dataclass
class PastePools:
    """Training slices that can give a tumour (per sequence) and those that can receive one."""

    donors: dict[str, torch.Tensor]  # sequence -> pack indices of tumour slices with a usable mask
    recipient: torch.Tensor  # (N,) bool over the pack: a no-tumour training slice of a sequence with donors
    sequence_code: torch.Tensor  # (N,) int: index into `sequences`, -1 where none
    sequences: list[str]


def paste_pools(sequences: np.ndarray, labels: np.ndarray, masks: np.ndarray, mask_known: np.ndarray,
                train: np.ndarray, tumour_label: int, no_tumour_label: int,
                may_receive: np.ndarray | None = None) -> PastePools:
    """Return the donor and recipient pools among the training indices (sequences: the pack's per-image sequence;
    may_receive: a bool per image, False where a slice must never be given a tumour, e.g. a healthy volunteer's)."""
    in_train = np.zeros(len(labels), bool)
    in_train[train] = True
    cells = (masks > 127).reshape(len(masks), -1).sum(axis=1)
    usable = in_train & mask_known & (labels == tumour_label) & (cells >= MIN_DONOR_CELLS) & (sequences != "")
    names = sorted(set(sequences[usable]))
    donors = {name: torch.from_numpy(np.flatnonzero(usable & (sequences == name))) for name in names}
    code = np.array([names.index(s) if s in names else -1 for s in sequences])
    recipient = in_train & (labels == no_tumour_label) & (code >= 0)
    if may_receive is not None:
        recipient &= may_receive
    return PastePools(donors, torch.from_numpy(recipient), torch.from_numpy(code), names)


def paste_tumours(images: torch.Tensor, labels: torch.Tensor, batch: torch.Tensor, all_images: torch.Tensor,
                  all_masks: torch.Tensor, pools: PastePools, probability: float, tumour_label: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the batch (uint8 (B, 1, S, S), labels (B,)) with a tumour pasted into a random share of its
    recipient slices, those relabelled tumour; `batch` holds the images' pack indices."""
    device = images.device
    draw = torch.rand(len(batch), generator=generator, device=device) < probability
    chosen = torch.nonzero(draw & pools.recipient.to(device)[batch]).flatten()
    if not len(chosen):
        return images, labels
    images, labels = images.clone(), labels.clone()
    size = images.shape[-1]
    for row in chosen.tolist():
        donors = pools.donors[pools.sequences[int(pools.sequence_code[int(batch[row])])]]
        pick = int(torch.randint(len(donors), (1,), generator=generator, device=device))
        donor = int(donors[pick])
        pasted = _blend(images[row, 0], all_images[donor, 0], all_masks[donor], size, generator)
        if pasted is not None:
            images[row, 0], labels[row] = pasted, tumour_label
    return images, labels


def _blend(recipient: torch.Tensor, donor: torch.Tensor, mask: torch.Tensor, size: int,
           generator: torch.Generator) -> torch.Tensor | None:
    """Return the recipient (uint8 S x S) with the donor's masked tumour moved onto a random pixel inside the head,
    or None where it cannot hold one (too little head, or the tumour would fall mostly outside it)."""
    device = recipient.device
    head = recipient > HEAD_LEVEL
    if float(head.float().mean()) < MIN_HEAD_SHARE:  # before any draw: a refused slice leaves the generator alone
        return None
    alpha = F.interpolate(mask[None, None].float() / 255.0, size=(size, size), mode="bilinear", align_corners=False)
    sigma = 2.5 * size / 224  # 2.5 px at 224: soft edges, about one packed mask cell
    alpha = _feather(alpha, sigma)[0, 0]
    donor = donor.float()
    if float(torch.rand(1, generator=generator, device=device)) < 0.5:
        donor, alpha = donor.flip(-1), alpha.flip(-1)
    square = round(INTERIOR * size) | 1
    outside = F.max_pool2d(-head[None, None].float(), (1, square), stride=1, padding=(0, square // 2))
    interior = -F.max_pool2d(outside, (square, 1), stride=1, padding=(square // 2, 0))[0, 0]  # a square, separably
    targets = torch.nonzero(interior.flatten() > 0.5).flatten()
    if not len(targets):
        return None
    target = int(targets[int(torch.randint(len(targets), (1,), generator=generator, device=device))])
    weights = alpha / alpha.sum().clamp_min(1e-6)
    grid = torch.arange(size, device=device, dtype=torch.float32)
    centre_y, centre_x = float((weights.sum(1) * grid).sum()), float((weights.sum(0) * grid).sum())
    shift = (target // size - round(centre_y), target % size - round(centre_x))
    donor, alpha = donor.roll(shift, dims=(0, 1)), alpha.roll(shift, dims=(0, 1))
    kept = alpha * _feather(head[None, None].float(), sigma)[0, 0]
    if float(kept.sum()) < MIN_KEPT * float(alpha.sum()):
        return None
    alpha = kept
    rest = recipient.float()
    donor_tissue, recipient_tissue = donor[(donor > HEAD_LEVEL) & (alpha < 0.05)], rest[head]
    if len(donor_tissue) > 100:  # match the donor's brain to the recipient's: same sequence, other scanner
        donor = donor * (recipient_tissue.median() / donor_tissue.median().clamp_min(1.0))
    blended = rest * (1 - alpha) + donor.clamp(0, 255) * alpha
    return blended.round().clamp(0, 255).to(torch.uint8)


def _feather(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Return a (1, 1, S, S) map blurred with a Gaussian to 3 sigma (soft edges for the paste)."""
    always = torch.ones(1, dtype=torch.bool, device=x.device)
    sigmas = torch.full((1,), sigma, device=x.device)
    return gaussian_blur(x, sigmas, always, radius=max(1, int(3 * sigma)), padding="replicate").clamp(0, 1)

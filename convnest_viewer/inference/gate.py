"""Know when not to answer: a slice is assessed only if it is not blank and its features look like training data.

Two checks, both stored with the model (the card's `gate` and a safetensors file of statistics):
- an image rule on the 8-bit windowed slice: too little head (foreground) or too little contrast means blank, a
  handful of grey levels means a label map or mask (a segmentation opened as an image), not an MR slice;
- an out-of-distribution score: for each early feature stage, the per-channel mean and standard deviation of its
  activations (and, when the card says so, 7 statistics of the model input itself: intensity, gradients,
  Laplacian, foreground), scored by the smallest Mahalanobis distance to the training slices of each
  (source, class) under one shared covariance (Lee et al., 2018), standardised on validation slices and summed. Early
  stages see intensity and texture statistics, where EPI, masks, CT and damaged images differ from the training
  MRI; the last stage's features separate them barely better than chance (measured: training/reports). Above
  the card's threshold, chosen on validation slices, the slice is "not assessed".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from convnest_viewer.inference.card import GateSpec, ModelCardError
from convnest_viewer.inference.foreground import head_share
from convnest_viewer.inference.reasons import BLANK_REASON, LABEL_MAP_REASON, OUT_OF_DOMAIN_REASON


@dataclass(frozen=True)
class GateDecision:
    """Whether a slice is assessed, and if not, why; the out-of-distribution score when computed."""

    assessed: bool
    reason: str | None = None
    score: float | None = None


class MahalanobisScorer:
    """Smallest class-conditional Mahalanobis distance of feature vectors (means and shared precision)."""

    def __init__(self, means: torch.Tensor, precision: torch.Tensor) -> None:
        self.means = means.double()
        self.precision = precision.double()

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray) -> "MahalanobisScorer":
        """Fit class means and a shrunk shared covariance (Ledoit-Wolf) to features (N, D) with labels (N,)."""
        from sklearn.covariance import LedoitWolf

        classes = np.unique(labels)
        means = np.stack([features[labels == c].mean(axis=0) for c in classes])
        centred = features - means[np.searchsorted(classes, labels)]
        precision = LedoitWolf().fit(centred).precision_
        return cls(torch.from_numpy(means), torch.from_numpy(precision))

    def scores(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        """Return the score of each feature vector (N,): larger means less like the training data."""
        x = torch.as_tensor(features).double().cpu()
        differences = x[:, None, :] - self.means[None, :, :]  # (N, classes, D)
        distances = torch.einsum("ncd,de,nce->nc", differences, self.precision, differences)
        return distances.min(dim=1).values.clamp_min(0).sqrt().numpy()


def image_statistics(batch: torch.Tensor) -> np.ndarray:
    """Return 7 statistics per model input (N, C, H, W): mean, deviation, mean horizontal and vertical gradient,
    mean Laplacian, foreground share and Laplacian-to-gradient ratio; upsampled EPI and other sources differ there."""
    x = batch.float().cpu()
    x = x.mean(dim=1, keepdim=True) if x.shape[1] > 1 else x
    gradient_x = (x[..., :, 1:] - x[..., :, :-1]).abs_().mean(dim=(1, 2, 3))  # in place on the temporaries
    gradient_y = (x[..., 1:, :] - x[..., :-1, :]).abs_().mean(dim=(1, 2, 3))
    laplacian = (4 * x[..., 1:-1, 1:-1] - x[..., :-2, 1:-1] - x[..., 2:, 1:-1] - x[..., 1:-1, :-2]
                 - x[..., 1:-1, 2:]).abs_().mean(dim=(1, 2, 3))
    foreground = (x > x.amin(dim=(2, 3), keepdim=True) + 0.1).float().mean(dim=(1, 2, 3))
    deviation, mean = torch.std_mean(x.flatten(1), dim=1)  # one pass for both
    columns = [mean, deviation, gradient_x, gradient_y, laplacian, foreground,
               laplacian / (gradient_x + gradient_y + 1e-3)]
    return torch.stack(columns, dim=1).double().numpy()


def stage_statistics(stage_outputs) -> list[np.ndarray]:
    """Return, per feature stage (N, C, H, W), the per-channel mean and standard deviation (N, 2C) as float64."""
    statistics = []
    for stage in stage_outputs:
        deviation, mean = torch.std_mean(stage.float().flatten(2), dim=2)  # one pass over each channel for both
        statistics.append(torch.cat([mean, deviation], dim=1).double().cpu().numpy())
    return statistics


class StageMahalanobis:
    """Sum over feature stages of standardised Mahalanobis scores of the stages' channel statistics."""

    def __init__(self, scorers: list[MahalanobisScorer], centres: np.ndarray, scales: np.ndarray) -> None:
        self.scorers = scorers
        self.centres = np.asarray(centres, float)
        self.scales = np.asarray(scales, float)

    @classmethod
    def fit(cls, stages: list[np.ndarray], groups: np.ndarray) -> "StageMahalanobis":
        """Fit one Mahalanobis scorer per stage (groups: e.g. source x class); standardise later with calibrate()."""
        codes = np.unique(groups, return_inverse=True)[1]
        scorers = [MahalanobisScorer.fit(features, codes) for features in stages]
        return cls(scorers, np.zeros(len(stages)), np.ones(len(stages)))

    def calibrate(self, stages: list[np.ndarray]) -> None:
        """Set each stage's centre and scale from validation slices, so that the stages weigh alike."""
        raw = [scorer.scores(features) for scorer, features in zip(self.scorers, stages)]
        self.centres = np.array([r.mean() for r in raw])
        self.scales = np.array([max(r.std(), 1e-6) for r in raw])

    def scores(self, stages: list[np.ndarray]) -> np.ndarray:
        """Return each slice's score (N,): larger means less like the training slices."""
        return sum((scorer.scores(features) - centre) / scale
                   for scorer, features, centre, scale in zip(self.scorers, stages, self.centres, self.scales))

    def save(self, path: Path) -> None:
        """Write every stage's statistics as one safetensors file."""
        from safetensors.torch import save_file

        tensors = {"centres": torch.tensor(self.centres, dtype=torch.float64),
                   "scales": torch.tensor(self.scales, dtype=torch.float64)}
        for index, scorer in enumerate(self.scorers):
            tensors[f"stage{index}.means"] = scorer.means.contiguous()
            tensors[f"stage{index}.precision"] = scorer.precision.contiguous()
        save_file(tensors, str(path), metadata={"method": "stage-mahalanobis", "stages": str(len(self.scorers))})

    @classmethod
    def load(cls, path: Path) -> "StageMahalanobis":
        """Read statistics written by save()."""
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        count = len(tensors.get("centres", []))
        expected = {"centres", "scales"} | {f"stage{i}.{k}" for i in range(count) for k in ("means", "precision")}
        if not count or set(tensors) != expected:
            raise ModelCardError(f"{path}: not a stage-Mahalanobis gate (tensors {sorted(tensors)[:6]} ...)")
        scorers = [MahalanobisScorer(tensors[f"stage{i}.means"], tensors[f"stage{i}.precision"]) for i in range(count)]
        return cls(scorers, tensors["centres"].numpy(), tensors["scales"].numpy())


class Gate:
    """The card's gate: decides per slice whether the model's answer is shown."""

    def __init__(self, spec: GateSpec, scorer: StageMahalanobis | None) -> None:
        self.spec = spec
        self.scorer = scorer

    @classmethod
    def from_model_folder(cls, folder: Path, spec: GateSpec) -> "Gate":
        """Load the gate a card names (its file was checked with the weights)."""
        if spec.method != "stage-mahalanobis":
            raise ModelCardError(f"{folder}: unknown gate method {spec.method!r} (this app knows 'stage-mahalanobis')")
        scorer = StageMahalanobis.load(Path(folder) / spec.file)
        expected = len(spec.stages) + int(spec.input_statistics)
        if len(scorer.scorers) != expected:
            raise ModelCardError(f"{folder}: the gate file has {len(scorer.scorers)} score parts, the card implies {expected}")
        return cls(spec, scorer)

    def image_reason(self, image_uint8: np.ndarray, mask: np.ndarray | None = None) -> str | None:
        """Return why an 8-bit windowed slice cannot be judged (blank, or a label map), or None if it shows something
        (`mask`: its head_mask, when the caller has it)."""
        contrast = float(cv2.meanStdDev(image_uint8)[1][0, 0]) if image_uint8.size else 0.0  # numpy's std, faster
        if contrast < self.spec.min_contrast or head_share(image_uint8, mask) < self.spec.min_head_share:
            return BLANK_REASON
        levels = int(np.count_nonzero(np.bincount(image_uint8.ravel(), minlength=256)))
        if levels <= self.spec.max_label_levels:
            return LABEL_MAP_REASON.format(levels=levels)
        return None

    def decide(self, image_reason: str | None, score: float | None) -> GateDecision:
        """Combine the image rule and the feature score into one decision."""
        if image_reason:
            return GateDecision(False, image_reason, score)
        if score is not None and score > self.spec.threshold:
            return GateDecision(False, OUT_OF_DOMAIN_REASON, score)
        return GateDecision(True, None, score)

"""Explanations with captum and hooks: Grad-CAM, LayerCAM, Gradient SHAP and two occlusion maps on the original slice."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from convnest_viewer.inference.classifier import Classifier
from convnest_viewer.inference.factory import explain_layer, feature_stages
from convnest_viewer.inference.heatmap import METHODS, Heatmap
from convnest_viewer.io.window import Window

LAYERCAM_STAGES = 3  # LayerCAM fuses the last three feature stages (at 128 px: 16 x 16, 8 x 8 and 4 x 4)
OCCLUSION_WINDOW = 0.1  # occlusion hides squares of a tenth of the input's side (16 px at 160), moved by half that
OCCLUSION_BATCH = 8  # occluded copies per forward pass (32: 0.2 GB more at the map's peak, no faster here)
TUMOUR_OCCLUSION_RIM = 0.06  # tumour occlusion leaves the head's outer rim (scalp, skull) as it is: this share of its
#                              shorter extent (about 11 of 180 input pixels); chosen on held-out tcga-lgg FLAIR
TUMOUR_OCCLUSION_SMOOTHING = 0.25  # its map is smoothed by a Gaussian of this share of a square's side (a plateau
#                                    where squares overlap peaks at its centre, not at a corner)


def explain(classifier: Classifier, values: np.ndarray, window: Window, method: str = "gradcam",
            target: int | str | None = None, shap_samples: int = 16, seed: int = 0) -> Heatmap:
    """Explain one slice for a class (default: the predicted one) with one of METHODS."""
    from convnest_viewer.inference.preprocess import unletterbox

    target_index = None if target is None else _target_index(classifier, target)
    model_input, geometry = classifier.prepare(values, window)
    batch = torch.from_numpy(model_input[None]).to(classifier.device)
    values_map, target_index = _map_and_target(classifier, batch, method, target_index, shap_samples, seed)
    return Heatmap(_to_unit_range(unletterbox(values_map, geometry)), method, target_index,
                   classifier.class_ids[target_index])


def input_map(classifier: Classifier, batch: torch.Tensor, method: str, target_index: int, shap_samples: int = 16,
              seed: int = 0) -> np.ndarray:
    """Return one method's map of a one-slice batch on the model's input grid (not normalised)."""
    return _map_and_target(classifier, batch, method, target_index, shap_samples, seed)[0]


def _map_and_target(classifier: Classifier, batch: torch.Tensor, method: str, target: int | None, shap_samples: int,
                    seed: int) -> tuple[np.ndarray, int]:
    """Return a method's input-grid map and its class (None: the predicted one, from the CAMs' own forward pass)."""
    if method == "gradcam":
        return _gradcam(classifier, batch, target)
    if method == "layercam":
        return _layercam(classifier, batch, target)
    if method == "shap":
        target = int(classifier.logits(batch).argmax(dim=1)[0]) if target is None else target
        return _gradient_shap(classifier, batch, target, shap_samples, seed), target
    if method == "occlusion":
        target = int(classifier.logits(batch).argmax(dim=1)[0]) if target is None else target
        return _occlusion(classifier, batch, target), target
    if method == "tumour_occlusion":
        target = int(classifier.logits(batch).argmax(dim=1)[0]) if target is None else target
        return _tumour_occlusion(classifier, batch, target), target
    raise ValueError(f"unknown explanation method {method!r}; choose one of {', '.join(METHODS)}")


def _target_index(classifier: Classifier, target: int | str) -> int:
    if isinstance(target, str):
        if target not in classifier.class_ids:
            raise ValueError(f"unknown class {target!r}; the model's classes are {', '.join(classifier.class_ids)}")
        return classifier.class_ids.index(target)
    if not 0 <= target < len(classifier.class_ids):
        raise ValueError(f"class index {target} out of range")
    return int(target)


def _stage_gradients(classifier: Classifier, batch: torch.Tensor, stages: list, target: int | None
                     ) -> tuple[list[torch.Tensor], tuple[torch.Tensor, ...], int]:
    """Run one forward pass; return the stages' outputs, the target logit's gradients at them, and the target
    (None: the predicted class). The backward pass stops at the earliest stage asked for."""
    activations: list[torch.Tensor] = []
    handles = [stage.register_forward_hook(lambda _m, _i, output: activations.append(output)) for stage in stages]
    try:
        with torch.enable_grad():
            inputs = batch.detach().float().clone().requires_grad_(True)
            logits = classifier.model(inputs)
            target = int(logits[0].argmax()) if target is None else target
            gradients = torch.autograd.grad(logits[0, target], activations)
    finally:
        for handle in handles:
            handle.remove()
    return activations, gradients, target


def _gradcam(classifier: Classifier, batch: torch.Tensor, target: int | None) -> tuple[np.ndarray, int]:
    """Grad-CAM (Selvaraju et al. 2017) of the last stage: channels weighted by their mean gradient, rectified."""
    [activation], [gradient], target = _stage_gradients(classifier, batch, [explain_layer(classifier.model)], target)
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * activation).sum(dim=1, keepdim=True)).detach().float()
    size = batch.shape[-1]
    cam = torch.nn.functional.interpolate(cam, size=(size, size), mode="bilinear", align_corners=False)
    return cam[0, 0].cpu().numpy(), target


def _layercam(classifier: Classifier, batch: torch.Tensor, target: int | None) -> tuple[np.ndarray, int]:
    """LayerCAM (Jiang et al. 2021): positive gradients times activations per position, per stage, fused.

    Each stage's map is scaled to its own maximum and upsampled to the input; the fusion is their mean, so the
    finest stage sharpens what the coarse stages find.
    """
    stages = feature_stages(classifier.model)[-LAYERCAM_STAGES:]
    activations, gradients, target = _stage_gradients(classifier, batch, stages, target)
    size = batch.shape[-1]
    fused = np.zeros((size, size), np.float32)
    for activation, gradient in zip(activations, gradients):
        cam = torch.relu((torch.relu(gradient) * activation).sum(dim=1, keepdim=True)).detach().float()
        cam = torch.nn.functional.interpolate(cam, size=(size, size), mode="bilinear", align_corners=False)[0, 0]
        top = float(cam.max())
        if top > 0:
            fused += (cam / top).cpu().numpy()
    return fused / len(stages), target


def _gradient_shap(classifier: Classifier, batch: torch.Tensor, target: int, samples: int, seed: int) -> np.ndarray:
    from captum.attr import GradientShap

    shap = GradientShap(classifier.model)
    devices = [batch.device] if batch.device.type == "cuda" else []
    numpy_state = np.random.get_state()  # captum draws the interpolation points with numpy's global generator
    try:
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            torch.manual_seed(seed)
            np.random.seed(seed)
            baselines = _dark_baselines(classifier, batch)
            attribution = shap.attribute(batch.float(), baselines=baselines.float(), target=target,
                                         n_samples=max(1, samples), stdevs=0.09)
    finally:
        np.random.set_state(numpy_state)
    magnitude = attribution[0].abs().sum(dim=0).detach().float().cpu().numpy()
    sigma = max(1.0, batch.shape[-1] / 40)
    return cv2.GaussianBlur(magnitude, (0, 0), sigmaX=sigma, sigmaY=sigma)


def _occlusion(classifier: Classifier, batch: torch.Tensor, target: int) -> np.ndarray:
    """Occlusion (Zeiler and Fergus 2014): how much the class's log-probability drops when a square is blanked.

    Squares of OCCLUSION_WINDOW of the input's side slide by half their side; each is filled with the letterbox's
    blank value (what the model sees where there is no head); overlapping squares' drops are averaged per pixel.
    The log-probability, not the probability, so a confident slice still shows where its evidence lies.
    """
    def log_probabilities(inputs: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(classifier.model(inputs).float() / classifier.card.temperature, dim=1)

    blank = (classifier.spec.pad_value / 255.0 - classifier.spec.mean[0]) / classifier.spec.std[0]
    return _occlude(batch, log_probabilities, blank, target)


def _tumour_occlusion(classifier: Classifier, batch: torch.Tensor, target: int) -> np.ndarray:
    """Occlusion of the tumour log-odds: how much log(p(any tumour class) / p(no finding)) drops when a square is
    filled with the head's median tissue value (for the no-finding class: how much its own log-odds drops).

    It asks where the tumour is, not which type: the types share the map. Tissue, not black, fills the part of a
    square inside the head, so a hidden lesion looks like the brain around it instead of like a hole; outside the
    head and on its outer rim (scalp and skull, TUMOUR_OCCLUSION_RIM) nothing changes, since a rim painted over
    with brain is a head no scan shows. Squares as in _occlusion; the map is smoothed (TUMOUR_OCCLUSION_SMOOTHING).
    """
    normal = classifier.card.class_ids.index(classifier.card.no_finding_id)
    sign = -1.0 if target == normal else 1.0

    def tumour_log_odds(inputs: torch.Tensor) -> torch.Tensor:
        log_p = torch.log_softmax(classifier.model(inputs).float() / classifier.card.temperature, dim=1)
        tumour = torch.logsumexp(torch.cat([log_p[:, :normal], log_p[:, normal + 1:]], dim=1), dim=1)
        return (sign * (tumour - log_p[:, normal]))[:, None]

    region = _inside_rim(_head_region(classifier, batch), TUMOUR_OCCLUSION_RIM)
    if not region.any():
        return np.zeros(batch.shape[-2:], np.float32)
    inside = torch.from_numpy(region)[None, None].to(batch.device)
    # inside the rim a square becomes tissue; elsewhere it stays as it is, so the background gets no attribution
    baseline = torch.where(inside, batch[:, :, inside[0, 0]].median(), batch).float()
    drops = np.maximum(_occlude(batch, tumour_log_odds, baseline, 0), 0.0)  # where hiding lowers the log-odds
    sigma = TUMOUR_OCCLUSION_SMOOTHING * _square_side(batch)
    return cv2.GaussianBlur(drops, (0, 0), sigmaX=sigma, sigmaY=sigma) if sigma > 0 else drops


def _square_side(batch: torch.Tensor) -> int:
    """Return the side of an occlusion square on the model input, in pixels."""
    return max(2, int(round(batch.shape[-1] * OCCLUSION_WINDOW)))


def _occlude(batch: torch.Tensor, forward, baseline: float | torch.Tensor, target: int) -> np.ndarray:
    """Return captum Occlusion's map of forward's target output: squares of OCCLUSION_WINDOW slid by half a side."""
    from captum.attr import Occlusion

    side = _square_side(batch)
    stride = max(1, side // 2)
    with torch.inference_mode():
        attribution = Occlusion(forward).attribute(
            batch.float(), sliding_window_shapes=(batch.shape[1], side, side), strides=(batch.shape[1], stride, stride),
            baselines=baseline, target=target, perturbations_per_eval=OCCLUSION_BATCH)
    return attribution[0].sum(dim=0).float().cpu().numpy()


def input_head(classifier: Classifier, batch: torch.Tensor) -> np.ndarray:
    """Return the head's mask (foreground, outlines not filled) on the model input of a one-slice batch."""
    from convnest_viewer.inference.foreground import head_mask

    spec = classifier.spec
    pixels = (batch[0, 0].detach().float().cpu().numpy() * spec.std[0] + spec.mean[0]) * 255.0
    return head_mask(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def _head_region(classifier: Classifier, batch: torch.Tensor) -> np.ndarray:
    """Return a boolean (H, W) mask of the head on a one-slice model input: its outlines, filled."""
    mask = input_head(classifier, batch).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled.astype(bool)


def _inside_rim(region: np.ndarray, rim: float) -> np.ndarray:
    """Return a boolean (H, W) region eroded by rim times its shorter extent (itself when rim is 0 or it is empty)."""
    if rim <= 0 or not region.any():
        return region
    rows, columns = np.nonzero(region)
    radius = max(1, int(round(rim * min(np.ptp(rows), np.ptp(columns)))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.erode(region.astype(np.uint8), kernel).astype(bool)


def _dark_baselines(classifier: Classifier, batch: torch.Tensor, count: int = 8) -> torch.Tensor:
    """Return the baseline distribution: black slices with faint noise (up to 10% of white)."""
    spec = classifier.spec
    pixels = torch.rand((count, *batch.shape[1:]), device=batch.device) * 0.1
    pixels[0] = 0.0
    return (pixels - spec.mean[0]) / spec.std[0]


def _to_unit_range(values: np.ndarray) -> np.ndarray:
    values = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    values = np.maximum(values, 0.0)
    top = float(np.percentile(values, 99.9)) if values.size else 0.0
    if top <= 0:
        top = float(values.max())
    if top <= 0:
        return np.zeros_like(values)
    return np.clip(values / top, 0.0, 1.0)

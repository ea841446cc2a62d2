"""Heatmaps measured against tumour masks: pointing game, mass inside the mask, deletion and insertion, randomisation.

Every method in convnest_viewer.inference.heatmap.METHODS is measured on held-out tumour slices with masks (tcga-lgg
institutions never trained on, brats held-out volumes), per sequence, next to a random-map baseline:
- pointing game: the map's maximum lies inside the mask (on the slice's own pixel grid, no tolerance);
- mass inside the mask: the share of the map's (non-negative) mass inside the mask, against the mask's share of
  the head (a map that knows nothing scores about 1x);
- deletion / insertion AUC (Petsiuk et al. 2018): the explained class's probability as the map's most important
  input pixels are blanked (deletion, lower is better) or revealed on a blank slice (insertion, higher is better);
- model-parameter randomisation (Adebayo et al. 2018): Spearman correlation, inside the head, between the maps of
  the trained model and of the same model with its last stage re-initialised; a map that does not change does not
  explain the model.
The explained class is the slice's most probable tumour class, so a missed tumour is explained too.
"""

from __future__ import annotations

import copy
import csv
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from convnest_viewer.inference.classifier import Classifier
from convnest_viewer.inference.explain import input_head, input_map
from convnest_viewer.inference.factory import explain_layer
from convnest_viewer.inference.foreground import head_mask
from convnest_viewer.inference.heatmap import BASELINE, METHODS, RANDOMISED_SPEARMAN_LIMIT as NO_CHANGE_SPEARMAN
from convnest_viewer.inference.preprocess import to_uint8, unletterbox
from convnest_viewer.io.window import Window
from training.data import record_pixels
from training.sources import GLIOMA, list_label_volumes, list_tcga_lgg, tcga_mask_path
from training.volumes import take_slice, volume_array

PERTURBATION_STEPS = 16  # deletion / insertion: fractions 0, 1/16, ..., 1 of the input's pixels


@dataclass
class MaskedSlice:
    """A held-out tumour slice with its mask, as the app reads it."""

    source: str
    case: str
    sequence: str
    index: int
    values: np.ndarray
    window: Window
    mask: np.ndarray  # bool, the slice's own pixel grid


def tcga_tumour_slices(root: Path, institutions: set[str], max_per_sequence: int = 0,
                       sequences: frozenset[str] = frozenset()) -> list[MaskedSlice]:
    """Return the tumour slices (the packing rule's glioma slices) of tcga-lgg cases from the given institutions
    (only the given sequences, when any are given)."""
    with open(Path(root) / "cases.csv", newline="") as handle:
        cases = tuple(row["case"] for row in csv.DictReader(handle) if row["institution"] in institutions)
    records = [r for r in list_tcga_lgg(Path(root), only=cases).records
               if r.label == GLIOMA and not r.synthetic and (not sequences or r.sequence in sequences)]
    slices = []
    for record in _spread(records, max_per_sequence):
        values, window = record_pixels(record)
        mask_path = tcga_mask_path(record)
        mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise FileNotFoundError(f"{mask_path}: tumour mask missing")
        slices.append(MaskedSlice("tcga-lgg", record.case, record.sequence, record.slice_index, values, window, mask > 127))
    return slices


def volume_tumour_slices(case_folders: list[Path], max_per_sequence: int = 0,
                         sequences: frozenset[str] = frozenset()) -> list[MaskedSlice]:
    """Return the axial tumour slices of label volumes (brats case folders), with their label maps as masks; at most
    max_per_sequence per sequence over all the cases together, spread evenly over them (only the given sequences,
    when any are given)."""
    listings = {root: list_label_volumes(root) for root in {Path(f).parent.parent for f in case_folders}}
    records = [r for folder in map(Path, case_folders) for r in listings[folder.parent.parent].records
               if r.case == folder.name and r.plane == "axial" and r.label == GLIOMA
               and (not sequences or r.sequence in sequences)]
    folders = {Path(f).name: Path(f) for f in case_folders}
    tumours: dict[str, np.ndarray] = {}
    slices = []
    for record in _spread(records, max_per_sequence):
        if record.case not in tumours:
            tumours[record.case] = volume_array(next(folders[record.case].glob("OTMultiClass.nii*"))) > 0
        values, window = record_pixels(record)
        mask = take_slice(tumours[record.case], record.plane, record.slice_index)
        slices.append(MaskedSlice("brats2013-hgg", record.case, record.sequence, record.slice_index, values, window,
                                  mask))
    return slices


def _spread(records: list, max_per_sequence: int) -> list:
    """Return all records, or at most max_per_sequence per sequence spread evenly over the list."""
    if not max_per_sequence:
        return records
    picked = []
    for sequence in sorted({r.sequence for r in records}):
        of_sequence = [r for r in records if r.sequence == sequence]
        step = max(1, len(of_sequence) // max_per_sequence)
        picked += of_sequence[::step][:max_per_sequence]
    return picked


def random_map(size: int, seed: int) -> np.ndarray:
    """Return a smooth random map on the input grid (the baseline)."""
    noise = np.random.default_rng(seed).random((size, size)).astype(np.float32)
    return cv2.GaussianBlur(noise, (0, 0), sigmaX=size / 16)


def slice_maps(classifier: Classifier, item: MaskedSlice, methods: tuple[str, ...], shap_samples: int, seed: int
               ) -> tuple[torch.Tensor, int, dict[str, np.ndarray], object]:
    """Return a slice's input batch, explained class, input-grid maps per method (and the baseline), and geometry."""
    model_input, geometry = classifier.prepare(item.values, item.window)
    batch = torch.from_numpy(model_input[None]).to(classifier.device)
    probabilities = classifier.probabilities_from_logits(classifier.logits(batch))[0]
    tumour_classes = [i for i, c in enumerate(classifier.card.classes) if not c.no_finding]
    target = max(tumour_classes, key=lambda i: probabilities[i])
    maps = {m: np.maximum(input_map(classifier, batch, m, target, shap_samples, seed), 0) for m in methods}
    maps[BASELINE] = random_map(batch.shape[-1], seed + item.index)
    return batch, target, maps, geometry


def localisation(map_on_slice: np.ndarray, mask: np.ndarray, head: np.ndarray) -> dict:
    """Return the pointing-game hit, the map's mass inside the mask and the mask's share of the head."""
    values = np.maximum(np.nan_to_num(map_on_slice), 0)
    total = float(values.sum())
    hit = bool(mask.flat[int(values.argmax())]) if total > 0 else False
    return {"hit": hit, "mass_in_mask": float((values * mask).sum() / total) if total > 0 else 0.0,
            "mask_share_of_head": float(mask.sum() / max(1, (head | mask).sum()))}


def perturbation_curves(classifier: Classifier, batch: torch.Tensor, target: int, input_grid_map: np.ndarray,
                        seed: int) -> tuple[float, float]:
    """Return the deletion and insertion AUC of one map (the target's probability over the share of pixels moved)."""
    spec = classifier.spec
    blank = (spec.pad_value / 255.0 - spec.mean[0]) / spec.std[0]
    order = np.lexsort((np.random.default_rng(seed).random(input_grid_map.size), -input_grid_map.ravel()))
    image = batch[0].cpu()
    fractions = np.linspace(0, 1, PERTURBATION_STEPS + 1)
    deleted, inserted = [], []
    for fraction in fractions:
        chosen = torch.zeros(input_grid_map.size, dtype=torch.bool)
        chosen[torch.from_numpy(order[:int(round(fraction * input_grid_map.size))])] = True
        chosen = chosen.view(1, *input_grid_map.shape)
        deleted.append(torch.where(chosen, torch.full_like(image, blank), image))
        inserted.append(torch.where(chosen, image, torch.full_like(image, blank)))
    probabilities = classifier.predict_inputs(torch.stack(deleted + inserted).numpy(), batch_size=len(fractions))
    curve = probabilities[:, target]
    return (float(np.trapezoid(curve[:len(fractions)], fractions)), float(np.trapezoid(curve[len(fractions):], fractions)))


def randomised_classifier(classifier: Classifier, seed: int = 0) -> Classifier:
    """Return a copy of the classifier whose last feature stage has freshly initialised weights."""
    model = copy.deepcopy(classifier.model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in explain_layer(model).named_parameters():
            if parameter.dim() > 1:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
            elif "weight" in name:
                parameter.fill_(1.0)
            else:
                parameter.zero_()
    return Classifier(model=model, card=classifier.card, device=str(classifier.device))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Return the Spearman rank correlation of two maps (0 when either is constant)."""
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def evaluate_heatmaps(classifier: Classifier, slices: list[MaskedSlice], methods: tuple[str, ...] = METHODS,
                      shap_samples: int = 16, randomisation_slices: int = 12, seed: int = 0,
                      progress=None) -> dict:
    """Measure every method and the random baseline on the slices; return per-slice rows and per-group summaries.

    The randomisation check runs on the first randomisation_slices slices of each source and sequence.
    """
    rows = []
    randomised = randomised_classifier(classifier, seed) if randomisation_slices else None
    checked: dict[tuple[str, str], int] = {}
    for number, item in enumerate(slices):
        batch, target, maps, geometry = slice_maps(classifier, item, methods, shap_samples, seed)
        head = head_mask(to_uint8(item.values, item.window))
        row = {"source": item.source, "case": item.case, "sequence": item.sequence, "index": item.index,
               "target": classifier.class_ids[target], "methods": {}}
        for method, grid_map in maps.items():
            measured = localisation(unletterbox(grid_map, geometry), item.mask, head)
            measured["deletion_auc"], measured["insertion_auc"] = perturbation_curves(classifier, batch, target,
                                                                                      grid_map, seed)
            row["methods"][method] = measured
        group = (item.source, item.sequence)
        if randomised is not None and checked.get(group, 0) < randomisation_slices:
            checked[group] = checked.get(group, 0) + 1
            _, _, random_maps, _ = slice_maps(randomised, item, methods, shap_samples, seed)
            inside = input_head(classifier, batch)  # the black letterbox would agree in any two maps
            for method in maps:
                row["methods"][method]["randomised_spearman"] = spearman(maps[method][inside],
                                                                         random_maps[method][inside])
        rows.append(row)
        if progress:
            progress(number + 1, len(slices))
    return {"methods": [*methods, BASELINE], "rows": rows, "summary": summarise(rows)}


def summarise(rows: list[dict]) -> dict:
    """Return per (source, sequence) and per method: n, pointing game, mass ratio, deletion/insertion AUC, MPRT."""
    from statsmodels.stats.proportion import proportion_confint

    summary: dict = {}
    for source, sequence in sorted({(r["source"], r["sequence"]) for r in rows}):
        group = [r for r in rows if (r["source"], r["sequence"]) == (source, sequence)]
        for method in group[0]["methods"]:
            measured = [r["methods"][method] for r in group]
            hits = sum(m["hit"] for m in measured)
            low, high = proportion_confint(hits, len(measured), method="wilson")
            mass = float(np.mean([m["mass_in_mask"] for m in measured]))
            share = float(np.mean([m["mask_share_of_head"] for m in measured]))
            spearmans = [m["randomised_spearman"] for m in measured if "randomised_spearman" in m]
            summary.setdefault(f"{source} {sequence}", {})[method] = {
                "n": len(measured), "pointing_game": hits / len(measured), "pointing_game_ci95": [low, high],
                "mass_in_mask": mass, "mask_share_of_head": share, "mass_ratio": mass / share if share else 0.0,
                "deletion_auc": float(np.mean([m["deletion_auc"] for m in measured])),
                "insertion_auc": float(np.mean([m["insertion_auc"] for m in measured])),
                "randomised_spearman": float(np.mean(spearmans)) if spearmans else None,
                "randomised_n": len(spearmans)}
    return summary


def passes_randomisation(figures: dict) -> bool:
    """Return whether a method's maps changed when the last stage was randomised (unchecked counts as passed)."""
    return figures["randomised_spearman"] is None or figures["randomised_spearman"] <= NO_CHANGE_SPEARMAN


def qualifies(figures: dict, baseline: dict | None) -> bool:
    """Return whether a method passes both checks: it points better than a random map and depends on the weights."""
    beats_random = baseline is None or figures["pointing_game"] > baseline["pointing_game"]
    return beats_random and passes_randomisation(figures)


def best_method(summary: dict, group: str, methods: tuple[str, ...] = METHODS) -> tuple[str, bool]:
    """Return the method with the best pointing game on a group (mass ratio breaks ties) and whether it qualifies.

    Methods that qualify (they beat the random map and their maps change when the model's last stage is
    randomised) come first; when none does, the best pointer is returned with qualified = False.
    """
    figures = summary[group]
    candidates = [m for m in methods if m in figures]
    trusted = [m for m in candidates if qualifies(figures[m], figures.get(BASELINE))]
    best = max(trusted or candidates, key=lambda m: (figures[m]["pointing_game"], figures[m]["mass_ratio"]))
    return best, bool(trusted)

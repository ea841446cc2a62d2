"""Evaluate a model per source and sequence: the folder-per-class test split (and its leakage-free part),
held-out tcga-lgg institutions, held-out label volumes and healthy heads (whole scans through the app's loader)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from convnest_viewer.inference.card import CLASS_IDS, PreprocessSpec
from training.data import PackedDataset
from training.dedup import NEAR_DUPLICATE, STRICT_NEAR_DUPLICATE, max_correlation
from training.metrics import classification_metrics, expected_calibration_error, fit_temperature, softmax
from training.report import write_report
from training.train import predict_logits


def evaluate(model: torch.nn.Module, spec: PreprocessSpec, data: PackedDataset, train_idx: np.ndarray, val_idx: np.ndarray,
             test_idx: np.ndarray, device: torch.device, temperature: float | None = None,
             source: str = "brain-tumor-mri", test_time_flip: bool = False) -> dict:
    """Return the slice-level evaluation; fit the temperature on validation unless one is given.

    official_test and its leakage-free variants are the folder-per-class source's test images; every other
    source's held-out packed slices are reported per sequence under held_out_slices.
    """
    images = torch.from_numpy(data.images).unsqueeze(1)
    model = model.to(device).eval()

    def logits_of(indices: np.ndarray) -> np.ndarray:
        return predict_logits(model, images, indices, spec, device, flip_average=test_time_flip).numpy()

    report: dict = {"class_ids": list(CLASS_IDS), "near_duplicate_threshold": NEAR_DUPLICATE,
                    "strict_near_duplicate_threshold": STRICT_NEAR_DUPLICATE, "test_time_flip": test_time_flip}
    if len(val_idx):
        val_logits = logits_of(val_idx)
        if temperature is None:
            temperature = fit_temperature(val_logits, data.labels[val_idx])
        report["validation"] = _metrics(val_logits, data.labels[val_idx], temperature)
    temperature = float(temperature or 1.0)
    report["temperature"] = temperature
    seen = np.concatenate([train_idx, val_idx])  # every image of the training side, used or held out
    seen = seen[data.source[seen] == source]
    others = test_idx[data.source[test_idx] != source]
    test_idx = test_idx[data.source[test_idx] == source]
    test_logits = logits_of(test_idx)
    best, _ = max_correlation(data.thumbs[test_idx], data.thumbs[seen])
    report["official_test"] = _metrics(test_logits, data.labels[test_idx], temperature)
    for key, threshold in (("leakage_free_test", NEAR_DUPLICATE), ("strict_leakage_free_test", STRICT_NEAR_DUPLICATE)):
        keep = best < threshold
        report[key] = _metrics(test_logits[keep], data.labels[test_idx][keep], temperature)
        report[key]["excluded_near_duplicates"] = int((~keep).sum())
    if len(others):
        report["held_out_slices"] = _per_source_sequence(logits_of(others), data.subset(others), temperature)
    return report


def _per_source_sequence(logits: np.ndarray, data: PackedDataset, temperature: float) -> dict:
    """Return tumour-vs-no-tumour metrics of packed held-out slices per source, sequence and plane."""
    from training.volume_eval import tumour_metrics

    notumor = CLASS_IDS.index("notumor")
    probabilities = softmax(logits, temperature)
    tumour_probability = 1 - probabilities[:, notumor]
    called = probabilities.argmax(axis=1) != notumor
    truth = (data.labels != notumor).astype(int)
    result: dict = {}
    for source in np.unique(data.source):
        for sequence in np.unique(data.sequence[data.source == source]):
            for plane in np.unique(data.meta["plane"][(data.source == source) & (data.sequence == sequence)]):
                pick = (data.source == source) & (data.sequence == sequence) & (data.meta["plane"] == plane)
                key = f"{sequence or 'unknown'} {plane}".strip()
                result.setdefault(source, {})[key] = tumour_metrics(truth[pick], tumour_probability[pick], called[pick])
    return result


def _metrics(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict:
    if len(labels) == 0:
        return {"n": 0}
    calibrated = softmax(logits, temperature)
    result = classification_metrics(labels, calibrated, CLASS_IDS)
    result["ece_uncalibrated"] = expected_calibration_error(labels, softmax(logits, 1.0))
    result["_probabilities"] = calibrated  # for plots; dropped before JSON
    result["_labels"] = labels
    return result


def evaluate_run(run_dir: Path, data: PackedDataset, out_dir: Path, healthy: list[tuple[Path, str, bool]] = (),
                 test_time_flip: bool = False) -> dict:
    """Evaluate a finished run folder (its final weights and its split) and write the report folder.

    healthy: (path, sequence, held out) of whole healthy heads to classify through the app's loader;
    test_time_flip: classify each slice as the mean of it and its mirror (export carries it into the card).
    """
    from training.train import Trainer

    trainer = Trainer.from_run(run_dir, data)
    report = evaluate(trainer.final_model, trainer.spec, data, trainer.split.train, trainer.split.val,
                      trainer.split.test, trainer.device, source=trainer.config.source, test_time_flip=test_time_flip)
    card = trainer.config.card("evaluation")
    card.temperature = report["temperature"]
    card.test_time_flip = test_time_flip
    report.update(evaluate_scans(trainer.final_model, card, data, trainer.split, healthy, trainer.device))
    report["training"] = training_summary(trainer)
    write_report(report, out_dir, history=trainer.history, run_dir=run_dir)
    return report


def evaluate_scans(model, card, data: PackedDataset, split, healthy, device) -> dict:
    """Return whole-scan results of a run's model on the scans its split held out, and on healthy heads."""
    from convnest_viewer.inference.classifier import Classifier

    classifier = Classifier(model=model.float().eval(), card=card, device=str(device))
    held_out = np.concatenate([split.val, split.test])
    tcga = split.test[data.source[split.test] == "tcga-lgg"]
    tcga_cases = sorted({Path(p).parent for p in data.paths[tcga] if Path(p).parent.is_dir()})  # not on a device copy
    is_volume = np.array([str(p).lower().endswith((".nii", ".nii.gz")) for p in data.paths[held_out]], bool)
    volumes = held_out[is_volume & (data.institution[held_out] == "")]
    volume_cases = sorted({Path(p).parent for p in data.paths[volumes] if Path(p).parent.is_dir()})
    return scan_results(classifier, tcga_cases, volume_cases, healthy)


def scan_results(classifier, tcga_cases: list[Path], volume_cases: list[Path], healthy) -> dict:
    """Return whole-scan results of any classifier: tcga-lgg case folders, label-volume case folders, healthy heads.

    The per-scan arrays stay under "_scans" keys for the figures; the JSON report drops them.
    """
    from training.sources import TCGA_SEQUENCES
    from training.volume_eval import (evaluate_healthy, evaluate_label_volume, evaluate_tcga_case, healthy_verdicts,
                                      summarise_healthy, summarise_tumour_scans, summarise_verdicts)

    result: dict = {}
    if tcga_cases:
        scans = [scan for case in tcga_cases for sequence in TCGA_SEQUENCES
                 if (scan := evaluate_tcga_case(classifier, case, sequence)) is not None]
        institutions = sorted({case.name.split("_")[1] for case in tcga_cases})
        result["tcga_lgg_held_out"] = {"institutions": institutions, "cases": len(tcga_cases),
                                       "per_sequence": summarise_tumour_scans(scans),
                                       "verdicts": summarise_verdicts(scans), "_scans": scans}
    if volume_cases:
        scans = [scan for case in volume_cases for scan in evaluate_label_volume(classifier, case)]
        result["volumes_held_out"] = {"source": scans[0].source if scans else "", "cases": [d.name for d in volume_cases],
                                      "per_sequence": summarise_tumour_scans(scans),
                                      "verdicts": summarise_verdicts(scans), "_scans": scans}
    if healthy:
        scans = [evaluate_healthy(classifier, path, sequence, held) for path, sequence, held in healthy]
        result["healthy"] = {"per_scan": summarise_healthy(scans), "verdicts": healthy_verdicts(scans), "_scans": scans}
    return result


def training_summary(trainer) -> dict:
    """Return what ran: config, epochs, time, image counts."""
    from dataclasses import asdict

    history = trainer.history
    return {
        "config": asdict(trainer.config),
        "epochs_completed": trainer.epoch,
        "train_images": int(len(trainer.split.train)),
        "validation_images": int(len(trainer.split.val)),
        "test_images": int(len(trainer.split.test)),
        "train_seconds": float(sum(row.get("seconds", 0.0) for row in history)),
        "images_per_second": float(np.mean([row["images_per_second"] for row in history])) if history else None,
        "device": str(trainer.device),
        "final_weights": "EMA" if trainer.ema is not None else "last",
    }

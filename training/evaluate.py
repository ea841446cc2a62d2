"""Evaluate a model: official test split and its leakage-free part, calibration, cross-dataset."""

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
             cross_source: str | None = "sartaj") -> dict:
    """Return the full evaluation; fit the temperature on validation unless one is given."""
    images = torch.from_numpy(data.images).unsqueeze(1)
    model = model.to(device).eval()

    def logits_of(indices: np.ndarray) -> np.ndarray:
        return predict_logits(model, images, indices, spec, device).numpy()

    report: dict = {"class_ids": list(CLASS_IDS), "near_duplicate_threshold": NEAR_DUPLICATE,
                    "strict_near_duplicate_threshold": STRICT_NEAR_DUPLICATE}
    if len(val_idx):
        val_logits = logits_of(val_idx)
        if temperature is None:
            temperature = fit_temperature(val_logits, data.labels[val_idx])
        report["validation"] = _metrics(val_logits, data.labels[val_idx], temperature)
    temperature = float(temperature or 1.0)
    report["temperature"] = temperature
    seen = np.concatenate([train_idx, val_idx])  # every image of the training side, used or held out
    test_logits = logits_of(test_idx)
    best, _ = max_correlation(data.thumbs[test_idx], data.thumbs[seen])
    report["official_test"] = _metrics(test_logits, data.labels[test_idx], temperature)
    for key, threshold in (("leakage_free_test", NEAR_DUPLICATE), ("strict_leakage_free_test", STRICT_NEAR_DUPLICATE)):
        keep = best < threshold
        report[key] = _metrics(test_logits[keep], data.labels[test_idx][keep], temperature)
        report[key]["excluded_near_duplicates"] = int((~keep).sum())
    if cross_source:
        cross = np.flatnonzero(data.source == cross_source)
        if len(cross):
            cross_best, _ = max_correlation(data.thumbs[cross], data.thumbs[seen])
            keep = cross[cross_best < NEAR_DUPLICATE]
            report["cross_dataset"] = _metrics(logits_of(keep), data.labels[keep], temperature) if len(keep) else {"n": 0}
            report["cross_dataset"].update(source=cross_source, images=int(len(cross)),
                                           excluded_near_duplicates=int(len(cross) - len(keep)),
                                           note="SARTAJ glioma labels are known to be noisy")
    return report


def _metrics(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict:
    if len(labels) == 0:
        return {"n": 0}
    calibrated = softmax(logits, temperature)
    result = classification_metrics(labels, calibrated, CLASS_IDS)
    result["ece_uncalibrated"] = expected_calibration_error(labels, softmax(logits, 1.0))
    result["_probabilities"] = calibrated  # for plots; dropped before JSON
    result["_labels"] = labels
    return result


def evaluate_run(run_dir: Path, data: PackedDataset, out_dir: Path) -> dict:
    """Evaluate a finished run folder (its final weights and its split) and write the report folder."""
    from training.train import Trainer

    trainer = Trainer.from_run(run_dir, data)
    report = evaluate(trainer.final_model, trainer.spec, data, trainer.split.train, trainer.split.val,
                      trainer.split.test, trainer.device)
    report["training"] = training_summary(trainer)
    write_report(report, out_dir, history=trainer.history)
    return report


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

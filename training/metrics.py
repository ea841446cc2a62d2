"""Classification metrics (scikit-learn), calibration error and temperature scaling."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Return row-wise softmax of logits / temperature (float64)."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def classification_metrics(y_true: np.ndarray, probabilities: np.ndarray, class_ids: Sequence[str]) -> dict:
    """Return accuracy, per-class precision/recall/F1, macro F1, OvR ROC AUC, kappa, confusion matrix, ECE."""
    from sklearn.metrics import (accuracy_score, cohen_kappa_score, confusion_matrix, precision_recall_fscore_support,
                                 roc_auc_score)

    labels = list(range(len(class_ids)))
    y_pred = probabilities.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    present = np.unique(y_true)
    auc_per_class = {}
    for index, class_id in enumerate(class_ids):
        if index in present and len(present) > 1:
            auc_per_class[class_id] = float(roc_auc_score(y_true == index, probabilities[:, index]))
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(np.mean(f1[present])) if len(present) else 0.0,
        "cohen_kappa": float(cohen_kappa_score(y_true, y_pred, labels=labels)) if len(y_true) else 0.0,
        "macro_auc_ovr": float(np.mean(list(auc_per_class.values()))) if auc_per_class else None,
        "ece": expected_calibration_error(y_true, probabilities),
        "per_class": {
            class_id: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                       "support": int(support[i]), "auc_ovr": auc_per_class.get(class_id)}
            for i, class_id in enumerate(class_ids)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def expected_calibration_error(y_true: np.ndarray, probabilities: np.ndarray, bins: int = 15) -> float:
    """Return the ECE of the top-class confidence over equal-width bins."""
    if len(y_true) == 0:
        return 0.0
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """Return the temperature minimising the negative log-likelihood (fit on validation data)."""
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, np.float64)

    def nll(log_t: float) -> float:
        p = softmax(logits, float(np.exp(log_t)))
        return -float(np.mean(np.log(np.clip(p[np.arange(len(y_true)), y_true], 1e-12, None))))

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))

"""Distillation from a frozen teacher (a model folder): a run keeps the teacher's answers on the sources it should
not change while the rest of its draws move it (learning without forgetting)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training import options


def load_teacher(folder: Path, config, device: torch.device) -> torch.nn.Module:
    """Return the model folder's network (sha256-checked weights; any architecture, the run's preprocessing and
    classes), frozen and in eval mode, on the device."""
    from convnest_viewer.inference.factory import create_classifier
    from convnest_viewer.inference.weights import load_state_dict
    from training.train import matching_card

    card = matching_card(folder, config, same_architecture=False)
    teacher = create_classifier(card)
    teacher.load_state_dict(load_state_dict(folder, card))
    teacher.requires_grad_(False)
    return teacher.to(device).eval()


def distilled_slices(sources: np.ndarray, distil_sources: str) -> np.ndarray:
    """Return, per packed slice, whether the teacher's answer is kept on it ("": every source)."""
    names = options.names(distil_sources)
    if not names:
        return np.ones(len(sources), bool)
    unknown = set(names) - set(sources.tolist())
    if unknown:
        raise ValueError(f"distil_sources names sources not in the pack: {', '.join(sorted(unknown))}")
    return np.isin(sources, names)


def distil_loss(student: torch.Tensor, teacher: torch.Tensor, kept: torch.Tensor, temperature: float) -> torch.Tensor:
    """Return the batch mean of T^2 KL(teacher || student) at temperature T over the kept slices (0 on the rest)."""
    student_log = F.log_softmax(student.float() / temperature, dim=1)
    teacher_log = F.log_softmax(teacher.float() / temperature, dim=1)
    per_slice = (teacher_log.exp() * (teacher_log - student_log)).sum(dim=1)
    return (per_slice * kept.to(per_slice.dtype)).mean() * temperature ** 2

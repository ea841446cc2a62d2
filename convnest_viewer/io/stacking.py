"""Order the slices of a series in space and split repeated positions into volumes."""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Sequence

import numpy as np

from convnest_viewer.io.model import SliceRef
from convnest_viewer.io.orientation import slice_normal

_POSITION_TOLERANCE_MM = 1e-3


def stack_volumes(slices: Sequence[SliceRef], orientation: Sequence[float] | None) -> list[list[SliceRef]]:
    """Return the slices as volumes, each ordered along the slice normal (or by instance number)."""
    normal = slice_normal(orientation)
    if normal is None or any(ref.position is None for ref in slices):
        return [sorted(slices, key=_acquisition_order)]
    along = {id(ref): float(np.dot(ref.position, normal)) for ref in slices}
    if not all(np.isfinite(value) and abs(value) < 1e9 for value in along.values()):
        return [sorted(slices, key=_acquisition_order)]  # absurd positions: order as acquired
    distance = {key: round(value / _POSITION_TOLERANCE_MM) for key, value in along.items()}
    n_positions = len(set(distance.values()))
    if n_positions == len(slices):
        return [sorted(slices, key=lambda ref: (distance[id(ref)], _acquisition_order(ref)))]
    volumes = _split_by_label(slices, distance)
    return [sorted(volume, key=lambda ref: distance[id(ref)]) for volume in volumes]


def _split_by_label(slices: Sequence[SliceRef], distance: dict[int, int]) -> list[list[SliceRef]]:
    """Group slices that share positions into volumes: by temporal index, acquisition, or order."""
    for label in (lambda ref: ref.temporal_index, lambda ref: ref.acquisition_number):
        groups = _groups_if_unique_positions(slices, label, distance)
        if groups is not None:
            return groups
    occurrence: dict[int, int] = defaultdict(int)
    volumes: dict[int, list[SliceRef]] = defaultdict(list)
    for ref in sorted(slices, key=_acquisition_order):
        key = distance[id(ref)]
        volumes[occurrence[key]].append(ref)
        occurrence[key] += 1
    return [volumes[index] for index in sorted(volumes)]


def _groups_if_unique_positions(
    slices: Sequence[SliceRef], label: Callable[[SliceRef], int | None], distance: dict[int, int]
) -> list[list[SliceRef]] | None:
    """Return groups by label when the label varies and no group repeats a position."""
    labels = [label(ref) for ref in slices]
    if any(value is None for value in labels) or len(set(labels)) < 2:
        return None
    groups: dict[int, list[SliceRef]] = defaultdict(list)
    for ref, value in zip(slices, labels):
        groups[value].append(ref)
    for group in groups.values():
        if len({distance[id(ref)] for ref in group}) != len(group):
            return None
    return [groups[value] for value in sorted(groups)]


def _acquisition_order(ref: SliceRef) -> tuple:
    return (
        ref.instance_number if ref.instance_number is not None else 1 << 30,
        ref.frame if ref.frame is not None else -1,
        str(ref.path),
        ref.tile or (),
    )

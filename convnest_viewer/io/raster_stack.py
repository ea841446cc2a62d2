"""Stack numbered PNG/JPEG files of one scan (slice_1.png, slice_2.png, ...) into one series.

Image files opened together become one series when they lie in one folder, their names differ only in one number,
they have the same size, there are at least `MIN_FILES` of them and neighbouring images look alike (the median
correlation of neighbours' 32 x 32 thumbnails is at least `MIN_NEIGHBOUR_SIMILARITY`): the slices of one scan
exported one file each. A folder of unrelated images (a dataset's class folder) fails the last test and stays one
series per file. The slices are ordered by their number.

Measured on ../shared (2026-12-07): every tcga-lgg scan's slices have a median neighbour correlation of at least
0.874 (FLAIR, T1, T1c) and 95% of its mask stacks at least 0.911; brain-tumor-mri's class folders, thousands of
patients, 0.59-0.75.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from convnest_viewer.io.contrast import guess_contrast
from convnest_viewer.io.model import Series, SliceRef
from convnest_viewer.io.window import Window

MIN_FILES = 3
MIN_NEIGHBOUR_SIMILARITY = 0.85
_THUMB = 32


def stack_raster_series(items: Sequence[tuple[int, Series]]) -> list[tuple[int, Series]]:
    """Return the (origin, series) pairs with the single-image series of each numbered scan merged into one."""
    singles = [(origin, s) for origin, s in items if s.kind == "raster" and s.n_slices == 1 and s.n_volumes == 1]
    chosen: set[int] = set()
    stack_at: dict[int, tuple[int, Series]] = {}  # id of the stack's first file in load order -> the stack
    for position, members in _candidate_groups(singles):
        members = sorted((m for m in members if id(m[1][1]) not in chosen), key=lambda member: member[0])
        if len(members) < MIN_FILES or len({number for number, _ in members}) < len(members):
            continue
        if _neighbour_similarity([series for _, (_, series) in members]) < MIN_NEIGHBOUR_SIMILARITY:
            continue
        ids = {id(series) for _, (_, series) in members}
        chosen |= ids
        stack_at[next(id(s) for _, s in items if id(s) in ids)] = _stacked(members, position)
    return [stack_at.get(id(s), (origin, s)) for origin, s in items if id(s) not in chosen or id(s) in stack_at]


def _candidate_groups(singles: Sequence[tuple[int, Series]]) -> list[tuple[int, list[tuple[int, tuple[int, Series]]]]]:
    """Return (place of the number among the name's parts, [(number, (origin, series))]) for groups sharing folder,
    size and name but for one number, largest first (on a tie, the later number: "case_4941_12_t1.jpg" varies in 12)."""
    groups: dict[tuple, list] = defaultdict(list)
    for origin, series in singles:
        path = series.volumes[0][0].path
        parts = re.split(r"(\d+)", path.name)
        for position in range(1, len(parts), 2):
            pattern = tuple(parts[:position] + ["#"] + parts[position + 1:])
            key = (origin, str(path.parent), series.rows, series.columns, pattern, position)
            groups[key].append((int(parts[position]), (origin, series)))
    ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), -item[0][5]))
    return [(key[5], members) for key, members in ordered if len(members) >= MIN_FILES]


def _neighbour_similarity(series_list: Sequence[Series]) -> float:
    """Return the median correlation of neighbouring images' thumbnails (two blank images count as alike)."""
    thumbs = [_thumbnail(series.volumes[0][0].path) for series in series_list]
    similarities = []
    for a, b in zip(thumbs, thumbs[1:]):
        if a is None or b is None:
            similarities.append(1.0 if a is None and b is None else 0.0)
        else:
            similarities.append(float(a @ b))
    return float(np.median(similarities))


def _thumbnail(path: Path) -> np.ndarray | None:
    """Return the image as a zero-mean unit-norm 32 x 32 grey thumbnail, or None when it is flat."""
    import cv2

    image = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_4)
    if image is None:
        return None
    thumb = cv2.resize(image, (_THUMB, _THUMB), interpolation=cv2.INTER_AREA).astype(np.float64).ravel()
    thumb -= thumb.mean()
    norm = np.linalg.norm(thumb)
    return thumb / norm if norm > 1e-6 else None


def _stacked(members: Sequence[tuple[int, tuple[int, Series]]], position: int) -> tuple[int, Series]:
    """Return one series whose slices are the members' images in the order of their numbers (the number at
    `position` among the name's digit-split parts)."""
    numbers = [number for number, _ in members]
    series_list = [series for _, (_, series) in members]
    first = series_list[0]
    path = first.volumes[0][0].path
    parts = re.split(r"(\d+)", path.name)
    name = "".join(parts[:position]) + f"[{numbers[0]}-{numbers[-1]}]" + "".join(parts[position + 1:])
    windows = {s.volumes[0][0].voi for s in series_list}
    window: Window | None = windows.pop() if len(windows) == 1 else None
    slices = [SliceRef(path=s.volumes[0][0].path, voi=window, instance_number=n) for n, s in zip(numbers, series_list)]
    key = f"stack:{path.parent / name}"
    series = Series(key=key, uid=key, kind="raster", volumes=[slices], rows=first.rows, columns=first.columns,
                    study=first.study, description=f"{name} ({len(slices)} images)", contrast=guess_contrast(name),
                    modality=first.modality)
    return members[0][1][0], series

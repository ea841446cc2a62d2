"""Datasets of folder-per-class slices, read through the app's own preprocessing into 8-bit arrays."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from convnest_viewer.inference.card import CLASS_IDS, PreprocessSpec
from convnest_viewer.inference.preprocess import model_uint8
from convnest_viewer.io.pixels import read_raster, to_grayscale
from convnest_viewer.io.raster import EIGHT_BIT_WINDOW, RASTER_SUFFIXES

# Folder names of each known dataset, mapped to our class ids.
CLASS_FOLDERS = {
    "brain-tumor-mri": {c: c for c in CLASS_IDS},
    "sartaj": {"glioma_tumor": "glioma", "meningioma_tumor": "meningioma", "no_tumor": "notumor", "pituitary_tumor": "pituitary"},
}
SPLIT_FOLDERS = {"Training": "train", "Testing": "test"}


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image of a dataset: where it is, its class, its official split and its source."""

    path: Path
    label: int
    split: str  # the dataset's own split: "train" or "test"
    source: str


def list_dataset(root: Path, source: str | None = None) -> list[ImageRecord]:
    """List a folder-per-class dataset (Training/ and Testing/ with one folder per class)."""
    root = Path(root)
    source = source or root.name
    folders = CLASS_FOLDERS.get(source)
    if folders is None:
        raise ValueError(f"{root}: unknown dataset {source!r}; known: {', '.join(CLASS_FOLDERS)}")
    records = []
    for split_folder, split in SPLIT_FOLDERS.items():
        for class_folder, class_id in folders.items():
            folder = root / split_folder / class_folder
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder}: class folder missing")
            for path in sorted(folder.iterdir()):
                if path.suffix.lower() in RASTER_SUFFIXES:
                    records.append(ImageRecord(path, CLASS_IDS.index(class_id), split, source))
    return records


def read_model_image(path: Path, spec: PreprocessSpec) -> np.ndarray:
    """Return one dataset image as the 8-bit square the model sees (the app's exact path)."""
    values = to_grayscale(read_raster(path)).astype(np.float32)
    image, _ = model_uint8(values, EIGHT_BIT_WINDOW, spec)
    return image


def pack_images(paths: Sequence[Path], spec: PreprocessSpec, workers: int = 0) -> np.ndarray:
    """Return the images as a (N, size, size) uint8 array through the app's preprocessing."""
    if workers and len(paths) > 256:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            images = list(pool.map(lambda p: read_model_image(p, spec), paths, chunksize=64))
    else:
        images = [read_model_image(p, spec) for p in paths]
    return np.stack(images) if images else np.zeros((0, spec.size, spec.size), np.uint8)


def labels_of(records: Iterable[ImageRecord]) -> np.ndarray:
    """Return the labels of records as an int64 array."""
    return np.array([r.label for r in records], dtype=np.int64)

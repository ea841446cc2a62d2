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
    images = _map_files(lambda path: read_model_image(path, spec), paths, workers)
    return np.stack(images) if images else np.zeros((0, spec.size, spec.size), np.uint8)


def _map_files(function, paths: Sequence[Path], workers: int) -> list:
    """Apply function to every path, in threads when there are many (OpenCV decodes without the GIL)."""
    if not workers or len(paths) <= 256:
        return [function(path) for path in paths]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(function, paths, chunksize=64))


def labels_of(records: Iterable[ImageRecord]) -> np.ndarray:
    """Return the labels of records as an int64 array."""
    return np.array([r.label for r in records], dtype=np.int64)


THUMB_SIZE = 32


def thumbnail(path: Path) -> np.ndarray:
    """Return the image squashed to 32x32 grayscale (for near-duplicate search, not for the model)."""
    import cv2

    gray = to_grayscale(read_raster(path)).astype(np.float32)
    return cv2.resize(gray, (THUMB_SIZE, THUMB_SIZE), interpolation=cv2.INTER_AREA)


@dataclass
class PackedDataset:
    """Images as the model sees them (uint8), with labels, official split, source, paths, thumbnails."""

    images: np.ndarray  # (N, size, size) uint8
    labels: np.ndarray  # (N,) int64
    split: np.ndarray  # (N,) str: "train" | "test"
    source: np.ndarray  # (N,) str
    paths: np.ndarray  # (N,) str, as listed
    thumbs: np.ndarray  # (N, 32, 32) float32
    size: int
    preprocessing: str

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, mask_or_index) -> "PackedDataset":
        """Return the rows selected by a boolean mask or an index array."""
        pick = np.asarray(mask_or_index)
        return PackedDataset(self.images[pick], self.labels[pick], self.split[pick], self.source[pick],
                             self.paths[pick], self.thumbs[pick], self.size, self.preprocessing)

    def save(self, path: Path, jpeg_quality: int | None = None) -> Path:
        """Write one compact .npz (no pickles); JPEG-compress the images when a quality is given."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = dict(labels=self.labels.astype(np.int8), split=self.split, source=self.source, paths=self.paths,
                      thumbs=np.clip(np.rint(self.thumbs), 0, 255).astype(np.uint8),
                      size=np.array(self.size), preprocessing=np.array(self.preprocessing))
        if jpeg_quality:
            import cv2

            blobs = [cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])[1].ravel() for image in self.images]
            arrays["jpeg_offsets"] = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
            arrays["jpeg_bytes"] = np.concatenate(blobs) if blobs else np.zeros(0, np.uint8)
            np.savez_compressed(path, **arrays)  # the thumbnails and paths shrink; JPEG bytes stay as they are
        else:
            arrays["images"] = self.images
            np.savez(path, **arrays)
        return path

    @classmethod
    def load(cls, path: Path) -> "PackedDataset":
        """Read a packed dataset written by save()."""
        with np.load(path, allow_pickle=False) as data:
            if "images" in data:
                images = data["images"]
            else:
                import cv2

                offsets, blob = data["jpeg_offsets"], data["jpeg_bytes"]
                images = np.stack([cv2.imdecode(blob[offsets[i]:offsets[i + 1]], cv2.IMREAD_GRAYSCALE)
                                   for i in range(len(offsets) - 1)])
            return cls(images=images, labels=data["labels"].astype(np.int64), split=data["split"], source=data["source"],
                       paths=data["paths"], thumbs=data["thumbs"].astype(np.float32), size=int(data["size"]),
                       preprocessing=str(data["preprocessing"]))


def pack_dataset(records: Sequence[ImageRecord], spec: PreprocessSpec, workers: int = 2) -> PackedDataset:
    """Read records through the app's preprocessing into a PackedDataset."""
    paths = [r.path for r in records]
    thumbs = _map_files(thumbnail, paths, workers)
    return PackedDataset(
        images=pack_images(paths, spec, workers),
        labels=labels_of(records),
        split=np.array([r.split for r in records]),
        source=np.array([r.source for r in records]),
        paths=np.array([str(p) for p in paths]),
        thumbs=np.stack(thumbs) if thumbs else np.zeros((0, THUMB_SIZE, THUMB_SIZE), np.float32),
        size=spec.size,
        preprocessing=spec.version,
    )

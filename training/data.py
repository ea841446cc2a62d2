"""Packed datasets: labelled slices of every source, read through the app's own preprocessing into 8-bit arrays."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from convnest_viewer.inference.card import CLASS_IDS, PreprocessSpec
from convnest_viewer.inference.preprocess import model_uint8
from convnest_viewer.io.pixels import apply_window, read_raster, to_grayscale
from convnest_viewer.io.raster import EIGHT_BIT_WINDOW, RASTER_SUFFIXES
from convnest_viewer.io.window import Window
from training.volumes import is_volume_path, volume_slice, volume_window

# Folder names of each known folder-per-class dataset, mapped to our class ids.
CLASS_FOLDERS = {
    "brain-tumor-mri": {c: c for c in CLASS_IDS},
}
SPLIT_FOLDERS = {"Training": "train", "Testing": "test"}


@dataclass(frozen=True)
class ImageRecord:
    """One labelled slice: where it is, its class, its source's own split, and where it sits in its scan.

    A raster file is one slice; a volume (NIfTI file, DICOM series) gives many, told apart by plane and slice index.
    """

    path: Path
    label: int
    split: str  # the source's own split ("train", "validation", "test"), "" where it has none
    source: str
    case: str = ""  # patient / scan; never split across train and validation
    institution: str = ""
    sequence: str = ""  # t1, t1c, flair, ... ("" when the source does not say)
    plane: str = ""  # axial, coronal, sagittal ("" when unknown)
    slice_index: int = -1  # position in its scan (0 = first), -1 when unknown
    slice_count: int = 0
    synthetic: str = ""  # "" for a real slice; "mirror-left" / "mirror-right": one half reflected (training.mirror)


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


def record_pixels(record: ImageRecord) -> tuple[np.ndarray, Window]:
    """Return a record's slice values and the window the app would use for them."""
    if record.plane and is_volume_path(record.path):
        values = volume_slice(record.path, record.plane, record.slice_index)
        return values, volume_window(record.path, record.plane, record.slice_index, values)
    values = to_grayscale(read_raster(record.path)).astype(np.float32)
    if record.synthetic:
        from training.mirror import apply_synthetic

        values = apply_synthetic(values, record.synthetic)
    return values, EIGHT_BIT_WINDOW


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
    return _thumb(to_grayscale(read_raster(path)).astype(np.float32))


def record_thumbnail(record: ImageRecord) -> np.ndarray:
    """Return a record's slice squashed to 32x32 (raster files as they are, volume slices windowed to 8 bits)."""
    if record.synthetic or (record.plane and is_volume_path(record.path)):
        values, window = record_pixels(record)
        return _thumb(apply_window(values, window).astype(np.float32))
    return thumbnail(record.path)


def _thumb(gray: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(gray, (THUMB_SIZE, THUMB_SIZE), interpolation=cv2.INTER_AREA)


IMAGE_CODECS = {"jpeg": (".jpg", "IMWRITE_JPEG_QUALITY"), "webp": (".webp", "IMWRITE_WEBP_QUALITY")}
META_TEXT = ("case", "institution", "sequence", "plane", "synthetic")
META_INT = ("slice_index", "slice_count")


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
    meta: dict[str, np.ndarray] = field(default_factory=dict)  # META_TEXT (str) and META_INT (int) columns
    masks: np.ndarray | None = None  # (N, MASK_SIZE, MASK_SIZE) uint8 tumour share per cell (training.masks)
    mask_known: np.ndarray | None = None  # (N,) bool: False where the source has no masks (the mask is then empty)

    def __post_init__(self) -> None:
        n = len(self.labels)
        for name in META_TEXT:
            self.meta.setdefault(name, np.full(n, "", dtype="<U1"))
        for name in META_INT:
            self.meta.setdefault(name, np.full(n, -1 if name == "slice_index" else 0, np.int32))
        if (self.masks is None) != (self.mask_known is None):
            raise ValueError("packed masks need mask_known beside them, and the other way round")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def case(self) -> np.ndarray:
        """Return each image's case (patient / scan), "" where unknown."""
        return self.meta["case"]

    @property
    def sequence(self) -> np.ndarray:
        """Return each image's sequence (t1, t1c, flair, ...), "" where unknown."""
        return self.meta["sequence"]

    @property
    def institution(self) -> np.ndarray:
        """Return each image's institution, "" where unknown."""
        return self.meta["institution"]

    def subset(self, mask_or_index) -> "PackedDataset":
        """Return the rows selected by a boolean mask or an index array."""
        pick = np.asarray(mask_or_index)
        return PackedDataset(self.images[pick], self.labels[pick], self.split[pick], self.source[pick],
                             self.paths[pick], self.thumbs[pick], self.size, self.preprocessing,
                             {k: v[pick] for k, v in self.meta.items()},
                             None if self.masks is None else self.masks[pick],
                             None if self.mask_known is None else self.mask_known[pick])

    def save(self, path: Path, jpeg_quality: int | None = None, codec: str = "jpeg") -> Path:
        """Write one compact .npz (no pickles); compress the images (JPEG or WebP) when a quality is given."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = dict(labels=self.labels.astype(np.int8), split=self.split, source=self.source, paths=self.paths,
                      thumbs=np.clip(np.rint(self.thumbs), 0, 255).astype(np.uint8),
                      size=np.array(self.size), preprocessing=np.array(self.preprocessing),
                      **{f"meta_{k}": v for k, v in self.meta.items()})
        if self.masks is not None:
            arrays.update(masks=self.masks, mask_known=self.mask_known)
        if jpeg_quality:
            if codec not in IMAGE_CODECS:
                raise ValueError(f"{path}: unknown image codec {codec!r}; choose one of {', '.join(IMAGE_CODECS)}")
            import cv2

            suffix, flag = IMAGE_CODECS[codec]
            blobs = [cv2.imencode(suffix, image, [getattr(cv2, flag), jpeg_quality])[1].ravel() for image in self.images]
            arrays["jpeg_offsets"] = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
            arrays["jpeg_bytes"] = np.concatenate(blobs) if blobs else np.zeros(0, np.uint8)  # JPEG or WebP bytes
            np.savez_compressed(path, **arrays)  # the thumbnails and paths shrink; the image bytes stay as they are
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

                offsets, blob = data["jpeg_offsets"], data["jpeg_bytes"]  # imdecode tells JPEG from WebP
                images = np.stack([cv2.imdecode(blob[offsets[i]:offsets[i + 1]], cv2.IMREAD_GRAYSCALE)
                                   for i in range(len(offsets) - 1)])
            meta = {k[len("meta_"):]: data[k] for k in data.files if k.startswith("meta_")}
            return cls(images=images, labels=data["labels"].astype(np.int64), split=data["split"], source=data["source"],
                       paths=data["paths"], thumbs=data["thumbs"].astype(np.float32), size=int(data["size"]),
                       preprocessing=str(data["preprocessing"]), meta=meta,
                       masks=data["masks"] if "masks" in data else None,
                       mask_known=data["mask_known"].astype(bool) if "mask_known" in data else None)


def pack_dataset(records: Sequence[ImageRecord], spec: PreprocessSpec, workers: int = 2) -> PackedDataset:
    """Read records through the app's preprocessing into a PackedDataset, with their tumour masks where known."""
    from training.masks import MASK_SIZE

    packed = _map_files(lambda record: record_image_and_mask(record, spec), records, workers)
    thumbs = _map_files(record_thumbnail, records, workers)
    empty = np.zeros((MASK_SIZE, MASK_SIZE), np.uint8)
    return PackedDataset(
        images=np.stack([image for image, _ in packed]) if packed else np.zeros((0, spec.size, spec.size), np.uint8),
        labels=labels_of(records),
        split=np.array([r.split for r in records]),
        source=np.array([r.source for r in records]),
        paths=np.array([str(r.path) for r in records]),
        thumbs=np.stack(thumbs) if thumbs else np.zeros((0, THUMB_SIZE, THUMB_SIZE), np.float32),
        size=spec.size,
        preprocessing=spec.version,
        meta={**{k: np.array([getattr(r, k) for r in records], dtype=str) for k in META_TEXT},
              **{k: np.array([getattr(r, k) for r in records], dtype=np.int32) for k in META_INT}},
        masks=np.stack([empty if mask is None else mask for _, mask in packed]) if packed
        else np.zeros((0, MASK_SIZE, MASK_SIZE), np.uint8),
        mask_known=np.array([mask is not None for _, mask in packed], bool),
    )


def record_image_and_mask(record: ImageRecord, spec: PreprocessSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """Return a record's model image and its tumour mask in model-input cells (None where the source has none)."""
    from training.masks import model_mask, record_tumour_mask

    values, window = record_pixels(record)
    image, geometry = model_uint8(values, window, spec)
    mask = record_tumour_mask(record, values.shape[:2])
    return image, None if mask is None else model_mask(mask, geometry)

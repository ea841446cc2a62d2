"""Mirrored hemispheres: synthetic no-tumour slices from the tumour-free half of tcga-lgg tumour slices."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.paths import DATA
from training.data import PackedDataset, pack_dataset, record_pixels
from training.mirror import MIRROR_MARGIN_MM, apply_synthetic, head_midline, mirror_half, tumour_free_side
from training.sources import GLIOMA, NOTUMOR, TCGA_PIXEL_MM, list_tcga_lgg, tcga_mask_path
from training.train import TrainConfig, make_split, sampling_weights
from convnest_viewer.inference.card import PreprocessSpec

TCGA = DATA / "tcga-lgg"
CASES = ("TCGA_CS_4941_19960909", "TCGA_DU_5849_19950405", "TCGA_HT_7473_19970826", "TCGA_HT_7475_19970918")


@pytest.fixture(scope="module")
def listing():
    return list_tcga_lgg(TCGA, only=CASES)


def _mask_of(record) -> np.ndarray:
    return cv2.imread(str(tcga_mask_path(record)), cv2.IMREAD_GRAYSCALE) > 127


def test_mirror_half_reflects_one_side_across_the_midline():
    values = np.arange(6 * 10, dtype=np.float32).reshape(6, 10)
    left = mirror_half(values, 5.0, "left")
    assert np.array_equal(left[:, :5], values[:, :5]) and np.array_equal(left[:, 5:], values[:, 4::-1])
    right = mirror_half(values, 5.0, "right")
    assert np.array_equal(right[:, 5:], values[:, 5:]) and np.array_equal(right[:, :5], values[:, 9:4:-1])
    off_centre = mirror_half(values, 3.0, "left")  # columns with no partner get the background
    assert np.array_equal(off_centre[:, 3:6], values[:, 2::-1]) and np.all(off_centre[:, 6:] == values.min())
    with pytest.raises(ValueError):
        mirror_half(values, 5.0, "up")


def test_the_tumour_free_side_needs_the_whole_mask_beyond_the_margin():
    mask = np.zeros((20, 40), bool)
    mask[5:10, 28:34] = True
    assert tumour_free_side(mask, 20.0, 5) == "left"
    assert tumour_free_side(mask[:, ::-1], 20.0, 5) == "right"
    assert tumour_free_side(mask, 20.0, 10) is None, "the mask comes within the margin of the midline"
    assert tumour_free_side(np.zeros_like(mask), 20.0, 5) is None


def test_mirrored_records_come_from_one_sided_tumour_slices_and_hold_no_tumour(listing):
    synthetic = [r for r in listing.records if r.synthetic]
    real_tumour = {(r.case, r.sequence, r.slice_index) for r in listing.records if r.label == GLIOMA and not r.synthetic}
    assert synthetic and listing.left_out["tumour on both sides of the midline (not mirrored)"] > 0
    assert {r.sequence for r in synthetic} == {"t1", "flair", "t1c"}
    for record in synthetic[::5]:
        assert record.label == NOTUMOR and (record.case, record.sequence, record.slice_index) in real_tumour
        image = cv2.imread(str(record.path), cv2.IMREAD_GRAYSCALE)
        midline = head_midline(image)
        mask = _mask_of(record)
        kept = np.arange(mask.shape[1]) < midline if record.synthetic == "mirror-left" else np.arange(mask.shape[1]) >= midline
        assert not mask[:, kept].any(), "the kept half holds no tumour"
        margin = MIRROR_MARGIN_MM / TCGA_PIXEL_MM
        columns = np.flatnonzero(mask.any(axis=0))
        assert min(abs(columns - midline)) >= margin - 1
        values, _ = record_pixels(record)
        assert np.array_equal(values, apply_synthetic(image.astype(np.float32), record.synthetic))
        # the kept half is untouched and the tumour is gone: the mask's pixels now show the other side
        assert np.array_equal(values[:, kept], image[:, kept].astype(np.float32))
        assert np.mean(values[mask] != image[mask]) > 0.9


def test_synthetic_slices_train_only_and_share_their_class_weight(listing, tmp_path):
    data = PackedDataset.load(pack_dataset(listing.records, PreprocessSpec(version="letterbox-v2", size=48))
                              .save(tmp_path / "mirror.npz"))
    synthetic = data.meta["synthetic"] != ""
    assert synthetic.sum() == sum(1 for r in listing.records if r.synthetic), "the tag survives the npz round trip"
    config = TrainConfig(size=48, holdout_institutions="CS", val_fraction=0.34, source_weights="tcga-lgg:1")
    split = make_split(data, config)
    assert not synthetic[split.val].any() and not synthetic[split.test].any(), "figures are measured on real slices"
    assert synthetic[split.train].any()
    weights = sampling_weights(data, split.train, config)
    notumor = data.labels[split.train] == NOTUMOR
    real, mirrored = notumor & ~synthetic[split.train], notumor & synthetic[split.train]
    assert weights[real].sum() == pytest.approx(weights[mirrored].sum()) == pytest.approx(0.25)

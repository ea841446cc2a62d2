"""Multi-source data: tcga-lgg and label-volume listing rules, patient-safe splits, letterbox-v2, augmentation, sampling."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from convnest_viewer.inference.card import CLASS_IDS, ModelCardError, PreprocessSpec, load_card
from convnest_viewer.inference.preprocess import model_uint8, preprocess, unletterbox
from convnest_viewer.io import load_study
from tests.paths import DATA, SHARED
from training.augment import AugmentConfig, augment, random_curves
from training.data import PackedDataset, pack_dataset
from training.sources import (GLIOMA, MIN_GAP_MM, MIN_TUMOUR_MM2, NOTUMOR, TCGA_PIXEL_MM, TCGA_SLICE_MM, list_label_volumes,
                              list_tcga_lgg, slice_labels, tcga_mask_path)
from training.train import TrainConfig, make_split, sampling_weights

TCGA = DATA / "tcga-lgg"
BRATS = DATA / "brats2013-hgg"
HEALTHY_T1 = SHARED / "nifti" / "healthy-volunteer" / "chris_t1.nii.gz"
# two patients of each of three institutions
FEW_CASES = ("TCGA_CS_4941_19960909", "TCGA_CS_4942_19970222", "TCGA_DU_5849_19950405", "TCGA_DU_5851_19950428",
             "TCGA_HT_7473_19970826", "TCGA_HT_7475_19970918")
V2 = PreprocessSpec(version="letterbox-v2", size=64)


@pytest.fixture(scope="module")
def few_tcga():
    return list_tcga_lgg(TCGA, only=FEW_CASES)


@pytest.fixture(scope="module")
def small_multi_pack(few_tcga, tmp_path_factory):
    """Six tcga-lgg patients, the brats cases' axial slices and a few brain-tumor-mri images, packed at 64 px."""
    from training.data import list_dataset

    btm = list_dataset(DATA / "brain-tumor-mri")
    picked = [r for r in btm if r.split == "train"][::400] + [r for r in btm if r.split == "test"][::200]
    brats = [r for r in list_label_volumes(BRATS).records if r.plane == "axial"][::4]
    data = pack_dataset(picked + few_tcga.records + brats, V2)
    return PackedDataset.load(data.save(tmp_path_factory.mktemp("pack") / "multi.npz"))


def test_slice_rule_labels_tumour_no_tumour_and_leaves_the_rest_out():
    area = np.array([0, 0, 0, 0, 40, 300, 500, 0, 0, 0, 0])
    head = np.array([0.05, 0.3, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.1])
    labels, reasons = slice_labels(area, head, slice_mm=5.0)
    assert labels[5] == labels[6] == GLIOMA
    assert labels[4] == -1 and "smaller" in reasons[4]
    assert labels[3] == -1 and "next to" in reasons[3], "5 mm from the tumour is too close"
    assert labels[2] == NOTUMOR and labels[8] == labels[9] == NOTUMOR
    assert labels[0] == -1 and "head" in reasons[0]
    assert labels[10] == -1 and "head" in reasons[10]


def test_tcga_listing_follows_the_masks(few_tcga):
    records = few_tcga.records
    assert {r.case for r in records} == set(FEW_CASES)
    assert {r.sequence for r in records} == {"t1", "flair", "t1c"}
    assert sum(few_tcga.left_out.values()) > 0, "top, bottom and near-tumour slices are left out"
    by_case: dict = {}
    for record in records:
        if not record.synthetic:
            by_case.setdefault((record.case, record.sequence), []).append(record)
        mask = cv2.imread(str(tcga_mask_path(record)), cv2.IMREAD_GRAYSCALE)
        area = (mask > 127).sum() * TCGA_PIXEL_MM ** 2
        if record.label == GLIOMA:
            assert area >= MIN_TUMOUR_MM2
        elif record.synthetic:
            assert record.label == NOTUMOR and area >= MIN_TUMOUR_MM2, "mirrored halves come from tumour slices"
        else:
            assert record.label == NOTUMOR and area == 0
    for (case, sequence), rows in by_case.items():
        tumour = [r.slice_index for r in rows if r.label == GLIOMA]
        for row in rows:
            if row.label == NOTUMOR and tumour:
                assert min(abs(row.slice_index - t) for t in tumour) * TCGA_SLICE_MM >= MIN_GAP_MM
    assert {CLASS_IDS[r.label] for r in records} == {"glioma", "notumor"}


def test_label_volumes_are_resliced_into_three_planes_with_their_cases():
    listing = list_label_volumes(BRATS)
    planes = {(r.case, r.sequence, r.plane) for r in listing.records}
    assert len({case for case, _, _ in planes}) == 6
    assert {plane for _, _, plane in planes} == {"axial", "coronal", "sagittal"}
    assert {r.split for r in listing.records} == {"train", "validation", "test"}
    from training.volumes import volume_array

    record = next(r for r in listing.records if r.plane == "coronal" and r.label == GLIOMA)
    labels = volume_array(record.path.parent / "OTMultiClass.nii.gz")
    assert labels[::-1, record.slice_index, :].sum() > 0, "the coronal slice holds tumour in the label map"


def test_the_packed_dataset_never_splits_a_patient(small_multi_pack):
    data = small_multi_pack
    config = TrainConfig(size=64, holdout_institutions="CS", val_fraction=0.34)
    split = make_split(data, config)
    sides = {}
    for name, part in (("train", split.train), ("val", split.val), ("test", split.test)):
        for index in part:
            if data.case[index]:
                sides.setdefault(data.case[index], set()).add(name)
    assert sides and all(len(s) == 1 for s in sides.values()), {c: s for c, s in sides.items() if len(s) > 1}
    tcga_test = {data.case[i] for i in split.test if data.source[i] == "tcga-lgg"}
    assert tcga_test == {"TCGA_CS_4941_19960909", "TCGA_CS_4942_19970222"}, "the held-out institution is the test"
    assert any(data.source[i] == "tcga-lgg" for i in split.val), "other patients give validation"
    brats_sides = {data.case[i]: n for n, part in (("train", split.train), ("val", split.val), ("test", split.test))
                   for i in part if data.source[i] == "brats2013-hgg"}
    assert brats_sides == {"brats_2013_pat0005_1": "train", "brats_2013_pat0006_1": "train", "brats_2013_pat0003_1": "val",
                           "brats_2013_pat0004_1": "val", "brats_2013_pat0001_1": "test", "brats_2013_pat0002_1": "test"}
    # the meta columns survive the npz round trip
    assert set(data.sequence) >= {"t1", "flair", "t1c", ""} and set(data.institution) >= {"CS", "DU", "HT"}


def test_the_card_learns_each_tumour_types_trained_contrasts_from_the_pack(small_multi_pack):
    from training.export import trained_contrasts

    found = trained_contrasts(small_multi_pack, min_slices=1)
    # tcga-lgg and brats gliomas on three contrasts; brain-tumor-mri's tumours (no sequence recorded) are T1c
    assert found == {"glioma": ["flair", "t1", "t1c"], "meningioma": ["t1c"], "pituitary": ["t1c"]}
    assert "meningioma" not in trained_contrasts(small_multi_pack), "a handful of slices is not trained on"


def test_balanced_sampling_gives_each_source_its_share_and_classes_equal_shares(small_multi_pack):
    data = small_multi_pack
    config = TrainConfig(size=64, source_weights="brain-tumor-mri:0.5,tcga-lgg:0.3,brats2013-hgg:0.2")
    split = make_split(data, config)
    weights = sampling_weights(data, split.train, config)
    sources, labels = data.source[split.train], data.labels[split.train]
    assert weights.sum() == pytest.approx(1.0)
    for source, share in config.weights_of_sources().items():
        assert weights[sources == source].sum() == pytest.approx(share)
        classes = np.unique(labels[sources == source])
        for label in classes:
            assert weights[(sources == source) & (labels == label)].sum() == pytest.approx(share / len(classes))


def test_sequence_weights_draw_one_sequence_more_often_without_moving_source_or_class_shares(small_multi_pack):
    data = small_multi_pack
    plain = TrainConfig(size=64, source_weights="brain-tumor-mri:0.5,tcga-lgg:0.3,brats2013-hgg:0.2")
    config = TrainConfig(size=64, source_weights=plain.source_weights, sequence_weights="tcga-lgg/t1c:2")
    split = make_split(data, config)
    before, after = sampling_weights(data, split.train, plain), sampling_weights(data, split.train, config)
    sources, labels, sequences = (data.source[split.train], data.labels[split.train], data.sequence[split.train])
    tcga = sources == "tcga-lgg"
    for label in np.unique(labels[tcga]):
        cell = tcga & (labels == label)
        assert after[cell].sum() == pytest.approx(before[cell].sum()), "a class keeps its share"
        real = cell & (data.meta["synthetic"][split.train] == "")
        t1c, flair = real & (sequences == "t1c"), real & (sequences == "flair")
        assert t1c.any() and flair.any()
        # one T1c slice is drawn twice as often as one FLAIR slice of the same source and class (real slices)
        assert after[t1c].mean() == pytest.approx(2 * after[flair].mean())
        assert after[t1c].sum() > before[t1c].sum()
    brats_t1c = (sources == "brats2013-hgg") & (sequences == "t1c")
    assert brats_t1c.any() and after[brats_t1c] == pytest.approx(before[brats_t1c]), "another source's T1c is untouched"
    everywhere = sampling_weights(data, split.train, TrainConfig(size=64, source_weights=plain.source_weights,
                                                                 sequence_weights="t1c:2"))
    assert everywhere[brats_t1c].sum() > before[brats_t1c].sum(), "a bare sequence name counts in every source"


def test_a_malformed_source_weight_is_refused_before_the_pack_is_read(tmp_path, capsys):
    from training import options
    from training.cli import main

    assert options.weights(" tcga-lgg:0.7, brats2013-hgg:0.3,") == {"tcga-lgg": 0.7, "brats2013-hgg": 0.3}
    assert options.names("CS, HT,,CS") == ["CS", "HT"]
    for bad in ("tcga-lgg", "tcga-lgg:many", "tcga-lgg:-1", "tcga-lgg:0.5,tcga-lgg:0.6"):
        with pytest.raises(SystemExit) as stop:
            main(["train", str(tmp_path / "missing.npz"), "--run", str(tmp_path / "run"), "--source-weights", bad])
        assert stop.value.code == 2
        assert "--source-weights" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", str(tmp_path / "missing.npz"), "--run", str(tmp_path / "run"), "--sequence-weights", "t1c:x"])
    assert "--sequence-weights" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_app_and_training_inputs_are_identical_for_tcga_and_volume_slices(few_tcga):
    from training.data import record_image_and_mask
    from training.sources import list_healthy_volume

    record = next(r for r in few_tcga.records if r.label == GLIOMA)
    series = load_study([record.path]).series[0]
    app_input, _ = preprocess(series.pixels(0), series.window(0), V2)
    packed = record_image_and_mask(record, V2)[0]
    assert np.array_equal(app_input[0], ((packed.astype(np.float32) / 255) - 0.5) / 0.5)
    axial = next(r for r in list_healthy_volume(HEALTHY_T1).records if r.plane == "axial" and r.slice_index == 100)
    series = load_study([HEALTHY_T1]).series[0]
    app_image, _ = model_uint8(series.pixels(100), series.window(100), V2)
    assert np.array_equal(app_image, record_image_and_mask(axial, V2)[0])


def test_letterbox_v2_makes_the_head_scale_independent_of_the_field_of_view():
    image = cv2.imread(str(TCGA / "TCGA_CS_4942_19970222" / "TCGA_CS_4942_19970222_12_flair.jpg"), cv2.IMREAD_GRAYSCALE)
    padded = np.zeros((512, 512), np.uint8)
    padded[100:356, 150:406] = image  # the same head in a field of view twice as large
    window = load_study([TCGA / "TCGA_CS_4942_19970222" / "TCGA_CS_4942_19970222_12_flair.jpg"]).series[0].window(0)
    spec_v1 = PreprocessSpec(version="letterbox-v1", size=128)
    spec_v2 = PreprocessSpec(version="letterbox-v2", size=128)
    near = lambda a, b: np.abs(a.astype(int) - b.astype(int)).mean()  # noqa: E731
    v2_small, geometry = model_uint8(image.astype(np.float32), window, spec_v2)
    v2_large, _ = model_uint8(padded.astype(np.float32), window, spec_v2)
    v1_small, _ = model_uint8(image.astype(np.float32), window, spec_v1)
    v1_large, _ = model_uint8(padded.astype(np.float32), window, spec_v1)
    assert near(v2_small, v2_large) < 3.0 < near(v1_small, v1_large)
    assert geometry.crop is not None and geometry.crop.height < 256
    # the crop is undone: a map over the input lands on the head's pixels of the original slice
    back = unletterbox(np.ones((128, 128), np.float32), geometry)
    assert back.shape == image.shape and back[geometry.crop.slices].min() > 0.99 and back.sum() < back.size


def test_letterbox_v2_leaves_blank_and_noise_slices_whole():
    from convnest_viewer.io import percentile_window

    for image in (np.zeros((200, 150), np.float32), np.random.default_rng(0).random((200, 150)).astype(np.float32) * 40):
        model_image, geometry = model_uint8(image, percentile_window(image), V2)
        whole = geometry.crop is None or (geometry.crop.height, geometry.crop.width) == image.shape
        assert model_image.shape == (64, 64) and whole


def test_load_card_refuses_an_unknown_preprocessing_version(tmp_path):
    from tests.tiny_model import write_tiny_model

    folder = write_tiny_model(tmp_path / "tiny")
    raw = json.loads((folder / "model_card.json").read_text())
    assert raw["preprocessing"]["version"] == "letterbox-v2"
    raw["preprocessing"]["version"] = "letterbox-v9"
    (folder / "model_card.json").write_text(json.dumps(raw))
    with pytest.raises(ModelCardError, match="letterbox-v9"):
        load_card(folder)


def test_random_curves_keep_the_background_black_and_can_reverse_tissue_order():
    ramp = torch.linspace(0, 1, 256).view(1, 1, 1, 256).repeat(64, 1, 1, 1)
    generator = torch.Generator().manual_seed(0)
    everywhere = torch.ones(64, dtype=torch.bool)
    inverted = random_curves(ramp, everywhere, everywhere, generator)[:, 0, 0]
    rising = random_curves(ramp, everywhere, ~everywhere, generator)[:, 0, 0]
    assert inverted[:, :7].abs().max() == 0 and rising[:, :7].abs().max() == 0, "values below 3% of white stay black"
    assert (inverted[:, 60] > inverted[:, 250]).all(), "inverted curves make dark tissue bright and bright tissue dark"
    assert (torch.diff(rising[:, 30:], dim=1) >= -1e-6).all(), "the other curves keep the tissue order"
    untouched = random_curves(ramp, ~everywhere, everywhere, generator)
    assert torch.equal(untouched, ramp)


def test_augmentation_is_reproducible_and_keeps_the_input_shape(small_multi_pack):
    images = torch.from_numpy(small_multi_pack.images[:16]).unsqueeze(1)
    config = AugmentConfig.sequences()
    first = augment(images, V2, config, torch.Generator().manual_seed(5))
    again = augment(images, V2, config, torch.Generator().manual_seed(5))
    other = augment(images, V2, config, torch.Generator().manual_seed(6))
    assert first.shape == (16, 1, 64, 64) and torch.equal(first, again) and not torch.equal(first, other)
    assert first.min() >= -1.0 and first.max() <= 1.0


def test_random_erasing_hides_one_rectangle_of_the_chosen_images_under_noise():
    from training.augment import random_erasing

    x = torch.full((6, 1, 40, 40), 0.5)
    chosen = torch.tensor([True, False, True, True, False, True])
    out = random_erasing(x, chosen, torch.Generator().manual_seed(3))
    changed = (out != 0.5)[:, 0]
    assert not changed[~chosen].any(), "images not chosen are untouched"
    for mask in changed[chosen]:
        rows, columns = torch.nonzero(mask, as_tuple=True)
        assert len(rows), "each chosen image loses a rectangle"
        box = (rows.max() - rows.min() + 1) * (columns.max() - columns.min() + 1)
        assert 0.01 * 1600 <= box <= 0.16 * 1600 + 80, "2-15% of the image, in one rectangle"
        assert mask.sum() >= 0.9 * box, "filled throughout (noise, almost never exactly the old value)"
    from training.train import TrainConfig

    assert TrainConfig(random_erasing=0.25).augment.erase == 0.25 and TrainConfig().augment.erase == 0.0


HEALTHY_SAGITTAL_2D = SHARED / "dicom" / "patient-positions" / "In" / "HFS" / "3_t1_fl2d_sag"  # 35 slices 4.8 mm apart
HEALTHY_3D_2MM = SHARED / "dicom" / "enhanced-multiframe" / "In" / "5_anat-T1w_acq-tfl"  # 96 frames, 2 mm isotropic


def test_a_healthy_dicom_series_gives_no_tumour_slices_in_the_planes_it_samples():
    from training.sources import list_healthy_volume, list_source

    thick = list_healthy_volume(HEALTHY_SAGITTAL_2D)
    assert {r.plane for r in thick.records} == {"sagittal"}  # 4.8 mm apart: never resliced
    assert thick.left_out["axial plane not sampled finely enough"] == 1
    assert all(r.label == NOTUMOR and r.sequence == "t1" and r.source == "healthy-heads" for r in thick.records)
    assert thick.records[0].case == "HFS_3_t1_fl2d_sag" and thick.records[0].slice_count == 35
    # every slice (4.8 mm apart) is considered; the ears and the slices beside the head are left out
    assert len(thick.records) + sum(thick.left_out[k] for k in ("too little head visible", "blank slice")) == 35
    assert 20 <= len(thick.records) < 35
    isotropic = list_source(HEALTHY_3D_2MM, healthy=True)
    planes = {plane: sum(r.plane == plane for r in isotropic.records) for plane in ("axial", "coronal", "sagittal")}
    assert all(count >= 30 for count in planes.values()), planes


def test_training_reads_a_dicom_series_slice_as_the_app_shows_it():
    from training.data import record_image_and_mask
    from training.sources import list_healthy_volume

    records = list_healthy_volume(HEALTHY_SAGITTAL_2D).records
    series = load_study([HEALTHY_SAGITTAL_2D]).series[0]
    for record in records[::7]:
        # the volume runs right to left; the app's series runs in its file order, left to right here
        shown = series.n_slices - 1 - record.slice_index
        app_image, _ = model_uint8(series.pixels(shown), series.window(shown), V2)
        assert np.array_equal(app_image, record_image_and_mask(record, V2)[0]), record.slice_index


def test_reslices_of_a_dicom_series_share_the_axes_of_the_slices_the_app_shows():
    from training.volumes import dicom_series_volume, take_slice

    volume = dicom_series_volume(HEALTHY_3D_2MM)
    series = load_study([HEALTHY_3D_2MM]).series[0]
    assert volume.own_plane == "sagittal" and volume.planes == ("axial", "coronal", "sagittal")
    assert volume.array.shape == (128, 128, 96) and volume.spacing == pytest.approx((2.0, 2.0, 2.0))
    x = 40
    shown = series.pixels(int(volume.shown_index[x]))  # the app's sagittal slice: head up, face left
    assert np.array_equal(take_slice(volume.array, "sagittal", x), shown)
    rows, columns = shown.shape
    for row in (30, 64, 100):  # an axial slice at that height: face up (its rows are the sagittal slice's columns)
        z = rows - 1 - row
        assert np.array_equal(take_slice(volume.array, "axial", z)[:, x], shown[row])
    for column in (20, 70):  # a coronal slice at that depth: head up (its rows are the sagittal slice's rows)
        assert np.array_equal(take_slice(volume.array, "coronal", column)[:, x], shown[:, column])

"""Mask guidance: packed tumour masks sit where the tumour is in the model input, move with augmentation, and
train an auxiliary head that the exported model does not carry."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from convnest_viewer.inference.card import CLASS_IDS, PreprocessSpec
from convnest_viewer.inference.preprocess import model_uint8, unletterbox
from tests.paths import DATA
from training.augment import AugmentConfig, augment
from training.data import PackedDataset, list_dataset, pack_dataset, record_pixels
from training.mask_guidance import classifier_cell_log_odds, mask_loss
from training.masks import MASK_SIZE, model_mask, record_tumour_mask
from training.sources import list_label_volumes, list_tcga_lgg
from training.train import Trainer, TrainConfig

SPEC = PreprocessSpec(version="letterbox-v2", size=64)
GLIOMA, NOTUMOR = CLASS_IDS.index("glioma"), CLASS_IDS.index("notumor")


@pytest.fixture(scope="module")
def masked_pack(tmp_path_factory):
    """Two tcga-lgg patients, some brats axial slices and a few brain-tumor-mri images, packed at 64 px."""
    tcga = list_tcga_lgg(DATA / "tcga-lgg", only=("TCGA_CS_4941_19960909", "TCGA_DU_5849_19950405")).records
    brats = [r for r in list_label_volumes(DATA / "brats2013-hgg").records if r.plane == "axial"][::6]
    btm = list_dataset(DATA / "brain-tumor-mri")[::300]
    records = tcga + brats + btm
    data = pack_dataset(records, SPEC)
    return records, PackedDataset.load(data.save(tmp_path_factory.mktemp("pack") / "masked.npz"))


def test_packed_masks_map_back_onto_each_slices_own_tumour(masked_pack):
    records, data = masked_pack
    assert data.masks.shape == (len(records), MASK_SIZE, MASK_SIZE)
    known = {source: data.mask_known[data.source == source] for source in np.unique(data.source)}
    assert known["tcga-lgg"].all() and known["brats2013-hgg"].all() and not known["brain-tumor-mri"].any()
    tumour_cells = data.masks.max(axis=(1, 2)) > 0
    assert tumour_cells[(data.labels == GLIOMA) & data.mask_known].all()
    assert not tumour_cells[data.labels == NOTUMOR].any()
    checked = 0
    for i in np.flatnonzero((data.labels == GLIOMA) & data.mask_known)[::5]:
        values, window = record_pixels(records[i])
        truth = record_tumour_mask(records[i], values.shape[:2])
        _, geometry = model_uint8(values, window, SPEC)
        # through the app's own inverse (the heatmap path), the packed cells must land on the source mask
        back = unletterbox(cv2.resize(data.masks[i].astype(np.float32) / 255, (SPEC.size, SPEC.size)), geometry) > 0.5
        overlap = (back & truth).sum() / max((back | truth).sum(), 1)
        assert overlap > 0.5, (records[i].case, records[i].slice_index, overlap)
        checked += 1
    assert checked >= 5


def test_a_mask_needs_its_slices_shape(masked_pack):
    records, _ = masked_pack
    values, window = record_pixels(records[0])
    _, geometry = model_uint8(values, window, SPEC)
    with pytest.raises(ValueError, match="mask is"):
        model_mask(np.zeros((10, 10), bool), geometry)


def test_augmentation_moves_each_mask_with_its_image_and_draws_the_same_transforms():
    images = torch.zeros(16, 1, 64, 64, dtype=torch.uint8)
    images[:, :, 8:24, 36:52] = 255  # a bright square off centre
    masks = torch.zeros(16, 1, 16, 16, dtype=torch.uint8)
    masks[:, :, 2:6, 9:13] = 255  # the same square at a quarter of the size
    config = AugmentConfig(rotation_degrees=25, scale=0.15, translate=0.1, hflip=0.5, brightness=0, contrast=0, gamma=0)
    inputs, moved = augment(images, SPEC, config, torch.Generator().manual_seed(3), masks)
    alone = augment(images, SPEC, config, torch.Generator().manual_seed(3))
    assert torch.equal(inputs, alone)
    assert moved.shape == (16, 1, 16, 16) and 0 <= float(moved.min()) and float(moved.max()) <= 1
    bright = (inputs[:, 0] * SPEC.std[0] + SPEC.mean[0]).clamp(0, 1)
    rows = torch.arange(64, dtype=torch.float32) + 0.5
    cell_rows = (torch.arange(16, dtype=torch.float32) + 0.5) * 4
    moved_columns = {round(float((moved[i, 0].sum(0) * cell_rows).sum() / moved[i, 0].sum())) for i in range(16)}
    assert len(moved_columns) > 4  # the transforms differ between images
    for i in range(16):
        image_centre = ((bright[i].sum(1) * rows).sum() / bright[i].sum(), (bright[i].sum(0) * rows).sum() / bright[i].sum())
        mask_centre = ((moved[i, 0].sum(1) * cell_rows).sum() / moved[i, 0].sum(),
                       (moved[i, 0].sum(0) * cell_rows).sum() / moved[i, 0].sum())
        assert abs(float(image_centre[0] - mask_centre[0])) < 2.5 and abs(float(image_centre[1] - mask_centre[1])) < 2.5, i


def test_mask_loss_rewards_the_tumours_place_and_ignores_unknown_masks():
    masks = torch.zeros(2, 1, 8, 8)
    masks[0, 0, :4, :4] = 1.0  # tumour in the top-left quarter
    right = torch.full((2, 1, 2, 2), -6.0)
    right[0, 0, 0, 0] = 6.0
    wrong = torch.full((2, 1, 2, 2), -6.0)
    wrong[0, 0, 1, 1] = 6.0
    known = torch.tensor([True, True])
    assert float(mask_loss(right, masks, known)) < 0.01 < float(mask_loss(wrong, masks, known))
    only_second = torch.tensor([False, True])
    assert float(mask_loss(wrong, masks, only_second)) < 0.01  # the first image's mask is unknown: not counted
    assert float(mask_loss(wrong, masks, torch.tensor([False, False]))) == 0.0
    with pytest.raises(ValueError, match="batch sizes differ"):
        mask_loss(right[:1], masks, known)


def _config(**overrides) -> TrainConfig:
    values = dict(architecture="test_convnext", size=SPEC.size, epochs=2, batch_size=8, lr=2e-3, warmup_epochs=0.5,
                  ema_decay=0.9, val_fraction=0.2, seed=7, device="cpu", epoch_images=48, mask_guidance=1.0,
                  source_weights="brain-tumor-mri:0.3,tcga-lgg:0.5,brats2013-hgg:0.2")
    values.update(overrides)
    return TrainConfig(**values)


def test_a_mask_guided_run_learns_its_head_resumes_it_and_exports_the_plain_classifier(masked_pack, tmp_path):
    _, data = masked_pack
    straight = Trainer(_config(), data, tmp_path / "straight")
    start = {k: v.clone() for k, v in straight.mask_head.state_dict().items()}
    straight.fit(progress=False)
    assert not torch.equal(start["conv.weight"], straight.mask_head.state_dict()["conv.weight"])
    assert all(np.isfinite(row["train_mask_loss"]) and row["train_mask_loss"] > 0 for row in straight.history)
    interrupted = Trainer(_config(), data, tmp_path / "resumed")
    interrupted.fit(stop_after_epochs=1, progress=False)
    resumed = Trainer(_config(), data, tmp_path / "resumed")
    assert resumed.load_checkpoint() and resumed.epoch == 1
    resumed.fit(progress=False)
    for name, tensor in straight.mask_head.state_dict().items():
        assert torch.equal(tensor, resumed.mask_head.state_dict()[name]), name
    for name, tensor in straight.final_model.state_dict().items():
        assert torch.equal(tensor, resumed.final_model.state_dict()[name]), name
    assert not any("mask" in name for name in straight.final_model.state_dict())
    plain = Trainer(_config(mask_guidance=0.0), data, tmp_path / "plain")
    assert set(plain.final_model.state_dict()) == set(straight.final_model.state_dict())


def test_mask_guidance_refuses_a_pack_without_masks(masked_pack, tmp_path):
    _, data = masked_pack
    old = PackedDataset(data.images, data.labels, data.split, data.source, data.paths, data.thumbs, data.size,
                        data.preprocessing, dict(data.meta))
    with pytest.raises(ValueError, match="pack with tumour masks"):
        Trainer(_config(), old, tmp_path / "run")


def test_the_classifiers_cell_evidence_is_its_own_answer_where_every_cell_is_alike():
    from convnest_viewer.inference.card import ModelCard, default_classes
    from convnest_viewer.inference.factory import create_classifier

    torch.manual_seed(0)
    model = create_classifier(ModelCard(name="t", architecture="test_convnext", classes=default_classes(),
                                        preprocessing=SPEC)).eval()
    uniform = torch.randn(3, model.num_features, 1, 1).expand(-1, -1, 4, 4)  # the same features in every cell
    with torch.no_grad():
        cells = classifier_cell_log_odds(model, uniform, NOTUMOR)
        logits = model.forward_head(uniform)
    tumour = torch.logsumexp(logits[:, [i for i in range(len(CLASS_IDS)) if i != NOTUMOR]], 1) - logits[:, NOTUMOR]
    assert cells.shape == (3, 1, 4, 4)
    assert torch.allclose(cells, tumour.view(3, 1, 1, 1).expand(-1, 1, 4, 4), atol=1e-5)
    varied = torch.randn(3, model.num_features, 4, 4)
    with torch.no_grad():
        assert float(classifier_cell_log_odds(model, varied, NOTUMOR).std()) > 1e-3  # cells differ where features do


def test_a_run_guided_through_the_classifiers_own_head_adds_no_parameters(masked_pack, tmp_path):
    _, data = masked_pack
    trainer = Trainer(_config(mask_guidance_map="classifier", epochs=1), data, tmp_path / "classifier")
    assert trainer.mask_head is None
    assert sum(len(group["params"]) for group in trainer.optimizer.param_groups) == len(list(trainer.model.parameters()))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit(progress=False)
    assert np.isfinite(trainer.history[0]["train_mask_loss"]) and trainer.history[0]["train_mask_loss"] > 0
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert not (tmp_path / "classifier" / "checkpoint" / "mask_head.safetensors").exists()
    with pytest.raises(ValueError, match="unknown mask guidance map"):
        Trainer(_config(mask_guidance_map="attention"), data, tmp_path / "other")

"""Tumour copy-paste: donors and recipients are training slices of one sequence, a pasted tumour lands inside the
recipient's head and relabels it, and a run with it trains, resumes and refuses what it cannot use."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convnest_viewer.inference.card import CLASS_IDS, PreprocessSpec
from tests.paths import DATA
from training.data import PackedDataset, pack_dataset
from training.sources import list_label_volumes, list_tcga_lgg
from training.train import Trainer, TrainConfig
from training.tumour_paste import HEAD_LEVEL, paste_pools, paste_tumours

SPEC = PreprocessSpec(version="letterbox-v2", size=64)
GLIOMA, NOTUMOR = CLASS_IDS.index("glioma"), CLASS_IDS.index("notumor")


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> PackedDataset:
    """Two tcga-lgg patients and some brats axial slices with their masks, packed at 64 px."""
    tcga = list_tcga_lgg(DATA / "tcga-lgg", only=("TCGA_CS_4941_19960909", "TCGA_DU_5849_19950405")).records
    brats = [r for r in list_label_volumes(DATA / "brats2013-hgg").records if r.plane == "axial"][::6]
    data = pack_dataset(tcga + brats, SPEC)
    return PackedDataset.load(data.save(tmp_path_factory.mktemp("pack") / "paste.npz"))


def _pools(data: PackedDataset, train: np.ndarray):
    return paste_pools(data.sequence, data.labels, data.masks, data.mask_known, train, GLIOMA, NOTUMOR)


def test_donors_and_recipients_are_training_slices_of_a_sequence_that_has_donors(pack):
    train = np.arange(0, len(pack), 2)  # every other slice: the rest stand for held-out slices
    pools = _pools(pack, train)
    assert set(pools.donors) == {"flair", "t1", "t1c"}
    for sequence, donors in pools.donors.items():
        donors = donors.numpy()
        assert len(donors) and np.isin(donors, train).all()
        assert (pack.labels[donors] == GLIOMA).all() and (pack.sequence[donors] == sequence).all()
        assert ((pack.masks[donors] > 127).reshape(len(donors), -1).sum(axis=1) >= 6).all()
    recipients = np.flatnonzero(pools.recipient.numpy())
    assert len(recipients) and np.isin(recipients, train).all() and (pack.labels[recipients] == NOTUMOR).all()
    assert not pools.recipient.numpy()[np.setdiff1d(np.arange(len(pack)), train)].any()


def test_a_pasted_tumour_lands_inside_the_recipients_head_and_makes_it_a_tumour_slice(pack):
    train = np.arange(len(pack))
    pools = _pools(pack, train)
    batch = torch.from_numpy(np.concatenate([np.flatnonzero(pack.labels == NOTUMOR), np.flatnonzero(pack.labels == GLIOMA)[:8]]))
    images = torch.from_numpy(pack.images[batch.numpy()]).unsqueeze(1)
    labels = torch.from_numpy(pack.labels[batch.numpy()]).long()
    every = torch.from_numpy(pack.images).unsqueeze(1)
    pasted, relabelled = paste_tumours(images, labels, batch, every, torch.from_numpy(pack.masks), pools, 1.0, GLIOMA,
                                       torch.Generator().manual_seed(3))
    again, _ = paste_tumours(images, labels, batch, every, torch.from_numpy(pack.masks), pools, 1.0, GLIOMA,
                             torch.Generator().manual_seed(3))
    assert torch.equal(pasted, again)  # one generator decides everything
    changed = (pasted.int() - images.int()).abs()[:, 0] > 8
    moved = relabelled != labels
    assert (relabelled[moved] == GLIOMA).all() and (labels[moved] == NOTUMOR).all()
    assert moved.sum() >= 0.5 * (labels == NOTUMOR).sum()  # slices at the edge of the head may receive none
    assert not changed[~moved].any()  # a slice left as it was is left exactly as it was
    for row in torch.nonzero(moved).flatten().tolist():
        head = images[row, 0] > HEAD_LEVEL  # and its feathered rim, 2 px at 64 px
        head = torch.nn.functional.max_pool2d(head[None, None].float(), 5, stride=1, padding=2)[0, 0] > 0
        assert changed[row].sum() >= 4, row
        assert (changed[row] & ~head).sum() <= 0.02 * changed[row].sum(), row  # the tumour stays in the head


def test_a_run_with_tumour_paste_trains_resumes_the_same_and_refuses_what_it_cannot_use(pack, tmp_path):
    config = dict(architecture="test_convnext", size=SPEC.size, epochs=2, batch_size=8, lr=2e-3, warmup_epochs=0.5,
                  ema_decay=0.9, val_fraction=0.2, seed=7, device="cpu", epoch_images=48, tumour_paste=0.5,
                  source_weights="tcga-lgg:0.7,brats2013-hgg:0.3", holdout_institutions="")
    straight = Trainer(TrainConfig(**config), pack, tmp_path / "straight")
    assert len(straight.paste_pools.donors) and straight.paste_pools.recipient.any()
    straight.fit(progress=False)
    interrupted = Trainer(TrainConfig(**config), pack, tmp_path / "resumed")
    interrupted.fit(stop_after_epochs=1, progress=False)
    resumed = Trainer(TrainConfig(**config), pack, tmp_path / "resumed")
    assert resumed.load_checkpoint()
    resumed.fit(progress=False)
    for name, tensor in straight.final_model.state_dict().items():
        assert torch.equal(tensor, resumed.final_model.state_dict()[name]), name
    plain = Trainer(TrainConfig(**{**config, "tumour_paste": 0.0}), pack, tmp_path / "plain")
    plain.fit(progress=False)
    assert any(not torch.equal(t, plain.final_model.state_dict()[n]) for n, t in straight.final_model.state_dict().items())
    old = PackedDataset(pack.images, pack.labels, pack.split, pack.source, pack.paths, pack.thumbs, pack.size,
                        pack.preprocessing, dict(pack.meta))
    with pytest.raises(ValueError, match="pack with tumour masks"):
        Trainer(TrainConfig(**config), old, tmp_path / "old")
    with pytest.raises(ValueError, match="cannot be combined"):
        Trainer(TrainConfig(**{**config, "mask_guidance": 1.0}), pack, tmp_path / "both")


def test_paste_into_keeps_tumours_out_of_the_sources_it_does_not_name(pack, tmp_path):
    config = dict(architecture="test_convnext", size=SPEC.size, epochs=1, batch_size=8, device="cpu", tumour_paste=0.5,
                  source_weights="tcga-lgg:0.7,brats2013-hgg:0.3", holdout_institutions="")
    every = Trainer(TrainConfig(**config), pack, tmp_path / "every").paste_pools.recipient.numpy()
    only = Trainer(TrainConfig(**config, paste_into="brats2013-hgg"), pack, tmp_path / "only").paste_pools.recipient.numpy()
    assert (pack.source[every] == "tcga-lgg").any() and (pack.source[every] == "brats2013-hgg").any()
    assert only.any() and (pack.source[only] == "brats2013-hgg").all()
    assert np.array_equal(only, every & (pack.source == "brats2013-hgg"))  # nothing else about the pools changes
    with pytest.raises(ValueError, match="healthy-heads"):
        Trainer(TrainConfig(**config, paste_into="brats2013-hgg,healthy-heads"), pack, tmp_path / "unknown")

"""Carrying a run to a lent GPU machine and back: the training-side pack with its split, a time budget, the weights."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
import torch

from convnest_viewer.inference.card import PreprocessSpec
from training.carry import split_path
from training.cli import main as training_main
from training.data import PackedDataset, pack_dataset
from training.train import Trainer, TrainConfig, make_split
from tests.test_training import SIZE, _few_records

TINY = ["--architecture", "test_convnext", "--size", str(SIZE), "--batch-size", "8", "--val-fraction", "0.2",
        "--seed", "7", "--device", "cpu", "--warmup-epochs", "0.5", "--ema-decay", "0.9"]


@pytest.fixture(scope="module")
def full_pack(tmp_path_factory):
    """Real brain-tumor-mri images packed raw at 64 px (with a test split that must stay behind)."""
    data = pack_dataset(_few_records(), PreprocessSpec(size=SIZE))
    return data.save(tmp_path_factory.mktemp("full") / "full.npz")


def _carry(full_pack, tmp_path, *extra):
    out = tmp_path / "carried.npz"
    assert training_main(["carry-pack", str(full_pack), "--out", str(out), "--val-fraction", "0.2", "--seed", "7",
                          *extra]) == 0
    return out


def test_the_carried_pack_holds_exactly_the_training_side_of_the_full_split(full_pack, tmp_path):
    full = PackedDataset.load(full_pack)
    expected = make_split(full, TrainConfig(val_fraction=0.2, seed=7))
    assert len(expected.test) == 32 and len(expected.val) > 0
    carried_path = _carry(full_pack, tmp_path)
    carried = PackedDataset.load(carried_path)
    split = json.loads(split_path(carried_path).read_text())
    assert split["test"] == [] and len(carried) == len(expected.train) + len(expected.val)
    assert list(carried.paths[split["train"]]) == list(full.paths[expected.train])
    assert list(carried.paths[split["val"]]) == list(full.paths[expected.val])
    assert not set(carried.paths) & set(full.paths[expected.test]), "no held-out test image travels"
    # WebP at quality 40: smaller than the raw pack and close to its pixels
    assert carried_path.stat().st_size < full_pack.stat().st_size / 4
    rows = np.searchsorted(full.paths, carried.paths, sorter=np.argsort(full.paths))
    original = full.images[np.argsort(full.paths)[rows]]
    assert np.abs(carried.images.astype(int) - original.astype(int)).mean() < 6.0
    assert np.array_equal(carried.labels, full.labels[np.argsort(full.paths)[rows]])


def test_a_carried_pack_trains_on_its_own_split_and_refuses_to_recompute_one(full_pack, tmp_path):
    carried_path = _carry(full_pack, tmp_path)
    run = tmp_path / "run"
    assert training_main(["train", str(carried_path), "--run", str(run), "--epochs", "1", *TINY]) == 0
    assert json.loads((run / "split.json").read_text()) == json.loads(split_path(carried_path).read_text())
    split_path(carried_path).unlink()
    with pytest.raises(ValueError, match="carried without thumbnails"):
        Trainer(TrainConfig(architecture="test_convnext", size=SIZE, device="cpu"), PackedDataset.load(carried_path),
                tmp_path / "other")


def test_a_time_budget_cuts_the_epochs_and_the_schedule_with_them(full_pack, tmp_path):
    data = PackedDataset.load(full_pack)
    config = dict(architecture="test_convnext", size=SIZE, epochs=6, batch_size=8, warmup_epochs=0.5, val_fraction=0.2,
                  seed=7, device="cpu")
    short = Trainer(TrainConfig(**config, time_budget=1e-3), data, tmp_path / "short")
    short.fit(progress=False)
    assert short.epoch == 1 and short.config.epochs == 1
    assert json.loads((tmp_path / "short" / "config.json").read_text())["epochs"] == 1
    # the cosine was rebuilt for the cut run: it ends where a one-epoch run's ends, not a sixth of the way down
    planned = Trainer(TrainConfig(**{**config, "epochs": 1}), data, tmp_path / "planned")
    planned.fit(progress=False)
    assert short.optimizer.param_groups[0]["lr"] == pytest.approx(planned.optimizer.param_groups[0]["lr"])
    assert short.optimizer.param_groups[0]["lr"] < 0.6 * short.config.lr
    roomy = Trainer(TrainConfig(**{**config, "epochs": 2, "time_budget": 1e6}), data, tmp_path / "roomy")
    roomy.fit(progress=False)
    assert roomy.epoch == 2 and roomy.config.epochs == 2


def test_weights_carried_back_rebuild_a_run_that_evaluates_on_the_full_pack(full_pack, tmp_path):
    carried_path = _carry(full_pack, tmp_path)
    run = tmp_path / "device-run"
    assert training_main(["train", str(carried_path), "--run", str(run), "--epochs", "2", *TINY]) == 0
    back = tmp_path / "out"
    assert training_main(["carry-back", "--run", str(run), "--out", str(back)]) == 0
    files = sorted(p.name for p in back.iterdir())
    assert files == ["run.tar.gz", "weights-model.safetensors"]
    assert all(p.stat().st_size < 15 * 2**20 for p in back.iterdir())
    with tarfile.open(back / "run.tar.gz") as archive:
        names = set(archive.getnames())
    assert {"config.json", "log.csv", "state.json"} <= names and "split.json" not in names
    here = tmp_path / "imported"
    assert training_main(["import-run", str(back), "--run", str(here)]) == 0
    full = PackedDataset.load(full_pack)
    imported = Trainer.from_run(here, full)
    device = Trainer.from_run(run, PackedDataset.load(carried_path))
    assert imported.epoch == 2 and imported.weights_only
    inputs = torch.rand(2, 1, SIZE, SIZE)
    with torch.no_grad():
        expected = device.final_model.eval()(inputs)
        got = imported.final_model.eval()(inputs)
    assert torch.allclose(expected, got, atol=2e-2), "fp16 shards carry the final (EMA) weights"
    assert not torch.allclose(device.model.eval()(inputs), expected, atol=1e-6), "the EMA, not the raw weights"
    assert training_main(["evaluate", str(full_pack), "--run", str(here), "--out", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["official_test"]["n"] == 32, "the held-out test is evaluated here, on the full pack"
    more = Trainer(TrainConfig.from_dict({**json.loads((here / "config.json").read_text()), "epochs": 3}), full, here)
    assert more.load_checkpoint() and more.weights_only
    with pytest.raises(ValueError, match="cannot resume"):
        more.fit(progress=False)


def test_the_gpu_script_runs_on_a_python_without_the_viewers_libraries(full_pack, tmp_path):
    """The prepared device script, end to end on the CPU, with pydicom, SimpleITK, Qt and captum made absent."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    carried = _carry(full_pack, tmp_path)
    out = tmp_path / "device-out"
    env = {**os.environ, "PYTHONPATH": str(root / "training" / "device" / "bare_python"), "OUT": str(out),
           "PACK": str(carried), "ARCH": "test_convnext", "SIZE": str(SIZE), "EPOCH_IMAGES": "32", "BATCH": "8",
           "EPOCHS": "2", "BUDGET": "120", "DEVICE": "cpu", "PYTHON": sys.executable, "RUN": str(tmp_path / "run")}
    done = subprocess.run(["bash", str(root / "training" / "device" / "gpu_train.sh")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "run.tar.gz", "weights-model.safetensors"]
    log = (out / "log.txt").read_text()
    assert "training on the split of" in log and "epoch 2" in log
    probe = subprocess.run([sys.executable, "-c", "import pydicom"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "not on the GPU machine" in probe.stderr, "the blocker really blocks"

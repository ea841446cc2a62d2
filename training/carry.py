"""What travels to and from a lent GPU machine: a small training-side pack with its split, and a run's weights.

Out: `carry_pack` keeps only the slices a run trains and validates on (the held-out tests stay here), stores them
as WebP or JPEG bytes, and writes the split beside the pack, so the machine trains on exactly the split the full
pack gives here. Back: `carry_back` writes a run's final weights as fp16 safetensors shards under 15 MiB and its
config and log as one archive; `import_run` turns those into a run folder here (weights only: it evaluates and
exports, it does not resume), and evaluation on the full pack recomputes the same split.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np

from training.data import PackedDataset
from training.train import CHECKPOINT, TrainConfig, TrainSplit, make_split

RUN_ARCHIVE = "run.tar.gz"
RUN_FILES = ("config.json", "log.csv", "log.json", "curves.png")  # split.json stays: it indexes the carried pack
WEIGHTS_PREFIX = "weights"


def carry_pack(data: PackedDataset, config: TrainConfig) -> tuple[PackedDataset, TrainSplit]:
    """Return the training and validation slices of a pack (the split `config` gives) and that split re-indexed."""
    split = make_split(data, config)
    keep = np.sort(np.concatenate([split.train, split.val]))
    position = {int(index): i for i, index in enumerate(keep)}
    subset = data.subset(keep)
    subset.thumbs = np.zeros((len(keep), 1, 1), np.float32)  # only the split needs them, and it travels ready-made
    return subset, TrainSplit(train=np.array([position[int(i)] for i in split.train], np.int64),
                              val=np.array([position[int(i)] for i in split.val], np.int64), test=np.zeros(0, np.int64))


def split_path(pack_path: Path) -> Path:
    """Return where the split of a carried pack is written (beside it)."""
    return Path(pack_path).with_suffix(".split.json")


def carry_back(run_dir: Path, out_dir: Path) -> list[Path]:
    """Write a finished run's final weights (fp16 shards) and its config and log (one archive) into out_dir."""
    from safetensors.torch import load_file

    from convnest_viewer.inference.weights import save_weights

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    checkpoint = run_dir / CHECKPOINT
    weights = checkpoint / "ema.safetensors"
    if not weights.is_file():
        weights = checkpoint / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{run_dir}: no checkpoint weights to carry back")
    state = json.loads((checkpoint / "state.json").read_text())
    entries = save_weights(load_file(str(weights)), out_dir / "shards")
    written = []
    for entry in entries:
        target = out_dir / f"{WEIGHTS_PREFIX}-{entry.file}"
        (out_dir / "shards" / entry.file).replace(target)
        written.append(target)
    (out_dir / "shards").rmdir()
    summary = json.dumps({"epoch": state["epoch"], "history": state["history"], "weights": weights.name}).encode()
    with tarfile.open(out_dir / RUN_ARCHIVE, "w:gz") as archive:
        for name in RUN_FILES:
            if (run_dir / name).is_file():
                archive.add(run_dir / name, arcname=name)
        entry = tarfile.TarInfo("state.json")
        entry.size = len(summary)
        archive.addfile(entry, io.BytesIO(summary))
    return [*written, out_dir / RUN_ARCHIVE]


def import_run(files_dir: Path, run_dir: Path) -> Path:
    """Rebuild a weights-only run folder from what carry_back wrote (evaluate and export read it; it cannot resume)."""
    from safetensors.torch import load_file, save_file

    files_dir, run_dir = Path(files_dir), Path(run_dir)
    shards = sorted(files_dir.glob(f"{WEIGHTS_PREFIX}-*.safetensors"))
    if not shards or not (files_dir / RUN_ARCHIVE).is_file():
        raise FileNotFoundError(f"{files_dir}: expected {WEIGHTS_PREFIX}-*.safetensors and {RUN_ARCHIVE} (from carry-back)")
    run_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(files_dir / RUN_ARCHIVE, "r:gz") as archive:
        members = [m for m in archive.getmembers() if m.isfile() and m.name in (*RUN_FILES, "state.json")]
        archive.extractall(run_dir, members=members, filter="data")
    state = json.loads((run_dir / "state.json").read_text())
    tensors = {}
    for shard in shards:
        tensors.update({k: v.float() if v.is_floating_point() else v for k, v in load_file(str(shard)).items()})
    checkpoint = run_dir / CHECKPOINT
    checkpoint.mkdir(exist_ok=True)
    for name in ("model.safetensors", "ema.safetensors"):  # the carried weights are the run's final ones
        save_file(tensors, str(checkpoint / name))
    (checkpoint / "state.json").write_text(json.dumps({"epoch": state["epoch"], "history": state["history"],
                                                       "weights_only": True, "carried": state.get("weights", "")}))
    (run_dir / "state.json").unlink()
    return run_dir

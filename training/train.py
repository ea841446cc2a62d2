"""Train any factory architecture on a packed dataset, on CPU or GPU, with checkpoints and resume."""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from convnest_viewer.inference.card import ModelCard, PreprocessSpec, default_classes
from convnest_viewer.inference.factory import create_classifier
from convnest_viewer.inference.preprocess import normalize_uint8
from training.augment import AugmentConfig, augment
from training.data import PackedDataset
from training.dedup import NEAR_DUPLICATE, duplicate_groups, near_duplicate_pairs
from training.splits import group_split

CHECKPOINT = "checkpoint"


@dataclass
class TrainConfig:
    """Everything that decides a training run (saved beside it, so a run can be repeated)."""

    architecture: str = "convnext_atto"
    size: int = 160
    epochs: int = 40
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 3.0
    label_smoothing: float = 0.1
    drop_path: float = 0.05
    ema_decay: float = 0.998  # 0 disables the EMA of weights
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA
    val_fraction: float = 0.1
    source: str = "brain-tumor-mri"
    max_train_images: int = 0  # 0: all (a cap is for quick tests)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def card(self, name: str) -> ModelCard:
        """Return a model card (without weights) for a model trained with this config."""
        return ModelCard(name=name, architecture=self.architecture, classes=default_classes(),
                         preprocessing=PreprocessSpec(size=self.size), drop_path_rate=self.drop_path)

    @classmethod
    def from_dict(cls, raw: dict) -> "TrainConfig":
        """Rebuild a config saved with asdict()."""
        raw = dict(raw)
        raw["augment"] = AugmentConfig(**raw.get("augment", {}))
        return cls(**raw)


@dataclass
class TrainSplit:
    """Indices into the packed dataset: training, validation (by duplicate groups) and official test."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def to_json(self) -> dict:
        """Return the split as lists of indices."""
        return {k: getattr(self, k).tolist() for k in ("train", "val", "test")}


def make_split(data: PackedDataset, config: TrainConfig) -> TrainSplit:
    """Split the source's official training images into train/validation by near-duplicate groups."""
    from_source = data.source == config.source
    official_train = np.flatnonzero(from_source & (data.split == "train"))
    official_test = np.flatnonzero(from_source & (data.split == "test"))
    groups = duplicate_groups(len(official_train), near_duplicate_pairs(data.thumbs[official_train], NEAR_DUPLICATE))
    rest, held_out = group_split(data.labels[official_train], groups, config.val_fraction, config.seed)
    train = official_train[rest]
    if config.max_train_images:
        rng = np.random.default_rng(config.seed)
        train = np.sort(rng.choice(train, size=min(config.max_train_images, len(train)), replace=False))
    return TrainSplit(train=train, val=official_train[held_out], test=official_test)


class Trainer:
    """One training run in a folder: config, split, per-epoch log, curves and a resumable checkpoint."""

    def __init__(self, config: TrainConfig, data: PackedDataset, run_dir: Path, split: TrainSplit | None = None) -> None:
        from convnest_viewer.inference.classifier import pick_device

        if data.size != config.size:
            raise ValueError(f"packed images are {data.size} px but the config asks for {config.size}; repack")
        self.config, self.data, self.run_dir = config, data, Path(run_dir)
        self.device = pick_device(config.device)
        self.spec = PreprocessSpec(size=config.size)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        split_file = self.run_dir / "split.json"
        if split is not None:
            self.split = split
            split_file.write_text(json.dumps(split.to_json()))
        elif split_file.is_file():
            raw = json.loads(split_file.read_text())
            self.split = TrainSplit(**{k: np.array(v, dtype=np.int64) for k, v in raw.items()})
        else:
            self.split = make_split(data, config)
            split_file.write_text(json.dumps(self.split.to_json()))
        (self.run_dir / "config.json").write_text(json.dumps(asdict(config), indent=2))
        torch.manual_seed(config.seed)
        self.model = create_classifier(config.card("run")).to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        from timm.optim import create_optimizer_v2
        from timm.scheduler import CosineLRScheduler
        from timm.utils import ModelEmaV3

        self.optimizer = create_optimizer_v2(self.model, opt=config.optimizer, lr=config.lr, weight_decay=config.weight_decay)
        self.steps_per_epoch = max(1, len(self.split.train) // config.batch_size)
        total = self.steps_per_epoch * config.epochs
        self.scheduler = CosineLRScheduler(self.optimizer, t_initial=total, lr_min=config.lr * 1e-3,
                                           warmup_t=int(config.warmup_epochs * self.steps_per_epoch),
                                           warmup_lr_init=config.lr * 1e-3, warmup_prefix=True, t_in_epochs=False)
        self.ema = ModelEmaV3(self.model, decay=config.ema_decay) if config.ema_decay > 0 else None
        self.images = torch.from_numpy(data.images).unsqueeze(1).to(self.device)  # uint8 stays compact
        self.labels = torch.from_numpy(data.labels).to(self.device)
        self.epoch = 0
        self.history: list[dict] = []

    @classmethod
    def from_run(cls, run_dir: Path, data: PackedDataset) -> "Trainer":
        """Rebuild a run folder's trainer from its saved config and restore its last checkpoint."""
        config = TrainConfig.from_dict(json.loads((Path(run_dir) / "config.json").read_text()))
        trainer = cls(config, data, run_dir)
        if not trainer.load_checkpoint():
            raise FileNotFoundError(f"{run_dir}: no checkpoint in this run folder")
        return trainer

    @property
    def final_model(self) -> torch.nn.Module:
        """Return the weights to export: the EMA when enabled, else the trained model."""
        return self.ema.module if self.ema is not None else self.model

    def fit(self, stop_after_epochs: int | None = None, progress: bool = True) -> list[dict]:
        """Train until the configured epochs (or stop early after some, to resume later)."""
        last = self.config.epochs if stop_after_epochs is None else min(self.config.epochs, self.epoch + stop_after_epochs)
        while self.epoch < last:
            record = self._train_epoch(progress)
            self.epoch += 1
            record.update(epoch=self.epoch, **self._validate())
            self.history.append(record)
            self._write_log()
            self.save_checkpoint()
            if progress:
                print(_epoch_line(record), file=sys.stderr, flush=True)
        return self.history

    def _train_epoch(self, progress: bool) -> dict:
        config = self.config
        torch.manual_seed(config.seed * 100_003 + self.epoch)  # drop path: reproducible per epoch
        order_gen = torch.Generator().manual_seed(config.seed * 7919 + self.epoch)
        aug_gen = torch.Generator(device=self.device).manual_seed(config.seed * 104_729 + self.epoch)
        order = torch.from_numpy(self.split.train)[torch.randperm(len(self.split.train), generator=order_gen)].to(self.device)
        self.model.train()
        started, seen = time.time(), 0
        loss_sum = torch.zeros((), device=self.device)  # summed on the device: no GPU sync per step
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        from tqdm import tqdm

        bar = tqdm(range(self.steps_per_epoch), desc=f"epoch {self.epoch + 1}/{config.epochs}", unit="step",
                   disable=None if progress else True, leave=False)
        for step in bar:
            batch = order[step * config.batch_size:(step + 1) * config.batch_size]
            inputs = augment(self.images[batch], self.spec, config.augment, aug_gen)
            targets = self.labels[batch]
            logits = self._forward(inputs)
            loss = F.cross_entropy(logits.float(), targets, label_smoothing=config.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            global_step = self.epoch * self.steps_per_epoch + step + 1
            self.scheduler.step_update(global_step)
            if self.ema is not None:
                self.ema.update(self.model, step=global_step)
            seen += len(batch)
            loss_sum += loss.detach() * len(batch)
            correct += (logits.argmax(1) == targets).sum()
            if not bar.disable and step % 10 == 0:
                bar.set_postfix(loss=f"{float(loss_sum) / seen:.3f}", acc=f"{int(correct) / seen:.3f}")
        elapsed = time.time() - started
        return {"train_loss": float(loss_sum) / seen, "train_acc": int(correct) / seen,
                "lr": self.optimizer.param_groups[0]["lr"], "seconds": elapsed, "images_per_second": seen / elapsed}

    def _forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            inputs = inputs.contiguous(memory_format=torch.channels_last)
            if self.config.amp:
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    return self.model(inputs)
        return self.model(inputs)

    def _validate(self) -> dict:
        result = {}
        for prefix, model in (("val", self.model), ("val_ema", self.ema.module if self.ema else None)):
            if model is None:
                continue
            logits = predict_logits(model, self.images, self.split.val, self.spec, self.device, self.config.amp)
            targets = self.labels[self.split.val].cpu()
            result[f"{prefix}_loss"] = float(F.cross_entropy(logits, targets))
            result[f"{prefix}_acc"] = float((logits.argmax(1) == targets).float().mean())
        return result

    def _write_log(self) -> None:
        keys = sorted({k for row in self.history for k in row}, key=lambda k: (k != "epoch", k))
        with open(self.run_dir / "log.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.history)
        (self.run_dir / "log.json").write_text(json.dumps(self.history, indent=1))
        plot_curves(self.history, self.run_dir / "curves.png")

    def save_checkpoint(self) -> Path:
        """Write model, EMA and optimizer tensors (safetensors) and the run state (JSON)."""
        from safetensors.torch import save_file

        folder = self.run_dir / CHECKPOINT
        folder.mkdir(exist_ok=True)
        save_file(_cpu(self.model.state_dict()), str(folder / "model.safetensors"))
        if self.ema is not None:
            save_file(_cpu(self.ema.module.state_dict()), str(folder / "ema.safetensors"))
        tensors, groups = _flatten_optimizer(self.optimizer.state_dict())
        save_file(tensors, str(folder / "optimizer.safetensors"))
        state = {"epoch": self.epoch, "history": self.history, "param_groups": groups}
        (folder / "state.json").write_text(json.dumps(state))
        return folder

    def load_checkpoint(self) -> bool:
        """Restore the last checkpoint of this run folder; return False if there is none."""
        from safetensors.torch import load_file

        folder = self.run_dir / CHECKPOINT
        if not (folder / "state.json").is_file():
            return False
        state = json.loads((folder / "state.json").read_text())
        self.model.load_state_dict(load_file(str(folder / "model.safetensors"), device=str(self.device)))
        if self.ema is not None:
            self.ema.module.load_state_dict(load_file(str(folder / "ema.safetensors"), device=str(self.device)))
        tensors = load_file(str(folder / "optimizer.safetensors"), device=str(self.device))
        self.optimizer.load_state_dict(_unflatten_optimizer(tensors, state["param_groups"]))
        self.epoch, self.history = int(state["epoch"]), state["history"]
        self.scheduler.step_update(self.epoch * self.steps_per_epoch)
        return True


@torch.inference_mode()
def predict_logits(model, images: torch.Tensor, indices: np.ndarray, spec: PreprocessSpec, device: torch.device,
                   amp: bool = True, batch_size: int = 128) -> torch.Tensor:
    """Return float32 CPU logits of the un-augmented images at the given indices."""
    model.eval()
    outputs = []
    index = torch.from_numpy(np.asarray(indices)).to(images.device)
    for start in range(0, len(index), batch_size):
        batch = normalize_uint8(images[index[start:start + batch_size]], spec).to(device)
        if device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                outputs.append(model(batch).float().cpu())
        else:
            outputs.append(model(batch).float().cpu())
    return torch.cat(outputs) if outputs else torch.zeros((0, 4))


def _epoch_line(record: dict) -> str:
    parts = [f"epoch {record['epoch']}", f"loss {record['train_loss']:.4f}", f"acc {record['train_acc']:.4f}"]
    parts += [f"{key} {record[key]:.4f}" for key in ("val_acc", "val_ema_acc") if key in record]
    parts.append(f"{record['images_per_second']:.1f} img/s")
    return "  ".join(parts)


def plot_curves(history: list[dict], path: Path) -> None:
    """Plot loss and accuracy per epoch (train, validation, validation of the EMA)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("train", "train"), ("val", "validation"), ("val_ema", "validation (EMA)")):
        if f"{key}_loss" in history[0]:
            loss_ax.plot(epochs, [row[f"{key}_loss"] for row in history], label=label)
            acc_ax.plot(epochs, [row[f"{key}_acc"] for row in history], label=label)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def _flatten_optimizer(state_dict: dict) -> tuple[dict, list]:
    tensors = {}
    for param_id, values in state_dict["state"].items():
        for name, value in values.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{param_id}.{name}"] = tensor.detach().cpu().contiguous()
    return tensors, state_dict["param_groups"]


def _unflatten_optimizer(tensors: dict, param_groups: list) -> dict:
    state: dict = {}
    for key, value in tensors.items():
        param_id, name = key.split(".", 1)
        state.setdefault(int(param_id), {})[name] = value
    return {"state": state, "param_groups": param_groups}

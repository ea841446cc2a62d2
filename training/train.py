"""Train any factory architecture on a packed dataset, on CPU or GPU, with checkpoints and resume.

Longer than 400 lines: the run's config, its patient-safe split, the balanced sampling and the trainer that
checkpoints all three are one unit; a resumed run must rebuild exactly what it saved.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from convnest_viewer.inference.card import ModelCard, PreprocessSpec, default_classes
from convnest_viewer.inference.factory import create_classifier
from convnest_viewer.inference.preprocess import normalize_uint8
from training import options
from training.augment import AugmentConfig, augment
from training.data import THUMB_SIZE, PackedDataset
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
    amp: bool = True  # bf16 autocast (CUDA, and the CPU where it supports bf16)
    val_fraction: float = 0.1
    source: str = "brain-tumor-mri"  # the folder-per-class source: validation by near-duplicate groups
    max_train_images: int = 0  # 0: all (a cap is for quick tests)
    preprocessing: str = "letterbox-v2"
    train_sources: str = ""  # comma-separated sources to train on ("": every source in the pack)
    holdout_institutions: str = "CS"  # tcga-lgg institutions never trained on (the held-out test)
    balance: bool = True  # draw each epoch balanced over sources (by source_weights) and classes within a source
    source_weights: str = "brain-tumor-mri:0.5,tcga-lgg:0.28,brats2013-hgg:0.12,healthy-heads:0.1"
    sequence_weights: str = ""  # relative draw rates of sequences within a source and class, "t1c:2" or "tcga-lgg/t1c:2" (unnamed: 1)
    epoch_images: int = 0  # images drawn per epoch (0: as many as there are training images)
    sequence_augment: bool = True  # random intensity curves, bias field, blur, resolution, noise
    init_from: str = ""  # a model folder (card + safetensors) whose weights start the run ("": from scratch)
    random_erasing: float = 0.0  # probability of hiding a random rectangle of a training image (0: off)
    time_budget: float = 0.0  # seconds this run may train: epochs are cut to fit, from the second epoch's time (0: none)
    mask_guidance: float = 0.0  # weight of the tumour-mask auxiliary loss (training.mask_guidance; 0: off)
    mask_guidance_map: str = "head"  # what predicts the mask: "head" (an auxiliary 1x1 conv) or "classifier" (its own head per cell)
    tumour_paste: float = 0.0  # share of no-tumour slices given a tumour cut from another (training.tumour_paste; 0: off)
    paste_into: str = ""  # comma-separated sources whose no-tumour slices may receive a pasted tumour ("": every source)
    distil_from: str = ""  # a model folder whose answers the run keeps (training.distil; "": none)
    distil_weight: float = 0.0  # weight of the distillation loss (0: off)
    distil_sources: str = ""  # comma-separated sources whose slices are distilled ("": every source)
    distil_temperature: float = 2.0  # softmax temperature of the distillation loss
    augment: AugmentConfig | None = None  # None: the default recipe (sequence contrast per sequence_augment)

    def __post_init__(self) -> None:
        if self.augment is None:
            self.augment = AugmentConfig.sequences() if self.sequence_augment else AugmentConfig()
            self.augment.erase = self.random_erasing

    def card(self, name: str) -> ModelCard:
        """Return a model card (without weights) for a model trained with this config."""
        return ModelCard(name=name, architecture=self.architecture, classes=default_classes(),
                         preprocessing=PreprocessSpec(version=self.preprocessing, size=self.size),
                         drop_path_rate=self.drop_path)

    def weights_of_sources(self) -> dict[str, float]:
        """Return the share of each epoch drawn from each source."""
        return options.weights(self.source_weights)

    def sequence_rate(self, source: str, sequence: str) -> float:
        """Return how often an image of this sequence is drawn against others of its source and class (default 1)."""
        rates = options.weights(self.sequence_weights)
        return rates.get(f"{source}/{sequence}", rates.get(sequence, 1.0))

    @classmethod
    def from_dict(cls, raw: dict) -> "TrainConfig":
        """Rebuild a config saved with asdict()."""
        raw = dict(raw)
        raw.setdefault("preprocessing", "letterbox-v1")  # runs saved before letterbox-v2 existed
        if raw.get("augment") is not None:
            raw["augment"] = AugmentConfig(**raw["augment"])
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

    @classmethod
    def from_json(cls, raw: dict) -> "TrainSplit":
        """Rebuild a split saved with to_json()."""
        return cls(**{k: np.array(raw.get(k, []), dtype=np.int64) for k in ("train", "val", "test")})


def make_split(data: PackedDataset, config: TrainConfig) -> TrainSplit:
    """Split every source into train / validation / test without ever splitting a patient.

    - the folder-per-class source (config.source): its official test split is the test; its official training
      images are split into train and validation by near-duplicate groups;
    - sources with institutions (tcga-lgg): the held-out institutions are the test; the other patients are
      split into train and validation by patient;
    - sources with their own split folders (brats): train / validation / test as given, whole cases;
    - anything else (healthy volumes): training.
    Synthetic slices (mirrored halves) stay on their patient's side and only ever train.
    Sources not in config.train_sources lose their training part (their held-out parts stay for evaluation).
    """
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    wanted = set(options.names(config.train_sources))
    held_out = set(options.names(config.holdout_institutions))
    for source in np.unique(data.source):
        indices = np.flatnonzero(data.source == source)
        if source == config.source:
            train, val, test = _folder_split(data, indices, config)
        elif (data.institution[indices] != "").any():
            test_mask = np.isin(data.institution[indices], list(held_out))
            rest = indices[~test_mask]
            train, val = _patient_split(data.case[rest], rest, config.val_fraction, config.seed)
            test = indices[test_mask]
        elif np.isin(data.split[indices], ["train", "validation", "test"]).all() and (data.split[indices] != "train").any():
            train, val, test = (indices[data.split[indices] == name] for name in ("train", "validation", "test"))
        else:
            train, val, test = indices, indices[:0], indices[:0]
        if wanted and source not in wanted:
            train = train[:0]
        for name, part in zip(("train", "val", "test"), (train, val, test)):
            parts[name].append(part)
    train, val, test = (np.sort(np.concatenate(parts[k])) if parts[k] else np.zeros(0, np.int64) for k in ("train", "val", "test"))
    real = data.meta["synthetic"] == ""
    val, test = val[real[val]], test[real[test]]  # synthetic slices (mirrored halves) are for training only
    if config.max_train_images:
        rng = np.random.default_rng(config.seed)
        train = np.sort(rng.choice(train, size=min(config.max_train_images, len(train)), replace=False))
    return TrainSplit(train=train, val=val, test=test)


def _folder_split(data: PackedDataset, indices: np.ndarray, config: TrainConfig) -> tuple[np.ndarray, ...]:
    if data.thumbs.shape[1:] != (THUMB_SIZE, THUMB_SIZE):
        raise ValueError("this pack was carried without thumbnails, so its split cannot be recomputed: train it with "
                         "the split written beside it (.split.json)")
    official_train = indices[data.split[indices] == "train"]
    official_test = indices[data.split[indices] == "test"]
    groups = duplicate_groups(len(official_train), near_duplicate_pairs(data.thumbs[official_train], NEAR_DUPLICATE))
    rest, held_out = group_split(data.labels[official_train], groups, config.val_fraction, config.seed)
    return official_train[rest], official_train[held_out], official_test


def _patient_split(cases: np.ndarray, indices: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, validation) by whole cases, about `fraction` of the cases held out."""
    names = np.unique(cases)
    rng = np.random.default_rng(seed)
    held = set(rng.choice(names, size=max(1, round(len(names) * fraction)), replace=False)) if len(names) > 1 else set()
    mask = np.isin(cases, list(held))
    return indices[~mask], indices[mask]


def sampling_weights(data: PackedDataset, train: np.ndarray, config: TrainConfig) -> np.ndarray:
    """Return each training image's probability of being drawn: sources by weight, classes equal within one, sequences by rate."""
    sources, labels, sequences = data.source[train], data.labels[train], data.sequence[train]
    shares = config.weights_of_sources()
    present = np.unique(sources)
    total = sum(shares.get(s, 0.0) for s in present)
    if total <= 0:
        raise ValueError(f"source_weights {config.source_weights!r} give no weight to the training sources "
                         f"{', '.join(present)}")
    synthetic = data.meta["synthetic"][train] != ""
    weights = np.zeros(len(train))
    for source in present:
        in_source = sources == source
        classes = np.unique(labels[in_source])
        for label in classes:
            in_class = in_source & (labels == label)
            strata = [cell for cell in (in_class & ~synthetic, in_class & synthetic) if cell.any()]
            for cell in strata:  # real and synthetic slices of a class share its weight equally
                named, which = np.unique(sequences[cell], return_inverse=True)  # each sequence's rate looked up once
                rate = np.array([config.sequence_rate(source, seq) for seq in named])[which]
                if rate.sum() <= 0:
                    raise ValueError(f"sequence_weights {config.sequence_weights!r} give no weight to a class of {source}")
                weights[cell] = shares.get(source, 0.0) / total / len(classes) / len(strata) * rate / rate.sum()
    return weights / weights.sum()


class Trainer:
    """One training run in a folder: config, split, per-epoch log, curves and a resumable checkpoint."""

    def __init__(self, config: TrainConfig, data: PackedDataset, run_dir: Path, split: TrainSplit | None = None) -> None:
        from convnest_viewer.inference.classifier import pick_device

        if data.size != config.size:
            raise ValueError(f"packed images are {data.size} px but the config asks for {config.size}; repack")
        if data.preprocessing != config.preprocessing:
            raise ValueError(f"packed images use {data.preprocessing} but the config asks for {config.preprocessing}; repack")
        self.config, self.data, self.run_dir = config, data, Path(run_dir)
        self.device = pick_device(config.device)
        self.spec = PreprocessSpec(version=config.preprocessing, size=config.size)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        split_file = self.run_dir / "split.json"
        if split is not None:
            self.split = split
            split_file.write_text(json.dumps(split.to_json()))
        elif split_file.is_file():
            raw = json.loads(split_file.read_text())
            self.split = TrainSplit.from_json(raw)
        else:
            self.split = make_split(data, config)
            split_file.write_text(json.dumps(self.split.to_json()))
        (self.run_dir / "config.json").write_text(json.dumps(asdict(config), indent=2))
        torch.manual_seed(config.seed)
        self.model = create_classifier(config.card("run"))
        if config.init_from:
            load_initial_weights(self.model, Path(config.init_from), config)
        self.model = self.model.to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        from timm.optim import create_optimizer_v2
        from timm.utils import ModelEmaV3

        self.optimizer = create_optimizer_v2(self.model, opt=config.optimizer, lr=config.lr, weight_decay=config.weight_decay)
        self.mask_head = None
        self.guided = config.mask_guidance > 0
        if self.guided:
            self._start_mask_guidance()
        self.paste_pools = self._paste_pools() if config.tumour_paste > 0 else None
        self.teacher = None
        if config.distil_weight > 0:
            from training.distil import distilled_slices, load_teacher

            if not config.distil_from:
                raise ValueError("distil_weight needs distil_from (the teacher's model folder)")
            self.teacher = load_teacher(Path(config.distil_from), config, self.device)
            if self.device.type == "cuda":  # the layout _forward gives its inputs, as the model's
                self.teacher = self.teacher.to(memory_format=torch.channels_last)
            self.distilled = torch.from_numpy(distilled_slices(data.source, config.distil_sources)).to(self.device)
        self.epoch_images = config.epoch_images or len(self.split.train)
        self.steps_per_epoch = max(1, self.epoch_images // config.batch_size)
        self.draw_weights = torch.from_numpy(sampling_weights(data, self.split.train, config)) if config.balance else None
        self.scheduler = self._make_scheduler()
        self.ema = ModelEmaV3(self.model, decay=config.ema_decay) if config.ema_decay > 0 else None
        self.images = torch.from_numpy(data.images).unsqueeze(1).to(self.device)  # uint8 stays compact
        self.labels = torch.from_numpy(data.labels).to(self.device)
        self.epoch = 0
        self.history: list[dict] = []
        self.weights_only = False

    def _start_mask_guidance(self) -> None:
        """Add the mask head (its own optimizer group, no weight decay) and keep the packed masks on the device."""
        from training.mask_guidance import MASK_MAPS, MaskHead

        if self.config.mask_guidance_map not in MASK_MAPS:
            raise ValueError(f"unknown mask guidance map {self.config.mask_guidance_map!r}; choose one of {', '.join(MASK_MAPS)}")
        if self.data.masks is None:
            raise ValueError("mask guidance needs a pack with tumour masks; repack with this version of convnest pack")
        self.no_tumour_index = [c.id for c in self.config.card("run").classes].index("notumor")
        if self.config.mask_guidance_map == "head":
            self.mask_head = MaskHead(self.model.num_features).to(self.device)
            self.optimizer.add_param_group({"params": list(self.mask_head.parameters()), "weight_decay": 0.0})
        self.masks = torch.from_numpy(self.data.masks).unsqueeze(1).to(self.device)
        self.mask_known = torch.from_numpy(self.data.mask_known).to(self.device)

    def _paste_pools(self):
        """Return tumour copy-paste's donor and recipient pools over the training indices (needs packed masks)."""
        from training.sources import GLIOMA, NOTUMOR
        from training.tumour_paste import paste_pools

        if self.data.masks is None:
            raise ValueError("tumour paste needs a pack with tumour masks; repack with this version of convnest pack")
        if self.guided:
            raise ValueError("tumour paste and mask guidance cannot be combined (pasted slices have no mask)")
        may_receive = None
        if self.config.paste_into:
            names = set(options.names(self.config.paste_into))
            unknown = names - set(self.data.source.tolist())
            if unknown:
                raise ValueError(f"paste_into names sources not in the pack: {', '.join(sorted(unknown))}")
            may_receive = np.isin(self.data.source, sorted(names))
        self.paste_masks = torch.from_numpy(self.data.masks).to(self.device)
        return paste_pools(self.data.sequence, self.data.labels, self.data.masks, self.data.mask_known,
                           self.split.train, GLIOMA, NOTUMOR, may_receive)

    def _make_scheduler(self):
        """Return the cosine schedule with warm-up over the configured epochs, stepped per batch."""
        from timm.scheduler import CosineLRScheduler

        config = self.config
        return CosineLRScheduler(self.optimizer, t_initial=self.steps_per_epoch * config.epochs, lr_min=config.lr * 1e-3,
                                 warmup_t=int(config.warmup_epochs * self.steps_per_epoch),
                                 warmup_lr_init=config.lr * 1e-3, warmup_prefix=True, t_in_epochs=False)

    def _cut_to_time_budget(self, elapsed: float, epoch_seconds: float) -> None:
        """Lower the configured epochs so that the run ends within config.time_budget seconds (never raises them)."""
        config = self.config
        remaining = max(0, int((config.time_budget - elapsed) // max(epoch_seconds, 1e-6)))
        planned = max(self.epoch, min(config.epochs, self.epoch + remaining))
        if planned >= config.epochs:
            return
        config.epochs = planned
        self.scheduler = self._make_scheduler()  # the cosine now ends with the cut run
        self.scheduler.step_update(self.epoch * self.steps_per_epoch)
        (self.run_dir / "config.json").write_text(json.dumps(asdict(config), indent=2))
        print(f"time budget {config.time_budget:g} s: {planned} epoch(s) in all (the last took {epoch_seconds:.1f} s, "
              f"{elapsed:.0f} s so far)", file=sys.stderr, flush=True)

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
        if self.weights_only and self.epoch < self.config.epochs:
            raise ValueError(f"{self.run_dir}: a weights-only run (carried back from another machine) cannot resume training")
        last = self.config.epochs if stop_after_epochs is None else min(self.config.epochs, self.epoch + stop_after_epochs)
        started, first = time.time(), self.epoch
        while self.epoch < min(last, self.config.epochs):
            epoch_started = time.time()
            record = self._train_epoch(progress)
            self.epoch += 1
            record.update(epoch=self.epoch, **self._validate())
            self.history.append(record)
            self._write_log()
            self.save_checkpoint()
            if progress:
                print(_epoch_line(record), file=sys.stderr, flush=True)
            elapsed = time.time() - started
            # the first epoch carries start-up costs (kernel tuning, caches): plan from the second
            if self.config.time_budget > 0 and (self.epoch - first >= 2 or elapsed > self.config.time_budget / 2):
                self._cut_to_time_budget(elapsed, time.time() - epoch_started)
        return self.history

    def _train_epoch(self, progress: bool) -> dict:
        config = self.config
        torch.manual_seed(config.seed * 100_003 + self.epoch)  # drop path: reproducible per epoch
        order_gen = torch.Generator().manual_seed(config.seed * 7919 + self.epoch)
        aug_gen = torch.Generator(device=self.device).manual_seed(config.seed * 104_729 + self.epoch)
        paste_gen = torch.Generator(device=self.device).manual_seed(config.seed * 130_363 + self.epoch)
        order = torch.from_numpy(self.split.train)[self._draw_order(order_gen)].to(self.device)
        self.model.train()
        started, seen = time.time(), 0
        loss_sum = torch.zeros((), device=self.device)  # summed on the device: no GPU sync per step
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        mask_loss_sum = torch.zeros((), device=self.device)
        distil_loss_sum = torch.zeros((), device=self.device)
        from tqdm import tqdm

        from training.distil import distil_loss
        from training.mask_guidance import mask_loss
        from training.sources import GLIOMA
        from training.tumour_paste import paste_tumours

        bar = tqdm(range(self.steps_per_epoch), desc=f"epoch {self.epoch + 1}/{config.epochs}", unit="step",
                   disable=None if progress else True, leave=False)
        for step in bar:
            batch = order[step * config.batch_size:(step + 1) * config.batch_size]
            images, targets = self.images[batch], self.labels[batch]
            if self.paste_pools is not None:
                images, targets = paste_tumours(images, targets, batch, self.images, self.paste_masks, self.paste_pools,
                                                config.tumour_paste, GLIOMA, paste_gen)
            if self.guided:
                inputs, masks = augment(images, self.spec, config.augment, aug_gen, self.masks[batch])
                logits, mask_logits = self._forward(inputs, with_mask=True)
            else:
                inputs = augment(images, self.spec, config.augment, aug_gen)
                logits = self._forward(inputs)
            loss = F.cross_entropy(logits.float(), targets, label_smoothing=config.label_smoothing)
            if self.teacher is not None:
                with torch.no_grad():
                    teacher_logits = self._forward(inputs, network=self.teacher)
                distilled = distil_loss(logits, teacher_logits, self.distilled[batch], config.distil_temperature)
                loss = loss + config.distil_weight * distilled
                distil_loss_sum += distilled.detach() * len(batch)
            if self.guided:
                guidance = mask_loss(mask_logits, masks, self.mask_known[batch])
                loss = loss + config.mask_guidance * guidance
                mask_loss_sum += guidance.detach() * len(batch)
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
        record = {"train_loss": float(loss_sum) / seen, "train_acc": int(correct) / seen,
                  "lr": self.optimizer.param_groups[0]["lr"], "seconds": elapsed, "images_per_second": seen / elapsed}
        if self.guided:
            record["train_mask_loss"] = float(mask_loss_sum) / seen
        if self.teacher is not None:
            record["train_distil_loss"] = float(distil_loss_sum) / seen
        return record

    def _draw_order(self, generator: torch.Generator) -> torch.Tensor:
        """Return this epoch's positions into the training indices: balanced draws, or a permutation."""
        if self.draw_weights is None:
            count = len(self.split.train)
            order = torch.randperm(count, generator=generator)
            return order.repeat(self.epoch_images // count + 1)[:self.epoch_images] if self.epoch_images > count else order
        return torch.multinomial(self.draw_weights, self.epoch_images, replacement=True, generator=generator)

    def _forward(self, inputs: torch.Tensor, with_mask: bool = False, network: torch.nn.Module | None = None):
        """Return the class logits of the model (or another network) under the run's autocast; with_mask, also the
        mask head's cell logits."""
        from contextlib import nullcontext

        from training.mask_guidance import logits_and_mask_logits

        if self.device.type == "cuda":
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        use_amp = self.config.amp and (self.device.type == "cuda" or cpu_supports_bf16())
        with torch.autocast(self.device.type, dtype=torch.bfloat16) if use_amp else nullcontext():
            if not with_mask:
                return (network or self.model)(inputs)
            return logits_and_mask_logits(self.model, self.mask_head, inputs, self.no_tumour_index)

    def _validate(self) -> dict:
        result = {}
        sources = self.data.source[self.split.val]
        # the EMA is what gets exported: validate it alone when there is one (half the validation time)
        candidates = (("val_ema", self.ema.module),) if self.ema is not None else (("val", self.model),)
        for prefix, model in candidates:
            if not len(self.split.val):
                continue
            logits = predict_logits(model, self.images, self.split.val, self.spec, self.device, self.config.amp)
            targets = self.labels[self.split.val].cpu()
            result[f"{prefix}_loss"] = float(F.cross_entropy(logits, targets))
            correct = (logits.argmax(1) == targets).numpy()
            result[f"{prefix}_acc"] = float(correct.mean())
            if len(np.unique(sources)) > 1:
                for source in np.unique(sources):
                    result[f"{prefix}_acc_{source}"] = float(correct[sources == source].mean())
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
        if self.mask_head is not None:
            save_file(_cpu(self.mask_head.state_dict()), str(folder / "mask_head.safetensors"))
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
        if self.mask_head is not None:
            self.mask_head.load_state_dict(load_file(str(folder / "mask_head.safetensors"), device=str(self.device)))
        self.weights_only = bool(state.get("weights_only"))  # carried back from another machine: no optimizer state
        if not self.weights_only:
            tensors = load_file(str(folder / "optimizer.safetensors"), device=str(self.device))
            self.optimizer.load_state_dict(_unflatten_optimizer(tensors, state["param_groups"]))
        self.epoch, self.history = int(state["epoch"]), state["history"]
        self.scheduler.step_update(self.epoch * self.steps_per_epoch)
        return True


def load_initial_weights(model: torch.nn.Module, folder: Path, config: TrainConfig) -> None:
    """Start a model from a model folder's weights (sha256-checked), refusing one built for another recipe.

    The input size may differ (a convolutional network has no position embedding: fine-tuning at a new size
    is the usual way to raise it); architecture, preprocessing version and classes must match.
    """
    from convnest_viewer.inference.weights import load_state_dict

    card = matching_card(folder, config)
    model.load_state_dict(load_state_dict(folder, card))


def matching_card(folder: Path, config: TrainConfig, same_architecture: bool = True) -> ModelCard:
    """Return a model folder's card, refusing one whose preprocessing version, classes or (unless
    same_architecture is False) architecture differ from the run's."""
    from convnest_viewer.inference.card import load_card

    card = load_card(folder)
    pairs = {"architecture": (config.architecture, card.architecture),
             "preprocessing": (config.preprocessing, card.preprocessing.version),
             "classes": ([c.id for c in config.card("run").classes], [c.id for c in card.classes])}
    if not same_architecture:
        del pairs["architecture"]
    names, wanted, found = tuple(pairs), tuple(w for w, _ in pairs.values()), tuple(f for _, f in pairs.values())
    if wanted != found:
        raise ValueError(f"{folder}: its model is ({', '.join(names)}) {found}, but the run asks for {wanted}")
    return card


def cpu_supports_bf16() -> bool:
    """Return True if this CPU has the AVX-512 / AMX bf16 instructions that make bf16 autocast pay off."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: keep float32
        return False
    return any(flag in flags for flag in (" avx512_bf16", " amx_bf16"))


@torch.inference_mode()
def predict_logits(model, images: torch.Tensor, indices: np.ndarray, spec: PreprocessSpec, device: torch.device,
                   amp: bool = True, batch_size: int = 128, flip_average: bool = False) -> torch.Tensor:
    """Return float32 CPU logits of the un-augmented images at the given indices (flip_average: the mean over each
    image and its left-right mirror, as a card with test_time_flip classifies)."""
    model.eval()
    outputs = []
    index = torch.from_numpy(np.asarray(indices)).to(images.device)

    def forward(batch: torch.Tensor) -> torch.Tensor:
        if device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                return model(batch).float().cpu()
        return model(batch).float().cpu()

    for start in range(0, len(index), batch_size):
        batch = normalize_uint8(images[index[start:start + batch_size]], spec).to(device)
        outputs.append((forward(batch) + forward(batch.flip(-1))) / 2 if flip_average else forward(batch))
    return torch.cat(outputs) if outputs else torch.zeros((0, 4))


def _epoch_line(record: dict) -> str:
    parts = [f"epoch {record['epoch']}", f"loss {record['train_loss']:.4f}", f"acc {record['train_acc']:.4f}"]
    parts += [f"{key} {record[key]:.4f}" for key in sorted(record) if key.startswith("val_ema_acc") or key == "val_acc"]
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

"""Training throughput of the bundled model's recipe, fp32 against bf16 autocast; prints a table, writes JSON.

    .venv/bin/python benchmarks/training_throughput.py [--data PACK.npz] [--epochs 4] [--epoch-images 640]

The recipe (architecture, input size, batch, optimiser, augmentation, drop path, EMA) is the bundled model's
run_config.json. Each variant trains a fresh model for a few short epochs on real images (a packed dataset, or
brain-tumor-mri images packed here at the recipe's size); the first epoch is warm-up and left out. Throughput is
what the training loop itself reports: augmentation, forward, backward, optimiser and EMA per image.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent


def bundled_run_config() -> Path:
    """Return the run_config.json of the default bundled model's report."""
    from convnest_viewer.inference.card import load_card
    from convnest_viewer.inference.classifier import default_model_dir

    name = load_card(default_model_dir()).name
    return REPO / "training" / "reports" / name / "run_config.json"


def sample_pack(size: int, per_class: int, preprocessing: str):
    """Pack `per_class` brain-tumor-mri training images of each class at the recipe's size."""
    from convnest_viewer.inference.card import PreprocessSpec
    from training.data import list_dataset, pack_dataset

    root = Path(os.environ.get("CONVNEST_SHARED", REPO.parent / "shared")) / "data" / "brain-tumor-mri"
    records = [r for r in list_dataset(root) if r.split == "train"]
    rng = np.random.default_rng(0)
    chosen = []
    for label in sorted({r.label for r in records}):
        members = [r for r in records if r.label == label]
        chosen += [members[i] for i in rng.choice(len(members), per_class, replace=False)]
    return pack_dataset(chosen, PreprocessSpec(version=preprocessing, size=size))


def measure(config, data, epochs: int) -> list[float]:
    """Train a fresh model for `epochs` epochs and return each epoch's images/s after the first."""
    from training.train import Trainer

    with tempfile.TemporaryDirectory() as run:
        trainer = Trainer(replace(config, epochs=epochs), data, Path(run))
        history = trainer.fit(progress=False)
    return [record["images_per_second"] for record in history[1:]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-config", type=Path, default=None, help="default: the bundled model's")
    parser.add_argument("--data", type=Path, default=None, help="a packed .npz at the recipe's size (default: "
                        "200 brain-tumor-mri training images per class, packed here)")
    parser.add_argument("--epochs", type=int, default=4, help="per variant; the first is warm-up")
    parser.add_argument("--epoch-images", type=int, default=640)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "training_throughput.json")
    args = parser.parse_args(argv)

    from training.data import PackedDataset
    from training.train import TrainConfig, cpu_supports_bf16

    config_path = args.run_config or bundled_run_config()
    config = TrainConfig.from_dict(json.loads(config_path.read_text()))
    config = replace(config, init_from="", device=args.device, epoch_images=args.epoch_images, warmup_epochs=0.0,
                     balance=args.data is not None and config.balance)
    data = PackedDataset.load(args.data) if args.data else sample_pack(config.size, 200, config.preprocessing)
    if data.size != config.size:
        parser.error(f"{args.data}: packed at {data.size} px, the recipe trains at {config.size} px")
    bf16_runs = args.device != "cpu" or cpu_supports_bf16()
    variants = {"fp32": replace(config, amp=False)}
    if bf16_runs:
        variants["bf16 autocast"] = replace(config, amp=True)
    results = {}
    for name, variant in variants.items():
        rates = measure(variant, data, args.epochs)
        results[name] = {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "n": len(rates)}

    machine = {"python": sys.version.split()[0], "torch": torch.__version__, "cpus": os.cpu_count(),
               "threads": torch.get_num_threads(), "device": args.device, "bf16 instructions": cpu_supports_bf16()}
    recipe = {"run_config": str(config_path.relative_to(REPO) if config_path.is_relative_to(REPO) else config_path),
              "architecture": config.architecture, "size": config.size, "batch_size": config.batch_size,
              "images": len(data.labels), "epoch_images": args.epoch_images, "measured_epochs": args.epochs - 1}
    print(f"Training throughput: {config.architecture} at {config.size} px, batch {config.batch_size}, "
          f"{config_path.parent.name}'s recipe, {machine['threads']} threads on {args.device}")
    print("| variant | images/s (median) | min | max | epochs | vs fp32 |")
    print("|---|---|---|---|---|---|")
    for name, row in results.items():
        ratio = row["median"] / results["fp32"]["median"]
        print(f"| {name} | {row['median']:.1f} | {row['min']:.1f} | {row['max']:.1f} | {row['n']} | {ratio:.2f}x |")
    if not bf16_runs:
        print("bf16 autocast: not measured (this CPU lacks AVX-512 bf16 / AMX; the trainer keeps fp32 here)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "recipe": recipe, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

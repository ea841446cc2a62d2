"""The architecture benchmark: k-fold CV over near-duplicate groups, efficiency, and statistical tests."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from convnest_viewer.inference.card import CLASS_IDS, PreprocessSpec
from convnest_viewer.inference.factory import create_model
from training.data import PackedDataset
from training.dedup import STRICT_NEAR_DUPLICATE, duplicate_groups, near_duplicate_pairs
from training.metrics import classification_metrics, softmax
from training.splits import group_kfold, group_split
from training.stats import friedman, mean_ranks, pairwise_wilcoxon
from training.train import Trainer, TrainConfig, TrainSplit, predict_logits

DEFAULT_ARCHITECTURES = ("convnext_tiny", "resnet152", "efficientnetv2_b0", "vgg19_bn", "mobilenetv3_large_100")
FOLD_METRICS = ("accuracy", "macro_f1", "cohen_kappa", "macro_auc_ovr")


def benchmark_folds(data: PackedDataset, source: str, k: int, seed: int, max_images: int = 0) -> list[TrainSplit]:
    """Return k leakage-aware folds over all of a source's images (official train and test together).

    Near-duplicate groups (r >= 0.97) stay whole; each fold's training part keeps a 10 % group
    split for validation.
    """
    indices = np.flatnonzero(data.source == source)
    if max_images:
        indices = np.sort(np.random.default_rng(seed).choice(indices, size=min(max_images, len(indices)), replace=False))
    groups = duplicate_groups(len(indices), near_duplicate_pairs(data.thumbs[indices], STRICT_NEAR_DUPLICATE))
    labels = data.labels[indices]
    folds = []
    for train_part, test_part in group_kfold(labels, groups, k, seed):
        rest, val = group_split(labels[train_part], groups[train_part], 0.1, seed)
        folds.append(TrainSplit(train=indices[train_part[rest]], val=indices[train_part[val]], test=indices[test_part]))
    return folds


def evaluate_fold(model, data: PackedDataset, split: TrainSplit, spec: PreprocessSpec, device) -> dict:
    """Return accuracy, macro F1, kappa and macro AUC on a fold's held-out images."""
    logits = predict_logits(model, torch.from_numpy(data.images).unsqueeze(1), split.test, spec, device).numpy()
    metrics = classification_metrics(data.labels[split.test], softmax(logits), CLASS_IDS)
    return {key: metrics[key] for key in (*FOLD_METRICS, "n")}


def profile_architecture(architecture: str, size: int, cpu_runs: int = 20, gpu: bool = True) -> dict:
    """Return parameters, GFLOPs per slice, CPU latency (batch 1) and GPU throughput (batch 64, bf16)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model(architecture, num_classes=len(CLASS_IDS), in_chans=1).eval()
    sample = torch.zeros(1, 1, size, size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(sample)
    result = {"architecture": architecture, "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
              "gflops": counter.get_total_flops() / 1e9, "input_size": size, "cpu_threads": torch.get_num_threads()}
    timings = call_times(model, sample, cpu_runs, warm_up=3)
    result["cpu_latency_ms"] = float(np.median(timings) * 1000)
    if gpu and torch.cuda.is_available():
        result["gpu_images_per_second"] = _gpu_throughput(model, size)
    return result


def call_times(function, argument, runs: int, warm_up: int = 2) -> list[float]:
    """Return the seconds each of `runs` calls of function(argument) took, after warm-up calls (inference mode)."""
    with torch.inference_mode():
        for _ in range(warm_up):
            function(argument)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            function(argument)
            times.append(time.perf_counter() - started)
    return times


def _gpu_throughput(model, size: int, batch: int = 64, runs: int = 20) -> float:
    model = model.cuda().to(memory_format=torch.channels_last)
    inputs = torch.zeros(batch, 1, size, size, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        for _ in range(5):
            model(inputs)
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(runs):
            model(inputs)
        torch.cuda.synchronize()
    return batch * runs / (time.perf_counter() - started)


def run_benchmark(data: PackedDataset, out_dir: Path, architectures: Sequence[str], folds: int, config: TrainConfig,
                  max_images: int = 0, profile: bool = True, progress: bool = True) -> dict:
    """Train every architecture on every fold under identical conditions; write and return the report."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_file = out_dir / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {"runs": []}
    done = {(r["architecture"], r["fold"]) for r in results["runs"]}
    splits = benchmark_folds(data, config.source, folds, config.seed, max_images)
    results["protocol"] = {"folds": folds, "source": config.source, "images": int(sum(len(s.test) for s in splits)),
                           "near_duplicate_threshold": STRICT_NEAR_DUPLICATE, "config": asdict(config)}
    for architecture in architectures:
        for fold, split in enumerate(splits):
            if (architecture, fold) in done:
                continue
            trainer = Trainer(replace(config, architecture=architecture), data, out_dir / "runs" / f"{architecture}-fold{fold}", split)
            started = time.time()
            trainer.fit(progress=progress)
            row = {"architecture": architecture, "fold": fold, "epochs": trainer.epoch, "train_seconds": time.time() - started,
                   **evaluate_fold(trainer.final_model, data, split, trainer.spec, trainer.device)}
            results["runs"].append(row)
            results_file.write_text(json.dumps(results, indent=2))
    if profile:
        results["efficiency"] = [profile_architecture(a, config.size) for a in architectures]
    results["statistics"] = statistics(results["runs"], architectures)
    results_file.write_text(json.dumps(results, indent=2))
    write_benchmark_report(results, out_dir, architectures)
    return results


def score_matrix(runs: list[dict], architectures: Sequence[str], metric: str) -> np.ndarray:
    """Return the (folds x architectures) matrix of one metric, for folds every architecture completed."""
    folds = sorted({r["fold"] for r in runs})
    table = {(r["architecture"], r["fold"]): r[metric] for r in runs}
    complete = [f for f in folds if all((a, f) in table for a in architectures)]
    return np.array([[table[(a, f)] for a in architectures] for f in complete]).reshape(len(complete), len(architectures))


def statistics(runs: list[dict], architectures: Sequence[str]) -> dict:
    """Friedman test, Kendall's W, mean ranks and Holm-corrected Wilcoxon tests per metric."""
    reference = next((a for a in architectures if a.startswith("convnext")), architectures[0])
    result = {}
    for metric in FOLD_METRICS:
        scores = score_matrix(runs, architectures, metric)
        if scores.size == 0 or np.isnan(scores).any():
            continue
        result[metric] = {
            "folds": int(len(scores)),
            "mean": dict(zip(architectures, scores.mean(axis=0).tolist())),
            "std": dict(zip(architectures, scores.std(axis=0, ddof=1).tolist() if len(scores) > 1 else [0.0] * len(architectures))),
            "mean_rank": dict(zip(architectures, mean_ranks(scores).tolist())),
            "friedman": friedman(scores),
            "wilcoxon_vs_reference": pairwise_wilcoxon(scores, list(architectures), reference) if len(scores) > 1 else [],
        }
    return result


def write_benchmark_report(results: dict, out_dir: Path, architectures: Sequence[str]) -> None:
    """Write benchmark.md and the accuracy-vs-cost plots."""
    stats = results.get("statistics", {})
    efficiency = {row["architecture"]: row for row in results.get("efficiency", [])}
    protocol = results["protocol"]
    config = protocol["config"]
    lines = ["# Architecture benchmark", "",
             f"{protocol['folds']}-fold cross-validation over near-duplicate groups (r >= {protocol['near_duplicate_threshold']}) "
             f"of {protocol['images']} {protocol['source']} images; every architecture from scratch with the same recipe: "
             f"{config['epochs']} epochs, {config['size']} px, batch {config['batch_size']}, {config['optimizer']} lr {config['lr']}, "
             f"wd {config['weight_decay']}, label smoothing {config['label_smoothing']}, EMA {config['ema_decay']}, seed {config['seed']}.", "",
             "| architecture | accuracy | macro F1 | kappa | macro AUC | mean rank (acc) | params (M) | GFLOPs | CPU ms/slice | GPU img/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for a in architectures:
        cells = []
        for metric in FOLD_METRICS:
            block = stats.get(metric)
            cells.append(f"{block['mean'][a]:.4f} ± {block['std'][a]:.4f}" if block else "-")
        rank = stats.get("accuracy", {}).get("mean_rank", {}).get(a)
        eff = efficiency.get(a, {})
        gpu = eff.get("gpu_images_per_second")
        lines.append(f"| {a} | {' | '.join(cells)} | {'-' if rank is None else f'{rank:.2f}'} | "
                     f"{eff.get('parameters_m', float('nan')):.1f} | {eff.get('gflops', float('nan')):.2f} | "
                     f"{eff.get('cpu_latency_ms', float('nan')):.1f} | {'-' if gpu is None else f'{gpu:.0f}'} |")
    for metric, block in stats.items():
        test = block["friedman"]
        lines += ["", f"## {metric}", ""]
        if test["statistic"] is None:
            lines.append(f"Friedman test not possible: {test['note']}.")
        else:
            lines.append(f"Friedman chi2 = {test['statistic']:.3f}, p = {test['p_value']:.4f}, Kendall's W = {test['kendall_w']:.3f} "
                         f"({block['folds']} folds x {len(architectures)} architectures).")
        if block["wilcoxon_vs_reference"]:
            lines += ["", "| comparison | mean difference | Wilcoxon W | p | p (Holm) |", "|---|---|---|---|---|"]
            for row in block["wilcoxon_vs_reference"]:
                lines.append(f"| {row['a']} vs {row['b']} | {row['mean_difference']:+.4f} | {row['statistic']:.1f} | "
                             f"{row['p_value']:.4f} | {row['p_holm']:.4f} |")
    lines += ["", "With k folds the smallest two-sided Wilcoxon p-value is 2/2^k (0.25 for k = 3): "
              "a significant pairwise difference needs at least 6 folds.", "",
              "![accuracy vs GFLOPs](accuracy_vs_gflops.png) ![accuracy vs CPU latency](accuracy_vs_cpu_latency.png)"]
    (out_dir / "benchmark.md").write_text("\n".join(lines) + "\n")
    _plot_tradeoffs(stats.get("accuracy"), efficiency, architectures, out_dir)


def _plot_tradeoffs(accuracy: dict | None, efficiency: dict, architectures: Sequence[str], out_dir: Path) -> None:
    if not accuracy or not efficiency:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for key, label, name in (("gflops", "GFLOPs per slice", "accuracy_vs_gflops.png"),
                             ("cpu_latency_ms", "CPU latency per slice (ms, batch 1)", "accuracy_vs_cpu_latency.png")):
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for a in architectures:
            if a in efficiency:
                ax.errorbar(efficiency[a][key], accuracy["mean"][a], yerr=accuracy["std"][a], fmt="o", capsize=3)
                ax.annotate(a, (efficiency[a][key], accuracy["mean"][a]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set(xlabel=label, ylabel="accuracy (mean ± sd over folds)", xscale="log")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)

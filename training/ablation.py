"""The ablation: the multi-source recipe with one change turned off at a time, each judged on the held-out sources."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

from training.data import PackedDataset
from training.train import TrainConfig

# name -> (what is turned off, config overrides; "pack" picks the letterbox-v1 pack)
VARIANTS = {
    "full": ("nothing (the recipe)", {}),
    "single-source": ("multi-source data: brain-tumor-mri only", {"train_sources": "brain-tumor-mri"}),
    "no-balance": ("balanced sampling: every training image equally likely", {"balance": False}),
    "no-sequence-augment": ("sequence contrast augmentation", {"sequence_augment": False}),
    "no-head-crop": ("head crop: letterbox-v1", {"preprocessing": "letterbox-v1", "pack": "v1"}),
    "fp32": ("bf16 autocast: float32 training", {"amp": False}),
}


def run_ablation(data: PackedDataset, data_v1: PackedDataset | None, out_dir: Path, base: TrainConfig,
                 healthy, variants=tuple(VARIANTS)) -> list[dict]:
    """Train and evaluate each variant (finished ones are reused) and write ablation.md / ablation.json."""
    from training.evaluate import evaluate_run
    from training.train import Trainer

    out_dir = Path(out_dir)
    rows = []
    for name in variants:
        change, overrides = VARIANTS[name]
        overrides = dict(overrides)
        pack = data_v1 if overrides.pop("pack", None) == "v1" else data
        if pack is None:
            continue
        config = replace(base, **overrides, augment=None)
        run_dir, report_dir = out_dir / "runs" / name, out_dir / "reports" / name
        report_path = report_dir / "report.json"
        if not report_path.is_file():
            trainer = Trainer(config, pack, run_dir)
            trainer.load_checkpoint()
            trainer.fit(progress=False)
            evaluate_run(run_dir, pack, report_dir, healthy)
        rows.append(ablation_row(name, change, json.loads(report_path.read_text())))
    (out_dir / "ablation.json").write_text(json.dumps({"base_config": asdict(base), "rows": rows}, indent=2))
    (out_dir / "ablation.md").write_text(ablation_markdown(rows, base))
    return rows


def ablation_row(name: str, change: str, report: dict) -> dict:
    """Return one variant's headline figures from its evaluation report."""
    def auc(section: str, sequence: str):
        return report.get(section, {}).get("per_sequence", {}).get(sequence, {}).get("labelled", {}).get("roc_auc")

    def sensitivity(section: str, sequence: str):
        return report.get(section, {}).get("per_sequence", {}).get(sequence, {}).get("all_slices", {}).get("sensitivity")

    healthy = {k.split(" ")[0]: v["no_tumour_share"] for k, v in report.get("healthy", {}).get("per_scan", {}).items()}
    training = report.get("training", {})
    return {
        "variant": name, "turned_off": change,
        "images_per_second": training.get("images_per_second"), "train_minutes": training.get("train_seconds", 0) / 60,
        "btm_leakage_free_accuracy": report.get("leakage_free_test", {}).get("accuracy"),
        **{f"tcga_auc_{s}": auc("tcga_lgg_held_out", s) for s in ("flair", "t1c", "t1")},
        **{f"brats_sensitivity_{s}": sensitivity("volumes_held_out", s) for s in ("flair", "t1c")},
        **{f"healthy_no_tumour_{k}": v for k, v in healthy.items()},
    }


def ablation_markdown(rows: list[dict], base: TrainConfig) -> str:
    """Return the ablation table as Markdown."""
    healthy_keys = sorted({k for row in rows for k in row if k.startswith("healthy_no_tumour_")})
    header = ["variant", "turned off", "img/s", "btm leakage-free acc", "tcga AUC FLAIR", "tcga AUC T1c", "tcga AUC T1",
              "brats sens. FLAIR", "brats sens. T1c", *[f"{k[len('healthy_no_tumour_'):]} no tumour" for k in healthy_keys]]
    lines = ["# Ablation", "",
             f"Each variant trains `{base.architecture}` at {base.size} px for {base.epochs} epochs of "
             f"{base.epoch_images or 'all'} images (a short budget: compare the rows, not the bundled model), "
             "then is evaluated like the bundled model: brain-tumor-mri's leakage-free test, the held-out tcga-lgg "
             "institution (ROC AUC of tumour vs no tumour per sequence), the held-out brats volumes (share of tumour "
             "slices called a tumour) and whole healthy heads (share of slices called no tumour).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def fmt(value, percent=False):
        if value is None:
            return "-"
        return f"{value:.1%}" if percent else f"{value:.3f}"

    for row in rows:
        cells = [row["variant"], row["turned_off"], f"{row['images_per_second']:.1f}" if row["images_per_second"] else "-",
                 fmt(row["btm_leakage_free_accuracy"], True), fmt(row["tcga_auc_flair"]), fmt(row["tcga_auc_t1c"]),
                 fmt(row["tcga_auc_t1"]), fmt(row["brats_sensitivity_flair"], True), fmt(row["brats_sensitivity_t1c"], True),
                 *[fmt(row.get(k), True) for k in healthy_keys]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

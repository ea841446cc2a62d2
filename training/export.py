"""Export a trained run as an app model folder: fp16 safetensors shards and a model card with metrics."""

from __future__ import annotations

import json
from pathlib import Path

from convnest_viewer.inference.classifier import DEFAULT_MODEL_FILE
from convnest_viewer.inference.weights import write_model_folder
from training.sources import MIN_HEAD_FRACTION

REPORT_SECTIONS = ("official_test", "leakage_free_test", "strict_leakage_free_test", "validation")
SCAN_SECTIONS = ("tcga_lgg_held_out", "volumes_held_out", "healthy")
HEADLINE = ("n", "accuracy", "macro_f1", "cohen_kappa", "macro_auc_ovr", "ece", "ece_uncalibrated", "excluded_near_duplicates")


def export_run(run_dir: Path, report_path: Path, name: str, dest: Path, make_default: bool = False,
               data=None) -> Path:
    """Write dest/name/ (weights + card) from a run's final weights and its evaluation report (data: its PackedDataset)."""
    from training.train import Trainer

    report = json.loads(Path(report_path).read_text())
    trainer = Trainer.from_run(run_dir, data)
    card = trainer.config.card(name)
    card.temperature = float(report["temperature"])
    card.test_time_flip = bool(report.get("test_time_flip", False))
    card.training = report.get("training", {})
    card.metrics = {
        key: {k: report[key][k] for k in HEADLINE if k in report[key]} | {"per_class": report[key].get("per_class")}
        for key in REPORT_SECTIONS if report.get(key, {}).get("n")
    }
    card.metrics.update({key: report[key] for key in SCAN_SECTIONS if key in report})
    card.metrics["definitions"] = {
        "official_test": "brain-tumor-mri's official test split",
        "leakage_free_test": "official test images with no near-duplicate (32x32 thumbnail correlation >= 0.99) among the training images",
        "strict_leakage_free_test": "the same with a 0.97 threshold",
        "tcga_lgg_held_out": "every slice of the tcga-lgg patients of institutions never trained on, per sequence, through the "
                             "app's loader; labelled = the packing rule's tumour / no-tumour slices, tumour probability = 1 - P(no tumour)",
        "volumes_held_out": "every axial slice of the label-volume (brats) cases never trained on, per sequence",
        "healthy": "every slice of whole healthy heads: share called no tumour (held_out false: the volume was resliced for training)",
        "ece": "expected calibration error (15 bins) after temperature scaling fitted on validation",
    }
    card.limitations = limitations(report)
    if data is not None:
        contrasts = trained_contrasts(data)
        for info in card.classes:
            info.contrasts = [] if info.no_finding else contrasts.get(info.id, [])
    folder = Path(dest) / name
    write_model_folder(trainer.final_model.cpu(), card, folder)
    if make_default:
        (Path(dest) / DEFAULT_MODEL_FILE).write_text(name + "\n")
    return folder


def trained_contrasts(data, min_slices: int = 0) -> dict[str, list[str]]:
    """Return per tumour class the contrasts of its training-side slices (all but test splits), sorted, where at
    least min_slices (default MIN_CONTRAST_SLICES) show it; a slice without a recorded sequence takes its source's
    (SOURCE_CONTRASTS)."""
    from collections import Counter

    from convnest_viewer.inference.card import CLASS_IDS, NO_FINDING

    counts = Counter()
    for label, source, sequence, split in zip(data.labels, data.source, data.sequence, data.split):
        contrast = str(sequence) or SOURCE_CONTRASTS.get(str(source), "")
        if contrast and split != "test" and CLASS_IDS[int(label)] != NO_FINDING:
            counts[CLASS_IDS[int(label)], contrast] += 1
    found: dict[str, list[str]] = {}
    for (class_id, contrast), count in sorted(counts.items()):
        if count >= (min_slices or MIN_CONTRAST_SLICES):
            found.setdefault(class_id, []).append(contrast)
    return found


SOURCE_CONTRASTS = {"brain-tumor-mri": "t1c"}  # its tumour slices are figshare's T1 post-contrast images
MIN_CONTRAST_SLICES = 20  # fewer slices of a class on a contrast do not count as trained on it


def limitations(report: dict) -> str:
    """Return what the measurements say the model cannot do, with the figures, for the card."""
    parts = ["Meningioma and pituitary tumours were seen in training only as T1 post-contrast slices of brain-tumor-mri, "
             "and no source had T2 tumour slices: on other sequences the tumour type is a guess."]
    for key, title in (("tcga_lgg_held_out", "held-out tcga-lgg gliomas"), ("volumes_held_out", "held-out brats gliomas")):
        for sequence, row in report.get(key, {}).get("per_sequence", {}).items():
            shares = row.get("tumour_type_shares") or {}
            if shares:
                called = ", ".join(f"{c} {v:.0%}" for c, v in shares.items())
                parts.append(f"On {title} ({sequence}), the slices called a tumour were called {called}.")
    healthy = [(name, row) for name, row in report.get("healthy", {}).get("per_scan", {}).items() if row.get("held_out")]
    if healthy:
        called = ", ".join(f"{name} {1 - row['no_tumour_share']:.0%}" for name, row in healthy)
        parts.append(f"On healthy heads it never saw, the share of slices called a tumour was: {called}.")
    parts.append(GATE_UNMEASURED)
    return " ".join(parts)


GATE_UNMEASURED = ("Slices outside the brain, blank slices and other images are withheld only if the model has a gate "
                   "(`convnest gate-fit`), and even then not all of them: read every class with care.")
GATE_MEASURED_START = "Its gate withholds"


def with_gate_limitations(text: str, evaluation: dict) -> str:
    """Return card limitations with the sentence on the gate replaced by what gate-fit measured."""
    kept = text.split(GATE_MEASURED_START)[0].replace(GATE_UNMEASURED, "").strip()
    out = evaluation["out_of_domain"]
    epi = [row for name, row in out.items() if name.startswith("EPI")]
    epi_gated = sum(r["gated"] * r["slices"] for r in epi) / max(sum(r["slices"] for r in epi), 1)
    sentence = (f"{GATE_MEASURED_START} {out['all']['gated']:.0%} of the out-of-domain test slices (outside the brain, "
                f"blank, masks, damaged and non-brain images) and {evaluation['in_domain']['all']['gated']:.1%} of the "
                f"held-out in-domain slices, but not all it should: {1 - epi_gated:.0%} of EPI slices still get a class; "
                "read every class with care. In a series it also withholds the slices at the edge of the head "
                f"(head section under {MIN_HEAD_FRACTION:.0%} of the largest), where it never trained: a lesion there "
                "is not assessed.")
    return f"{kept} {sentence}".strip()


def write_scan_metrics(model_dir: Path, report: dict) -> None:
    """Replace a model card's whole-scan figures (and the limitations quoting them) by a scan-eval report's: the
    figures of the app as it reads slices now (with the card's slice context); the gate's sentence is kept."""
    from convnest_viewer.inference.card import load_card

    card = load_card(model_dir)
    for key in SCAN_SECTIONS:
        if key in report:
            card.metrics[key] = {k: v for k, v in report[key].items() if not k.startswith("_")}
    card.metrics.setdefault("definitions", {})["scans"] = (
        f"whole-scan figures by `convnest scan-eval` through the app's loader and classifier, each slice read with its "
        f"neighbours as slice_context says (width {card.slice_context.sigma_slices:g} slices; 0: each slice alone)")
    gate_sentence = card.limitations.partition(GATE_MEASURED_START)[2]
    text = limitations(report)
    card.limitations = text.replace(GATE_UNMEASURED, f"{GATE_MEASURED_START}{gate_sentence}" if gate_sentence else GATE_UNMEASURED)
    card.save(Path(model_dir))

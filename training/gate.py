"""Fit and evaluate a model's gate: which slices it should not answer (blank, or unlike its training data).

`convnest gate-fit DATA --model DIR` fits the class-conditional Mahalanobis statistics on the penultimate features
of the run's training slices, sets the threshold on its validation slices, measures how well the gate separates
held-out in-domain slices (the test part of every training source) from out-of-domain slices built from real data
(EPI series, slices above and below the brain, blank and mask-only images, corrupted test images, non-brain
images), writes the statistics into the model folder and the threshold and figures into its card.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from convnest_viewer.inference.card import GateSpec, load_card
from convnest_viewer.inference.classifier import Classifier, SliceInput
from convnest_viewer.inference.foreground import head_share
from convnest_viewer.inference.gate import Gate, StageMahalanobis
from convnest_viewer.inference.preprocess import normalize_uint8, to_uint8
from convnest_viewer.inference.weights import sha256_of
from convnest_viewer.io import load_study, percentile_window
from training.sources import MIN_HEAD_FRACTION
from training.data import PackedDataset
from training.export import with_gate_limitations
from training.train import TrainConfig, make_split

FIT_PER_SOURCE_CLASS = 600  # training slices per (source, class) the statistics are fitted on
THRESHOLD_QUANTILE = 0.95  # of validation scores: about 5% of validation slices gated by the score
OUTSIDE_BRAIN_SHARE = 0.10  # slices whose head covers less than this share of the scan's largest section
NON_BRAIN_FILES = ("CT_small.dcm", "liver_1frame.dcm", "rtdose_1frame.dcm", "examples_rgb_color.dcm",
                   "examples_ybr_color.dcm", "examples_palette.dcm", "JPEG2000.dcm", "693_J2KI.dcm",
                   "GDCMJ2K_TextGBR.dcm", "image_dfl.dcm", "examples_overlay.dcm")  # spine/head CT, ultrasound, ...


def _batched_statistics(classifier: Classifier, inputs: np.ndarray, spec: GateSpec, batch_size: int = 64) -> list[np.ndarray]:
    parts: list[list[np.ndarray]] = [[] for _ in range(len(spec.stages) + int(spec.input_statistics))]
    for start in range(0, len(inputs), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(inputs[start:start + batch_size]))
        for collected, part in zip(parts, classifier.logits_and_gate_statistics(batch, spec)[1]):
            collected.append(part)
    return [np.concatenate(collected) for collected in parts]


def packed_statistics(classifier: Classifier, images: np.ndarray, spec: GateSpec) -> list[np.ndarray]:
    """Return the gate's statistics of packed 8-bit model images (N, size, size)."""
    inputs = normalize_uint8(images, classifier.spec)[:, None]
    if classifier.spec.channels > 1:
        inputs = np.repeat(inputs, classifier.spec.channels, axis=1)
    return _batched_statistics(classifier, inputs, spec)


def input_statistics(classifier: Classifier, inputs: Sequence[SliceInput], spec: GateSpec) -> list[np.ndarray]:
    """Return the gate's statistics of slices prepared by the app's own path."""
    return _batched_statistics(classifier, np.stack([item.model_input for item in inputs]), spec)


def balanced_sample(data: PackedDataset, indices: np.ndarray, per_group: int, seed: int = 0) -> np.ndarray:
    """Return at most `per_group` indices of each (source, class) among `indices`."""
    rng = np.random.default_rng(seed)
    picked = []
    for source in np.unique(data.source[indices]):
        for label in np.unique(data.labels[indices]):
            group = indices[(data.source[indices] == source) & (data.labels[indices] == label)]
            if len(group):
                picked.append(rng.choice(group, size=min(per_group, len(group)), replace=False))
    return np.sort(np.concatenate(picked))


# ------------------------------------------------------------------------------- out-of-domain slices


def series_inputs(classifier: Classifier, paths: Sequence[Path], volumes: str = "all", limit: int = 0) -> list[SliceInput]:
    """Open paths with the app's loader and prepare their slices (all volumes or the first; at most `limit` each)."""
    inputs = []
    for series in load_study([str(p) for p in paths]).series:
        chosen = range(series.n_volumes) if volumes == "all" else range(1)
        positions = [(v, i) for v in chosen for i in range(series.n_slices)]
        positions = positions[:limit] if limit else positions
        prepared, _ = classifier.prepare_slices(series, positions)
        inputs.extend(prepared)
    return inputs


def array_inputs(classifier: Classifier, gate: Gate, arrays: Sequence[np.ndarray]) -> list[SliceInput]:
    """Prepare raw 2-D arrays as the app would a slice without a stored window (percentile window)."""
    inputs = []
    for values in arrays:
        values = values.astype(np.float32)
        window = percentile_window(values)
        inputs.append(SliceInput(0, len(inputs), values, window, classifier.prepare(values, window)[0],
                                 gate.image_reason(to_uint8(values, window))))
    return inputs


def outside_brain(series_list, share: float = OUTSIDE_BRAIN_SHARE) -> dict[str, set[int]]:
    """Return, per series key, the slices whose head covers less than `share` of the series' largest section."""
    chosen = {}
    for series in series_list:
        shares = np.array([head_share(to_uint8(series.pixels(i), series.window(i))) for i in range(series.n_slices)])
        chosen[series.key] = set(np.flatnonzero(shares < share * shares.max()).tolist())
    return chosen


def out_of_domain_sets(classifier: Classifier, gate: Gate, shared: Path, data: PackedDataset, test: np.ndarray,
                       seed: int = 0) -> dict[str, list[SliceInput]]:
    """Build the out-of-domain slice sets from real data in ../shared and pydicom's bundled files."""
    from pydicom.data import get_testdata_file

    rng = np.random.default_rng(seed)
    sets: dict[str, list[SliceInput]] = {}
    sets["EPI: GE fMRI, 10 volumes"] = series_inputs(classifier, [shared / "dicom" / "ge-epi-4d"])
    sets["EPI: Siemens mosaic"] = series_inputs(classifier, [shared / "dicom" / "transfer-syntaxes" / "In" / "1.dcm"])

    tcga_cases = sorted({Path(p).parent for p in data.paths[test] if "tcga" in str(p).lower()})[:8]
    tcga = []
    for case in tcga_cases:
        for sequence in ("flair", "t1", "t1c"):
            files = sorted(case.glob(f"*_{sequence}.jpg"), key=lambda p: int(p.stem.split("_")[-2]))
            shares = np.array([head_share(to_uint8(*_raster(p))) for p in files])
            tcga += [files[i] for i in np.flatnonzero(shares < OUTSIDE_BRAIN_SHARE * shares.max())]
    sets["tcga-lgg: slices above and below the brain"] = series_inputs(classifier, tcga)
    healthy = load_study([str(shared / "dicom" / "sagittal-mprage"),
                          str(shared / "nifti" / "healthy-volunteer" / "chris_PD.nii.gz")]).series
    outside = outside_brain(healthy)
    sets["healthy heads: slices beside or below the brain"] = [
        item for series in healthy
        for item in classifier.prepare_slices(series, [(0, i) for i in sorted(outside[series.key])])[0]]

    size = 256
    blank = [np.zeros((size, size)), np.full((size, size), 100.0)]
    blank += [rng.normal(0, 1, (size, size)) for _ in range(20)]
    blank += [rng.normal(100, 5, (size, size)) for _ in range(20)]
    sets["blank and noise-only slices"] = array_inputs(classifier, gate, blank)
    masks = [p for case in tcga_cases for p in sorted(case.glob("*_mask.png"))]
    masks = [p for p in masks if _raster(p)[0].max() > 0][:120]
    sets["tumour masks shown as images"] = series_inputs(classifier, masks)

    test_images = data.images[rng.choice(test[data.source[test] == "brain-tumor-mri"], 120, replace=False)]
    noisy = [np.clip(image + rng.normal(0, 90, image.shape), 0, 255) for image in test_images[:60]]
    shuffled = [_shuffle_blocks(image, 16, rng) for image in test_images[60:]]
    sets["corrupted test images (heavy noise, shuffled blocks)"] = array_inputs(classifier, gate, noisy + shuffled)

    bundled = Path(get_testdata_file("CT_small.dcm")).parent  # pydicom's own files (never downloaded)
    other = [bundled / name for name in NON_BRAIN_FILES]
    sets["non-brain images (pydicom's CT, ultrasound, abdomen, dose, text files)"] = series_inputs(
        classifier, [p for p in other if p.is_file()], volumes="first", limit=10)
    return {name: items for name, items in sets.items() if items}


def _raster(path: Path) -> tuple[np.ndarray, object]:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32)
    return image, percentile_window(image)


def _shuffle_blocks(image: np.ndarray, block: int, rng: np.random.Generator) -> np.ndarray:
    rows, columns = image.shape[0] // block, image.shape[1] // block
    tiles = image[:rows * block, :columns * block].reshape(rows, block, columns, block).swapaxes(1, 2).reshape(-1, block, block)
    tiles = tiles[rng.permutation(len(tiles))]
    return tiles.reshape(rows, columns, block, block).swapaxes(1, 2).reshape(rows * block, columns * block)


# ---------------------------------------------------------------------------------------- evaluation


def separation(in_scores: np.ndarray, out_scores: np.ndarray) -> dict:
    """Return AUROC and the false-positive rate at 95% true-positive rate (out-of-domain is positive)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    labels = np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    scores = np.nan_to_num(np.r_[in_scores, out_scores], posinf=1e12)
    false_positive, true_positive, _ = roc_curve(labels, scores)
    return {"auroc": round(float(roc_auc_score(labels, scores)), 4),
            "fpr_at_95_tpr": round(float(false_positive[np.searchsorted(true_positive, 0.95)]), 4)}


def gated_scores(gate: Gate, statistics: list[np.ndarray], blanks: Sequence[str | None]) -> np.ndarray:
    """Return the gate's effective score: infinite for blank slices, else the stage-Mahalanobis score."""
    return np.where([b is not None for b in blanks], np.inf, gate.scorer.scores(statistics))


def fit_gate(model_dir: Path, data: PackedDataset, config: TrainConfig, shared: Path, seed: int = 0,
             per_group: int = FIT_PER_SOURCE_CLASS) -> dict:
    """Fit, evaluate and install the gate in a model folder; return the evaluation."""
    classifier = Classifier(model_dir, device="cpu")
    classifier.gate = None
    spec = GateSpec(min_head_fraction=MIN_HEAD_FRACTION)  # the packing rule: the model trained on no slice below it
    split = make_split(data, config)
    fit_idx = balanced_sample(data, split.train, per_group, seed)
    groups = np.char.add(np.char.add(data.source[fit_idx].astype(str), "|"), data.labels[fit_idx].astype(str))
    scorer = StageMahalanobis.fit(packed_statistics(classifier, data.images[fit_idx], spec), groups)
    val_statistics = packed_statistics(classifier, data.images[split.val], spec)
    scorer.calibrate(val_statistics)
    gate = Gate(spec, scorer)
    val_blanks = [gate.image_reason(image) for image in data.images[split.val]]
    val_scores = gated_scores(gate, val_statistics, val_blanks)
    spec.threshold = float(np.quantile(val_scores[np.isfinite(val_scores)], THRESHOLD_QUANTILE))

    evaluation = {"fitted_on": {"slices": int(len(fit_idx)), "per_source_class": per_group},
                  "threshold_rule": f"{THRESHOLD_QUANTILE:.1%} quantile of the validation slices' scores",
                  "in_domain": {}, "out_of_domain": {}}
    in_scores = []
    for source in np.unique(data.source[split.test]):
        part = split.test[data.source[split.test] == source]
        blanks = [gate.image_reason(image) for image in data.images[part]]
        scores = gated_scores(gate, packed_statistics(classifier, data.images[part], spec), blanks)
        in_scores.append(scores)
        gated = scores > spec.threshold
        labels = data.labels[part]
        evaluation["in_domain"][f"{source} test"] = {
            "slices": int(len(part)), "gated": round(float(gated.mean()), 4),
            "gated_per_class": {classifier.class_ids[c]: round(float(gated[labels == c].mean()), 4) for c in np.unique(labels)}}
    in_all = np.concatenate(in_scores)
    evaluation["in_domain"]["all"] = {"slices": int(len(in_all)), "gated": round(float((in_all > spec.threshold).mean()), 4)}
    out_all = []
    for name, inputs in out_of_domain_sets(classifier, gate, shared, data, split.test, seed).items():
        scores = gated_scores(gate, input_statistics(classifier, inputs, spec), [item.blank for item in inputs])
        out_all.append(scores)
        evaluation["out_of_domain"][name] = {"slices": len(inputs), "gated": round(float((scores > spec.threshold).mean()), 4),
                                             **separation(in_all, scores)}
    out_all = np.concatenate(out_all)
    evaluation["out_of_domain"]["all"] = {"slices": int(len(out_all)),
                                          "gated": round(float((out_all > spec.threshold).mean()), 4),
                                          **separation(in_all, out_all)}
    evaluation["healthy_brain_slices_gated"] = _healthy_brain_gated(classifier, gate, shared)
    spec.evaluation = evaluation
    gate_path = model_dir / spec.file
    scorer.save(gate_path)
    gate_path.chmod(0o644)
    spec.sha256 = sha256_of(gate_path)
    card = load_card(model_dir)
    card.gate = spec
    card.limitations = with_gate_limitations(card.limitations, evaluation)
    card.save(model_dir)
    return evaluation


def _healthy_brain_gated(classifier: Classifier, gate: Gate, shared: Path) -> dict:
    """Return the share of slices through the brain of each healthy validation scan that the gate would withhold."""
    result = {}
    for path in (shared / "dicom" / "sagittal-mprage", shared / "nifti" / "healthy-volunteer" / "chris_PD.nii.gz"):
        series = load_study([str(path)]).series[0]
        outside = outside_brain([series], 0.4)[series.key]
        inputs = classifier.prepare_slices(series, [(0, i) for i in range(series.n_slices) if i not in outside])[0]
        scores = gated_scores(gate, input_statistics(classifier, inputs, gate.spec), [item.blank for item in inputs])
        result[path.name] = {"slices": len(inputs), "gated": round(float((scores > gate.spec.threshold).mean()), 4)}
    return result


def gate_markdown(model_name: str, evaluation: dict, threshold: float) -> str:
    """Return the gate's evaluation as a Markdown report."""
    lines = [f"# Gate of {model_name}", "",
             f"Stage-Mahalanobis score (feature stages 0 and 1 and 7 input statistics) threshold {threshold:.2f} "
             f"({evaluation['threshold_rule']}); blank rule: head under "
             f"3% of the slice or 8-bit contrast under 8. Fitted on {evaluation['fitted_on']['slices']} training slices.",
             "", f"Series rule: a slice of a series whose head section is under {MIN_HEAD_FRACTION:.0%} of the largest "
             "among the volume's assessed slices lies at the edge of the head (the packing rule left every such "
             "slice out of training) and is not assessed either. The tables below score single slices, without it; "
             "`convnest scan-eval` reports what it withholds on whole scans.",
             "", "## In-domain (held-out test slices of every training source)", "",
             "| Set | Slices | Gated | Gated per class |", "| --- | ---: | ---: | --- |"]
    lines += [f"| {name} | {row['slices']} | {row['gated']:.1%} | "
              + ", ".join(f"{c} {v:.1%}" for c, v in row.get("gated_per_class", {}).items()) + " |"
              for name, row in evaluation["in_domain"].items()]
    lines += ["", "## Out-of-domain (real data the model should not judge)", "",
              "| Set | Slices | Gated | AUROC | FPR at 95% TPR |", "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {name} | {row['slices']} | {row['gated']:.1%} | {row['auroc']:.3f} | {row['fpr_at_95_tpr']:.1%} |"
              for name, row in evaluation["out_of_domain"].items()]
    lines += ["", "## Healthy validation scans, slices through the brain (never trained on)", "",
              "| Scan | Slices | Gated |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {row['slices']} | {row['gated']:.1%} |" for name, row in evaluation["healthy_brain_slices_gated"].items()]
    return "\n".join(lines) + "\n"


def run_gate_fit(model_dir: Path, data_path: Path, run_config: Path, shared: Path, report_dir: Path | None,
                 per_group: int = FIT_PER_SOURCE_CLASS) -> dict:
    """Fit the gate from a packed dataset and the run's config; write its report beside the run's."""
    config = TrainConfig.from_dict(json.loads(run_config.read_text()))
    evaluation = fit_gate(model_dir, PackedDataset.load(data_path), config, shared, per_group=per_group)
    card = load_card(model_dir)
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        (report_dir / "gate.json").write_text(json.dumps(asdict(card.gate), indent=2) + "\n")
        (report_dir / "gate.md").write_text(gate_markdown(card.name, evaluation, card.gate.threshold))
    return evaluation

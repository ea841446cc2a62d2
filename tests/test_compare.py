"""`convnest compare`: per-slice scan results saved and read back unchanged, and a paired bootstrap that tells a model
from a worse copy of itself and finds no difference between a model and itself."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from convnest_viewer.inference.classifier import Classifier, default_model_dir
from tests.paths import DATA


@pytest.fixture(scope="module")
def held_out_scans():
    from training.volume_eval import evaluate_tcga_case

    classifier = Classifier(default_model_dir(), device="cpu")
    cases = sorted(p for p in (DATA / "tcga-lgg").iterdir() if p.name.startswith("TCGA_CS_"))[:6]
    return [scan for case in cases for sequence in ("flair", "t1")
            if (scan := evaluate_tcga_case(classifier, case, sequence)) is not None]


def _blurred(scan):
    """Return a copy of a scan whose slices all carry the scan's mean probabilities: no ranking within it."""
    mean = np.repeat(scan.probabilities.mean(axis=0, keepdims=True), len(scan.probabilities), axis=0)
    return dataclasses.replace(scan, probabilities=mean)


def test_saved_scans_read_back_with_the_same_figures(held_out_scans, tmp_path):
    from training.compare import load_scans, save_scans
    from training.volume_eval import summarise_tumour_scans

    path = save_scans(held_out_scans, tmp_path / "scans.json")
    again = load_scans(tmp_path)
    assert [(s.case, s.sequence) for s in again] == [(s.case, s.sequence) for s in held_out_scans]
    assert all(np.array_equal(a.labelled, b.labelled) and np.array_equal(a.assessed, b.assessed)
               for a, b in zip(again, held_out_scans))
    before, after = summarise_tumour_scans(held_out_scans), summarise_tumour_scans(again)
    for sequence in ("flair", "t1"):
        assert after[sequence]["labelled"]["roc_auc"] == pytest.approx(before[sequence]["labelled"]["roc_auc"], abs=1e-3)
        assert after[sequence]["all_slices"]["sensitivity"] == pytest.approx(before[sequence]["all_slices"]["sensitivity"])
    assert path.stat().st_size < 200_000
    with pytest.raises(FileNotFoundError, match="scan-eval"):
        load_scans(tmp_path / "missing")


def test_compare_finds_no_difference_with_itself_and_ranks_a_worse_copy_behind(held_out_scans, tmp_path, capsys):
    from training.cli import main
    from training.compare import compare_markdown, save_scans

    same = compare_markdown(held_out_scans, held_out_scans, "A", "A", resamples=200)
    rows = [line for line in same.splitlines() if line.startswith("| tcga-lgg")]
    assert len(rows) == 2 and all("| +0.000 | +0.000 to +0.000 | 0% |" in row for row in rows), same

    worse = [_blurred(scan) for scan in held_out_scans]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    save_scans(held_out_scans, tmp_path / "a" / "scans.json")
    save_scans(worse, tmp_path / "b" / "scans.json")
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--resamples", "300",
                 "--out", str(tmp_path / "compare.md")]) == 0
    printed = capsys.readouterr().out
    assert printed == (tmp_path / "compare.md").read_text()
    for sequence in ("flair", "t1"):
        row = next(line for line in printed.splitlines() if line.startswith(f"| tcga-lgg held out: tumour-slice ROC AUC, {sequence}"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        a, b, difference = float(cells[1]), float(cells[2]), float(cells[3])
        low = float(cells[4].split(" to ")[0])
        assert a > b and difference == pytest.approx(a - b, abs=1e-3) and low > 0, row
        assert cells[5] == "100%", row


def test_paired_bootstrap_of_a_constant_difference_is_that_difference():
    from training.compare import paired_bootstrap

    values = {"A": {"p1": 0.9, "p2": 0.7, "p3": 0.8}, "B": {"p1": 0.8, "p2": 0.6, "p3": 0.7}}
    low, high, ahead = paired_bootstrap(["p1", "p2", "p3"],
                                        lambda chosen, model: float(np.mean([values[model][c] for c in chosen])), 500)
    assert low == pytest.approx(0.1) and high == pytest.approx(0.1) and ahead == 1.0


def test_the_bundled_models_saved_scans_give_the_figures_of_its_scans_report():
    """scans.json beside the bundled model's scans report is what `convnest compare` reads: it must be that run's."""
    import json

    from convnest_viewer.inference.card import load_card
    from tests.paths import REPO
    from training.compare import load_scans
    from training.volume_eval import summarise_healthy, summarise_tumour_scans

    folder = REPO / "training" / "reports" / load_card(default_model_dir()).name / "scans"
    report, scans = json.loads((folder / "report.json").read_text()), load_scans(folder)
    for key, source in (("tcga_lgg_held_out", "tcga-lgg"), ("volumes_held_out", "brats2013-hgg")):
        figures = summarise_tumour_scans([s for s in scans if s.source == source])
        for sequence, row in report[key]["per_sequence"].items():
            for rows in ("labelled", "all_slices"):
                for measure in ("sensitivity", "specificity", "roc_auc"):
                    assert figures[sequence][rows][measure] == pytest.approx(row[rows][measure], abs=2e-3), (key, sequence)
    healthy = summarise_healthy([s for s in scans if s.source == "healthy"])
    assert {k: v["predicted_counts"] for k, v in healthy.items()} == {
        k: v["predicted_counts"] for k, v in report["healthy"]["per_scan"].items()}

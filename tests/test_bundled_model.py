"""The bundled default model: it loads (checked), the app reproduces the figures its card claims, and it works on
whole scans from sources it never trained on: a healthy head, tumour and no-tumour slices of held-out patients."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convnest_viewer.inference.card import load_card
from convnest_viewer.inference.classifier import Classifier, default_model_dir
from convnest_viewer.io import load_study
from convnest_viewer.paths import demo_study_dir
from tests.paths import BRAIN_TUMOR_MRI, DATA, DICOM, NIFTI, REPO
from training.data import list_dataset


@pytest.fixture(scope="module")
def classifier():
    return Classifier(default_model_dir(), device="cpu")


def test_the_default_model_is_a_checked_convnext_with_its_report(classifier):
    card = classifier.card
    assert card.architecture.startswith("convnext") and card.class_ids == ["glioma", "meningioma", "notumor", "pituitary"]
    report = json.loads((REPO / "training" / "reports" / card.name / "report.json").read_text())
    scans = json.loads((REPO / "training" / "reports" / card.name / "scans" / "report.json").read_text())
    assert card.temperature == pytest.approx(report["temperature"])
    for key in ("official_test", "leakage_free_test"):
        assert card.metrics[key]["accuracy"] == pytest.approx(report[key]["accuracy"])
    for sequence in ("flair", "t1c", "t1"):  # whole scans: as the app reads them, with the card's slice context
        held_out = card.metrics["tcga_lgg_held_out"]["per_sequence"][sequence]["labelled"]
        assert held_out["roc_auc"] == pytest.approx(scans["tcga_lgg_held_out"]["per_sequence"][sequence]["labelled"]["roc_auc"])
    assert card.metrics["tcga_lgg_held_out"]["institutions"] == ["CS"]
    assert card.preprocessing.version == "letterbox-v2" and card.limitations
    assert load_card(default_model_dir()).weights[0].sha256 == classifier.weights_sha256


def test_the_app_reproduces_the_cards_official_test_accuracy(classifier):
    records = [r for r in list_dataset(BRAIN_TUMOR_MRI) if r.split == "test"]
    result = load_study([r.path for r in records])
    assert len(result.series) == len(records) == 1311 and not result.skipped
    predicted = []
    for start in range(0, len(result.series), 64):
        chunk = result.series[start:start + 64]
        predictions = classifier.predict([(s.pixels(0), s.window(0)) for s in chunk], batch_size=64)
        predicted += [classifier.class_ids.index(p.predicted) for p in predictions]
    accuracy = float(np.mean(np.array(predicted) == np.array([r.label for r in records])))
    assert accuracy == pytest.approx(classifier.card.metrics["official_test"]["accuracy"], abs=0.002)


def test_the_demo_study_is_classified_as_its_series_say(classifier):
    result = load_study([demo_study_dir()])
    correct = total = 0
    for series, expected in zip(result.series, classifier.class_ids):
        predictions = classifier.predict([(series.pixels(i), series.window(i)) for i in range(series.n_slices)])
        correct += sum(p.predicted == expected for p in predictions)
        total += len(predictions)
    assert total == 24 and correct >= 16  # measured: 19 with v15 (v3: 17; 24 images vary more than the test split)


def test_a_healthy_head_it_never_saw_is_mostly_no_tumour(classifier):
    """The volunteer's proton-density volume (kept out of training) reads mostly no tumour, as the card says."""
    from training.volume_eval import evaluate_healthy

    scan = evaluate_healthy(classifier, NIFTI / "healthy-volunteer" / "chris_PD.nii.gz", "pd")
    assert len(scan.probabilities) == 54
    share = float((~scan.called_tumour).mean())
    claimed = classifier.card.metrics["healthy"]["per_scan"]["chris_PD (pd)"]["no_tumour_share"]
    assert share == pytest.approx(claimed, abs=1.5 / 54), "the app reproduces the card's healthy-head figure"
    assert share >= 0.55  # measured: 44 of 54 with v15 (the target, 90%, is not met; v12: 46, v3: 27)


def test_the_app_reproduces_the_cards_figure_on_the_healthy_sagittal_head(classifier):
    """The sagittal MPRAGE (held out; v3 called 45% of it a tumour, v15 6%): the card must state the figure truly."""
    from training.volume_eval import evaluate_healthy

    scan = evaluate_healthy(classifier, DICOM / "sagittal-mprage", "t1")
    assert len(scan.probabilities) == 192
    claimed = classifier.card.metrics["healthy"]["per_scan"]["sagittal-mprage (t1)"]["no_tumour_share"]
    assert float((~scan.called_tumour).mean()) == pytest.approx(claimed, abs=1.5 / 192)
    assert claimed >= 0.65  # measured: 181 of 192 with v15 (v12: 181, v3: 105)
    assert f"sagittal-mprage (t1) {1 - claimed:.0%}" in classifier.card.limitations


def test_tumour_and_no_tumour_slices_of_held_out_patients_are_told_apart(classifier):
    """In every scan of the held-out institution (CS), the slice with the largest tumour against the no-tumour
    slices of the same scan: the tumour slice must get the higher tumour probability in most scans."""
    from training.volume_eval import evaluate_tcga_case

    cases = sorted(p for p in (DATA / "tcga-lgg").iterdir() if p.name.startswith("TCGA_CS_"))
    assert len(cases) == 16
    wins = {"flair": [], "t1c": [], "t1": []}
    for case in cases:
        for sequence in wins:
            scan = evaluate_tcga_case(classifier, case, sequence)
            if scan is None or not (scan.labelled == 0).any() or not (scan.labelled == 1).any():
                continue
            probability = scan.tumour_probability
            tumour = probability[scan.labelled == 1].max()
            clear = probability[scan.labelled == 0]
            wins[sequence].append(float((clear < tumour).mean()))
    assert all(len(w) == 16 for w in wins.values()), wins
    # measured: FLAIR 0.96, T1c 0.91, T1 0.94
    assert np.mean(wins["flair"]) >= 0.9, wins
    assert np.mean(wins["t1c"]) >= 0.85, wins
    assert np.mean(wins["t1"]) >= 0.85, wins


def test_held_out_flair_scans_get_a_tumour_verdict_with_the_key_slice_on_the_tumour(classifier):
    """The viewer's series verdict (gate included) on every FLAIR scan of the held-out institution."""
    from training.volume_eval import evaluate_tcga_case, summarise_verdicts

    cases = sorted(p for p in (DATA / "tcga-lgg").iterdir() if p.name.startswith("TCGA_CS_"))
    scans = [evaluate_tcga_case(classifier, case, "flair") for case in cases]
    row = summarise_verdicts(scans)["flair"]
    assert row["scans"] == 16 and sum(row[k] for k in ("tumour", "equivocal", "no tumour", "not assessed")) == 16
    # measured (v15 with its slice context): 15 and 14 (v12: 14 and 14; v6: 15 and 15)
    assert row["tumour"] >= 13 and row["key_slice_on_tumour"] >= 13, row


def test_reading_slices_with_their_neighbours_ranks_held_out_tumour_slices_better(classifier):
    """The card's slice context, fitted on validation patients of other institutions, raises the tumour-slice ROC
    AUC of the held-out institution's FLAIR and T1 scans over each slice read alone."""
    from training.context_fit import scans_alone, validation_cases, width_table

    width = classifier.card.slice_context.sigma_slices
    assert width > 0
    run_config = REPO / "training" / "reports" / classifier.card.name / "run_config.json"
    validation = {case.name for case in validation_cases(DATA / "tcga-lgg", run_config)}
    assert validation and not any(name.startswith("TCGA_CS_") for name in validation)
    assert classifier.card.slice_context.evaluation[f"{width:g}"]["mean"] > classifier.card.slice_context.evaluation["0"]["mean"]
    cases = sorted(p for p in (DATA / "tcga-lgg").iterdir() if p.name.startswith("TCGA_CS_"))
    scans = [scan for scan in scans_alone(classifier, cases) if scan.sequence in ("flair", "t1")]
    table = width_table(scans, (0.0, width))
    for sequence in ("flair", "t1"):  # measured: FLAIR 0.950 -> 0.976, T1 0.871 -> 0.886 (v15)
        assert table[width][sequence] > table[0.0][sequence] + 0.005, table
    assert table[width]["flair"] >= 0.95 and table[width]["t1"] >= 0.85, table

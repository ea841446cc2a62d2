"""The gate: which slices the model should not answer (blank, or unlike its training data)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from convnest_viewer.cli import main as cli_main
from convnest_viewer.batch import classify_series
from convnest_viewer.inference.card import ModelCardError
from convnest_viewer.inference.classifier import Classifier, default_model_dir
from convnest_viewer.inference.gate import (BLANK_REASON, OUT_OF_DOMAIN_REASON, MahalanobisScorer, StageMahalanobis,
                                           image_statistics, stage_statistics)
from convnest_viewer.io import load_study
from tests.paths import BRAIN_TUMOR_MRI, DATA, DICOM, NIFTI


@pytest.fixture(scope="module")
def classifier():
    return Classifier(device="cpu")


def _decisions(classifier, paths):
    return [outcome.decision for series in load_study([str(p) for p in paths]).series
            for outcome in classify_series(classifier, series) if outcome.error is None]


def test_stage_mahalanobis_scores_far_points_higher_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    stages = [rng.normal(0, 1, (400, 6)), rng.normal(5, 2, (400, 4))]
    groups = np.repeat(["a|0", "b|1"], 200)
    stages[0][200:] += 3  # the two groups have their own means
    scorer = StageMahalanobis.fit(stages, groups)
    scorer.calibrate([s[::2] for s in stages])
    near = [s[:5] for s in stages]
    far = [s[:5] + 12 for s in stages]
    assert scorer.scores(far).min() > scorer.scores(near).max()
    scorer.save(tmp_path / "gate.safetensors")
    loaded = StageMahalanobis.load(tmp_path / "gate.safetensors")
    assert np.allclose(loaded.scores(far), scorer.scores(far))
    assert isinstance(loaded.scorers[0], MahalanobisScorer)


def test_the_gate_statistics_are_per_channel_means_and_deviations_of_real_model_inputs(classifier):
    series = load_study([str(DICOM / "sagittal-mprage")]).series[0]
    prepared, _ = classifier.prepare_slices(series, [(0, i) for i in (40, 96, 150)])
    batch = torch.from_numpy(np.stack([p.model_input for p in prepared]))
    with torch.no_grad():
        _, stages = classifier.model.forward_intermediates(batch, indices=[0, 1])
    for stage, statistics in zip(stages, stage_statistics(stages)):
        values = stage.double().numpy().reshape(*stage.shape[:2], -1)
        expected = np.concatenate([values.mean(axis=2), values.std(axis=2, ddof=1)], axis=1)
        assert statistics.shape == expected.shape and np.allclose(statistics, expected, rtol=1e-4, atol=1e-5)
    pixels = batch.double().numpy()[:, 0]
    image = image_statistics(batch)
    assert np.allclose(image[:, 0], pixels.mean(axis=(1, 2)), atol=1e-5)
    assert np.allclose(image[:, 1], pixels.reshape(len(pixels), -1).std(axis=1, ddof=1), atol=1e-5)
    assert np.allclose(image[:, 2], np.abs(np.diff(pixels, axis=2)).mean(axis=(1, 2)), atol=1e-5)
    assert np.allclose(image[:, 3], np.abs(np.diff(pixels, axis=1)).mean(axis=(1, 2)), atol=1e-5)


def test_noise_blank_and_epi_slices_are_gated_by_the_bundled_model(classifier, tmp_path):
    rng = np.random.default_rng(1)
    cv2.imwrite(str(tmp_path / "noise.png"), rng.integers(0, 256, (256, 256), dtype=np.uint8))
    cv2.imwrite(str(tmp_path / "blank.png"), np.zeros((256, 256), np.uint8))
    noise, blank = _decisions(classifier, [tmp_path / "noise.png", tmp_path / "blank.png"])
    assert not noise.assessed and not blank.assessed
    assert blank.reason == BLANK_REASON
    epi = _decisions(classifier, [DICOM / "ge-epi-4d"])
    gated = [d for d in epi if not d.assessed]
    # measured on the bundled model (v15): 53 of the 150 GE EPI slices are gated (35.3%; v12: 56, v2: 82);
    # the card reports every set
    assert len(gated) >= 0.33 * len(epi) and {d.reason for d in gated} <= {BLANK_REASON, OUT_OF_DOMAIN_REASON}


def test_held_out_in_domain_slices_and_healthy_brain_slices_are_mostly_assessed(classifier):
    test_jpegs = [path for name in ("glioma", "meningioma", "notumor", "pituitary")
                  for path in sorted((BRAIN_TUMOR_MRI / "Testing" / name).glob("*.jpg"))[::40]]
    tcga_case = DATA / "tcga-lgg" / "TCGA_CS_4941_19960909"  # institution CS: held out of training
    by_position = lambda path: int(path.stem.split("_")[-2])  # noqa: E731 - slice number in the file name
    tcga = [path for sequence in ("flair", "t1c")
            for path in sorted(tcga_case.glob(f"*_{sequence}.jpg"), key=by_position)[4:-4]]  # inside the head
    decisions = _decisions(classifier, test_jpegs + tcga)
    assert len(decisions) == len(test_jpegs) + len(tcga)
    assert np.mean([d.assessed for d in decisions]) >= 0.9
    mprage = load_study([DICOM / "sagittal-mprage"]).series[0]
    middle = [o.decision for o in classify_series(classifier, mprage) if 60 <= o.index < 130]
    assert np.mean([d.assessed for d in middle]) >= 0.95, "slices through a healthy brain are judged"


def test_the_cli_gives_no_class_for_a_gated_slice_and_says_why(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "blank.png"), np.zeros((200, 200), np.uint8))
    assert cli_main(["classify", str(tmp_path / "blank.png"), "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)["series"][0]["slices"]
    assert entry["predicted"] is None and entry["not_assessed"] == BLANK_REASON and "gate_score" in entry


def test_the_cli_table_gives_one_row_to_each_run_of_slices_withheld_for_one_reason(capsys):
    label_map = next((DATA / "brats2013-hgg").glob("*/*/OTMultiClass.nii*"))
    tumour = sorted((BRAIN_TUMOR_MRI / "Testing" / "glioma").glob("*.jpg"))[0]
    assert cli_main(["classify", str(label_map), str(tumour)]) == 0
    out = capsys.readouterr().out
    n_slices = load_study([label_map]).series[0].n_slices
    map_table = out.split(tumour.name)[0]
    runs = [line for line in map_table.splitlines() if "(not assessed" in line]
    assert 3 <= len(runs) <= 12 < n_slices  # 155 slices: blank runs at both ends, label-map runs between
    assert runs[0].startswith("1-") and runs[-1].split()[0].endswith(f"-{n_slices}")
    assert any("a label map or mask" in line for line in runs)
    assert "glioma" in out.split(tumour.name)[-1] and out.count("Predicted") == 2  # the jpeg keeps its row
    assert "verdict: No verdict: a label map or mask, not an MR image" in out  # the map's own study


def test_the_cli_writes_no_heatmap_for_a_gated_slice(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "blank.png"), np.zeros((200, 200), np.uint8))
    tumour = sorted((BRAIN_TUMOR_MRI / "Testing" / "glioma").glob("*.jpg"))[0]
    out = tmp_path / "overlays"
    assert cli_main(["classify", str(tmp_path / "blank.png"), str(tumour), "--json", "--explain", "gradcam",
                     "--out", str(out)]) == 0
    blank, assessed = (series["slices"][0] for series in json.loads(capsys.readouterr().out)["series"])
    assert blank["not_assessed"] == BLANK_REASON and blank["overlay"] is None
    assert assessed["predicted"] is not None and "not_assessed" not in assessed
    assert sorted(out.rglob("*.png")) == [Path(assessed["overlay"])]


def _copy_model(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(default_model_dir(), folder)
    return folder


def test_a_tampered_or_missing_gate_file_is_refused(tmp_path):
    folder = _copy_model(tmp_path)
    data = bytearray((folder / "gate.safetensors").read_bytes())
    data[-3] ^= 0x01
    (folder / "gate.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelCardError, match="refusing a tampered gate"):
        Classifier(folder, device="cpu")
    (folder / "gate.safetensors").unlink()
    with pytest.raises(ModelCardError, match="gate file named in the model card is missing"):
        Classifier(folder, device="cpu")


def test_a_card_naming_an_unknown_gate_method_is_refused(tmp_path):
    folder = _copy_model(tmp_path)
    card = json.loads((folder / "model_card.json").read_text())
    card["gate"]["method"] = "energy"
    (folder / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelCardError, match="unknown gate method 'energy'"):
        Classifier(folder, device="cpu")


def test_the_viewer_shows_a_gated_slice_as_not_assessed_and_leaves_it_out_of_the_summary(qtbot, tmp_path, monkeypatch):
    from convnest_viewer.ui.main_window import MainWindow

    monkeypatch.setenv("CONVNEST_SETTINGS_FILE", str(tmp_path / "settings.ini"))
    study = tmp_path / "study"
    study.mkdir()
    cv2.imwrite(str(study / "a_blank.png"), np.zeros((224, 224), np.uint8))
    shutil.copy(sorted((BRAIN_TUMOR_MRI / "Testing" / "pituitary").glob("*.jpg"))[0], study / "b_pituitary.jpg")
    window = MainWindow(device="cpu")
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: bool(window.state.model_id), timeout=120_000)
    with qtbot.waitSignal(window.studyLoaded, timeout=120_000) as loaded:
        window.open_paths([str(study)])
    blank, pituitary = loaded.args[0].series
    qtbot.waitUntil(lambda: all(len(window.store.finished(window.state.model_id, s.key)) == 1 for s in (blank, pituitary)),
                    timeout=120_000)
    window.browser.select(blank.key)
    assert window.panel.not_assessed.text() == f"Not assessed: {BLANK_REASON}."
    assert set(window.panel.bar_texts()) == {"not assessed"}
    qtbot.waitUntil(lambda: "1 slice(s) not assessed" in window.panel.summary.text(), timeout=10_000)
    assert "No slice assessed." in window.panel.summary.text()
    assert window.panel.withheld.opts["x"].tolist() == [1]
    window.browser.select(pituitary.key)
    assert window.panel.not_assessed.isHidden()
    qtbot.waitUntil(lambda: "Pituitary" in window.panel.summary.text(), timeout=10_000)
    window.close()


def test_the_series_panel_shows_the_final_verdict_as_soon_as_the_series_is_done(qtbot, tmp_path, monkeypatch):
    from convnest_viewer.ui.main_window import MainWindow

    monkeypatch.setenv("CONVNEST_SETTINGS_FILE", str(tmp_path / "settings.ini"))
    label_map = next((DATA / "brats2013-hgg").glob("*/*/OTMultiClass.nii*"))
    window = MainWindow(device="cpu")
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: bool(window.state.model_id), timeout=120_000)
    window._refresh_timer.setInterval(600_000)  # only the series' end may bring the panel up to date
    with qtbot.waitSignal(window.studyLoaded, timeout=120_000):
        window.open_paths([str(label_map)])
    qtbot.waitUntil(lambda: "No verdict: a label map or mask" in window.panel.study_summary.text(), timeout=240_000)
    summary = window.panel.summary.text()  # set together with the study's verdict, not a timer later
    assert "Series verdict:</b> Not assessed: a label map or mask, not an MR image" in summary, summary
    assert len(window.panel.withheld.opts["x"]) == load_study([label_map]).series[0].n_slices
    assert not window._refresh_timer.isActive()  # drawn at the series' end: no second, timed redraw pending
    window.close()


def test_a_summary_counts_only_the_slices_the_gate_assessed():
    from convnest_viewer.results import summarize

    table = np.array([[0.97, 0.01, 0.01, 0.01],   # withheld: its glioma call must not become the finding
                      [0.10, 0.05, 0.80, 0.05],
                      [0.20, 0.05, 0.70, 0.05]])
    summary = summarize(table, ["glioma", "meningioma", "notumor", "pituitary"], "notumor", 0, np.array([True, False, False]))
    assert (summary.classified, summary.not_assessed, summary.finding, summary.pending) == (2, 1, None, False)
    assert summary.sentence({}) == ("no tumour class predicted on any of 2 slices. "
                                    "1 slice(s) not assessed (blank, a label map, at the edge of the head, or unlike the training slices).")
    told = summarize(table, ["glioma", "meningioma", "notumor", "pituitary"], "notumor", 0, np.array([True, False, False]),
                     [OUT_OF_DOMAIN_REASON])
    assert told.sentence({}).endswith(" 1 slice(s) not assessed: 1 unlike the training slices.")


def test_slices_at_the_edge_of_the_head_in_a_series_are_not_assessed_and_the_app_and_evaluation_agree(classifier, capsys):
    """The series rule: slices whose head section is under the card's fraction of the largest assessed section (the
    packing rule, which left them out of training) get no class in the CLI, the store and the scan evaluation."""
    from convnest_viewer.batch import store_outcome
    from convnest_viewer.inference.foreground import head_share
    from convnest_viewer.inference.preprocess import to_uint8
    from convnest_viewer.results import ResultStore
    from training.volume_eval import series_assessed

    fraction = classifier.card.gate.min_head_fraction
    assert fraction == pytest.approx(0.4), "gate-fit writes the packing rule's fraction into the card"
    mprage = load_study([DICOM / "sagittal-mprage"]).series[0]
    outcomes = list(classify_series(classifier, mprage))
    shares = np.array([head_share(to_uint8(mprage.pixels(i), mprage.window(i))) for i in range(mprage.n_slices)])
    assert np.allclose([o.head_share for o in outcomes], shares)
    per_slice = np.array([o.decision.assessed for o in outcomes])
    edge = per_slice & (shares < fraction * shares[per_slice].max())
    assert 20 <= edge.sum() <= 80, "the lateral slices of a sagittal head (ears, temporal bone) are its edge"
    assert not edge[60:130].any(), "slices through the brain stay assessed"

    store = ResultStore()
    for outcome in outcomes:
        store_outcome(store, "m", mprage.key, outcome)
    withheld = store.not_assessed("m", mprage.key)
    assert {i for (_, i), r in withheld.items() if r.startswith("at the edge of the head")} == set(np.flatnonzero(edge))
    assert np.array_equal(series_assessed(outcomes), ~store.not_assessed_mask("m", mprage.key, 0, mprage.n_slices))
    summary = store.series_summary("m", mprage.key, 0, mprage.n_slices, classifier.class_ids, "notumor")
    assert f"{int(edge.sum())} at the edge of the head" in summary.sentence({}) and not summary.looks_like_label_map
    index = int(np.flatnonzero(edge)[0])
    assert f"head section {shares[index] / shares[per_slice].max():.0%} of the series' largest, under the 40%" in store.not_assessed_reason(
        "m", mprage.key, 0, index)

    assert cli_main(["classify", str(DICOM / "sagittal-mprage"), "--json"]) == 0
    slices = json.loads(capsys.readouterr().out)["series"][0]["slices"]
    assert {s["index"] for s in slices if (s.get("not_assessed") or "").startswith("at the edge of the head")} == set(np.flatnonzero(edge))
    assert all(s["predicted"] is None for s in slices if s["index"] in set(np.flatnonzero(edge)))


def test_the_series_rule_measures_against_assessed_slices_only_and_spares_single_images():
    """A withheld slice never sets the largest section (a localiser-like slice with a huge head share would otherwise
    withhold the whole brain); a single image is its own largest section; a model without the rule withholds nothing."""
    from convnest_viewer.inference.head_edge import at_head_edge
    from convnest_viewer.results import ResultStore

    shares = np.array([0.05, 0.30, 0.50, 0.55, 0.52, 0.90])
    assessed = np.array([True, True, True, True, True, False])  # the last: withheld as unlike the training slices
    assert at_head_edge(shares, assessed, 0.4).tolist() == [True, False, False, False, False, False]
    assert not at_head_edge(shares, assessed, 0.0).any()
    assert not at_head_edge(np.array([0.01]), np.array([True]), 0.4).any()
    store = ResultStore()
    for index, share in enumerate(shares):
        if not assessed[index]:
            store.put_not_assessed("m", "s", 0, index, OUT_OF_DOMAIN_REASON)
        store.put_head_share("m", "s", 0, index, share, 0.4)
        store.put_probabilities("m", "s", 0, index, np.array([0.9, 0.0, 0.1, 0.0]))
    assert set(store.not_assessed("m", "s")) == {(0, 0), (0, 5)}
    assert store.not_assessed_reason("m", "s", 0, 5) == OUT_OF_DOMAIN_REASON
    store.put_head_share("m", "s", 0, 6, 1.0, 0.4)  # an assessed slice with more head: the others are measured anew
    assert set(store.not_assessed("m", "s")) == {(0, 0), (0, 1), (0, 5)}
    assert store.not_assessed_mask("m", "s", 0, 7).tolist() == [True, True, False, False, False, True, False]


def test_label_maps_and_masks_opened_as_images_are_not_assessed_and_real_slices_never_look_like_one(classifier):
    from convnest_viewer.batch import store_outcome
    from convnest_viewer.inference.gate import LABEL_MAP_REASON
    from convnest_viewer.results import ResultStore
    from convnest_viewer.verdict import series_verdict

    label_reason = LABEL_MAP_REASON.split("{")[0]
    brats = sorted((DATA / "brats2013-hgg").glob("*/*"))
    maps = [next(case.glob("OTMultiClass.nii*")) for case in brats]
    masks = sorted((DATA / "tcga-lgg" / "TCGA_CS_4941_19960909").glob("*_mask.png"))
    labelled = 0
    for path in maps + masks[::3]:
        for series in load_study([path]).series:
            prepared, failed = classifier.prepare_slices(series, [(0, i) for i in range(series.n_slices)])
            reasons = [p.blank for p in prepared]
            assert not failed and all(reasons), path.name  # no slice of a label map reaches the model
            assert all(r == BLANK_REASON or r.startswith(label_reason) for r in reasons), path.name
            labelled += sum(r.startswith(label_reason) for r in reasons)
    assert labelled >= 6 * 20  # each map has a tumour on 20+ slices; a blank rule alone would not say why
    outcomes = list(classify_series(classifier, load_study([maps[0]]).series[0]))
    withheld = np.array([not o.decision.assessed for o in outcomes])
    verdict = series_verdict(np.array([o.probabilities for o in outcomes]), classifier.class_ids, "notumor", withheld)
    assert withheld.all() and verdict.label == "not assessed", verdict
    store = ResultStore()
    for outcome in outcomes:
        store_outcome(store, "m", "map", outcome)
    summary = store.series_summary("m", "map", 0, len(outcomes), classifier.class_ids, "notumor")
    labels = sum(not o.decision.assessed and o.decision.reason.startswith(label_reason) for o in outcomes)
    assert summary.looks_like_label_map and labels >= 20
    assert summary.sentence({}).startswith("No slice assessed. This series looks like a label map or mask, not an MR image.")
    assert f"{labels} a label map or mask" in summary.sentence({}) and summary.short({}).startswith("a label map or mask")
    map_series = load_study([maps[0]]).series[0]
    for outcome in outcomes:
        store_outcome(store, "m", map_series.key, outcome)
    verdict = store.series_verdict("m", map_series, classifier.card)  # the words the series list and study show
    assert verdict.label == "not assessed" and verdict.text({}) == "not assessed: a label map or mask, not an MR image"
    real = [p for case in brats for p in sorted(case.glob("*_subtrMeanDivStd.nii*"))]
    real += [DICOM / "sagittal-mprage", *sorted((NIFTI / "healthy-volunteer").glob("*.nii*"))]
    for path in real:
        series = load_study([path]).series[0]
        prepared, _ = classifier.prepare_slices(series, [(0, i) for i in range(series.n_slices)])
        assert not any(p.blank and p.blank.startswith(label_reason) for p in prepared), path.name

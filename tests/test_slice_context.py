"""Reading a slice with its neighbours (the model card's slice context): the rule, the result store, the card,
`convnest classify` and the viewer's panel, on real series and a tiny random model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convnest_viewer.inference.card import ModelCardError, load_card
from convnest_viewer.inference.context import context_reach, in_context
from convnest_viewer.results import ResultStore
from tests.paths import DICOM
from tests.tiny_model import write_tiny_model

GLIOMA, NONE = np.array([0.9, 0.0, 0.1, 0.0]), np.array([0.1, 0.0, 0.9, 0.0])


def test_a_lone_call_is_damped_and_a_run_of_calls_is_kept():
    table = np.array([NONE, NONE, NONE, GLIOMA, NONE, NONE, GLIOMA, GLIOMA, GLIOMA, GLIOMA, NONE])
    read = in_context(table, None, 1.5)
    assert np.allclose(read.sum(axis=1), 1.0)
    assert read[3].argmax() == 2, "a single glioma call among no-tumour slices reads no tumour"
    assert all(read[i].argmax() == 0 for i in (7, 8)), "inside a run of glioma calls the call stays"
    assert np.array_equal(in_context(table, None, 0.0), table)
    assert context_reach(1.5) == 5 and context_reach(0.0) == 0


def test_withheld_and_pending_slices_neither_count_nor_change():
    table = np.array([NONE, NONE, GLIOMA, NONE, NONE])
    table_pending = table.copy()
    table_pending[1] = np.nan
    usable = np.array([True, True, False, True, True])
    read = in_context(table_pending, usable, 1.0)
    assert np.array_equal(read[2], GLIOMA), "a withheld slice keeps its own answer"
    assert np.isnan(read[1]).all(), "a pending slice stays pending"
    assert np.allclose(read[[0, 3, 4]], NONE), "only no-tumour slices were usable around them"


def test_the_store_reads_each_slice_as_its_series_table_does():
    store = ResultStore()
    rows = [NONE, GLIOMA, GLIOMA, NONE, GLIOMA, NONE, NONE]
    for index, row in enumerate(rows):
        store.put_probabilities("m", "s", 0, index, row)
    store.put_not_assessed("m", "s", 0, 4, "blank")
    assert store.slice_context("m") == 0 and np.array_equal(store.probabilities("m", "s", 0, 1), GLIOMA)
    store.set_slice_context("m", 1.0)
    table = store.series_probabilities("m", "s", 0, 7, 4)
    assert np.allclose(table, in_context(np.array(rows), np.arange(7) != 4, 1.0))
    for index in range(7):
        assert np.allclose(store.probabilities("m", "s", 0, index), table[index])
        assert np.array_equal(store.probabilities("m", "s", 0, index, alone=True), rows[index])
    assert np.array_equal(store.series_probabilities("m", "s", 0, 7, 4, alone=True), np.array(rows))
    assert store.probabilities("m", "s", 0, 9) is None


def test_slices_across_a_gap_weigh_as_far_as_they_lie():
    rng = np.random.default_rng(0)
    full = rng.dirichlet(np.ones(4), size=14)
    kept = np.r_[0:5, 8:14]  # slices 5-7 missing: the series has 11, the slice after the gap lies 4 steps on
    read = in_context(full[kept], None, 1.5, positions=kept.astype(float))
    pending = full.copy()
    pending[5:8] = np.nan
    assert np.allclose(read, in_context(pending, None, 1.5)[kept]), "as if the missing slices were never classified"
    assert not np.allclose(read, in_context(full[kept], None, 1.5)), "row numbers would read across the gap"


def test_the_store_reads_a_series_with_missing_slices_by_their_positions(tmp_path):
    from convnest_viewer.batch import classify_series, store_outcome
    from convnest_viewer.inference.classifier import Classifier
    from convnest_viewer.io import load_study

    files = sorted((DICOM / "sagittal-mprage").glob("*.dcm"))
    for path in files[80:100] + files[103:120]:  # slices 101-103 lost in transfer
        (tmp_path / path.name).symlink_to(path)
    [series] = load_study([tmp_path]).series
    assert series.n_slices == 37 and series.slice_step_position(20) == 23.0 and series.slice_step_position(19) == 19.0
    classifier = Classifier(_tiny_with_context(tmp_path / "tiny", 1.5), device="cpu")
    store, model_id = ResultStore(), classifier.weights_sha256
    for outcome in classify_series(classifier, series):
        store_outcome(store, model_id, series.key, outcome)
    alone = store.series_probabilities(model_id, series.key, 0, 37, 4, alone=True)
    usable = ~store.not_assessed_mask(model_id, series.key, 0, 37)
    positions = np.r_[0:20, 23:40].astype(float)
    expected = in_context(alone, usable, 1.5, positions)
    assert np.allclose(store.series_probabilities(model_id, series.key, 0, 37, 4), expected)
    assert np.allclose([store.probabilities(model_id, series.key, 0, i) for i in range(37)], expected)
    assert not np.allclose(expected[17:23], in_context(alone, usable, 1.5)[17:23]), "the gap changes the reading"


def _tiny_with_context(folder, sigma):
    write_tiny_model(folder)
    raw = json.loads((folder / "model_card.json").read_text())
    raw["slice_context"] = {"sigma_slices": sigma, "chosen_on": "a test"}
    (folder / "model_card.json").write_text(json.dumps(raw))
    return folder


@pytest.mark.parametrize("sigma", [-1.0, 9.0])
def test_a_card_with_a_slice_context_out_of_range_is_refused(tmp_path, sigma):
    folder = _tiny_with_context(tmp_path / "tiny", sigma)
    with pytest.raises(ModelCardError, match="model_card.json: slice_context.sigma_slices must lie in 0-5"):
        load_card(folder)


def test_classify_reports_each_slice_with_its_neighbours_and_alone(tmp_path, capsys):
    from convnest_viewer.cli import main as cli_main

    folder = _tiny_with_context(tmp_path / "tiny", 1.5)
    assert load_card(folder).slice_context.sigma_slices == 1.5
    series = DICOM / "patient-positions" / "In" / "HFS"
    assert cli_main(["classify", str(series), "--model", str(folder), "--device", "cpu", "--json",
                     "--report", str(tmp_path / "report.html")]) == 0
    assert "each read with its neighbours&#x27; (Gaussian over slices, width 1.5 slices)" in \
        (tmp_path / "report.html").read_text()
    slices = json.loads(capsys.readouterr().out)["series"][0]["slices"]
    classes = list(slices[0]["probabilities"])
    alone = np.array([[s["slice_probabilities"][c] for c in classes] for s in slices])
    read = np.array([[s["probabilities"][c] for c in classes] for s in slices])
    assert len(slices) == 35 and not np.allclose(alone, read)
    assert np.allclose(read, in_context(alone, None, 1.5), atol=2e-6)
    assert [s["predicted"] for s in slices] == [classes[i] for i in read.argmax(axis=1)]


def test_the_panel_shows_the_slice_read_with_its_neighbours_and_alone(qtbot, tmp_path, monkeypatch):
    from convnest_viewer.ui.main_window import MainWindow

    monkeypatch.setenv("CONVNEST_SETTINGS_FILE", str(tmp_path / "settings.ini"))
    window = MainWindow(model_dir=_tiny_with_context(tmp_path / "tiny", 1.5), device="cpu")
    qtbot.addWidget(window)
    window.show()
    qtbot.waitUntil(lambda: bool(window.state.model_id), timeout=120_000)
    with qtbot.waitSignal(window.studyLoaded, timeout=120_000):
        window.open_paths([str(DICOM / "patient-positions" / "In" / "HFS")])
    series = window.state.series
    qtbot.waitUntil(lambda: window.store.series_finished(window.state.model_id, series), timeout=120_000)
    alone = window.store.series_probabilities(window.state.model_id, series.key, 0, 35, 4, alone=True)
    read = in_context(alone, ~window.store.not_assessed_mask(window.state.model_id, series.key, 0, 35), 1.5)
    assert not np.allclose(read[5], alone[5])
    window.state.set_slice(5)  # the panel follows within its repaint interval
    qtbot.waitUntil(lambda: window.panel.bar_values() == [round(p * 1000) for p in read[5]], timeout=10_000)
    assert window.panel.context_note.isVisible()
    own = int(alone[5].argmax())
    assert f"This slice alone: {window.state.display_names[window.state.class_ids[own]]} {alone[5][own]:.0%}." in \
        window.panel.context_note.text()
    window.close()


def test_the_narrowest_width_near_the_best_is_chosen():
    from training.context_fit import chosen_width

    table = {0.0: {"mean": 0.90}, 1.0: {"mean": 0.940}, 1.5: {"mean": 0.946}, 2.0: {"mean": 0.950}}
    assert chosen_width(table, 0.005) == 1.5
    assert chosen_width(table, 0.0) == 2.0
    assert chosen_width({0.0: {"mean": 0.9}, 1.0: {"mean": 0.8}}) == 0.0, "context that does not help is left off"


def test_context_fit_measures_every_width_on_validation_patients_and_writes_the_card(tmp_path, capsys):
    from convnest_viewer.cli import main as cli_main
    from tests.paths import DATA, REPO
    from training.context_fit import WIDTHS

    folder = write_tiny_model(tmp_path / "tiny")
    run_config = REPO / "training" / "reports" / "convnext-femto-192-multi-v12" / "run_config.json"
    assert cli_main(["context-fit", "--model", str(folder), "--tcga", str(DATA / "tcga-lgg"), "--run-config",
                     str(run_config), "--report", str(tmp_path / "report"), "--write-card", "--device", "cpu"]) == 0
    fitted = json.loads((tmp_path / "report" / "context.json").read_text())
    assert len(fitted["cases"]) == 8 and not any(case.startswith("TCGA_CS_") for case in fitted["cases"])
    assert [float(w) for w in fitted["widths"]] == list(WIDTHS)
    assert all(set(row) == {"flair", "t1", "t1c", "mean"} for row in fitted["widths"].values())
    card = load_card(folder)
    assert card.slice_context.sigma_slices == fitted["chosen"] and "validation patients" in card.slice_context.chosen_on
    assert "| chosen |" in capsys.readouterr().out

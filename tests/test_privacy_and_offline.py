"""Patient identifiers never reach logs or crash reports; the whole pipeline runs with the network blocked."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import threading

import pydicom
import pytest

from convnest_viewer.io import load_study
from convnest_viewer.privacy import Redactor
from tests.paths import DICOM, pydicom_file

NAME, PATIENT_ID, BIRTH_DATE = "Lindqvist^Maja^Elin", "PID-48213", "19700203"
IDENTIFIER_TEXTS = ["Lindqvist", "Maja", "Elin", "lindqvist", PATIENT_ID, BIRTH_DATE, "1970-02-03"]


@pytest.fixture
def named_study(tmp_path):
    """A study folder named after its patient: three MPRAGE slices with identifiers set, and a corrupt file."""
    folder = tmp_path / f"Lindqvist_Maja_{PATIENT_ID}"
    folder.mkdir()
    for source in sorted((DICOM / "sagittal-mprage").glob("*.dcm"))[94:97]:
        ds = pydicom.dcmread(source)
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, PATIENT_ID, BIRTH_DATE
        ds.save_as(folder / source.name)
    (folder / f"{PATIENT_ID}_broken.dcm").write_bytes((folder / source.name).read_bytes()[:3000])
    return folder


def _assert_no_identifiers(text: str) -> None:
    for value in IDENTIFIER_TEXTS:
        assert value not in text, f"{value!r} leaked"


def test_the_redactor_replaces_names_parts_ids_and_both_date_forms():
    redactor = Redactor()
    redactor.remember(NAME, PATIENT_ID, BIRTH_DATE)
    text = redactor.redact(f"/data/LINDQVIST_maja/{PATIENT_ID}: born 1970-02-03 ({BIRTH_DATE}), Elin; MR study")
    _assert_no_identifiers(text)
    assert text.count("[redacted]") == 6 and "MR study" in text
    redactor.remember("A^B", "12", "")  # too short to redact without blanking ordinary text
    assert redactor.redact("A and B, 12 slices") == "A and B, 12 slices"


def test_the_log_and_a_crash_report_hold_no_identifiers(named_study, tmp_path, monkeypatch):
    from convnest_viewer import logs

    monkeypatch.setenv(logs.LOG_DIR_VARIABLE, str(tmp_path / "logs"))
    log_path = logs.configure_logging()
    try:
        result = load_study([named_study])
        assert [s.n_slices for s in result.series] == [3] and len(result.skipped) == 1
        logging.getLogger("convnest_viewer.ui").warning("could not read %s", result.skipped[0].path)
        try:
            raise ValueError(f"cannot classify {named_study} for {NAME} ({PATIENT_ID}, born {BIRTH_DATE})")
        except ValueError as exc:
            report = logs.write_crash_report(type(exc), exc, exc.__traceback__)
        assert logs._state["handler"] in logging.getLogger("py.warnings").handlers, "warnings go to the log"
    finally:
        handler = logs._state.pop("handler")
        logging.getLogger("convnest_viewer").removeHandler(handler)
        logging.getLogger("py.warnings").removeHandler(handler)
        logging.captureWarnings(False)
    log_text = log_path.read_text(encoding="utf-8")
    report_text = report.read_text(encoding="utf-8")
    assert "loaded 1 series from 4 files; 1 skipped" in log_text
    assert "broken.dcm" in log_text and "ValueError: cannot classify" in report_text
    _assert_no_identifiers(log_text)
    _assert_no_identifiers(report_text)


def test_an_uncaught_exception_in_a_worker_thread_becomes_a_redacted_crash_report(named_study, tmp_path, monkeypatch):
    from convnest_viewer import logs

    monkeypatch.setenv(logs.LOG_DIR_VARIABLE, str(tmp_path / "logs"))
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    shown = []
    load_study([named_study])
    logs.install_crash_handlers(show=lambda path, text: shown.append((path, text)))
    try:
        worker = threading.Thread(target=_raise, args=(f"bad slice of {NAME}",), name="inference")
        worker.start()
        worker.join()
    finally:
        logs._state.pop("native").close()
    [(path, text)] = shown
    assert text == "RuntimeError: bad slice of [redacted]"
    report = path.read_text(encoding="utf-8")
    assert "thread: inference" in report and "RuntimeError" in report
    _assert_no_identifiers(report)


def _raise(message: str):
    raise RuntimeError(message)


@pytest.fixture
def no_network(monkeypatch):
    """Make every attempt to open a network connection or resolve a name fail the test."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] if len(args) > 1 else args)
        raise OSError("network access attempted during an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield attempts
    assert attempts == [], f"network access attempted: {attempts}"


def test_open_classify_explain_and_export_run_with_the_network_blocked(no_network, tmp_path):
    from convnest_viewer.batch import classify_series
    from convnest_viewer.inference.classifier import Classifier
    from convnest_viewer.inference.explain import explain
    from convnest_viewer.report import write_csv, write_html
    from convnest_viewer.results import ResultStore

    study = tmp_path / "study"
    study.mkdir()
    shutil.copy(DICOM / "transfer-syntaxes" / "In" / "5.dcm", study)  # JPEG lossless: decoded in a worker process
    for source in sorted((DICOM / "sagittal-mprage").glob("*.dcm"))[90:94]:
        shutil.copy(source, study)
    shutil.copy(pydicom_file("MR_small.dcm"), study)

    result = load_study([study])
    classifier = Classifier(device="cpu")
    store = ResultStore()
    model_id = classifier.weights_sha256
    for series in result.series:
        for outcome in classify_series(classifier, series):
            assert outcome.error is None, outcome.error
            store.put_probabilities(model_id, series.key, outcome.volume, outcome.index, outcome.probabilities)
    item = next(iter(classify_series(classifier, result.series[0]))).prepared
    heatmaps = [explain(classifier, item.values, item.window, method) for method in ("gradcam", "shap")]
    csv_path = write_csv(tmp_path / "r.csv", result.series, store, model_id, classifier.class_ids)
    html_path = write_html(tmp_path / "r.html", result.series, store, model_id, classifier.card,
                           lambda series, volume, index: explain(classifier, series.pixels(index, volume),
                                                                 series.window(index, volume), "gradcam"))

    assert len(result.series) == 3 and all(h.values.shape == item.values.shape for h in heatmaps)
    assert len(csv_path.read_text().splitlines()) == 1 + sum(s.n_slices for s in result.series)
    assert "http://" not in html_path.read_text() and "https://" not in html_path.read_text()


def test_the_viewer_self_test_writes_a_log_without_identifiers(named_study, tmp_path):
    env = {**os.environ, "CONVNEST_LOG_DIR": str(tmp_path / "logs"), "QT_QPA_PLATFORM": "offscreen"}
    completed = subprocess.run([sys.executable, "-m", "convnest_viewer.app", "--self-test", "--device", "cpu",
                                str(named_study)], capture_output=True, text=True, env=env, timeout=600)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    log_text = (tmp_path / "logs" / "convnest-viewer.log").read_text(encoding="utf-8")
    assert "loaded 1 series from 4 files; 1 skipped" in log_text
    _assert_no_identifiers(log_text)

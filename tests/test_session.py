"""The Qt-free inference session: the shown slice first, superseded work never announced, one batch loop."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convnest_viewer.io import load_study
from convnest_viewer.results import ResultStore
from convnest_viewer.batch import classify_series
from convnest_viewer.session import InferenceSession
from tests.paths import DICOM
from tests.tiny_model import write_tiny_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("session-model") / "tiny")


@pytest.fixture(scope="module")
def study():
    return load_study([str(DICOM / "patient-positions")])  # two series of 35 slices


def _session(model_dir, batch_size=4):
    session = InferenceSession(ResultStore(), model_dir, "cpu", batch_size=batch_size)
    heard = []
    for name in session.events.names:
        session.events.connect(name, lambda *args, n=name: heard.append((n, *args)))
    assert session.load_model()
    return session, heard


def test_the_shown_slice_is_classified_first_then_outward(model_dir, study):
    session, heard = _session(model_dir)
    series = study.series[0]
    session.classify_series(series, focus_index=20)
    session.run_until_idle()
    order = [event[3] for event in heard if event[0] == "slice_classified"]
    assert sorted(order) == list(range(35))
    assert order[0] == 20 and set(order[:3]) == {19, 20, 21}
    assert all(abs(a - 20) <= abs(b - 20) + 1 for a, b in zip(order, order[1:]))
    assert [e for e in heard if e[0] == "series_done"] == [("series_done", series.key)]
    assert [e for e in heard if e[0] == "progress"][-1] == ("progress", series.key, 35, 35)


def test_a_superseded_job_is_stored_but_not_announced(model_dir, study):
    session, heard = _session(model_dir)
    first, second = study.series

    def switch_once(key, volume, index, probabilities):
        if key == first.key and not any(e[0] == "slice_classified" and e[1] == second.key for e in heard):
            session.classify_series(second, focus_index=0)  # the user opened another series mid-batch

    session.events.connect("slice_classified", switch_once)
    session.classify_series(first, focus_index=17)
    session.run_until_idle()
    announced_first = [e for e in heard if e[0] == "slice_classified" and e[1] == first.key]
    assert len(announced_first) == 1, "after the switch the first job's results are not announced"
    assert len(session.store.classified(session.model_id, first.key)) == 4, "its batch in flight is still stored"
    assert not any(e[0] in ("progress", "series_done") and e[1] == first.key for e in heard)
    assert len([e for e in heard if e[0] == "slice_classified" and e[1] == second.key]) == 35


def test_a_superseded_heatmap_and_its_failure_never_reach_the_slice_shown_now(model_dir, study, monkeypatch):
    import convnest_viewer.inference.explain as explain_module

    session, heard = _session(model_dir)
    series = study.series[0]
    real_explain = explain_module.explain
    calls = []

    def explain_while_the_user_moves_on(classifier, values, window, method, target=None, **kwargs):
        calls.append(method)
        if len(calls) == 1:  # the user scrolls on while slice 5's map is computed, and it then fails
            session.request_heatmap(series, 0, 6, "gradcam", 1)
            raise RuntimeError("out of memory")
        return real_explain(classifier, values, window, method, target=target, **kwargs)

    monkeypatch.setattr(explain_module, "explain", explain_while_the_user_moves_on)
    session.request_heatmap(series, 0, 5, "gradcam", 1)
    session.run_until_idle()
    assert calls == ["gradcam", "gradcam"]
    assert not any(e[0] == "heatmap_failed" for e in heard), "the stale failure is dropped"
    (ready,) = [e for e in heard if e[0] == "heatmap_ready"]
    assert ready[1].index == 6 and ready[2].values.shape == (series.rows, series.columns)


def test_cancel_drops_the_job_and_the_cli_loop_gives_the_same_results(model_dir, study):
    session, heard = _session(model_dir, batch_size=8)
    series = study.series[1]
    session.classify_series(series, focus_index=0)
    session.cancel()
    session.run_until_idle()
    assert not any(e[0] == "slice_classified" for e in heard)
    session.classify_series(series, focus_index=0)
    session.run_until_idle()
    for outcome in classify_series(session.classifier, series, batch_size=5):  # what `convnest classify` runs
        stored = session.store.probabilities(session.model_id, series.key, outcome.volume, outcome.index)
        assert np.allclose(stored, outcome.probabilities, atol=1e-6)


def test_a_report_request_classifies_what_is_missing_and_writes_html_and_csv(model_dir, study, tmp_path):
    session, heard = _session(model_dir)
    session.request_report(study.series, tmp_path / "study.html", False, "gradcam")
    session.run_until_idle()
    (written,) = [e for e in heard if e[0] == "report_written"]
    _, html, csv_path, error = written
    assert error == "" and html.endswith("study.html")
    assert len(open(csv_path, encoding="utf-8").read().strip().splitlines()) == 1 + 70
    session.request_report(study.series, tmp_path / "study.html" / "x.html", False, "gradcam")  # under a file
    session.run_until_idle()
    assert "Could not write the report" in heard[-1][3]


def test_convnest_classify_writes_the_same_report(model_dir, tmp_path, capsys):
    from convnest_viewer.cli import main

    html = tmp_path / "cli.html"
    assert main(["classify", str(DICOM / "patient-positions" / "In" / "HFS"), "--model", str(model_dir),
                 "--device", "cpu", "--json", "--report", str(html)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["report"] == {"html": str(html), "csv": str(html.with_suffix(".csv"))}
    assert "Verdict" in html.read_text(encoding="utf-8")
    assert len(html.with_suffix(".csv").read_text(encoding="utf-8").strip().splitlines()) == 1 + 35


def test_the_rest_of_the_study_follows_in_the_background(model_dir, study):
    session, heard = _session(model_dir, batch_size=16)
    first, second = study.series
    session.set_study(study.series)
    session.classify_series(first, focus_index=3)
    session.run_until_idle()
    assert [e[1] for e in heard if e[0] == "series_done"] == [first.key, second.key]
    second_order = [e[3] for e in heard if e[0] == "slice_classified" and e[1] == second.key]
    assert second_order[0] == second.n_slices // 2, "a series nobody looks at starts from its middle"
    heard.clear()
    session.classify_series(first, focus_index=0)  # everything is done: nothing is classified twice
    session.run_until_idle()
    assert heard == []


def test_showing_a_finished_series_goes_on_with_the_next_unfinished_one(model_dir, study):
    session, heard = _session(model_dir, batch_size=16)
    first, second = study.series
    session.classify_series(first, focus_index=0)
    session.run_until_idle()  # no study named yet: only the first series
    assert [e[1] for e in heard if e[0] == "series_done"] == [first.key]
    session.set_study(study.series)
    session.classify_series(first, focus_index=5)  # the user shows the finished series again
    session.run_until_idle()
    assert [e[1] for e in heard if e[0] == "series_done"] == [first.key, second.key]


def test_background_batches_leave_a_core_to_the_viewer_while_the_user_scrolls(model_dir, study, monkeypatch):
    import torch

    session, _ = _session(model_dir)
    threads = session._cpu_threads
    if threads < 2:
        pytest.skip("one CPU thread: nothing to share")
    used = []
    monkeypatch.setattr(session, "_classify", lambda job, chosen: used.append(torch.get_num_threads()))
    monkeypatch.setattr(session, "_make_heatmap", lambda request: used.append(torch.get_num_threads()))
    series = study.series[0]
    session.classify_series(series, focus_index=10)
    session._do_next(wait=False)
    session.set_focus(11)  # the user scrolls
    session._do_next(wait=False)
    session.request_heatmap(series, 0, 11, "gradcam", None)
    session._do_next(wait=False)  # a heatmap the user waits for gets every core
    session._last_focus -= 1.0  # the user stopped scrolling a second ago
    session._do_next(wait=False)
    assert used == [threads, 1, threads, threads]

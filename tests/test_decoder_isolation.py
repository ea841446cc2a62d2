"""Compressed DICOM is decoded in worker processes: a native decoder that aborts, crashes or runs away on corrupt
data costs one file (with its reason), never the app; the same folder's good files still load."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from convnest_viewer.io import PixelReadError, load_study
from convnest_viewer.results import ResultStore, summarize
from tests.paths import DICOM

TRANSFER_SYNTAXES = DICOM / "transfer-syntaxes" / "In"


def corrupt_codestream(name: str, seed: int, out) -> None:
    """Write a copy of a transfer-syntax test file with 3 bytes of its codestream's header changed."""
    raw = (TRANSFER_SYNTAXES / name).read_bytes()
    start = raw.find(b"\xff\x4f\xff\x51") if name == "9.dcm" else raw.find(b"\xff\xd8")
    data = bytearray(raw)
    rng = np.random.default_rng(seed)
    for position in rng.integers(start, start + 60, 3):
        data[position] ^= int(rng.integers(1, 256))
    out.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def damaged_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("damaged")
    corrupt_codestream("7.dcm", 2, folder / "jpeg-ls-abort.dcm")  # GDCM: terminate called after gdcm::Exception
    corrupt_codestream("6.dcm", 30, folder / "jpeg-ls-segfault.dcm")  # SIGSEGV in the decoder
    corrupt_codestream("9.dcm", 32, folder / "j2k-runaway.dcm")  # allocates gigabytes without end
    shutil.copy(TRANSFER_SYNTAXES / "8.dcm", folder / "good-jpeg-ls.dcm")
    return folder


def test_a_decoder_crash_costs_one_file_and_the_good_file_still_decodes(damaged_folder):
    result = load_study([damaged_folder])
    by_name = {s.volumes[0][0].path.name: s for s in result.series}
    assert set(by_name) == {"jpeg-ls-abort.dcm", "jpeg-ls-segfault.dcm", "j2k-runaway.dcm", "good-jpeg-ls.dcm"}
    reasons = {}
    for name in ("jpeg-ls-abort.dcm", "jpeg-ls-segfault.dcm", "j2k-runaway.dcm"):
        with pytest.raises(PixelReadError) as caught:
            by_name[name].pixels(0)
        reasons[name] = str(caught.value)
        assert name in reasons[name]
    assert "crashed" in reasons["jpeg-ls-abort.dcm"] and "SIGABRT" in reasons["jpeg-ls-abort.dcm"]
    assert "crashed" in reasons["jpeg-ls-segfault.dcm"] and "SIGSEGV" in reasons["jpeg-ls-segfault.dcm"]
    for name, reason in reasons.items():  # the other 34 tiles of each mosaic fail at once with the same reason
        series = by_name[name]
        for index in range(1, series.n_slices):
            with pytest.raises(PixelReadError, match="crashed|could not|killed|time"):
                series.pixels(index)
    good = by_name["good-jpeg-ls.dcm"]
    assert good.volumes[0][0].compressed and good.n_slices == 35
    reference = load_study([TRANSFER_SYNTAXES / "1.dcm"]).series[0]  # the same image, uncompressed
    assert not reference.volumes[0][0].compressed
    assert all(np.array_equal(good.pixels(i), reference.pixels(i)) for i in range(35))


def test_the_cli_classifies_the_rest_of_a_folder_with_a_crashing_file(damaged_folder, capsys):
    from convnest_viewer.cli import main

    assert main(["classify", str(damaged_folder), "--json"]) == 0
    out = capsys.readouterr().out
    assert "killed by SIGABRT" in out and "killed by SIGSEGV" in out
    series = json.loads(out)["series"]
    classified = [entry for entry in series if entry["slices"]]
    assert len(classified) == 1 and len(classified[0]["slices"]) == 35, "the good file's 35 mosaic slices are classified"
    assert sum(len(entry.get("errors", [])) for entry in series) == 3 * 35, "every slice of the damaged files has a reason"


def test_failed_slices_count_as_finished_and_are_named_in_the_summary():
    store = ResultStore()
    store.put_probabilities("m", "s", 0, 0, np.array([0.1, 0.1, 0.7, 0.1]))
    store.put_failure("m", "s", 0, 1, "cannot decode pixel data")
    assert store.finished("m", "s") == {(0, 0), (0, 1)} and store.failures("m", "s") == {(0, 1): "cannot decode pixel data"}
    table = store.series_probabilities("m", "s", 0, 2, 4)
    summary = summarize(table, ["glioma", "meningioma", "notumor", "pituitary"], "notumor", failed=1)
    assert not summary.pending
    assert summary.sentence({}) == "no tumour class predicted on any of 1 slices. 1 slice(s) could not be read."

"""Numbered PNG/JPEG files of one scan open as one series; unrelated images stay one series per file."""

from __future__ import annotations

import shutil

import cv2
import numpy as np

from convnest_viewer.io import load_study
from convnest_viewer.io.raster_stack import MIN_FILES
from tests.paths import BRAIN_TUMOR_MRI, DATA

CASE = DATA / "tcga-lgg" / "TCGA_CS_4941_19960909"


def _numbers(sequence: str) -> list[int]:
    return sorted(int(path.name.split("_")[-2]) for path in CASE.glob(f"*_{sequence}.*"))


def test_a_tcga_lgg_case_folder_opens_as_one_series_per_sequence_in_slice_order():
    result = load_study([CASE])
    assert not result.skipped
    by_contrast = {series.contrast: series for series in result.series}
    assert len(result.series) == 4 and set(by_contrast) == {"flair", "t1", "t1c", ""}  # "": the masks
    numbers = _numbers("flair")
    for sequence in ("flair", "t1", "t1c"):
        series = by_contrast[sequence]
        assert series.kind == "raster" and series.n_slices == len(numbers) == 23
        assert series.description == f"{CASE.name}_[1-23]_{sequence}.jpg (23 images)"
        for index in (0, 9, 22):  # 10 sorts before 2 by name: the order must be the number's
            expected = cv2.imread(str(CASE / f"{CASE.name}_{numbers[index]}_{sequence}.jpg"), cv2.IMREAD_GRAYSCALE)
            assert np.abs(series.pixels(index) - expected).max() <= 1.0
    assert by_contrast[""].description.endswith("_mask.png (23 images)")


def test_the_gate_reads_the_stacked_mask_series_as_a_label_map():
    from convnest_viewer.batch import classify_series
    from convnest_viewer.inference.classifier import Classifier
    from convnest_viewer.inference.reasons import BLANK, LABEL_MAP, reason_kind

    masks = next(s for s in load_study([CASE]).series if s.description.endswith("_mask.png (23 images)"))
    outcomes = list(classify_series(Classifier(device="cpu"), masks))
    assert len(outcomes) == 23 and not any(o.decision.assessed for o in outcomes)
    assert {reason_kind(o.decision.reason) for o in outcomes} <= {BLANK, LABEL_MAP}
    assert any(reason_kind(o.decision.reason) == LABEL_MAP for o in outcomes)


def test_unrelated_images_numbered_in_a_row_stay_one_series_each(tmp_path):
    picks = [sorted((BRAIN_TUMOR_MRI / "Testing" / name).glob("*.jpg"))[7] for name in
             ("glioma", "meningioma", "notumor", "pituitary", "glioma", "meningioma")]
    for number, source in enumerate(picks, start=1):
        shutil.copy(source, tmp_path / f"slice_{number}.jpg")  # all 224 x 224, numbered like a scan
    result = load_study([tmp_path])
    assert [s.n_slices for s in result.series] == [1] * 6
    class_folder = load_study([BRAIN_TUMOR_MRI / "Testing" / "meningioma"]).series
    assert len(class_folder) > 100 and all(s.n_slices == 1 for s in class_folder)


def test_a_scan_exported_as_numbered_files_stacks_apart_from_an_odd_sized_file_and_a_short_run(tmp_path):
    numbers = _numbers("flair")[6:16]
    for new, number in enumerate(numbers, start=1):  # IMG1.jpg ... IMG10.jpg
        shutil.copy(CASE / f"{CASE.name}_{number}_flair.jpg", tmp_path / f"IMG{new}.jpg")
    odd = cv2.imread(str(tmp_path / "IMG4.jpg"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(tmp_path / "IMG4.jpg"), cv2.resize(odd, (200, 200)))  # another size: not one of the scan's
    for new, number in enumerate(numbers[:MIN_FILES - 1], start=1):
        shutil.copy(CASE / f"{CASE.name}_{number}_t1.jpg", tmp_path / f"other{new}.jpg")  # too few to stack
    series = load_study([tmp_path]).series
    stacked = [s for s in series if s.n_slices > 1]
    assert len(stacked) == 1 and len(series) == 1 + 1 + (MIN_FILES - 1)
    scan = stacked[0]
    assert scan.description == "IMG[1-10].jpg (9 images)"
    assert [ref.path.name for ref in scan.volumes[0]] == [f"IMG{n}.jpg" for n in (1, 2, 3, 5, 6, 7, 8, 9, 10)]

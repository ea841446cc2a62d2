"""A series' contrast guessed from its names: real scanner DICOM, NIfTI and dataset files through the loader."""

from __future__ import annotations

import pydicom
import pytest

from convnest_viewer.io import load_study
from convnest_viewer.io.contrast import guess_contrast
from tests.paths import DATA, DICOM, NIFTI, pydicom_file


@pytest.mark.parametrize("path, expected", [
    (DICOM / "sagittal-mprage", "t1"),  # "SAG MPRAGE 220 FOV"
    (DICOM / "patient-positions" / "In" / "HFS" / "3_t1_fl2d_sag", "t1"),
    (DICOM / "enhanced-multiframe" / "In" / "5_anat-T1w_acq-tfl", "t1"),
    (DICOM / "ge-epi-4d", "epi"),  # "Axial EPI-FMRI (Interleaved I to S)"
    (DICOM / "transfer-syntaxes" / "In", "epi"),  # "ax_asc_35sl": only its sequence name *epfid2d1_64 says so
    (NIFTI / "healthy-volunteer" / "chris_PD.nii.gz", "pd"),
    (NIFTI / "healthy-volunteer" / "chris_t1.nii.gz", "t1"),
    (DATA / "brats2013-hgg" / "test" / "brats_2013_pat0001_1" / "Flair_subtrMeanDivStd.nii.gz", "flair"),
    (DATA / "brats2013-hgg" / "test" / "brats_2013_pat0001_1" / "T1c_subtrMeanDivStd.nii.gz", "t1c"),
    (DATA / "tcga-lgg" / "TCGA_CS_4941_19960909" / "TCGA_CS_4941_19960909_10_t1c.jpg", "t1c"),
    (DATA / "tcga-lgg" / "TCGA_CS_4941_19960909" / "TCGA_CS_4941_19960909_10_t1.jpg", "t1"),
])
def test_the_loader_guesses_each_real_series_contrast_from_its_names(path, expected):
    result = load_study([str(path)])
    assert result.series and {series.contrast for series in result.series} == {expected}


def test_a_recorded_contrast_agent_makes_a_t1_series_post_contrast_and_an_unnamed_one_stays_unknown(tmp_path):
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    ds.SeriesDescription, ds.ProtocolName = "AX T1 SE", ""
    ds.save_as(tmp_path / "t1.dcm")
    ds.SeriesInstanceUID, ds.ContrastBolusAgent = pydicom.uid.generate_uid(), "Gadobutrol"
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(tmp_path / "t1_gd.dcm")
    assert sorted(series.contrast for series in load_study([str(tmp_path)]).series) == ["t1", "t1c"]
    assert guess_contrast("MR_small.dcm") == ""  # the bundled file names no contrast


@pytest.mark.parametrize("names, expected", [
    (("AX T2 FLAIR",), "flair"), (("t2_tirm_tra_dark-fluid",), "flair"), (("T1 FLAIR AX",), "t1"),
    (("AX T1 +C",), "t1c"), (("t1_mprage_sag_post",), "t1c"), (("T1W_SE_GD",), "t1c"), (("T1 PRE",), "t1"),
    (("ep2d_diff_3scan_trace",), "dwi"), (("ADC",), "dwi"), (("AX T2 FSE",), "t2"), (("PD_TSE",), "pd"),
    (("resting state BOLD",), "epi"), (("localizer",), ""), (("",), ""),
])
def test_common_series_descriptions_name_their_contrast(names, expected):
    assert guess_contrast(*names) == expected

"""The installers: build the frozen app (PyInstaller, cpu variant) and run its --self-test offscreen.

Slow (a few minutes: PyInstaller analyses torch and copies ~1.8 GB), Linux only, and needs PyInstaller
(`pip install -e ".[packaging]"`) and a C compiler (the cpu variant compiles its CUDA stubs); skipped without
them. The bundle is built from resources/ when a default model is installed there (resources/models/DEFAULT),
else from a copy of resources/ with a tiny random model as the default, so the bundled-model path is what runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from convnest_viewer import __version__
from convnest_viewer.inference.heatmap import METHODS
from tests.paths import REPO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="packaging/build_linux.sh builds Linux bundles"),
]

BUILD_SCRIPT = REPO / "packaging" / "build_linux.sh"
WORK = REPO / "build" / "test-packaging"  # git-ignored; PyInstaller's work folder and the bundle


def bundle_resources() -> tuple[Path, Path]:
    """Return (resources folder to bundle, its default model folder)."""
    installed = REPO / "resources" / "models" / "DEFAULT"
    if installed.is_file():
        return REPO / "resources", installed.parent / installed.read_text(encoding="utf-8").strip()
    from tests.tiny_model import write_tiny_model

    resources = WORK / "resources"
    shutil.rmtree(resources, ignore_errors=True)
    shutil.copytree(REPO / "resources", resources, ignore=shutil.ignore_patterns("models", "__pycache__"))
    model = write_tiny_model(resources / "models" / "tiny-random")
    (resources / "models" / "DEFAULT").write_text("tiny-random\n", encoding="utf-8")
    return resources, model


def frozen_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a machine without the project's Python: no venv, offscreen Qt, throw-away settings."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("PYTHON", "VIRTUAL_ENV", "CONDA", "CONVNEST_", "CUDA_VISIBLE", "LD_LIBRARY_PATH"))}
    env.update(QT_QPA_PLATFORM="offscreen", HOME=str(tmp_path), CONVNEST_SETTINGS_FILE=str(tmp_path / "settings.ini"))
    return env


def parse_summary(stdout: str) -> dict:
    """Return the JSON summary the self-test prints last on stdout (indented: it opens with a lone "{")."""
    lines = stdout.splitlines(keepends=True)
    for index, line in enumerate(lines):
        if line.rstrip() == "{":
            return json.loads("".join(lines[index:]))
    raise AssertionError(f"no JSON summary on stdout:\n{stdout[-2000:]}")


def test_cpu_bundle_builds_and_passes_its_self_test(tmp_path):
    pytest.importorskip("PyInstaller", reason="PyInstaller is not installed: pip install -e '.[packaging]'")
    if not any(shutil.which(cc) for cc in ("cc", "gcc", "clang")) or not shutil.which("readelf"):
        pytest.skip("the cpu variant needs a C compiler and readelf to build its CUDA stubs")
    WORK.mkdir(parents=True, exist_ok=True)
    resources, model = bundle_resources()
    dist = WORK / "dist"
    shutil.rmtree(dist, ignore_errors=True)

    started = time.monotonic()
    build = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--cpu", "--format", "none", "--dist", str(dist), "--work", str(WORK)],
        cwd=REPO, env=dict(os.environ, CONVNEST_BUNDLE_RESOURCES=str(resources), PYTHON=sys.executable),
        capture_output=True, text=True, timeout=3000,
    )
    build_seconds = time.monotonic() - started
    assert build.returncode == 0, f"build failed ({build.returncode}):\n{build.stdout[-3000:]}\n{build.stderr[-5000:]}"
    app = dist / "convnest-viewer"
    executable = app / "convnest-viewer"
    assert executable.is_file() and os.access(executable, os.X_OK)

    # What the cpu variant holds: the marker, the resources, no NVIDIA library bigger than a stub or cudart/cupti.
    internal = app / "_internal"
    marker = json.loads((internal / "convnest_bundle.json").read_text())
    assert marker["variant"] == "cpu" and marker["version"] == __version__
    assert (internal / "resources" / "demo").is_dir() and (internal / "resources" / "icons" / "convnest.png").is_file()
    assert (internal / "resources" / "models" / model.name / "model_card.json").is_file()
    cuda_files = [p for p in internal.rglob("*") if p.is_file() and not p.is_symlink()
                  and ("nvidia" in p.parts or "triton" in p.parts)]
    too_big = [f"{p.relative_to(internal)} ({p.stat().st_size >> 20} MB)" for p in cuda_files if p.stat().st_size > 8 << 20]
    assert not too_big, f"CUDA libraries left in the cpu variant: {too_big}"
    assert not any(p.name.startswith("libcudnn_") for p in internal.rglob("*.so*")), "cuDNN engines in the cpu variant"
    assert not (internal / "PySide6" / "Qt" / "translations").exists()
    assert not list(internal.rglob("libQt6WebEngine*")) and not list(internal.rglob("libQt6Quick*"))

    # The frozen self-test, on the bundled default model and demo study.
    started = time.monotonic()
    run = subprocess.run([str(executable), "--self-test", "--device", "cpu"], cwd=tmp_path, env=frozen_env(tmp_path),
                         capture_output=True, text=True, timeout=900)
    self_test_seconds = time.monotonic() - started
    assert run.returncode == 0, f"self-test exited {run.returncode}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    summary = parse_summary(run.stdout)
    assert summary["ok"] is True, summary
    assert summary["version"] == __version__
    assert summary["paths"] == [str(internal / "resources" / "demo")]
    card = json.loads((model / "model_card.json").read_text(encoding="utf-8"))
    assert summary["model"]["name"] == card["name"]
    assert summary["device"].startswith("CPU")

    # Every slice of every demo series classified; every heatmap method on the first series' pixel grid.
    from convnest_viewer.io import load_study

    study = load_study([REPO / "resources" / "demo"])
    assert [s["description"] for s in summary["series"]] == [s.description for s in study.series]
    for reported, series in zip(summary["series"], study.series):
        total = series.n_slices * series.n_volumes
        assert reported["classified"] == total and sum(reported["predicted"].values()) == total, reported
        assert set(reported["predicted"]) <= {card_class["id"] for card_class in card["classes"]} | {"not assessed"}
    assert (internal / "resources" / "models" / model.name / card["gate"]["file"]).is_file(), "the gate ships"
    first = study.series[0]
    assert set(summary["heatmaps"]) == set(METHODS)
    for method, heatmap in summary["heatmaps"].items():
        assert heatmap["shape"] == [first.rows, first.columns], (method, heatmap)
        assert 1 <= heatmap["slice"] <= first.n_slices

    # The bundled decoders: every transfer syntax of the scanner fixture (uncompressed LE/BE, RLE, JPEG lossless,
    # JPEG-LS, JPEG 2000: GDCM, pylibjpeg-openjpeg, pyjpegls, pylibjpeg-rle) and a NIfTI file (SimpleITK).
    decoders_seconds = decoders_self_test(executable, tmp_path)

    size_mb = sum(p.stat().st_size for p in app.rglob("*") if p.is_file() and not p.is_symlink()) >> 20
    print(f"\ncpu bundle: {size_mb} MB, build {build_seconds:.0f} s, frozen self-test {self_test_seconds:.1f} s "
          f"(start to JSON), {summary['seconds']} s inside; decoders self-test {decoders_seconds:.1f} s")
    shutil.rmtree(dist, ignore_errors=True)  # ~1.8 GB; kept only when the test fails


def decoders_self_test(executable: Path, tmp_path: Path) -> float:
    """Run the frozen self-test on every DICOM transfer syntax and a NIfTI file; return its wall time."""
    import SimpleITK as sitk

    from convnest_viewer.io import load_study
    from tests.paths import DICOM

    syntaxes = DICOM / "transfer-syntaxes"
    series_folder = next((DICOM / "patient-positions" / "In" / "HFS").iterdir())
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series_folder)))
    nifti = tmp_path / "t1.nii.gz"
    sitk.WriteImage(reader.Execute(), str(nifti))
    expected = load_study([syntaxes, nifti]).series
    assert len(expected) == 10

    started = time.monotonic()
    run = subprocess.run([str(executable), "--self-test", "--device", "cpu", str(syntaxes), str(nifti)], cwd=tmp_path,
                         env=frozen_env(tmp_path), capture_output=True, text=True, timeout=900)
    seconds = time.monotonic() - started
    assert run.returncode == 0, f"self-test exited {run.returncode}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    summary = parse_summary(run.stdout)
    assert summary["ok"] is True, summary
    assert [s["classified"] for s in summary["series"]] == [s.n_slices * s.n_volumes for s in expected]
    assert summary["heatmaps"]["gradcam"]["shape"] == [expected[0].rows, expected[0].columns]
    return seconds

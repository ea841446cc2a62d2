"""Study report export (CSV of every classified slice, self-contained HTML summary); no Qt."""

from __future__ import annotations

import base64
import csv
import html
import logging
from datetime import datetime
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from convnest_viewer import __version__
from convnest_viewer.inference.heatmap import METHOD_NAMES, Heatmap
from convnest_viewer.io.contrast import contrast_name
from convnest_viewer.io.model import Series
from convnest_viewer.render import overlay_rgb, png_bytes
from convnest_viewer.results import ResultStore, SeriesSummary

log = logging.getLogger(__name__)

TITLE = "ConvNeXt Brain MRI Viewer — study report"
NOTICE = "For research use, not for diagnosis."
MAX_KEY_SLICES = 4
IDENTIFIER_COLUMNS = ["patient_name", "patient_id", "study_date", "series_uid"]
SLICE_COLUMNS = ["series_number", "series_description", "modality", "volume", "slice", "slice_location_mm", "predicted",
                 "not_assessed"]
# p_<class>: the slice read with its neighbours, as the viewer shows it; p_<class>_slice_alone: the slice's own answer
ALONE_SUFFIX = "_slice_alone"

HeatmapFor = Callable[[Series, int, int], "Heatmap | None"]

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1100px; }
.notice { background: #fff3cd; border: 2px solid #d39e00; padding: 0.8em 1em; font-size: 1.2em; font-weight: bold; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #bbb; padding: 0.2em 0.6em; text-align: left; }
section { border-top: 1px solid #ccc; margin-top: 1.5em; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figcaption { font-size: 0.9em; max-width: 320px; }
.keyslice { max-width: 320px; image-rendering: pixelated; }
.muted { color: #666; }
"""


# ---------------------------------------------------------------- CSV


def write_csv(path, series_list: Sequence[Series], store: ResultStore, model_id: str, class_ids: list[str],
              include_identifiers: bool = False) -> Path:
    """Write one CSV row per classified slice of every volume and return the file's path."""
    path = _prepare_path(path)
    header = ((IDENTIFIER_COLUMNS if include_identifiers else []) + SLICE_COLUMNS + [f"p_{c}" for c in class_ids]
              + [f"p_{c}{ALONE_SUFFIX}" for c in class_ids])
    rows = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for series in series_list:
            for row in _csv_rows(series, store, model_id, class_ids, include_identifiers):
                writer.writerow([spreadsheet_safe(cell) for cell in row])
                rows += 1
    log.info("CSV report: %d slice rows from %d series", rows, len(series_list))
    return path


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell):
    """Return a CSV cell a spreadsheet will not run: text starting with = + - @ tab or CR gets a leading apostrophe.

    Numbers (including negative ones such as a slice location of -12.500) are left as they are.
    """
    if not isinstance(cell, str) or not cell.startswith(_FORMULA_STARTS):
        return cell
    try:
        float(cell)
    except ValueError:
        return "'" + cell
    return cell


def _csv_rows(series: Series, store: ResultStore, model_id: str, class_ids: list[str], include_identifiers: bool):
    """Yield the CSV rows of one series' classified slices, volume by volume."""
    lead = [series.patient.name, series.patient.id, series.study.date, series.uid] if include_identifiers else []
    for volume in range(series.n_volumes):
        for index in range(series.n_slices):
            probabilities = store.probabilities(model_id, series.key, volume, index)
            if probabilities is not None:
                reason = store.not_assessed_reason(model_id, series.key, volume, index)
                alone = store.probabilities(model_id, series.key, volume, index, alone=True)
                yield (lead + _slice_cells(series, volume, index, probabilities, class_ids, reason)
                       + [f"{float(p):.6f}" for p in alone])


def _slice_cells(series: Series, volume: int, index: int, probabilities: np.ndarray, class_ids: list[str],
                 not_assessed: str | None = None) -> list:
    """Return the per-slice CSV cells (without identifiers); a slice the gate withheld has no predicted class."""
    location = series.slice_location(index, volume)
    return [
        "" if series.number is None else series.number,
        series.description,
        series.modality,
        volume + 1,
        index + 1,
        "" if location is None else f"{location:.3f}",
        "" if not_assessed else class_ids[int(np.argmax(probabilities))],
        not_assessed or "",
    ] + [f"{float(p):.6f}" for p in probabilities]


# ---------------------------------------------------------------- HTML


def write_html(path, series_list: Sequence[Series], store: ResultStore, model_id: str, card, heatmap_for: HeatmapFor,
               include_identifiers: bool = False, device_name: str = "", method: str = "gradcam") -> Path:
    """Write a self-contained HTML study report (images embedded) and return the file's path."""
    path = _prepare_path(path)
    parts = [_header_html(card, model_id, device_name), _patient_html(series_list, include_identifiers),
             _verdict_html(series_list, store, model_id, card)]
    for series in series_list:
        parts.append(_series_html(series, store, model_id, card, heatmap_for, method))
    document = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{_e(TITLE)}</title><style>{STYLE}</style></head><body>\n"
                + "\n".join(parts) + "\n</body></html>\n")
    path.write_text(document, encoding="utf-8")
    log.info("HTML report: %d series", len(series_list))
    return path


def _header_html(card, model_id: str, device_name: str) -> str:
    """Return the title, notice and model block."""
    generated = datetime.now().astimezone().isoformat(sep=" ", timespec="seconds")
    rows = [("Model", card.name), ("Weights sha256", model_id[:12])]
    rows += _metric_rows(card)
    if card.slice_context.sigma_slices > 0:
        rows.append(("Slice probabilities", f"each read with its neighbours' (Gaussian over slices, width "
                                            f"{card.slice_context.sigma_slices:g} slices), as the viewer shows them"))
    if device_name:
        rows.append(("Device", device_name))
    return (f"<h1>{_e(TITLE)}</h1>\n"
            f"<p class=\"muted\">Viewer version {_e(__version__)} · generated {_e(generated)}</p>\n"
            f"<p class=\"notice\">{_e(NOTICE)}</p>\n<h2>Model</h2>\n{_table(rows)}")


def _metric_rows(card) -> list[tuple[str, str]]:
    """Return the card's headline accuracies (official and leakage-free test) that are present."""
    rows = []
    for key, label in (("official_test", "Accuracy, official test split"), ("leakage_free_test", "Accuracy, leakage-free test")):
        value = (card.metrics or {}).get(key, {}).get("accuracy")
        if isinstance(value, (int, float)):
            rows.append((label, f"{value:.1%}"))
    return rows


def _patient_html(series_list: Sequence[Series], include_identifiers: bool) -> str:
    """Return the patient block: identifiers only when asked for, else a withheld note."""
    if not include_identifiers:
        return "<h2>Patient</h2>\n<p>Patient identifiers withheld.</p>"
    from convnest_viewer.verdict import studies_of

    blocks = []
    for series in (study[0] for study in studies_of(series_list)):
        blocks.append(_table([("Patient name", series.patient.name), ("Patient ID", series.patient.id),
                              ("Birth date", series.patient.birth_date), ("Study date", series.study.date),
                              ("Study description", series.study.description)]))
    return "<h2>Patient</h2>\n" + "\n".join(blocks)


def series_report_verdict(series: Series, store: ResultStore, model_id: str, card):
    """Return the verdict of a series' reported volume from the stored results (unreadable slices left out)."""
    return store.series_verdict(model_id, series, card, _report_volume(series, store, model_id))


def _verdict_html(series_list: Sequence[Series], store: ResultStore, model_id: str, card) -> str:
    """Return each study's verdict and each series' verdict, counting only the slices the model assessed."""
    from convnest_viewer.verdict import studies_of, study_title, study_verdict

    names = {c.id: c.display for c in card.classes}
    verdicts = {series.key: series_report_verdict(series, store, model_id, card) for series in series_list}
    studies = studies_of(series_list)
    lines = []
    for ordinal, study in enumerate(studies):
        verdict = study_verdict({series.key: verdicts[series.key] for series in study})
        title = study_title(study, ordinal, len(studies))
        lines.append(f"<p>{_e(title) + ': ' if len(studies) > 1 else ''}<strong>{_e(verdict.text(names))}</strong></p>")
    rows = [(f"{series.number}: {series.description}" if series.number is not None else series.description,
             verdicts[series.key].text(names)) for series in series_list]
    return "<h2>Verdict</h2>\n" + "\n".join(lines) + "\n" + _table(rows, ("Series", "Verdict"))


def _series_html(series: Series, store: ResultStore, model_id: str, card, heatmap_for: HeatmapFor, method: str) -> str:
    """Return one series' section: facts, summary, class counts, strip plot and key slices."""
    volume = _report_volume(series, store, model_id)
    class_ids = list(card.class_ids)
    names = {c.id: c.display for c in card.classes}
    table = store.series_probabilities(model_id, series.key, volume, series.n_slices, len(class_ids))
    summary = store.series_summary(model_id, series.key, volume, series.n_slices, class_ids, card.no_finding_id)
    withheld = store.not_assessed_mask(model_id, series.key, volume, series.n_slices)
    table = np.where(withheld[:, None], np.nan, table)  # no class where the gate withheld the answer
    facts = [("Description", series.description), ("Modality", series.modality),
             ("Contrast (read from its names)", contrast_name(series.contrast) or "unknown"), ("Slices", series.n_slices)]
    title = f"Series {series.number}" if series.number is not None else "Series"
    parts = [f"<section>\n<h2>{_e(title)}: {_e(series.description)}</h2>", _table(facts)]
    if series.is_multivolume:
        parts.append(f"<p class=\"muted\">4-D series with {series.n_volumes} volumes: "
                     f"this report shows volume {volume + 1} only.</p>")
    verdict = store.series_verdict(model_id, series, card, volume).text(names)
    parts.append(f"<p><strong>Series verdict: {_e(verdict[:1].upper() + verdict[1:])}</strong></p>")
    parts.append(f"<p>Per slice: {_e(summary.sentence(names))}</p>")
    if summary.classified:
        parts.append(_table([(names.get(c, c), summary.counts[c]) for c in class_ids], ("Predicted class", "Slices")))
        parts.append(_img(strip_plot_png(table, class_ids, names), "Class probabilities per slice", "strip"))
        parts.append(_key_slices_html(series, volume, table, summary, class_ids, names, heatmap_for, method))
    parts.append("</section>")
    return "\n".join(parts)


def _report_volume(series: Series, store: ResultStore, model_id: str) -> int:
    """Return the volume a series' section shows: the first classified one, else the first."""
    done = store.classified(model_id, series.key)
    return min((v for v, _ in done), default=0)


def _key_slices_html(series: Series, volume: int, table: np.ndarray, summary: SeriesSummary, class_ids: list[str],
                     names: dict[str, str], heatmap_for: HeatmapFor, method: str) -> str:
    """Return the figures of a series' key slices, each with its explanation overlay if any."""
    figures = []
    for index in summary.key_slices[:MAX_KEY_SLICES]:
        heatmap = heatmap_for(series, volume, index)
        rgb = overlay_rgb(series.pixels(index, volume), series.window(index, volume),
                          heatmap.values if heatmap is not None else None, aspect=series.aspect_ratio())
        figures.append(_figure(rgb, _caption(index, table[index], class_ids, names, heatmap, method)))
    return "<h3>Key slices</h3>\n<div>" + "\n".join(figures) + "</div>"


def _caption(index: int, probabilities: np.ndarray, class_ids: list[str], names: dict[str, str],
             heatmap: Heatmap | None, method: str) -> str:
    """Return a key slice's caption: slice, predicted class, probability, explanation."""
    best = int(np.argmax(probabilities))
    predicted = names.get(class_ids[best], class_ids[best])
    if heatmap is None:
        explanation = f"no {METHOD_NAMES.get(method, method)} map"
    else:
        explanation = f"{METHOD_NAMES.get(heatmap.method, heatmap.method)} for {names.get(heatmap.target_id, heatmap.target_id)}"
    return f"Slice {index + 1}: {predicted} {float(probabilities[best]):.0%} · {explanation}"


def strip_plot_png(table: np.ndarray, class_ids: Sequence[str], names: dict[str, str]) -> bytes:
    """Return a PNG plot of each class's probability against slice number (gaps: not classified)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 2.4), dpi=100)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    slices = np.arange(1, len(table) + 1)
    for column, class_id in enumerate(class_ids):
        axes.plot(slices, table[:, column], marker="o", markersize=3, linewidth=1.2, label=names.get(class_id, class_id))
    axes.set(xlim=(0.5, len(table) + 0.5), ylim=(-0.02, 1.02), xlabel="Slice", ylabel="Probability")
    axes.grid(alpha=0.3)
    axes.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    figure.tight_layout()
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    return png_bytes(rgb)


# ---------------------------------------------------------------- helpers


def _figure(rgb: np.ndarray, caption: str) -> str:
    """Return an embedded image with its caption."""
    return f"<figure>{_img(png_bytes(rgb), caption, 'keyslice')}<figcaption>{_e(caption)}</figcaption></figure>"


def _img(png: bytes, alt: str, css_class: str) -> str:
    """Return an <img> with the PNG embedded as a base64 data URI."""
    data = base64.b64encode(png).decode("ascii")
    return f"<img class=\"{css_class}\" alt=\"{_e(alt)}\" src=\"data:image/png;base64,{data}\">"


def _table(rows, header: tuple[str, str] | None = None) -> str:
    """Return a two-column HTML table of escaped cells."""
    head = f"<tr><th>{_e(header[0])}</th><th>{_e(header[1])}</th></tr>" if header else ""
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f"<table>{head}{body}</table>"


def _e(value) -> str:
    """Return a value as HTML-escaped text."""
    return html.escape(str(value), quote=True)


def _prepare_path(path) -> Path:
    """Return the output path, creating its folder if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


__all__ = ["spreadsheet_safe", "write_csv", "write_html", "strip_plot_png"]

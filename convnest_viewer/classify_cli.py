"""`convnest classify`: classify every slice of every series, optionally writing heatmap overlays."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from convnest_viewer import exit_codes
from convnest_viewer.inference.heatmap import METHODS


def add_classify_parser(commands) -> None:
    """Register the classify subcommand."""
    parser = commands.add_parser("classify", help="classify every slice of the series found under PATH")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="folders, files or DICOMDIRs")
    parser.add_argument("--model", type=Path, help="model folder (default: the bundled default model)")
    parser.add_argument("--device", default="auto", type=_device_name, help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--explain", choices=METHODS,
                        help="write a heatmap overlay PNG per assessed slice (none for a slice the gate withholds; the "
                             "report's maps: default the card's best measured)")
    parser.add_argument("--target", help="class to explain (default: each slice's predicted class)")
    parser.add_argument("--out", type=Path, help="folder for the overlays written by --explain")
    parser.add_argument("--report", type=Path, metavar="FILE.html",
                        help="also write the study report (HTML, and CSV beside it) as the viewer's Export Report does")
    parser.add_argument("--identifiers", action="store_true", help="put patient identifiers in the --report")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.set_defaults(handler=run_classify)


def _device_name(text: str) -> str:
    """Accept auto, cpu, cuda, cuda:N or mps (argparse turns anything else into a usage error)."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not auto, cpu, cuda, cuda:N or mps")
    return text


def run_classify(args: argparse.Namespace) -> int:
    """Run classify; return an exit status from `exit_codes` (bad options, missing paths, model refused ...)."""
    from convnest_viewer.cli_common import quiet_warnings, report_missing_paths
    from convnest_viewer.inference.card import ModelCardError
    from convnest_viewer.io import load_study

    quiet_warnings()
    if args.explain and not args.out:
        print("convnest classify: --explain needs --out DIR for the overlay images", file=sys.stderr)
        return exit_codes.USAGE
    if args.batch_size < 1:
        print(f"convnest classify: --batch-size must be at least 1, not {args.batch_size}", file=sys.stderr)
        return exit_codes.USAGE
    if report_missing_paths("classify", args.paths):
        return exit_codes.NO_SUCH_PATH
    from convnest_viewer.inference.classifier import Classifier, NoModelInstalled, pick_device

    try:
        pick_device(args.device)
    except RuntimeError as exc:
        print(f"convnest classify: --device {args.device}: {exc}", file=sys.stderr)
        return exit_codes.USAGE
    try:
        classifier = Classifier(args.model, device=args.device)
    except (ModelCardError, RuntimeError, ValueError) as exc:
        kind = "no model" if isinstance(exc, NoModelInstalled) else "model refused"
        print(f"convnest classify: {kind}: {exc}", file=sys.stderr)
        return exit_codes.MODEL
    if args.target and args.target not in classifier.class_ids:
        print(f"convnest classify: unknown class {args.target!r}; classes are {', '.join(classifier.class_ids)}", file=sys.stderr)
        return exit_codes.USAGE
    loaded = [(path, load_study([path])) for path in args.paths]
    report = {
        "model": {"name": classifier.card.name, "sha256": classifier.weights_sha256},
        "series": [],
        "skipped": [{"path": str(s.path), "reason": s.reason} for _, result in loaded for s in result.skipped],
        "notes": [{"path": str(n.path), "note": n.text} for _, result in loaded for n in result.notes],
    }
    total = sum(s.n_slices * s.n_volumes for _, result in loaded for s in result.series)
    verdicts = []
    from tqdm import tqdm

    from convnest_viewer.results import ResultStore

    store = ResultStore()

    with tqdm(total=total, unit="slice", file=sys.stderr, disable=None, desc="classifying") as bar:
        for path, result in loaded:
            for series in result.series:
                entry, verdict = _classify_series(classifier, series, path, args, bar, len(report["series"]), store)
                verdicts.append((series, verdict))  # by position: a series given twice counts twice, as listed
                report["series"].append(entry)
    report["studies"] = _study_verdicts_json(verdicts, classifier.card)
    report["study_verdict"] = (report["studies"][0]["verdict"] if len(report["studies"]) == 1 else
                               {"label": "several studies", "type": None,
                                "text": f"{len(report['studies'])} studies: one verdict each (see studies)"})
    if args.report:
        from convnest_viewer.batch import write_report

        series_list = [series for _, result in loaded for series in result.series]
        html, csv_path = write_report(classifier, store, series_list, args.report, args.identifiers,
                                      args.explain or classifier.card.explanation.default_method, args.batch_size)
        report["report"] = {"html": str(html), "csv": str(csv_path)}
        print(f"report written: {html} and {csv_path}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(_table(report, classifier))
    return exit_codes.OK if report["series"] else exit_codes.NOTHING_USABLE


def _classify_series(classifier, series, path, args, bar, ordinal: int, store) -> tuple[dict, object]:
    """Classify one series into the store; return its JSON entry and its verdict (built as the viewer does)."""
    from convnest_viewer.batch import classify_series, store_outcome

    entry = {"uid": series.uid, "path": str(path), "description": series.description,
             "contrast": series.contrast or None, "slices": []}
    model_id = classifier.weights_sha256
    to_explain = []
    for outcome in classify_series(classifier, series, args.batch_size, bar.update):
        store_outcome(store, model_id, series.key, outcome)
        if outcome.error is not None:
            entry.setdefault("errors", []).append({"index": outcome.index, "volume": outcome.volume, "reason": outcome.error})
            continue
        result = {
            "index": outcome.index,
            "volume": outcome.volume,
            "probabilities": {c: round(float(p), 6) for c, p in zip(classifier.class_ids, outcome.probabilities)},
            "predicted": classifier.class_ids[int(np.argmax(outcome.probabilities))],
        }
        if outcome.decision.score is not None:
            result["gate_score"] = round(outcome.decision.score, 3)
        if args.explain:
            to_explain.append((result, outcome.prepared))
        entry["slices"].append(result)
    withheld = store.not_assessed(model_id, series.key)  # the series rule is known once every slice is
    for result in entry["slices"]:
        if store.slice_context(model_id) > 0:  # read with its neighbours, as the viewer shows it
            read = store.probabilities(model_id, series.key, result["volume"], result["index"])
            result["slice_probabilities"] = result["probabilities"]
            result["probabilities"] = {c: round(float(p), 6) for c, p in zip(classifier.class_ids, read)}
            result["predicted"] = classifier.class_ids[int(np.argmax(read))]
        reason = withheld.get((result["volume"], result["index"]))
        if reason is not None:
            result.update(predicted=None, not_assessed=reason)
    for result, prepared in to_explain:  # a withheld slice gets no map, as in the viewer: it has no class to explain
        result["overlay"] = (str(_write_overlay(classifier, series, prepared, args, ordinal))
                             if result["predicted"] is not None else None)
    verdict = store.series_verdict(model_id, series, classifier.card)
    entry["verdict"] = verdict_json(verdict, classifier.card)
    return entry, verdict


def verdict_json(verdict, card) -> dict:
    """Return a series verdict as JSON: label, text, and the finding's type, slices (1-based) and confidence."""
    names = {c.id: c.display for c in card.classes}
    result = {"label": verdict.label, "text": verdict.text(names), "assessed": verdict.assessed, "slices": verdict.total}
    if verdict.finding is not None:
        finding = verdict.finding
        result.update({"type": finding.class_id, "first_slice": finding.first + 1, "last_slice": finding.last + 1,
                       "key_slice": finding.key_slice + 1, "confidence": round(finding.confidence, 4)})
        if finding.type_note:
            result.update({"type_called": finding.called, "type_note": finding.type_note})
    return result


def _study_verdicts_json(verdicts: list, card) -> list[dict]:
    """Return one verdict per study over its series' verdicts (series of other studies never count), as JSON."""
    from convnest_viewer.verdict import studies_of, study_title, study_verdict

    names = {c.id: c.display for c in card.classes}
    position = {id(series): ordinal for ordinal, (series, _) in enumerate(verdicts)}
    studies = studies_of([series for series, _ in verdicts])
    entries = []
    for ordinal, study in enumerate(studies):
        members = [position[id(series)] for series in study]
        verdict = study_verdict({str(m): verdicts[m][1] for m in members})
        entries.append({"study": study_title(study, ordinal, len(studies)), "series": members,
                        "verdict": {"label": verdict.label, "type": verdict.class_id, "text": verdict.text(names)}})
    return entries


def _write_overlay(classifier, series, item, args, ordinal: int) -> Path:
    from convnest_viewer.inference.explain import explain
    from convnest_viewer.render import overlay_rgb, save_png

    heatmap = explain(classifier, item.values, item.window, args.explain, target=args.target)
    folder = args.out / f"{ordinal + 1:02d}_{_safe(series.description) or 'series'}"
    folder.mkdir(parents=True, exist_ok=True)
    suffix = f"_t{item.volume + 1:03d}" if series.n_volumes > 1 else ""
    path = folder / f"slice_{item.index + 1:04d}{suffix}_{args.explain}_{heatmap.target_id}.png"
    save_png(path, overlay_rgb(item.values, item.window, heatmap.values, aspect=series.aspect_ratio()))
    return path


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:60]


def _row_groups(slices: list[dict]) -> list[list[dict]]:
    """Group the slices into table rows: one per assessed slice, one per run of neighbours withheld for one reason."""
    runs: list[list[dict]] = []
    for item in slices:
        last = runs[-1][-1] if runs else None
        if (last is not None and not item["predicted"] and not last["predicted"]
                and item["not_assessed"] == last["not_assessed"] and item["volume"] == last["volume"]
                and item["index"] == last["index"] + 1):
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


def _slice_row(run: list[dict], class_ids) -> list[str]:
    """Return one table row: a slice's probabilities, or a run of withheld slices with the reason."""
    first, last = run[0], run[-1]
    if first["predicted"]:
        probs = first["probabilities"]
        return [str(first["index"] + 1), str(first["volume"] + 1), first["predicted"], *(f"{probs[c]:.3f}" for c in class_ids)]
    slices = str(first["index"] + 1) if len(run) == 1 else f"{first['index'] + 1}-{last['index'] + 1}"
    return [slices, str(first["volume"] + 1), f"(not assessed: {first['not_assessed']})", *("–" for _ in class_ids)]


def _table(report: dict, classifier) -> str:
    from convnest_viewer.io.contrast import contrast_name
    from convnest_viewer.text_table import format_table

    lines = [f"model {report['model']['name']} ({classifier.device_name})"]
    for series in report["series"]:
        lines.append("")
        contrast = f"  contrast {contrast_name(series['contrast'])}" if series["contrast"] else ""
        lines.append(f"{series['description'] or '(no description)'}  [{series['uid']}]{contrast}")
        rows = [_slice_row(run, classifier.class_ids) for run in _row_groups(series["slices"])]
        lines.append(format_table(["Slice", "Vol", "Predicted", *classifier.class_ids], rows))
        for error in series.get("errors", []):
            lines.append(f"  slice {error['index'] + 1}: {error['reason']}")
        lines.append(f"Verdict: {series['verdict']['text']}")
    lines.append("")
    for study in report["studies"]:
        lines.append(f"{study['study']} verdict: {study['verdict']['text']}")
    if report["skipped"]:
        lines.append("")
        lines.append(f"{len(report['skipped'])} file(s) skipped")
        lines += [f"  {s['path']}: {s['reason']}" for s in report["skipped"]]
    if report["notes"]:
        lines.append("")
        lines.append(f"{len(report['notes'])} note(s) on files that were read")
        lines += [f"  {n['path']}: {n['note']}" for n in report["notes"]]
    return "\n".join(lines)

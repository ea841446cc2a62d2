"""Compare two models on the same whole scans: every target figure side by side, with paired bootstrap intervals.

`convnest scan-eval` (and `evaluate` with healthy heads) writes each scan's per-slice results to scans.json beside
its report; `convnest compare A B` reads two such folders. The held-out tcga-lgg ranking is resampled over patients
and brats sensitivity over cases (both models see the same resample, so what they share cancels); a healthy head is
one scan, so its figure is given in slices without an interval.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

if TYPE_CHECKING:  # the module is imported to register its command, where the viewer's libraries may be missing
    from training.volume_eval import ScanResult

SCANS_FILE = "scans.json"
ARRAYS = ("probabilities", "tumour", "labelled", "brain", "assessed")


def save_scans(scans: Sequence[ScanResult], path: Path) -> Path:
    """Write scans' per-slice results (probabilities to 4 decimals) to a JSON file; return its path."""
    rows = []
    for scan in scans:
        row = {"source": scan.source, "case": scan.case, "sequence": scan.sequence, "class_ids": scan.class_ids,
               "held_out": scan.held_out}
        for name in ARRAYS:
            value = getattr(scan, name)
            row[name] = None if value is None else np.round(np.asarray(value, float), 4).tolist()
        rows.append(row)
    Path(path).write_text(json.dumps({"scans": rows}, separators=(",", ":")) + "\n")
    return Path(path)


def load_scans(path: Path) -> list[ScanResult]:
    """Read scans written by save_scans (a folder means its scans.json)."""
    from training.volume_eval import ScanResult

    path = Path(path)
    if path.is_dir():
        path = path / SCANS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no per-scan results (run `convnest scan-eval --out {path.parent}` first)")
    scans = []
    for row in json.loads(path.read_text())["scans"]:
        arrays = {name: None if row[name] is None else np.asarray(row[name]) for name in ARRAYS}
        scans.append(ScanResult(row["source"], row["case"], row["sequence"], arrays["probabilities"].astype(float),
                                arrays["tumour"].astype(int), arrays["labelled"].astype(int),
                                arrays["brain"].astype(bool), list(row["class_ids"]), bool(row["held_out"]),
                                None if arrays["assessed"] is None else arrays["assessed"].astype(bool)))
    return scans


def paired_bootstrap(cases: Sequence[str], statistic: Callable[[Sequence[str], str], float | None],
                     resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Return the 95% interval of statistic(chosen, "A") - statistic(chosen, "B") over resamples of the cases drawn
    with replacement (resamples where either is undefined are drawn again), and the share where A is ahead."""
    generator = np.random.default_rng(seed)
    differences: list[float] = []
    for _ in range(resamples * 20):
        if len(differences) == resamples:
            break
        chosen = list(generator.choice(list(cases), len(cases)))
        a, b = statistic(chosen, "A"), statistic(chosen, "B")
        if a is not None and b is not None:
            differences.append(a - b)
    if not differences:
        return float("nan"), float("nan"), float("nan")
    low, high = np.percentile(differences, [2.5, 97.5])
    return float(low), float(high), float(np.mean(np.array(differences) > 0))


def _tumour_figure(scans: Sequence[ScanResult], sequence: str, chosen: Sequence[str], rows: str,
                   measure: str) -> float | None:
    """Return one per-sequence figure of summarise_tumour_scans (rows "labelled": the packing rule's labels,
    "all_slices": any tumour in the mask) over the chosen cases, a case drawn twice counting twice."""
    from training.volume_eval import tumour_metrics

    by_case = {scan.case: scan for scan in scans if scan.sequence == sequence}
    picked = [by_case[case] for case in chosen if case in by_case]
    if not picked:
        return None
    truth = np.concatenate([scan.labelled if rows == "labelled" else scan.tumour for scan in picked])
    probability = np.concatenate([scan.tumour_probability for scan in picked])
    called = np.concatenate([scan.called_tumour for scan in picked])
    return tumour_metrics(truth, probability, called)[measure]


def _tumour_rows(label: str, scans: dict[str, list[ScanResult]], rows: str, measure: str, resamples: int) -> list[str]:
    """Return the table rows of one tumour source: a row per sequence both models were measured on."""
    lines = []
    sequences = sorted({s.sequence for s in scans["A"]} & {s.sequence for s in scans["B"]})
    for sequence in sequences:
        cases = sorted({s.case for s in scans["A"] if s.sequence == sequence}
                       & {s.case for s in scans["B"] if s.sequence == sequence})

        def statistic(chosen: Sequence[str], model: str) -> float | None:
            return _tumour_figure(scans[model], sequence, chosen, rows, measure)

        a, b = statistic(cases, "A"), statistic(cases, "B")
        if a is None or b is None:
            continue
        low, high, ahead = paired_bootstrap(cases, statistic, resamples)
        percent = measure != "roc_auc"
        shown = (lambda v: f"{v:.1%}") if percent else (lambda v: f"{v:.3f}")
        signed = (lambda v: f"{v * 100:+.1f} points") if percent else (lambda v: f"{v:+.3f}")
        lines.append(f"| {label}, {sequence} ({len(cases)} cases) | {shown(a)} | {shown(b)} | {signed(a - b)} | "
                     f"{signed(low)} to {signed(high)} | {ahead:.0%} |")
    return lines


def compare_markdown(scans_a: list[ScanResult], scans_b: list[ScanResult], name_a: str, name_b: str,
                     resamples: int = 2000) -> str:
    """Return a Markdown table of every target figure for models A and B, A - B, and paired bootstrap intervals."""
    from training.volume_eval import summarise_healthy

    lines = [f"A: {name_a}; B: {name_b}. Paired bootstrap: {resamples:,} resamples of the cases (patients for "
             "tcga-lgg), both models on the same resample.", "",
             "| figure | A | B | A - B | 95% interval | resamples with A ahead |", "|---|---|---|---|---|---|"]
    sources = sorted({s.source for s in scans_a} & {s.source for s in scans_b} - {"healthy"},
                     key=lambda source: (source != "tcga-lgg", source))
    for source in sources:  # the targets: tcga-lgg ranking on the packing rule's labels, label volumes' sensitivity
        label, rows, measure = ((f"{source} held out: tumour-slice ROC AUC", "labelled", "roc_auc") if source == "tcga-lgg"
                                else (f"{source} held out: tumour slices read a tumour class", "all_slices", "sensitivity"))
        chosen = {model: [s for s in scans if s.source == source and s.held_out]
                  for model, scans in (("A", scans_a), ("B", scans_b))}
        lines += _tumour_rows(label, chosen, rows, measure, resamples)
    healthy = {model: summarise_healthy([s for s in scans if s.source == "healthy"])
               for model, scans in (("A", scans_a), ("B", scans_b))}
    for scan in sorted(set(healthy["A"]) & set(healthy["B"])):
        a, b = healthy["A"][scan], healthy["B"][scan]
        slices = a["slices"]
        change = round((a["no_tumour_share"] - b["no_tumour_share"]) * slices)
        lines.append(f"| healthy {scan}: slices read no tumour | {a['no_tumour_share']:.1%} | {b['no_tumour_share']:.1%} "
                     f"| {change:+d} of {slices} slices | one scan: no interval | – |")
    return "\n".join(lines) + "\n"


def run_compare(folder_a: Path, folder_b: Path, out: Path | None = None, resamples: int = 2000) -> str:
    """Compare two scan-eval folders; write the table to `out` when given; return it."""
    text = compare_markdown(load_scans(folder_a), load_scans(folder_b), Path(folder_a).as_posix(),
                            Path(folder_b).as_posix(), resamples)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    return text


def add_compare_parser(commands) -> None:
    """Register `compare` on an argparse subparsers object."""
    parser = commands.add_parser("compare", help="compare two models' scan-eval folders: every target figure side by "
                                                 "side, with paired bootstrap intervals")
    parser.add_argument("a", type=Path, help="model A's scan-eval (or evaluate) folder, holding scans.json")
    parser.add_argument("b", type=Path, help="model B's folder")
    parser.add_argument("--out", type=Path, help="write the table to this Markdown file too")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.set_defaults(handler=lambda args: print(run_compare(args.a, args.b, args.out, args.resamples), end="") or 0)

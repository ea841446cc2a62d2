"""`convnest`: the headless command line (info, classify, and the training commands)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from convnest_viewer import __version__, exit_codes
from convnest_viewer.cli_common import quiet_warnings, report_missing_paths


def main(argv: Sequence[str] | None = None) -> int:
    """Run the convnest command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return exit_codes.USAGE
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return exit_codes.INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="convnest", description="ConvNeXt Brain MRI Viewer, headless tools",
                                     epilog=exit_codes.EPILOG)
    parser.add_argument("--version", action="version", version=f"convnest {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    info = commands.add_parser("info", help="list the series and skipped files the loader finds")
    info.add_argument("paths", nargs="+", metavar="PATH", help="folders, files or DICOMDIRs")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(handler=_run_info)

    from convnest_viewer.classify_cli import add_classify_parser

    add_classify_parser(commands)
    try:
        from training.cli import add_training_parsers
    except ImportError:  # a frozen viewer ships without the training module
        pass
    else:
        add_training_parsers(commands)
    return parser


def _run_info(args: argparse.Namespace) -> int:
    from convnest_viewer.io import load_study

    quiet_warnings()

    missing = report_missing_paths("info", args.paths)
    if missing:
        return exit_codes.NO_SUCH_PATH
    result = load_study(args.paths)
    if args.json:
        print(json.dumps(info_json(result), indent=2))
    else:
        print(info_table(result))
    return exit_codes.OK if result.series else exit_codes.NOTHING_USABLE


def info_json(result) -> dict:
    """Return the loader's findings as the `convnest info --json` object."""
    return {
        "series": [
            {
                "uid": series.uid,
                "description": series.description,
                "modality": series.modality,
                "slices": series.n_slices,
                "volumes": series.n_volumes,
                "rows": series.rows,
                "columns": series.columns,
                "gaps": [{"after_slice": gap.after + 1, "missing_mm": round(gap.missing_mm, 2),
                          "missing_slices": gap.missing_slices} for gap in series.gaps()],
            }
            for series in result.series
        ],
        "skipped": [{"path": str(item.path), "reason": item.reason} for item in result.skipped],
        "notes": [{"path": str(note.path), "note": note.text} for note in result.notes],
    }


def info_table(result) -> str:
    """Return the loader's findings as a readable table."""
    from convnest_viewer.text_table import format_table

    rows = [
        [str(i + 1), s.modality, s.description or "(no description)", _slices_text(s), str(s.n_volumes),
         f"{s.rows}x{s.columns}", _spacing_text(s), s.uid]
        for i, s in enumerate(result.series)
    ]
    lines = [f"{len(result.series)} series"]
    lines.append(format_table(["#", "Mod", "Description", "Slices", "Volumes", "Matrix", "Spacing (mm)", "Series UID"], rows))
    if result.skipped:
        lines.append("")
        lines.append(f"{len(result.skipped)} file(s) skipped")
        lines.append(format_table(["File", "Reason"], [[str(s.path), s.reason] for s in result.skipped]))
    if result.notes:
        lines.append("")
        lines.append(f"{len(result.notes)} note(s) on files that were read")
        lines.append(format_table(["File", "Note"], [[str(n.path), n.text] for n in result.notes]))
    return "\n".join(lines)


def _slices_text(series) -> str:
    gaps = series.gaps()
    return f"{series.n_slices} ({len(gaps)} gap{'s' if len(gaps) > 1 else ''})" if gaps else str(series.n_slices)


def _spacing_text(series) -> str:
    if not series.pixel_spacing:
        return "-"
    text = f"{series.pixel_spacing[0]:.3g}x{series.pixel_spacing[1]:.3g}"
    if series.slice_thickness:
        text += f"x{series.slice_thickness:.3g}"
    return text


if __name__ == "__main__":
    sys.exit(main())

"""Training commands: pack, audit, train, evaluate, scan-eval, compare, gate-fit, explain-eval, context-fit, ablate,
benchmark, export, carry-pack, carry-back, import-run (also `python -m training`)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from training import options


def add_training_parsers(commands) -> None:
    """Register the training subcommands on an argparse subparsers object."""
    from training.benchmark import DEFAULT_ARCHITECTURES
    from training.compare import add_compare_parser
    from training.context_fit import run_context_fit
    from training.train import TrainConfig

    pack = commands.add_parser("pack", help="pack labelled slices of several sources into one compact file")
    pack.add_argument("sources", nargs="*", type=Path,
                      help="dataset roots (brain-tumor-mri, tcga-lgg, brats2013-hgg) and healthy NIfTI volumes")
    pack.add_argument("--healthy", action="append", type=Path, default=[], metavar="PATH",
                      help="a whole healthy head (DICOM series folder or file, or NIfTI file): its slices with "
                           "head are no tumour, in the planes it samples finely (repeatable)")
    pack.add_argument("--out", type=Path, required=True, help="output .npz (a .json beside it lists the counts)")
    pack.add_argument("--size", type=int, default=224, help="model input size (default 224)")
    pack.add_argument("--preprocessing", default="letterbox-v2", help="preprocessing version (default letterbox-v2)")
    pack.add_argument("--jpeg-quality", type=int, default=0, help="store JPEG bytes at this quality (0: raw)")
    pack.set_defaults(handler=_run_pack)

    audit = commands.add_parser("audit", help="print the leak table of a packed dataset")
    audit.add_argument("data", type=Path, help="packed .npz")
    audit.add_argument("--source", default="brain-tumor-mri")
    audit.add_argument("--json", action="store_true")
    audit.set_defaults(handler=_run_audit)

    train = commands.add_parser("train", help="train a model on a packed dataset")
    train.add_argument("data", type=Path, help="packed .npz")
    train.add_argument("--run", type=Path, required=True, help="run folder (config, log, checkpoint)")
    train.add_argument("--resume", action="store_true", help="continue the run folder's checkpoint")
    train.add_argument("--stop-after", type=int, help="stop after this many epochs (resume later)")
    defaults = TrainConfig()
    for item in fields(TrainConfig):
        if item.name == "augment":
            continue
        value = getattr(defaults, item.name)
        kind = options.weights_argument if item.name in ("source_weights", "sequence_weights") else type(value)
        if kind is bool:
            train.add_argument(f"--{item.name.replace('_', '-')}", type=lambda s: s.lower() in ("1", "true", "yes"), default=value)
        else:
            train.add_argument(f"--{item.name.replace('_', '-')}", type=kind, default=value)
    train.set_defaults(handler=_run_train)

    evaluate = commands.add_parser("evaluate", help="evaluate a run and write a report folder")
    evaluate.add_argument("data", type=Path, help="the packed .npz the run trained on (its held-out parts are evaluated)")
    evaluate.add_argument("--run", type=Path, required=True)
    evaluate.add_argument("--out", type=Path, required=True, help="report folder")
    evaluate.add_argument("--healthy", action="append", default=[], metavar="PATH:SEQUENCE",
                          help="a healthy head (DICOM series folder or NIfTI file) and its sequence, e.g. "
                               "../shared/dicom/sagittal-mprage:t1 (repeatable)")
    evaluate.add_argument("--test-time-flip", action="store_true",
                          help="average each slice's logits with its left-right mirror's (temperature fitted so; "
                               "export writes it into the card)")
    evaluate.set_defaults(handler=_run_evaluate)

    scans = commands.add_parser("scan-eval", help="evaluate any model folder on whole scans (tumour and healthy)")
    scans.add_argument("--model", type=Path, help="model folder (default: the app's default model)")
    scans.add_argument("--tcga", type=Path, help="tcga-lgg root")
    scans.add_argument("--institutions", default="CS", help="tcga-lgg institutions to evaluate (default CS)")
    scans.add_argument("--volumes", type=Path, nargs="*", default=[], help="label-volume case folders (brats)")
    scans.add_argument("--healthy", action="append", default=[], metavar="PATH:SEQUENCE")
    scans.add_argument("--out", type=Path, required=True, help="report folder")
    scans.add_argument("--device", default="auto")
    scans.add_argument("--write-card", action="store_true", help="store the figures in the model's card (--model)")
    scans.set_defaults(handler=_run_scan_eval)
    add_compare_parser(commands)

    gate = commands.add_parser("gate-fit", help="fit and evaluate a model's gate (which slices it should not answer)")
    gate.add_argument("data", type=Path, help="the packed .npz the model's run trained on")
    gate.add_argument("--model", type=Path, required=True, help="model folder: the gate is written into it and its card")
    gate.add_argument("--run-config", type=Path, required=True, help="the run's run_config.json (to rebuild its split)")
    gate.add_argument("--shared", type=Path, default=Path("../shared"), help="the shared data (out-of-domain sets)")
    gate.add_argument("--report", type=Path, help="folder for gate.md and gate.json")
    gate.add_argument("--per-group", type=int, default=600, help="training slices per (source, class) to fit on")
    gate.set_defaults(handler=_run_gate_fit)

    explain = commands.add_parser("explain-eval", help="measure a model's heatmaps against tumour masks")
    explain.add_argument("--model", type=Path, help="model folder (default: the app's default model)")
    explain.add_argument("--tcga", type=Path, help="tcga-lgg root")
    explain.add_argument("--institutions", default="CS", help="tcga-lgg institutions never trained on (default CS)")
    explain.add_argument("--volumes", type=Path, nargs="*", default=[], help="held-out label-volume case folders (brats)")
    explain.add_argument("--max-slices", type=int, default=0, help="at most this many tumour slices per sequence")
    explain.add_argument("--sequences", default="", help="only these sequences, comma-separated (default: all)")
    explain.add_argument("--methods", default="", help="only these heatmap methods, comma-separated (default: all; "
                                                       "--write-card needs all)")
    explain.add_argument("--shap-samples", type=int, default=16, help="Gradient SHAP samples (the app's default)")
    explain.add_argument("--randomisation-slices", type=int, default=12,
                         help="slices per sequence for the model-parameter randomisation check")
    explain.add_argument("--out", type=Path, required=True, help="report folder (explain.md, explain.json, figure)")
    explain.add_argument("--write-card", action="store_true",
                         help="store the best method as the model's default heatmap, with every method's figures")
    explain.add_argument("--device", default="auto")
    explain.set_defaults(handler=_run_explain_eval)

    context = commands.add_parser("context-fit", help="choose how widely a model reads a slice with its neighbours, "
                                                      "on its run's tcga-lgg validation patients")
    context.add_argument("--model", type=Path, required=True, help="model folder")
    context.add_argument("--tcga", type=Path, required=True, help="tcga-lgg root")
    context.add_argument("--run-config", type=Path, required=True, help="the run's run_config.json (its split)")
    context.add_argument("--report", type=Path, help="folder for context.md and context.json")
    context.add_argument("--write-card", action="store_true", help="store the chosen width in the model card")
    context.add_argument("--device", default="auto")
    context.set_defaults(handler=lambda args: print(run_context_fit(args.model, args.tcga, args.run_config, args.report,
                                                                    args.write_card, args.device)) or 0)

    ablate = commands.add_parser("ablate", help="train and evaluate the recipe with one change off at a time")
    ablate.add_argument("data", type=Path, help="packed .npz (letterbox-v2)")
    ablate.add_argument("--data-v1", type=Path, help="the same sources packed with --preprocessing letterbox-v1 (head-crop row)")
    ablate.add_argument("--out", type=Path, required=True, help="folder for runs, reports, ablation.md (resumes)")
    ablate.add_argument("--variants", default="", help="comma-separated subset of the variants (default: all)")
    ablate.add_argument("--healthy", action="append", default=[], metavar="PATH:SEQUENCE")
    for name in ("architecture", "size", "epochs", "epoch_images", "batch_size", "lr", "warmup_epochs", "seed", "device"):
        value = getattr(defaults, name)
        ablate.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    ablate.set_defaults(handler=_run_ablate)

    bench = commands.add_parser("benchmark", help="k-fold benchmark of architectures with statistical tests")
    bench.add_argument("data", type=Path, help="packed .npz")
    bench.add_argument("--out", type=Path, required=True, help="report folder (resumes finished runs found there)")
    bench.add_argument("--architectures", default=",".join(DEFAULT_ARCHITECTURES))
    bench.add_argument("--folds", type=int, default=3)
    bench.add_argument("--max-images", type=int, default=0, help="use a random subset (quick runs)")
    bench.add_argument("--no-profile", action="store_true", help="skip parameter/FLOP/latency profiling")
    for name in ("epochs", "size", "batch_size", "lr", "weight_decay", "warmup_epochs", "label_smoothing", "drop_path",
                 "ema_decay", "seed", "device", "source"):
        value = getattr(defaults, name)
        bench.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    bench.set_defaults(handler=_run_benchmark)

    carry = commands.add_parser("carry-pack", help="write the training side of a pack, compressed, with its split, "
                                                   "to carry to a lent GPU machine")
    carry.add_argument("data", type=Path, help="the full packed .npz (its held-out tests stay here)")
    carry.add_argument("--out", type=Path, required=True, help="output .npz (its split is written beside it, .split.json)")
    carry.add_argument("--codec", default="webp", help="image codec: webp (default) or jpeg")
    carry.add_argument("--quality", type=int, default=40, help="codec quality (default 40)")
    for name in ("source", "val_fraction", "seed", "holdout_institutions", "train_sources"):
        value = getattr(defaults, name)
        carry.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value,
                           help="as for train: decides the split" if name == "source" else None)
    carry.set_defaults(handler=_run_carry_pack)

    back = commands.add_parser("carry-back", help="write a run's final weights (fp16 shards under 15 MiB) and its "
                                                  "config and log (run.tar.gz), to bring back from a GPU machine")
    back.add_argument("--run", type=Path, required=True)
    back.add_argument("--out", type=Path, required=True, help="folder for the files")
    back.set_defaults(handler=_run_carry_back)

    imported = commands.add_parser("import-run", help="rebuild a run folder from carry-back's files (evaluate and "
                                                      "export read it; it cannot resume)")
    imported.add_argument("files", type=Path, help="the folder holding carry-back's files")
    imported.add_argument("--run", type=Path, required=True, help="run folder to create")
    imported.set_defaults(handler=_run_import_run)

    export = commands.add_parser("export", help="export a run as an app model folder")
    export.add_argument("data", type=Path, help="the packed .npz the run trained on")
    export.add_argument("--run", type=Path, required=True)
    export.add_argument("--report", type=Path, required=True, help="report.json written by evaluate")
    export.add_argument("--name", required=True)
    export.add_argument("--dest", type=Path, default=None, help="models folder (default: resources/models)")
    export.add_argument("--default", action="store_true", help="make it the app's default model")
    export.set_defaults(handler=_run_export)


def _run_pack(args) -> int:
    from convnest_viewer.inference.card import PreprocessSpec
    from training.data import pack_dataset
    from training.sources import list_source

    if not args.sources and not args.healthy:
        raise SystemExit("pack: name at least one dataset root or --healthy head")
    listings = [list_source(source) for source in args.sources]
    listings += [list_source(head, healthy=True) for head in args.healthy]
    for listing in listings:
        summary = listing.summary()
        left_out = ", ".join(f"{count} {reason}" for reason, count in summary["left_out"].items()) or "none"
        print(f"{summary['source']}: {summary['images']} images {summary['per_class']}; left out: {left_out}")
    records = [record for listing in listings for record in listing.records]
    data = pack_dataset(records, PreprocessSpec(version=args.preprocessing, size=args.size))
    path = data.save(args.out, jpeg_quality=args.jpeg_quality or None)
    summaries = {"preprocessing": args.preprocessing, "size": args.size, "sources": [l.summary() for l in listings]}
    path.with_suffix(".json").write_text(json.dumps(summaries, indent=2))
    print(f"packed {len(data)} images at {args.size} px into {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def _run_audit(args) -> int:
    from convnest_viewer.inference.card import CLASS_IDS
    from convnest_viewer.text_table import format_table
    from training.data import PackedDataset
    from training.dedup import identical_files, leak_table

    data = PackedDataset.load(args.data)
    source = data.source == args.source
    train, test = source & (data.split == "train"), source & (data.split == "test")
    rows = leak_table(data.thumbs[test], data.labels[test], data.thumbs[train], CLASS_IDS)
    identical = identical_files(list(data.paths[test]), list(data.paths[train]))
    report = {"source": args.source, "rows": rows, "byte_identical": [{"test": a, "train": b} for a, b in identical]}
    others = sorted(set(data.source) - {args.source})
    for other in others:
        mask = data.source == other
        report.setdefault("other_sources", {})[other] = leak_table(data.thumbs[mask], data.labels[mask], data.thumbs[source], CLASS_IDS)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    keys = [k for k in rows[0] if k.startswith("near_duplicates_")]
    print(f"Official test images of {args.source} with a near-duplicate in its training split")
    print(format_table(["class", "test images", *[f"r >= {k.split('_')[-1]}" for k in keys]],
                       [[r["class"], str(r["test_images"]), *[f"{r[k]} ({r[k] / max(r['test_images'], 1):.0%})" for k in keys]] for r in rows]))
    print(f"\nByte-identical files across the splits: {len(identical)}")
    for other in others:
        print(f"\n{other} images with a near-duplicate in {args.source} (both splits)")
        other_rows = report["other_sources"][other]
        print(format_table(["class", "images", *[f"r >= {k.split('_')[-1]}" for k in keys]],
                           [[r["class"], str(r["test_images"]), *[str(r[k]) for k in keys]] for r in other_rows]))
    return 0


def _run_train(args) -> int:
    from training.carry import split_path
    from training.data import PackedDataset
    from training.train import Trainer, TrainConfig, TrainSplit

    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.name != "augment"}
    config = TrainConfig(**values)
    if args.resume and (args.run / "config.json").is_file():
        config = TrainConfig.from_dict(json.loads((args.run / "config.json").read_text()))
    data = PackedDataset.load(args.data)
    split = None
    if split_path(args.data).is_file() and not (args.run / "split.json").is_file():
        split = TrainSplit.from_json(json.loads(split_path(args.data).read_text()))  # a carried pack's own split
        print(f"training on the split of {split_path(args.data)}", file=sys.stderr)
    trainer = Trainer(config, data, args.run, split=split)
    if args.resume and trainer.load_checkpoint():
        print(f"resuming {args.run} after epoch {trainer.epoch}", file=sys.stderr)
    history = trainer.fit(stop_after_epochs=args.stop_after)
    if history:
        last = history[-1]
        print(json.dumps({k: last[k] for k in sorted(last)}, indent=1))
    return 0


def _run_evaluate(args) -> int:
    from training.data import PackedDataset
    from training.evaluate import evaluate_run

    data = PackedDataset.load(args.data)
    report = evaluate_run(args.run, data, args.out, _healthy_scans(args.healthy, data), args.test_time_flip)
    print((args.out / "report.md").read_text())
    return 0 if report else 1


def _healthy_scans(items: list[str], data) -> list[tuple[Path, str, bool]]:
    """Parse PATH:SEQUENCE items into (path, sequence, held out), held out unless the pack holds the file."""
    packed = {str(Path(p).resolve()) for p in set(data.paths.tolist())}
    scans = []
    for item in items:
        path, _, sequence = item.rpartition(":") if ":" in item else (item, "", "")
        scans.append((Path(path), sequence, str(Path(path).resolve()) not in packed))
    return scans


def _run_scan_eval(args) -> int:
    import csv

    from convnest_viewer.inference.classifier import Classifier
    from training.evaluate import scan_results
    from training.report import write_report

    classifier = Classifier(args.model, device=args.device)
    institutions = set(options.names(args.institutions))
    tcga_cases = []
    if args.tcga:
        with open(args.tcga / "cases.csv", newline="") as handle:
            tcga_cases = [args.tcga / row["case"] for row in csv.DictReader(handle) if row["institution"] in institutions]
    healthy = [(Path(p), seq, True) for p, _, seq in (item.rpartition(":") for item in args.healthy)]
    report = {"model": classifier.card.name, "class_ids": classifier.class_ids,
              **scan_results(classifier, tcga_cases, sorted(args.volumes), healthy)}
    write_report(report, args.out)
    if args.write_card and args.model:
        from training.export import write_scan_metrics

        write_scan_metrics(args.model, report)
    print((args.out / "report.md").read_text())
    return 0


def _run_gate_fit(args) -> int:
    from training.gate import gate_markdown, run_gate_fit

    evaluation = run_gate_fit(args.model, args.data, args.run_config, args.shared, args.report, args.per_group)
    from convnest_viewer.inference.card import load_card

    card = load_card(args.model)
    print(gate_markdown(card.name, evaluation, card.gate.threshold))
    return 0


def _run_explain_eval(args) -> int:
    from training.explain_report import run_explain_eval

    return run_explain_eval(args)


def _run_ablate(args) -> int:
    from training.ablation import VARIANTS, run_ablation
    from training.data import PackedDataset
    from training.train import TrainConfig

    names = ("architecture", "size", "epochs", "epoch_images", "batch_size", "lr", "warmup_epochs", "seed", "device")
    base = TrainConfig(**{name: getattr(args, name) for name in names})
    variants = options.names(args.variants) or list(VARIANTS)
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        print(f"convnest ablate: unknown variant(s) {', '.join(sorted(unknown))}; known: {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    data = PackedDataset.load(args.data)
    data_v1 = PackedDataset.load(args.data_v1) if args.data_v1 else None
    run_ablation(data, data_v1, args.out, base, _healthy_scans(args.healthy, data), variants)
    print((args.out / "ablation.md").read_text())
    return 0


def _run_benchmark(args) -> int:
    from training.benchmark import run_benchmark
    from training.data import PackedDataset
    from training.train import TrainConfig

    names = ("epochs", "size", "batch_size", "lr", "weight_decay", "warmup_epochs", "label_smoothing", "drop_path",
             "ema_decay", "seed", "device", "source")
    config = TrainConfig(**{name: getattr(args, name) for name in names})
    architectures = options.names(args.architectures)
    run_benchmark(PackedDataset.load(args.data), args.out, architectures, args.folds, config,
                  max_images=args.max_images, profile=not args.no_profile)
    print((args.out / "benchmark.md").read_text())
    return 0


def _run_export(args) -> int:
    from convnest_viewer.paths import models_dir
    from training.data import PackedDataset
    from training.export import export_run

    folder = export_run(args.run, args.report, args.name, args.dest or models_dir(), args.default, PackedDataset.load(args.data))
    print(f"exported {folder}")
    return 0


def _run_carry_pack(args) -> int:
    from training.carry import carry_pack, split_path
    from training.data import PackedDataset
    from training.train import TrainConfig

    config = TrainConfig(source=args.source, val_fraction=args.val_fraction, seed=args.seed,
                         holdout_institutions=args.holdout_institutions, train_sources=args.train_sources)
    data = PackedDataset.load(args.data)
    carried, split = carry_pack(data, config)
    path = carried.save(args.out, jpeg_quality=args.quality, codec=args.codec)
    split_path(path).write_text(json.dumps(split.to_json()))
    print(f"carried {len(carried)} of {len(data)} images ({len(split.train)} training, {len(split.val)} validation) "
          f"into {path} ({path.stat().st_size / 2**20:.1f} MiB) and {split_path(path)}")
    return 0


def _run_carry_back(args) -> int:
    from training.carry import carry_back

    for path in carry_back(args.run, args.out):
        print(f"{path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


def _run_import_run(args) -> int:
    from training.carry import import_run

    print(f"imported {import_run(args.files, args.run)} (weights only)")
    return 0


def main(argv=None) -> int:
    """Run the training commands standalone."""
    parser = argparse.ArgumentParser(prog="python -m training", description="ConvNeXt viewer training module")
    add_training_parsers(parser.add_subparsers(title="commands", metavar="COMMAND"))
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    return int(args.handler(args) or 0)

"""`convnest explain-eval`: measure a model's heatmaps against masks, write the report and figure, update its card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from convnest_viewer.inference.card import load_card
from convnest_viewer.inference.heatmap import BASELINE, BASELINE_NAME, METHOD_NAMES, METHODS
from training import options
from training.explain_eval import NO_CHANGE_SPEARMAN, MaskedSlice, best_method, slice_maps

TARGET_GROUP = "tcga-lgg flair"  # the targets: held-out tcga-lgg FLAIR tumour slices
TARGET_POINTING = 0.8
TARGET_MASS_RATIO = 2.0
NAMES = {**METHOD_NAMES, BASELINE: BASELINE_NAME}


def explain_markdown(model_name: str, result: dict, measured_on: str) -> str:
    """Return the report of an explain-eval run as markdown tables, one per source and sequence."""
    lines = [f"# Heatmaps against tumour masks: {model_name}", "",
             f"Measured on {measured_on}. Explained class: the slice's most probable tumour class. Pointing game: "
             "the map's maximum inside the mask (95% Wilson interval). Mass ratio: the map's share of mass inside "
             "the mask divided by the mask's share of the head (1x = knows nothing). Deletion AUC (lower is better) "
             "and insertion AUC (higher is better): the explained class's probability as the map's top pixels are "
             f"blanked or revealed in {16} steps. Randomised: mean Spearman correlation between the trained model's "
             f"maps and those with the last stage re-initialised (above {NO_CHANGE_SPEARMAN} the map does not "
             "depend on what the model learned there).", ""]
    for group, figures in result["summary"].items():
        lines += [f"## {group}", "",
                  "| method | slices | pointing game | 95% CI | mass in mask | mask share of head | mass ratio "
                  "| deletion AUC | insertion AUC | randomised Spearman (n) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for method, f in figures.items():
            spearman = "—" if f["randomised_spearman"] is None else (
                f"{f['randomised_spearman']:.2f} ({f['randomised_n']}) "
                f"{'changes' if f['randomised_spearman'] <= NO_CHANGE_SPEARMAN else 'does not change'}")
            low, high = f["pointing_game_ci95"]
            lines.append(f"| {NAMES.get(method, method)} | {f['n']} | {f['pointing_game']:.1%} | {low:.0%}-{high:.0%} "
                         f"| {f['mass_in_mask']:.1%} | {f['mask_share_of_head']:.1%} | {f['mass_ratio']:.2f}x "
                         f"| {f['deletion_auc']:.3f} | {f['insertion_auc']:.3f} | {spearman} |")
        lines.append("")
    if TARGET_GROUP in result["summary"]:
        best, qualified = best_method(result["summary"], TARGET_GROUP,
                                      tuple(m for m in result["methods"] if m != BASELINE))
        f = result["summary"][TARGET_GROUP][best]
        met = qualified and f["pointing_game"] >= TARGET_POINTING and f["mass_ratio"] >= TARGET_MASS_RATIO
        lines += [f"Best on {TARGET_GROUP}: **{NAMES[best]}**, pointing game {f['pointing_game']:.1%} (target "
                  f">= {TARGET_POINTING:.0%}), mass ratio {f['mass_ratio']:.2f}x (target >= {TARGET_MASS_RATIO:.0f}x): "
                  f"{'met' if met else 'not met'}.", "", caveat(result["summary"][TARGET_GROUP], best, qualified), ""]
    return "\n".join(lines)


def caveat(figures: dict, best: str, qualified: bool) -> str:
    """Return what a reader of the default heatmap must know: which checks it passed and failed."""
    f, baseline = figures[best], figures.get(BASELINE, {})
    if qualified:
        return (f"{NAMES[best]} points better than a random map ({f['pointing_game']:.0%} against "
                f"{baseline.get('pointing_game', 0):.0%}) and its maps change with the model's weights.")
    spearman = f["randomised_spearman"]
    changes = ("its maps change little when the model's last stage is randomised (Spearman "
               f"{spearman:.2f} inside the head), so they follow the image's bright and edged structures as much as "
               "what the model learned" if spearman is not None and spearman > NO_CHANGE_SPEARMAN
               else "it does not point better than a random map")
    return (f"No method both points better than a random map and changes with the model's weights. {NAMES[best]} "
            f"points best ({f['pointing_game']:.0%} of the tumour slices, random map {baseline.get('pointing_game', 0):.0%}) "
            f"but {changes}.")


def write_to_card(model_dir: Path, summary: dict, held_out: str, group: str = TARGET_GROUP) -> str:
    """Store the best method on `group` as the card's default heatmap with every method's figures; return it."""
    card = load_card(model_dir)
    best, qualified = best_method(summary, group)
    card.explanation.default_method = best
    card.explanation.note = caveat(summary[group], best, qualified)
    source, _, sequence = group.partition(" ")
    card.explanation.measured_on = f"{summary[group][best]['n']} held-out {source} {sequence.upper()} tumour slices ({held_out})"
    card.explanation.evaluation = {
        method: {key: summary[group][method][key] for key in ("n", "pointing_game", "mass_ratio", "deletion_auc",
                                                              "insertion_auc", "randomised_spearman")}
        for method in summary[group]}
    card.save(Path(model_dir))
    return best


def example_figure(classifier, slices: list[MaskedSlice], path: Path, count: int = 4, seed: int = 0,
                   methods: tuple[str, ...] = METHODS) -> Path:
    """Draw a few slices with their mask outline and each method's map (the README's figure)."""
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from convnest_viewer.inference.preprocess import to_uint8, unletterbox

    chosen = slices[:: max(1, len(slices) // count)][:count]
    columns = ["slice and mask", *methods, BASELINE]
    figure, axes = plt.subplots(len(chosen), len(columns), figsize=(2.2 * len(columns), 2.3 * len(chosen)), squeeze=False)
    for row, item in enumerate(chosen):
        image = to_uint8(item.values, item.window)
        _, target, maps, geometry = slice_maps(classifier, item, methods, 16, seed)
        contours, _ = cv2.findContours(item.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        for column, name in enumerate(columns):
            axis = axes[row, column]
            axis.imshow(image, cmap="gray")
            if name in maps:
                shown = unletterbox(maps[name], geometry)
                top = float(np.percentile(shown, 99.9)) or 1.0
                axis.imshow(np.clip(shown / top, 0, 1), cmap="inferno", alpha=0.55)
            for contour in contours:
                axis.plot(contour[:, 0, 0], contour[:, 0, 1], color="#00e5ff", linewidth=0.8)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(NAMES.get(name, name), fontsize=9)
        axes[row, 0].set_ylabel(f"{item.sequence} {item.case[-4:]}#{item.index}", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def run_explain_eval(args) -> int:
    """Run explain-eval from parsed arguments: measure, write explain.json/.md and the figure, update the card."""
    import sys

    from convnest_viewer.inference.classifier import Classifier
    from training.explain_eval import evaluate_heatmaps, tcga_tumour_slices, volume_tumour_slices

    methods = tuple(options.names(getattr(args, "methods", ""))) or METHODS
    unknown = [m for m in methods if m not in METHODS]
    if unknown or (args.write_card and set(methods) != set(METHODS)):
        problem = (f"unknown method {', '.join(unknown)} (choose from {', '.join(METHODS)})" if unknown
                   else "--write-card compares every method; measure them all")
        print(f"explain-eval: {problem}", file=sys.stderr)
        return 2
    classifier = Classifier(args.model, device=args.device)
    institutions = set(options.names(args.institutions))
    sequences = frozenset(s.lower() for s in options.names(getattr(args, "sequences", "")))
    slices = tcga_tumour_slices(args.tcga, institutions, args.max_slices, sequences) if args.tcga else []
    slices += volume_tumour_slices(sorted(args.volumes), args.max_slices, sequences)
    if not slices:
        print("explain-eval: no tumour slices to measure (give --tcga and/or --volumes)", file=sys.stderr)
        return 2
    measured_on = ", ".join(filter(None, [f"tcga-lgg institutions {', '.join(sorted(institutions))}" if args.tcga else "",
                                          f"{len(args.volumes)} label volumes" if args.volumes else ""]))
    result = evaluate_heatmaps(classifier, slices, methods, shap_samples=args.shap_samples,
                               randomisation_slices=args.randomisation_slices,
                               progress=lambda done, total: print(f"\r{done}/{total} slices", end="", file=sys.stderr))
    print(file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "explain.json").write_text(json.dumps({"model": classifier.card.name, "measured_on": measured_on,
                                                       **result}, indent=1) + "\n")
    markdown = explain_markdown(classifier.card.name, result, measured_on)
    flair = [s for s in slices if s.sequence == "flair"] or slices
    example_figure(classifier, flair, args.out / "explain_examples.png", methods=methods)
    (args.out / "explain.md").write_text(markdown + "\n![heatmaps on held-out slices](explain_examples.png)\n")
    print(markdown)
    if args.write_card:
        group = TARGET_GROUP if TARGET_GROUP in result["summary"] else next(iter(result["summary"]))
        held_out = (f"institution{'s' if len(institutions) > 1 else ''} {', '.join(sorted(institutions))}"
                    if group.startswith("tcga-lgg") else f"{len(args.volumes)} volumes")
        best = write_to_card(classifier.model_dir, result["summary"], held_out, group)
        print(f"card of {classifier.card.name}: default heatmap {NAMES[best]} (best pointing game on {group})")
    return 0

"""The model card as rich text for the Model > Model Card dialog."""

from __future__ import annotations

from html import escape

from convnest_viewer.inference.card import ModelCard
from convnest_viewer.io.contrast import contrast_name
from convnest_viewer.inference.heatmap import BASELINE_NAME, METHOD_NAMES, RANDOMISED_SPEARMAN_LIMIT

_SECTIONS = (("official_test", "brain-tumor-mri official test"), ("leakage_free_test", "brain-tumor-mri leakage-free test"),
             ("strict_leakage_free_test", "brain-tumor-mri strict leakage-free test"))
_SCAN_SECTIONS = (("tcga_lgg_held_out", "tcga-lgg, held-out institutions"), ("volumes_held_out", "BraTS, held-out volumes"))


def _percent(value) -> str:
    return "-" if value is None else f"{value:.0%}"


def _scan_tables(card: ModelCard) -> str:
    """Return the whole-scan figures (tumour vs no tumour per sequence, healthy heads) as HTML tables."""
    rows = []
    for key, title in _SCAN_SECTIONS:
        for sequence, row in (card.metrics.get(key) or {}).get("per_sequence", {}).items():
            m = row["labelled"]
            auc = "-" if m.get("roc_auc") is None else f"{m['roc_auc']:.3f}"
            rows.append(f"<tr><td>{title}</td><td>{escape(sequence)}</td><td>{m['slices']}</td><td>{_percent(m['sensitivity'])}</td>"
                        f"<td>{_percent(m['specificity'])}</td><td>{auc}</td></tr>")
    html = ""
    if rows:
        html += ("<p><b>Tumour vs no tumour on whole scans from sources not trained on</b></p>"
                 "<table border=1 cellspacing=0 cellpadding=3><tr><th>source</th><th>sequence</th><th>slices</th>"
                 "<th>sensitivity</th><th>specificity</th><th>ROC AUC</th></tr>" + "".join(rows) + "</table>")
    healthy = (card.metrics.get("healthy") or {}).get("per_scan", {})
    if healthy:
        html += ("<p><b>Healthy heads: slices called no tumour</b></p><table border=1 cellspacing=0 cellpadding=3>"
                 "<tr><th>scan</th><th>slices</th><th>no tumour</th><th>held out</th></tr>" +
                 "".join(f"<tr><td>{escape(name)}</td><td>{r['slices']}</td><td>{_percent(r['no_tumour_share'])}</td>"
                         f"<td>{'yes' if r['held_out'] else 'no'}</td></tr>" for name, r in healthy.items()) + "</table>")
    return html


def _gate_html(card: ModelCard) -> str:
    """Return what the gate withholds and how well it was measured to separate in- from out-of-domain slices."""
    if card.gate is None:
        return "<p><b>Gate:</b> none; every slice gets a class.</p>"
    evaluation = card.gate.evaluation or {}
    inside = evaluation.get("in_domain", {}).get("all", {})
    outside = evaluation.get("out_of_domain", {}).get("all", {})
    measured = (f" Measured: {_percent(inside.get('gated'))} of held-out in-domain slices withheld, "
                f"{_percent(outside.get('gated'))} of out-of-domain slices (EPI, outside the brain, masks, CT, noise), "
                f"AUROC {outside.get('auroc', float('nan')):.3f}.") if inside and outside else ""
    return (f"<p><b>Gate:</b> slices that are blank, label maps or unlike the training slices ({escape(card.gate.method)} on feature "
            f"stages {', '.join(map(str, card.gate.stages))}, threshold {card.gate.threshold:.2f}) are shown as "
            f"<i>not assessed</i>.{measured}</p>")


def pointing_game_text(figures: dict, card: ModelCard) -> str:
    """Return one method's measured pointing game and mass ratio as a sentence (with what it was measured on)."""
    return (f"pointing game {figures['pointing_game']:.0%}, {figures['mass_ratio']:.1f}x its share of mass inside the "
            f"tumour mask, on {card.explanation.measured_on}")


def _heatmap_html(card: ModelCard) -> str:
    """Return the default heatmap and each method's measured pointing game, or that none was measured."""
    default = METHOD_NAMES.get(card.explanation.default_method, card.explanation.default_method)
    evaluation = card.explanation.evaluation
    if not evaluation:
        return f"<p><b>Heatmaps:</b> {escape(default)} first; not measured against tumour masks for this model.</p>"
    rows = "".join(f"<tr><td>{escape(METHOD_NAMES.get(m, BASELINE_NAME))}</td><td>{_percent(f['pointing_game'])}</td>"
                   f"<td>{f['mass_ratio']:.2f}x</td><td>{_randomised(f.get('randomised_spearman'))}</td></tr>"
                   for m, f in evaluation.items())
    return (f"<p><b>Heatmaps</b> against tumour masks, on {escape(card.explanation.measured_on)}; shown first: "
            f"{escape(default)}.</p><table border=1 cellspacing=0 cellpadding=3><tr><th>method</th><th>pointing game</th>"
            f"<th>mass inside mask vs its share</th><th>changes with the model's weights</th></tr>{rows}</table>"
            f"{'<p>' + escape(card.explanation.note) + '</p>' if card.explanation.note else ''}")


def _randomised(spearman) -> str:
    if spearman is None:
        return "-"
    return f"{'yes' if spearman <= RANDOMISED_SPEARMAN_LIMIT else 'no'} (Spearman {spearman:.2f})"


def model_card_html(card: ModelCard, model_id: str, device_name: str) -> str:
    """Return the card's key facts and measured metrics as HTML."""
    rows = []
    for key, title in _SECTIONS:
        metrics = card.metrics.get(key)
        if metrics and metrics.get("n"):
            auc = metrics.get("macro_auc_ovr")
            rows.append(f"<tr><td>{title}</td><td>{metrics['n']}</td><td>{metrics['accuracy']:.1%}</td>"
                        f"<td>{metrics['macro_f1']:.3f}</td><td>{metrics['cohen_kappa']:.3f}</td>"
                        f"<td>{'-' if auc is None else f'{auc:.3f}'}</td><td>{metrics['ece']:.3f}</td></tr>")
    table = ("<table border=1 cellspacing=0 cellpadding=3><tr><th>set</th><th>n</th><th>accuracy</th><th>macro F1</th>"
             "<th>kappa</th><th>AUC</th><th>ECE</th></tr>" + "".join(rows) + "</table>") if rows else "<p>No measured metrics in the card.</p>"
    training = card.training or {}
    config = training.get("config", {})
    trained = (f"{training.get('epochs_completed', '?')} epochs on {escape(str(training.get('device', '?')))}, "
               f"{training.get('train_images', '?')} training images") if training else "not recorded"
    classes = ", ".join(f"{escape(c.display)} (<code>{escape(c.id)}</code>{_trained_on(c.contrasts)})" for c in card.classes)
    return (f"<h3>{escape(card.name)}</h3>"
            f"<p><b>Architecture:</b> {escape(card.architecture)}, input {card.preprocessing.size} px × "
            f"{card.preprocessing.channels} channel(s), preprocessing {escape(card.preprocessing.version)}<br>"
            f"<b>Classes:</b> {classes}<br><b>Temperature:</b> {card.temperature:.3f}{_MIRROR_NOTE if card.test_time_flip else ''}<br>"
            f"<b>Weights:</b> {len(card.weights)} safetensors file(s), {escape(card.weights_dtype)}, sha256 {escape(model_id[:16])}…<br>"
            f"<b>Training:</b> {trained}{', ' + escape(str(config.get('optimizer', ''))) if config else ''}<br>"
            f"<b>Running on:</b> {escape(device_name)}</p>{table}{_scan_tables(card)}{_gate_html(card)}{_heatmap_html(card)}"
            f"{'<p>' + escape(card.limitations) + '</p>' if card.limitations else ''}<p><i>{escape(card.intended_use)}</i></p>")


_MIRROR_NOTE = "; each slice is read as the mean of its logits and its left-right mirror's"


def _trained_on(contrasts: list[str]) -> str:
    """Return "; trained on T1c" for a class's recorded contrasts, or "" when none are recorded."""
    return f"; trained on {escape('/'.join(contrast_name(c) or c for c in contrasts))}" if contrasts else ""

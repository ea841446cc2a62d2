"""The model card as rich text for the Model > Model Card dialog."""

from __future__ import annotations

from html import escape

from convnest_viewer.inference.card import ModelCard

_SECTIONS = (("official_test", "Official test split"), ("leakage_free_test", "Leakage-free test"),
             ("strict_leakage_free_test", "Strict leakage-free test"), ("cross_dataset", "SARTAJ (cross-dataset)"))


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
    classes = ", ".join(f"{escape(c.display)} (<code>{escape(c.id)}</code>)" for c in card.classes)
    return (f"<h3>{escape(card.name)}</h3>"
            f"<p><b>Architecture:</b> {escape(card.architecture)}, input {card.preprocessing.size} px × "
            f"{card.preprocessing.channels} channel(s), preprocessing {escape(card.preprocessing.version)}<br>"
            f"<b>Classes:</b> {classes}<br><b>Temperature:</b> {card.temperature:.3f}<br>"
            f"<b>Weights:</b> {len(card.weights)} safetensors file(s), {escape(card.weights_dtype)}, sha256 {escape(model_id[:16])}…<br>"
            f"<b>Training:</b> {trained}{', ' + escape(str(config.get('optimizer', ''))) if config else ''}<br>"
            f"<b>Running on:</b> {escape(device_name)}</p>{table}<p><i>{escape(card.intended_use)}</i></p>")

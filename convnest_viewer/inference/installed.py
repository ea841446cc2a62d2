"""The model folders installed beside the app, and which one is the default; reads cards only (no torch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from convnest_viewer.inference.card import ModelCardError, load_card
from convnest_viewer.paths import models_dir

DEFAULT_MODEL_FILE = "DEFAULT"  # in the models folder: the name of the default model's folder


@dataclass(frozen=True)
class InstalledModel:
    """One model folder under the models folder: where it is, what its card calls it, whether it is the default."""

    folder: Path
    name: str
    architecture: str
    size: int
    default: bool

    @property
    def label(self) -> str:
        """Return how a menu names it: "convnext-femto-160-multi-v6 (convnext_femto, 160 px, default)"."""
        return f"{self.name} ({self.architecture}, {self.size} px{', default' if self.default else ''})"


def default_model_name(root: Path | None = None) -> str:
    """Return the folder name the models folder's DEFAULT file gives, or "" when there is none."""
    marker = (root or models_dir()) / DEFAULT_MODEL_FILE
    return marker.read_text(encoding="utf-8").strip() if marker.is_file() else ""


def installed_models(root: Path | None = None) -> list[InstalledModel]:
    """Return the model folders with a readable card under the models folder, the default first, then by name."""
    root = root or models_dir()
    default = default_model_name(root)
    models = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not (folder / "model_card.json").is_file():
            continue
        try:
            card = load_card(folder)
        except (ModelCardError, OSError, ValueError):
            continue  # a damaged folder is not offered; loading it by path still says why
        models.append(InstalledModel(folder, card.name, card.architecture, card.preprocessing.size,
                                     folder.name == default))
    return sorted(models, key=lambda m: (not m.default, m.name))

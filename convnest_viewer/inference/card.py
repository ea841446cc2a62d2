"""The model card: everything needed to rebuild a model and its preprocessing, beside its weights."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from convnest_viewer.inference.heatmap import METHODS

CARD_FILE = "model_card.json"
CARD_FORMAT = "convnest-model-card/1"
PREPROCESSING_VERSIONS = ("letterbox-v1", "letterbox-v2")  # what convnest_viewer.inference.preprocess implements
CLASS_IDS = ("glioma", "meningioma", "notumor", "pituitary")  # the brain-tumour datasets' folder names
DISPLAY_NAMES = {"glioma": "Glioma", "meningioma": "Meningioma", "notumor": "No tumour", "pituitary": "Pituitary tumour"}
CLASS_COLOURS = {"glioma": "#e74c3c", "meningioma": "#f1c40f", "notumor": "#2ecc71", "pituitary": "#3498db"}
NO_FINDING = "notumor"  # the brain-tumour classes' "nothing found" class
MAX_CONTEXT_SIGMA = 5.0  # widest slice context a card may ask for, in slices


class ModelCardError(RuntimeError):
    """A model folder or card is missing, malformed or does not match its weights."""


@dataclass
class ClassInfo:
    """One output class: its id (the dataset's folder name), the name shown to people, whether it means
    "nothing found" (exactly one class of a card does), its display colour, and the contrasts it was trained on."""

    id: str
    display: str
    no_finding: bool = False
    colour: str = ""  # "#rrggbb"; "" lets the viewer pick one
    contrasts: list[str] = field(default_factory=list)  # e.g. ["t1c"]; empty: not recorded (no type rule)


@dataclass
class PreprocessSpec:
    """How a slice becomes model input: window to 8 bits, letterbox to size, normalise."""

    version: str = "letterbox-v2"
    size: int = 224
    channels: int = 1
    interpolation: str = "area"  # cv2 INTER_AREA when shrinking, INTER_LINEAR when enlarging
    pad_value: int = 0
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    window: str = "slice VOI, else 0.5-99.5 percentile"


@dataclass
class WeightFile:
    """One safetensors shard and its expected sha256."""

    file: str
    sha256: str
    bytes: int = 0


@dataclass
class GateSpec:
    """When the model should not answer: a blank-slice rule and an out-of-distribution score with its threshold."""

    method: str = "stage-mahalanobis"  # Mahalanobis scores of early feature stages' channel statistics, summed
    stages: tuple[int, ...] = (0, 1)  # which feature stages (timm forward_intermediates indices)
    input_statistics: bool = True  # also score 7 statistics of the model input (sharpness, intensity, foreground)
    file: str = "gate.safetensors"  # per stage: group means and shared precision; the standardisation
    sha256: str = ""
    threshold: float = float("inf")  # slices scoring above it are not assessed
    min_head_share: float = 0.03  # a slice whose head (foreground) covers less is blank or nearly empty
    min_contrast: float = 8.0  # 8-bit standard deviation below which a slice is blank
    # a slice with at most this many 8-bit grey levels is a label map or mask (measured: label maps 2-5, MR slices 19+)
    max_label_levels: int = 8
    # a series rule: a slice whose head section is under this fraction of the largest among the volume's assessed
    # slices lies at the edge of the head, where the model never trained (0: off; the packing rule's 0.4)
    min_head_fraction: float = 0.0
    evaluation: dict = field(default_factory=dict)  # how well it separates in-domain from out-of-domain slices


@dataclass
class ExplanationSpec:
    """Which heatmap the viewer shows first, and how well each method pointed at tumours when measured."""

    default_method: str = "gradcam"
    measured_on: str = ""  # the held-out slices behind the figures
    evaluation: dict = field(default_factory=dict)  # per method: pointing_game, mass_ratio, n, ...
    note: str = ""  # which checks the default method passed and failed, in a sentence


@dataclass
class SliceContextSpec:
    """How a slice is read with its neighbours: a Gaussian over slice positions (see inference.context)."""

    sigma_slices: float = 0.0  # 0: each slice alone
    chosen_on: str = ""  # the data and rule that chose the width
    evaluation: dict = field(default_factory=dict)  # per width: the validation figures behind the choice


@dataclass
class ModelCard:
    """A model card as stored in model_card.json."""

    name: str
    architecture: str
    classes: list[ClassInfo]
    preprocessing: PreprocessSpec = field(default_factory=PreprocessSpec)
    temperature: float = 1.0
    test_time_flip: bool = False  # logits are the mean over each slice and its left-right mirror
    weights: list[WeightFile] = field(default_factory=list)
    weights_dtype: str = "float16"
    drop_path_rate: float = 0.0
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    intended_use: str = "Research use only. Not a medical device; not for diagnosis."
    limitations: str = ""  # what the measurements say the model cannot do
    gate: GateSpec | None = None  # absent: every slice is assessed
    explanation: ExplanationSpec = field(default_factory=ExplanationSpec)  # absent in older cards: Grad-CAM first
    slice_context: SliceContextSpec = field(default_factory=SliceContextSpec)  # absent: each slice alone
    format: str = CARD_FORMAT

    @property
    def class_ids(self) -> list[str]:
        """Return the class ids in output order."""
        return [c.id for c in self.classes]

    @property
    def display_names(self) -> list[str]:
        """Return the class display names in output order."""
        return [c.display for c in self.classes]

    @property
    def no_finding_id(self) -> str:
        """Return the id of the class that means "nothing found" (load_card makes sure there is one)."""
        return next(c.id for c in self.classes if c.no_finding)

    @property
    def trained_contrasts(self) -> dict[str, tuple[str, ...]]:
        """Return each tumour class's trained contrasts, for the classes whose card records them."""
        return {c.id: tuple(c.contrasts) for c in self.classes if c.contrasts and not c.no_finding}

    @property
    def colours(self) -> list[str]:
        """Return each class's display colour ("" where the card names none), in output order."""
        return [c.colour for c in self.classes]

    @property
    def num_classes(self) -> int:
        """Return the number of output classes."""
        return len(self.classes)

    def to_json(self) -> str:
        """Return the card as indented JSON."""
        return json.dumps(asdict(self), indent=2) + "\n"

    def save(self, folder: Path) -> Path:
        """Write the card into a model folder and return its path."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / CARD_FILE
        path.write_text(self.to_json(), encoding="utf-8")
        return path


def default_classes() -> list[ClassInfo]:
    """Return the four brain-tumour classes in the dataset's (alphabetical folder) order."""
    return [ClassInfo(id=c, display=DISPLAY_NAMES[c], no_finding=c == NO_FINDING, colour=CLASS_COLOURS[c]) for c in CLASS_IDS]


def load_card(folder: Path) -> ModelCard:
    """Read and validate the model card in a model folder."""
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        raise ModelCardError(f"{path}: no model card (expected {CARD_FILE} beside the weights)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelCardError(f"{path}: unreadable model card: {exc}") from exc
    try:
        card = ModelCard(
            name=raw["name"],
            architecture=raw["architecture"],
            classes=[ClassInfo(**c) for c in raw["classes"]],
            preprocessing=_spec(raw.get("preprocessing", {})),
            temperature=float(raw.get("temperature", 1.0)),
            test_time_flip=_flag(raw.get("test_time_flip", False), "test_time_flip"),
            weights=[WeightFile(**w) for w in raw.get("weights", [])],
            weights_dtype=raw.get("weights_dtype", "float16"),
            drop_path_rate=float(raw.get("drop_path_rate", 0.0)),
            training=raw.get("training", {}),
            metrics=raw.get("metrics", {}),
            intended_use=raw.get("intended_use", ""),
            limitations=raw.get("limitations", ""),
            gate=_gate(raw["gate"]) if raw.get("gate") else None,
            explanation=ExplanationSpec(**raw.get("explanation", {})),
            slice_context=SliceContextSpec(**raw.get("slice_context", {})),
            format=raw.get("format", ""),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelCardError(f"{path}: malformed model card: {type(exc).__name__}: {exc}") from exc
    if card.format != CARD_FORMAT:
        raise ModelCardError(f"{path}: unknown card format {card.format!r} (expected {CARD_FORMAT!r})")
    if card.preprocessing.version not in PREPROCESSING_VERSIONS:
        raise ModelCardError(f"{path}: unknown preprocessing {card.preprocessing.version!r} "
                             f"(this app knows {', '.join(PREPROCESSING_VERSIONS)}); update the app")
    if not card.weights:
        raise ModelCardError(f"{path}: the card lists no weight files")
    if card.explanation.default_method not in METHODS:
        raise ModelCardError(f"{path}: unknown default heatmap {card.explanation.default_method!r} "
                             f"(this app knows {', '.join(METHODS)})")
    if not 0 <= card.slice_context.sigma_slices <= MAX_CONTEXT_SIGMA:
        raise ModelCardError(f"{path}: slice_context.sigma_slices must lie in 0-{MAX_CONTEXT_SIGMA} slices, "
                             f"got {card.slice_context.sigma_slices}")
    if card.temperature <= 0:
        raise ModelCardError(f"{path}: temperature must be positive, got {card.temperature}")
    _settle_no_finding(card, raw["classes"], path)
    return card


def _settle_no_finding(card: ModelCard, raw_classes: list[dict], path: Path) -> None:
    """Make sure exactly one class means "nothing found"; cards written before the flag name it by its id."""
    flagged = [c for c in card.classes if c.no_finding]
    if not flagged and not any("no_finding" in c for c in raw_classes):
        for info in card.classes:
            info.no_finding = info.id == NO_FINDING
            info.colour = info.colour or CLASS_COLOURS.get(info.id, "")
        flagged = [c for c in card.classes if c.no_finding]
    if len(flagged) != 1:
        raise ModelCardError(f"{path}: exactly one class must be marked no_finding (the 'nothing found' class); "
                             f"found {len(flagged)}")


def _flag(value, key: str) -> bool:
    """Return a card's true/false field, refusing anything but a JSON boolean."""
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {value!r}")
    return value


def _spec(raw: dict) -> PreprocessSpec:
    spec = PreprocessSpec(**{"version": "letterbox-v1", **raw})  # cards older than v2 may omit it
    spec.mean, spec.std = tuple(spec.mean), tuple(spec.std)
    return spec


def _gate(raw: dict) -> GateSpec:
    gate = GateSpec(**raw)
    gate.stages = tuple(int(stage) for stage in gate.stages)
    return gate

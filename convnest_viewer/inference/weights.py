"""Save and load model weights as checked safetensors shards; nothing is ever unpickled."""

from __future__ import annotations

import hashlib
from pathlib import Path

from convnest_viewer.inference.card import ModelCard, ModelCardError, WeightFile

PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz", ".tar"}
DEFAULT_SHARD_BYTES = 15 * 1024 * 1024


def sha256_of(path: Path) -> str:
    """Return the hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_weights(state_dict: dict, folder: Path, dtype: str = "float16", shard_bytes: int = DEFAULT_SHARD_BYTES) -> list[WeightFile]:
    """Write a state dict as safetensors shards below shard_bytes each; return their entries."""
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    target = getattr(torch, dtype)
    tensors = {}
    for key, value in state_dict.items():
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.to(target)
        tensors[key] = value.contiguous()
    shards: list[dict] = [{}]
    size = 0
    for key, value in tensors.items():
        nbytes = value.numel() * value.element_size()
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = value
        size += nbytes
    entries = []
    for index, shard in enumerate(shards):
        name = "model.safetensors" if len(shards) == 1 else f"model-{index + 1:02d}-of-{len(shards):02d}.safetensors"
        path = folder / name
        save_file(shard, str(path), metadata={"format": "pt"})
        path.chmod(0o644)  # readable by everyone, like the card beside it
        entries.append(WeightFile(file=name, sha256=sha256_of(path), bytes=path.stat().st_size))
    return entries


def check_model_folder(folder: Path, card: ModelCard) -> None:
    """Refuse a model folder holding pickles, unlisted weights, or weights whose sha256 differs."""
    listed = {w.file for w in card.weights} | ({card.gate.file} if card.gate else set())
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise ModelCardError(f"{path}: refusing a pickle-format file in the model folder; weights load from safetensors only")
        if path.suffix == ".safetensors" and path.name not in listed:
            raise ModelCardError(f"{path}: weight file not listed in the model card")
    for weight in card.weights:
        path = folder / weight.file
        if Path(weight.file).name != weight.file or path.suffix != ".safetensors":
            raise ModelCardError(f"{folder}: card lists {weight.file!r}; only safetensors files in the folder are allowed")
        if not path.is_file():
            raise ModelCardError(f"{path}: weight file listed in the model card is missing")
        actual = sha256_of(path)
        if actual != weight.sha256:
            raise ModelCardError(f"{path}: sha256 {actual} does not match the model card ({weight.sha256}); refusing tampered weights")
    if card.gate is not None:
        path = folder / card.gate.file
        if Path(card.gate.file).name != card.gate.file or path.suffix != ".safetensors" or not path.is_file():
            raise ModelCardError(f"{path}: the gate file named in the model card is missing or not a safetensors file")
        if sha256_of(path) != card.gate.sha256:
            raise ModelCardError(f"{path}: sha256 does not match the model card; refusing a tampered gate")


def load_state_dict(folder: Path, card: ModelCard) -> dict:
    """Check and read every shard listed in the card into one float32 state dict."""
    from safetensors.torch import load_file

    check_model_folder(folder, card)
    state = {}
    for weight in card.weights:
        for key, value in load_file(str(folder / weight.file)).items():
            state[key] = value.float() if value.is_floating_point() else value
    if not state:
        raise ModelCardError(f"{folder}: the weight files hold no tensors")
    return state


def write_model_folder(model, card: ModelCard, folder: Path, dtype: str = "float16",
                       shard_bytes: int = DEFAULT_SHARD_BYTES) -> Path:
    """Write a model's weights as safetensors shards and its card (with their sha256) into folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.safetensors"):
        old.unlink()
    card.weights = save_weights(model.state_dict(), folder, dtype=dtype, shard_bytes=shard_bytes)
    card.weights_dtype = dtype
    return card.save(folder)

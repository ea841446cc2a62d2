"""The comma-separated lists the training commands take: sources, institutions, methods, source and sequence weights."""
from __future__ import annotations

import argparse


def names(text: str) -> list[str]:
    """Return the stripped, non-empty names of a comma-separated list, in order, each once."""
    return list(dict.fromkeys(item.strip() for item in text.split(",") if item.strip()))


def weights(text: str) -> dict[str, float]:
    """Return {name: weight} from a list like "a:0.6,b:0.4"; an item that is not NAME:NUMBER raises ValueError."""
    parsed: dict[str, float] = {}
    for item in names(text):
        name, separator, value = item.rpartition(":")
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if not separator or not name.strip() or weight != weight or weight < 0:
            raise ValueError(f"weight {item!r} is not NAME:WEIGHT with a weight >= 0")
        if name.strip() in parsed:
            raise ValueError(f"weight for {name.strip()!r} given twice")
        parsed[name.strip()] = weight
    return parsed


def weights_argument(text: str) -> str:
    """Check a NAME:WEIGHT list given on the command line (an argparse type); return it unchanged."""
    try:
        weights(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text

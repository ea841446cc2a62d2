"""The display window (VOI) type and the robust default window; no other io module is needed here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """A display window (VOI): centre and width in the series' rescaled units."""

    center: float
    width: float

    @property
    def low(self) -> float:
        """Return the value shown as black."""
        return self.center - self.width / 2.0

    @property
    def high(self) -> float:
        """Return the value shown as white."""
        return self.center + self.width / 2.0

    @classmethod
    def from_range(cls, low: float, high: float) -> "Window":
        """Build a window that maps low to black and high to white."""
        width = max(float(high) - float(low), 1e-6)
        return cls(center=(float(low) + float(high)) / 2.0, width=width)

    def inverted(self, pivot: float) -> "Window":
        """Return this window for values mirrored as pivot - value (MONOCHROME1)."""
        return Window(center=pivot - self.center, width=self.width)



def percentile_window(values: np.ndarray, low: float = 0.5, high: float = 99.5) -> Window:
    """Return a robust window spanning the given percentiles of the slice's values."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Window(0.0, 1.0)
    lo, hi = np.percentile(finite, [low, high])
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        hi = lo + 1.0
    return Window.from_range(float(lo), float(hi))

"""Named change events for Qt-free models: connect callbacks by name, emit calls them in order."""

from __future__ import annotations

from typing import Callable


class Events:
    """A fixed set of named events; each keeps an ordered list of callbacks."""

    def __init__(self, *names: str) -> None:
        self._callbacks: dict[str, list[Callable]] = {name: [] for name in names}

    @property
    def names(self) -> tuple[str, ...]:
        """Return the event names, in the order they were declared."""
        return tuple(self._callbacks)

    def connect(self, name: str, callback: Callable) -> None:
        """Call callback(*args) whenever the event is emitted."""
        self._slot(name).append(callback)

    def disconnect(self, name: str, callback: Callable) -> None:
        """Stop calling a connected callback (no error if it was not connected)."""
        callbacks = self._slot(name)
        if callback in callbacks:
            callbacks.remove(callback)

    def emit(self, name: str, *args) -> None:
        """Call the event's callbacks with args, in the order they were connected."""
        for callback in list(self._slot(name)):
            callback(*args)

    def _slot(self, name: str) -> list[Callable]:
        try:
            return self._callbacks[name]
        except KeyError:
            raise KeyError(f"unknown event {name!r}; known: {', '.join(self._callbacks)}") from None

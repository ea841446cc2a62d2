"""Catch what native libraries (libpng, libjpeg, niftilib, ITK) print on stderr while they read one file.

They write to file descriptor 2 directly, past Python's warnings. While one of our readers calls them, fd 2 points
at a temporary file; the text becomes notes on that file (or part of its skip reason) instead of terminal noise.
Readers take a lock, so their captures never interleave; another thread writing to stderr in that moment is
captured too (and then reported with the file).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
import warnings
from contextlib import contextmanager
from typing import Iterator

_LOCK = threading.Lock()
_WARNINGS_LOCK = threading.RLock()
_MAX_LINES = 3


@contextmanager
def caught_warnings() -> Iterator[list]:
    """Run the block with Python warnings recorded (the list holds them) instead of shown.

    One such block at a time across threads: warnings.catch_warnings swaps process-wide state, so two threads'
    blocks would restore each other's filters and let a warning escape (or leave one thread's recorder installed).
    """
    with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


@contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Run the block with fd 2 redirected; afterwards the list holds up to 3 distinct, cleaned-up message lines."""
    messages: list[str] = []
    with _LOCK:  # one capture at a time: each restores exactly the descriptor it replaced
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all (a windowed app on Windows): nothing can reach a terminal anyway
            yield messages
            return
        with tempfile.TemporaryFile() as sink:
            if sys.stderr is not None:
                sys.stderr.flush()
            os.dup2(sink.fileno(), 2)
            try:
                yield messages
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                messages.extend(_messages(sink.read(65536).decode("utf-8", "replace")))


def _messages(text: str) -> list[str]:
    """Return the meaningful lines: without ITK's "WARNING: In <source file>" headers, matrices and repeats."""
    found: list[str] = []
    for line in text.splitlines():
        line = re.sub(r"^\[ WARN:\S+\] global \S+ \S+ ", "", line.strip())  # OpenCV's log prefix
        line = re.sub(r"\(0x[0-9a-f]+\)", "", line)  # object addresses
        if not line or line.startswith(("WARNING: In ", "ERROR: In ", "M = [", "/tmp/", "]")) or re.match(r"^[-\d.\seinaf\[\]]+$", line):
            continue
        if line not in found:
            found.append(line)
        if len(found) == _MAX_LINES:
            break
    return found


def last_line(exc: Exception) -> str:
    """Return the last non-empty line of an exception's text (ITK and SimpleITK put the reason there)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__

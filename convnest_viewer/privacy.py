"""Patient identifiers seen this session, and their removal from any text bound for a log or crash report."""

from __future__ import annotations

import re
import threading

REDACTED = "[redacted]"
_MIN_LENGTH = 3  # shorter fragments (initials, "MR", "1") would blank out ordinary words and numbers


class Redactor:
    """Remembers patient names, IDs and birth dates, and replaces them in text (case-insensitively)."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern | None = None
        self._lock = threading.Lock()

    def remember(self, name: str = "", patient_id: str = "", birth_date: str = "") -> None:
        """Add one patient's identifiers: the whole name and each of its parts, the ID, the birth date in two forms."""
        values = {name, name.replace("^", " ").strip(), patient_id, birth_date}
        values.update(part for part in re.split(r"[\^\s,]+", name))
        if re.fullmatch(r"\d{8}", birth_date):
            values.add(f"{birth_date[:4]}-{birth_date[4:6]}-{birth_date[6:]}")
        values = {value.strip() for value in values if len(value.strip()) >= _MIN_LENGTH}
        with self._lock:
            if values - self._values:
                self._values |= values
                alternatives = sorted(self._values, key=len, reverse=True)  # longest first: whole names before parts
                self._pattern = re.compile("|".join(re.escape(value) for value in alternatives), re.IGNORECASE)

    def redact(self, text: str) -> str:
        """Return text with every remembered identifier replaced by [redacted]."""
        with self._lock:
            pattern = self._pattern
        return pattern.sub(REDACTED, text) if pattern is not None else text


REDACTOR = Redactor()


def remember_patient(patient) -> None:
    """Remember a PatientInfo's identifiers so that logs and crash reports never show them."""
    REDACTOR.remember(patient.name, patient.id, patient.birth_date)


def redact(text: str) -> str:
    """Return text with every patient identifier seen this session replaced."""
    return REDACTOR.redact(text)

"""The viewer's log file and crash reports, written with patient identifiers redacted."""

from __future__ import annotations

import faulthandler
import logging
import logging.handlers
import os
import platform
import sys
import threading
import traceback
from datetime import datetime
from pathlib import Path
from typing import Callable

from convnest_viewer import __version__
from convnest_viewer.privacy import redact

LOG_DIR_VARIABLE = "CONVNEST_LOG_DIR"
LOG_FILE = "convnest-viewer.log"
NATIVE_CRASH_FILE = "native-crash.log"
_state: dict = {}


def log_dir() -> Path:
    """Return the folder of the log and crash reports ($CONVNEST_LOG_DIR, else the platform's user log folder)."""
    configured = os.environ.get(LOG_DIR_VARIABLE)
    if configured:
        return Path(configured)
    from platformdirs import user_log_dir

    return Path(user_log_dir("convnest-viewer", "ConvNeXtViewer"))


class RedactingFormatter(logging.Formatter):
    """A formatter whose output (message, arguments and traceback) has patient identifiers redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(level: int = logging.INFO) -> Path:
    """Send the app's log records to a rotating file in log_dir(), redacted; return the file's path."""
    folder = log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOG_FILE
    logger = logging.getLogger("convnest_viewer")
    if _state.get("handler") is not None:
        logger.removeHandler(_state["handler"])
        _state["handler"].close()
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=2_000_000, backupCount=3, encoding="utf-8")
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    _state["handler"] = handler
    route_warnings(handler)
    logger.info("convnest-viewer %s on Python %s, %s", __version__, platform.python_version(), platform.platform())
    return path


def route_warnings(handler: logging.Handler) -> None:
    """Send Python warnings (a decoder's complaint about one slice, say) to `handler` instead of stderr."""
    logging.captureWarnings(True)
    warnings_logger = logging.getLogger("py.warnings")
    for old in list(warnings_logger.handlers):
        warnings_logger.removeHandler(old)
    warnings_logger.addHandler(handler)
    warnings_logger.propagate = False


def write_crash_report(exc_type, exc, tb, thread_name: str | None = None) -> Path:
    """Write an uncaught exception's report (traceback, versions), redacted, to a new file; return its path."""
    folder = log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    path = folder / f"crash-{stamp}.txt"
    lines = [
        f"convnest-viewer {__version__} crash report, {datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"Python {platform.python_version()} on {platform.platform()}",
        f"thread: {thread_name or threading.current_thread().name}",
        "",
        "".join(traceback.format_exception(exc_type, exc, tb)),
    ]
    path.write_text(redact("\n".join(lines)), encoding="utf-8")
    logging.getLogger("convnest_viewer").error("uncaught %s; crash report written to %s", exc_type.__name__, path)
    return path


def install_crash_handlers(show: Callable[[Path, str], None] | None = None) -> None:
    """Report uncaught exceptions (any thread) to a crash file and to `show`, and native faults to a log file."""

    def handle(exc_type, exc, tb, thread_name=None):
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        path = write_crash_report(exc_type, exc, tb, thread_name)
        if show is not None:
            try:
                show(path, redact(f"{exc_type.__name__}: {exc}"))
            except Exception:  # noqa: BLE001 - reporting must never raise
                pass

    sys.excepthook = handle
    threading.excepthook = lambda args: handle(args.exc_type, args.exc_value, args.exc_traceback,
                                               args.thread.name if args.thread else None)
    folder = log_dir()
    folder.mkdir(parents=True, exist_ok=True)
    native = open(folder / NATIVE_CRASH_FILE, "a", encoding="utf-8")  # noqa: SIM115 - held open for faulthandler
    _state["native"] = native
    faulthandler.enable(file=native)  # stack frames of code only: no patient data

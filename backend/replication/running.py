"""What `reelfs subscribe` and `reelfs watch` share as services in the foreground: log
lines on stderr, a stop on SIGTERM/SIGINT, and `RunError`, the end of a run that the
command line reports as one line on stderr with an exit code."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from backend.names import PrintableFormatter


class RunError(Exception):
    """A run that could not start or did not finish: `str()` is the line for the user,
    `code` the exit code (1: failed, 2: bad configuration or credentials)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def log_to_stderr(verbosity: int) -> None:
    """INFO lines on stderr; DEBUG too from `-vv`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PrintableFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbosity > 1 else logging.INFO, handlers=[handler])


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (signals are caught only in the main thread)."""
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    return stop

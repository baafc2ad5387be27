"""Constants and helpers shared by the emulated library tests."""

from __future__ import annotations

import subprocess
import sys
import textwrap

IE0, IE1 = 16, 17
DRIVE0, DRIVE1 = 256, 257
SLOT0 = 1024
VOLUMES = ["VOL001", "VOL002", "VOL003"]
CLEANING = ["CLN001"]
CAPACITY = 1 << 20
EARLY_WARNING = CAPACITY - 64 * 1024
CLEANING_USES = 2


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter (another process, as a daemon or a test would be)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )

"""A private tgt virtual tape library for tests, via examples/vtl (stopped by its PID)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.ports import free_tgt_port

VTL_DIR = Path(__file__).resolve().parent.parent / "examples" / "vtl"
SOCKET_DIR = Path("/var/run/tgtd")


@dataclass
class Vtl:
    directory: Path
    changer: str
    drives: list[str]
    pid: int
    state: dict

    def stop(self) -> None:
        subprocess.run(
            [str(VTL_DIR / "stop-vtl"), "--dir", str(self.directory)],
            capture_output=True,
            timeout=60,
        )


def require_tgt() -> None:
    missing = [t for t in ("tgtd", "tgtadm", "tgtimg") if shutil.which(t) is None]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"tgt is not installed ({', '.join(missing)}); CI installs it")
        pytest.skip(f"tgt is not installed ({', '.join(missing)} missing)")


def start(
    directory: Path,
    *,
    drives: int,
    tapes: int,
    tape_size_mb: int,
    prefix: str = "RF",
    spare_slots: int = 3,
    drive_product: str = "VTL-DRIVE",
) -> Vtl:
    require_tgt()
    directory.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(
        [
            str(VTL_DIR / "start-vtl"),
            "--dir",
            str(directory),
            "--port",
            str(free_tgt_port(SOCKET_DIR)),
            "--drives",
            str(drives),
            "--slots",
            str(tapes + 1 + spare_slots),
            "--tapes",
            str(tapes),
            "--tape-size",
            str(tape_size_mb),
            "--barcode-prefix",
            prefix,
            "--drive-product",
            drive_product,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if p.returncode != 0:
        raise AssertionError(f"start-vtl failed: {p.stderr.strip()}")
    st = json.loads(p.stdout)
    return Vtl(directory, st["changer"], list(st["drives"]), int(st["pid"]), st)

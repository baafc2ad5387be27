"""Fixtures for the SCSI driver tests: a private tgt VTL on 127.0.0.1 and libraries on it.

The VTL is started once per session with `examples/vtl/start-vtl` (its own tgtd, iSCSI port,
control port and image directory) and stopped by its recorded PID when the session ends,
whether the tests passed or not. Without tgt installed the VTL tests are skipped, except
under CI (`CI=true`), where a missing tgtd is a failure: CI installs it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from drivers.tape import Library
from tests.ports import free_tgt_port

ROOT = Path(__file__).resolve().parents[2]
VTL_DIR = ROOT / "examples" / "vtl"
DRIVES = 2
SLOTS = 10
TAPES = 6  # RL0001..RL0006 in slots 1000..1005; 1006..1008 free; CLN001 in 1009
TAPE_SIZE_MB = 8


def _load_vtl_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("reelfs_example_vtl", VTL_DIR / "vtl.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


vtl_module = _load_vtl_module()


def _missing_tools() -> list[str]:
    return [t for t in ("tgtd", "tgtadm", "tgtimg") if shutil.which(t) is None]


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI installs tgt: this must not happen there)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def vtl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[vtl_module.VtlState]:
    missing = _missing_tools()
    if missing:
        _skip_or_fail(f"tgt is not installed ({', '.join(missing)} missing)")
    directory = tmp_path_factory.mktemp("vtl")
    port = free_tgt_port(vtl_module.SOCKET_DIR)
    proc = subprocess.run(
        [
            str(VTL_DIR / "start-vtl"),
            "--dir", str(directory),
            "--port", str(port),
            "--drives", str(DRIVES),
            "--slots", str(SLOTS),
            "--tapes", str(TAPES),
            "--tape-size", str(TAPE_SIZE_MB),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    try:
        if proc.returncode != 0:
            log = directory / "tgtd.log"
            detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            if "Permission denied" in proc.stderr + detail and os.geteuid() != 0:
                _skip_or_fail(f"tgtd needs root here: {proc.stderr.strip()}")
            pytest.fail(f"start-vtl failed: {proc.stderr.strip()}\n{detail}")
        state = vtl_module.VtlState(**json.loads(proc.stdout))
        yield state
    finally:
        subprocess.run([str(VTL_DIR / "stop-vtl"), "--dir", str(directory)], timeout=60)


@pytest.fixture
def library(vtl) -> Iterator[Library]:
    """A library on the VTL; every cartridge is back in a slot when the test ends."""
    from drivers.scsi import open_library, return_cartridges

    lib = open_library(vtl.changer, vtl.drives)
    try:
        yield lib
    finally:
        try:
            return_cartridges(lib)
        finally:
            lib.close()


@pytest.fixture
def vtl_ops():
    """The VTL helper module (operator at the mail slots, dropping sessions, images)."""
    return vtl_module

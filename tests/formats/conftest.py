"""Fixtures for the on-tape format tests: the real GNU tar and cpio binaries, and writing
pax tape files onto an in-memory drive."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def _gnu_tar() -> str | None:
    path = shutil.which("tar")
    if path is None:
        return None
    out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    return path if "GNU tar" in out else None


@pytest.fixture(scope="session")
def gnu_tar() -> str:
    path = _gnu_tar()
    if path is None:
        pytest.fail("GNU tar is required for the format tests")
    return path


@pytest.fixture(scope="session")
def cpio_bin() -> str:
    path = shutil.which("cpio")
    if path is None:
        pytest.skip("cpio is not installed (apt-get install cpio)")
    return path

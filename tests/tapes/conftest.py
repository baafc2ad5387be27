"""Fixtures for the tests of what reelfs puts on tape: real mounts on the emulated library."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not os.path.exists("/dev/fuse"):
        if os.environ.get("CI") == "true":
            raise pytest.UsageError("/dev/fuse is missing: the tape tests cannot run")
        skip = pytest.mark.skip(reason="no /dev/fuse on this machine")
        for item in items:
            if "tests/tapes" in str(item.fspath):
                item.add_marker(skip)

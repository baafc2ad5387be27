"""Fixtures for tests that mount real archives."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.archive import Mount, init_archive, mount


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not os.path.exists("/dev/fuse"):
        if os.environ.get("CI") == "true":
            raise pytest.UsageError("/dev/fuse is missing: the mount tests cannot run")
        skip = pytest.mark.skip(reason="no /dev/fuse on this machine")
        for item in items:
            if "mountfs" in str(item.fspath):
                item.add_marker(skip)


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    return init_archive(tmp_path / "archive")


@pytest.fixture
def mounted(archive: Path, tmp_path: Path) -> Iterator[Mount]:
    m = mount(archive, tmp_path / "mnt")
    try:
        yield m
    finally:
        m.stop()

"""Fixtures for tests that mount real archives.

`make_archive(**kw)` creates an archive on the library kind of the test: emulated by
default; a test module that defines its own `library_kind` fixture with
params=["emulated", "scsi"] runs on both, the SCSI one on a private tgt VTL started for
the test and stopped by its PID afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.config import parse_size
from tests import vtl as vtlmod
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
def library_kind() -> str:
    return "emulated"


@pytest.fixture
def make_archive(tmp_path: Path, library_kind: str) -> Iterator[Callable[..., Path]]:
    vtls: list[vtlmod.Vtl] = []
    count = 0

    def make(**kw: Any) -> Path:
        nonlocal count
        count += 1
        path = tmp_path / (f"archive{count}" if count > 1 else "archive")
        if library_kind == "scsi":
            v = vtlmod.start(
                tmp_path / f"vtl{count}",
                drives=kw.get("drives", 2),
                tapes=kw.get("volumes", 4),
                tape_size_mb=max(1, parse_size(kw.get("volume_size", "64MiB")) // 2**20),
            )
            vtls.append(v)
            kw["vtl"] = v
        return init_archive(path, **kw)

    make.vtls = vtls  # type: ignore[attr-defined] - tests playing the operator use them
    try:
        yield make
    finally:
        for v in vtls:
            v.stop()


@pytest.fixture
def archive(make_archive: Callable[..., Path]) -> Path:
    return make_archive()


@pytest.fixture
def mounted(archive: Path, tmp_path: Path) -> Iterator[Mount]:
    m = mount(archive, tmp_path / "mnt")
    try:
        yield m
    finally:
        m.stop()

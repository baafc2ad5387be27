"""Fixtures for the driver tests.

The emulated library's fixtures carry an `emu_` prefix: a small library in `tmp_path`
(`emu_libdir`), opened (`emu_library`), and drive0 with VOL001 loaded (`emu_drive`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.emulated import create_library, open_library
from drivers.tape import Library, TapeDrive
from tests.drivers.emulated_support import (
    CAPACITY,
    CLEANING,
    CLEANING_USES,
    DRIVE0,
    EARLY_WARNING,
    SLOT0,
    VOLUMES,
)


@pytest.fixture
def emu_libdir(tmp_path: Path) -> Path:
    path = tmp_path / "library"
    create_library(
        path,
        drives=2,
        slots=8,
        volumes=VOLUMES,
        capacity=CAPACITY,
        early_warning=EARLY_WARNING,
        ie_slots=2,
        cleaning=CLEANING,
        cleaning_uses=CLEANING_USES,
    )
    return path


@pytest.fixture
def emu_library(emu_libdir: Path) -> Iterator[Library]:
    lib = open_library(emu_libdir)
    yield lib
    lib.close()


@pytest.fixture
def emu_drive(emu_library: Library) -> TapeDrive:
    """drive0 with VOL001 (from the first slot) loaded."""
    emu_library.changer.move(SLOT0, DRIVE0)
    d = emu_library.drives[DRIVE0]
    d.load()
    return d

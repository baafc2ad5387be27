"""A killed daemon (kill -9) during writes and flushes loses nothing closed before, and
the next start puts home any tape it left in a drive: emulated library and tgt VTL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from backend import config as cfgmod
from drivers.library import open_library
from drivers.tape import ElementType
from tests.archive import file_of, mount, reelfs
from tests.waiting import wait_for


@pytest.fixture(params=["emulated", "scsi"])
def library_kind(request: pytest.FixtureRequest) -> str:
    return request.param


def test_kill_9_during_writes_and_flushes(make_archive: Callable, tmp_path: Path) -> None:
    archive = make_archive(drives=2, volumes=4, options={"mover.flush_delay": "0s"})
    m = mount(archive, tmp_path / "mnt")
    closed: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        for i in range(400):
            if stop.is_set():
                return
            try:
                with open(m.mnt / f"f{i:03d}.dat", "wb") as fh:
                    fh.write(file_of(200_000, i))
            except OSError:
                return
            closed.append(i)

    t = threading.Thread(target=writer)
    t.start()
    wait_for(
        lambda: len(closed) >= 20 and m.events("mount"),
        timeout=60,
        what="writes and a tape mount under way",
    )
    m.kill()
    stop.set()
    t.join(30)
    survivors = list(closed)
    m = mount(archive, tmp_path / "mnt")
    try:
        cleaner = m.events("cleaner_session")
        recovered = m.events("recovery")
        assert recovered
        m.flush(m.mnt, timeout=300)
        for i in survivors:
            p = m.mnt / f"f{i:03d}.dat"
            assert p.read_bytes() == file_of(200_000, i), p
            assert m.state(p) == "archived"
        check = reelfs("check", "--archive", str(archive), check=False)
        assert check.returncode == 0, check.stderr.decode()
        # if a tape was left in a drive, the cleaner session put it home first
        if cleaner:
            assert all("found" in e["message"] for e in cleaner)
    finally:
        m.stop()
    config = cfgmod.load(archive)
    lib = open_library(config.library.spec, config.archive)
    try:
        assert not [e for e in lib.changer.inventory().of_type(ElementType.DRIVE) if e.full]
    finally:
        lib.close()

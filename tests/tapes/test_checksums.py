"""Checksums end to end: a copy that reads back wrong is a media error of that copy, the
file's other copy is used, EIO comes only when no good copy is left; families may ask for
each tape file to be read back after it is written."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from drivers.emulated import inject_fault
from tests.archive import file_of, init_archive, mount, reelfs, tape_locations
from tests.tapes.tapetools import cartridge, flip_byte, new_cartridge, read_tape_file
from tests.waiting import wait_for

BLOCK = 256 * 1024


def _clone(archive: Path, source: str, clone: str) -> None:
    """Copy a volume record for record onto a new cartridge (left in the mail slot)."""
    files: list[list[bytes]] = []
    with cartridge(archive, source) as drive:
        drive.rewind()
        while records := read_tape_file(drive):
            files.append(records)
    new_cartridge(archive, clone)
    with cartridge(archive, clone) as drive:
        for records in files:
            for r in records:
                drive.write_block(r)
            drive.write_filemarks(1)


def test_a_bad_copy_is_skipped_for_a_good_one_and_eio_comes_when_none_is_left(
    tmp_path: Path,
) -> None:
    archive = init_archive(tmp_path / "a", volumes=2)
    data = file_of(600_000, 1)  # three records
    m = mount(archive, tmp_path / "mnt")
    try:
        f = m.mnt / "f"
        f.write_bytes(data)
        m.flush(f)
        ((vol, _, block),) = [loc.split(":") for loc in tape_locations(m, f)]
        m.umount()
    finally:
        m.stop()
    assert vol == "RF0001"
    # a second copy: a clone of the volume, found by rebuilding the catalog from the tapes
    _clone(archive, "RF0001", "RF0009")
    rep = json.loads(
        reelfs(
            "rebuild-catalog", "--from-tapes", "--force", "--archive", str(archive), "--json"
        ).stdout
    )
    assert rep["files"] == 1 and rep["copies"] == 2
    flip_byte(archive, "RF0001", int(block) + 1, 1000)  # inside the data: only sums tell
    m = mount(archive, tmp_path / "mnt")
    try:
        assert sorted(loc.split(":")[0] for loc in tape_locations(m, f)) == ["RF0001", "RF0009"]
        m.release(f)
        assert f.read_bytes() == data  # the clone's copy, after the bad one
        (bad,) = m.events("copy_bad")
        assert "RF0001" in bad["message"] and "checksums" in bad["message"]
        assert [loc.split(":")[0] for loc in tape_locations(m, f)] == ["RF0009"]
        m.release(f)
        assert f.read_bytes() == data  # straight to the good copy this time
        assert len(m.events("copy_bad")) == 1
        p = m.cli("check", "--archive", str(archive), check=False)
        assert p.returncode == 0  # one good copy is enough
        m.umount()
    finally:
        m.stop()
    flip_byte(archive, "RF0009", int(block) + 2, 5)
    m = mount(archive, tmp_path / "mnt")
    try:
        m.release(f)
        with pytest.raises(OSError) as e:
            f.read_bytes()
        assert e.value.errno == errno.EIO
        assert "no good copy left" in m.xattr(f, "error")
        assert len(m.events("copy_bad")) == 2
        with pytest.raises(OSError) as e:
            f.read_bytes()  # and it stays so, without a mount
        assert e.value.errno == errno.EIO
        assert "2 bad" in m.xattr(f, "error")
        p = m.cli("check", "--archive", str(archive), check=False)
        assert p.returncode == 1 and "without an active tape copy" in p.stderr.decode()
    finally:
        m.stop()


def test_read_after_write_verify_per_family(tmp_path: Path) -> None:
    archive = init_archive(tmp_path / "a", volumes=3)
    with open(archive / "reelfs.toml", "a") as toml:
        toml.write("\n[families.raw]\nverify = true\n")
    m = mount(archive, tmp_path / "mnt")
    try:
        raw, plain = m.mnt / "raw", m.mnt / "plain"
        for d in (raw, plain):
            d.mkdir()
            os.setxattr(d, "user.reelfs.file_family", d.name.encode())
        (plain / "p").write_bytes(b"not verified")
        m.flush(plain)
        assert not m.events("write_verified")
        (raw / "a").write_bytes(file_of(300_000, 1))
        m.flush(raw)
        (ok,) = m.events("write_verified")
        vol = tape_locations(m, raw / "a")[0].split(":")[0]
        assert ok["subject"] == vol and "1 file(s)" in ok["message"]
        # the next tape file of that volume will not read back
        eod = {v["label"]: v for v in m.json("volumes")}[vol]["eod_block"]
        inject_fault(archive / "library", kind="media", volume=vol, block=eod, op="read")
        b = raw / "b"
        b.write_bytes(file_of(200_000, 2))
        m.flush(b)
        assert not tape_locations(m, b)[0].startswith(vol)  # written again elsewhere
        (failed,) = m.events("verify_failed")
        assert failed["subject"] == vol
        assert {v["label"]: v for v in m.json("volumes")}[vol]["state"] == "suspect"
        wait_for(lambda: len(m.events("write_verified")) == 2, timeout=30)
        m.release()
        assert b.read_bytes() == file_of(200_000, 2)
    finally:
        m.stop()

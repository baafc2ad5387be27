"""`reelfs init --library scsi` asks the drives what they are: LTO drives get 1 MiB tape
blocks (they stream best with large ones), others the 256 KiB default, and a library that
cannot be reached does not stop the archive from being created."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.scsi.identity import PERIPHERAL_CHANGER, PERIPHERAL_TAPE, Identity, is_lto
from tests import vtl as vtlmod
from tests.archive import file_of, mount, reelfs, wait_state
from tests.ports import free_port


@pytest.mark.parametrize(
    ("vendor", "product", "lto"),
    [
        ("IBM", "ULT3580-TD8", True),
        ("IBM", "ULTRIUM-TD9", True),
        ("HPE", "Ultrium 8-SCSI", True),
        ("QUANTUM", "ULTRIUM-HH8", True),
        ("TANDBERG", "LTO-7 HH", True),
        ("IBM", "03592E08", False),
        ("REELFS", "VTL-DRIVE", False),
        ("IET", "VIRTUAL-TAPE", False),
    ],
)
def test_lto_drives_are_told_by_their_product(vendor: str, product: str, lto: bool) -> None:
    assert is_lto(Identity(vendor, product, "0001", PERIPHERAL_TAPE)) is lto


def test_a_changer_is_no_lto_drive() -> None:
    assert not is_lto(Identity("IBM", "ULT3584", "0001", PERIPHERAL_CHANGER))


@pytest.fixture
def lto_vtl(tmp_path: Path) -> Iterator[vtlmod.Vtl]:
    v = vtlmod.start(
        tmp_path / "vtl", drives=1, tapes=2, tape_size_mb=64, drive_product="ULTRIUM-HH8"
    )
    try:
        yield v
    finally:
        v.stop()


def _init(path: Path, changer: str, drives: list[str], *extra: str) -> dict:
    args = ["init", str(path), "--json", "--library", "scsi", "--changer", changer, *extra]
    for d in drives:
        args += ["--drive", d]
    return json.loads(reelfs(*args).stdout)


def _block_size(archive: Path) -> int:
    with open(archive / "reelfs.toml", "rb") as f:
        return tomllib.load(f)["library"]["block_size"]


def test_lto_drives_get_one_mib_blocks_and_the_archive_works(
    lto_vtl: vtlmod.Vtl, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    got = _init(archive, lto_vtl.changer, lto_vtl.drives, "-o", 'mover.idle_dismount="2s"')
    assert got["block_size"] == 1024 * 1024
    assert "LTO" in got["notes"][0] and "ULTRIUM-HH8" in got["notes"][0]
    assert _block_size(archive) == 1024 * 1024
    m = mount(archive, tmp_path / "mnt")
    try:
        data = file_of(3 * 1024 * 1024 + 12345, seed=7)
        (m.mnt / "f.bin").write_bytes(data)
        m.flush(m.mnt / "f.bin")
        m.release(m.mnt / "f.bin")
        wait_state(m, m.mnt / "f.bin", "released")
        assert (m.mnt / "f.bin").read_bytes() == data  # recalled from 1 MiB blocks on tgt
    finally:
        m.stop()


def test_an_explicit_block_size_wins_over_the_drives(lto_vtl: vtlmod.Vtl, tmp_path: Path) -> None:
    got = _init(tmp_path / "a1", lto_vtl.changer, lto_vtl.drives, "--block-size", "512KiB")
    assert got["block_size"] == 512 * 1024 and got["notes"] == []
    option = 'library.block_size="64KiB"'
    got = _init(tmp_path / "a2", lto_vtl.changer, lto_vtl.drives, "-o", option)
    assert got["block_size"] == 64 * 1024 and got["notes"] == []


def test_other_drives_keep_the_default(tmp_path: Path) -> None:
    v = vtlmod.start(tmp_path / "vtl", drives=1, tapes=1, tape_size_mb=16)
    try:
        got = _init(tmp_path / "archive", v.changer, v.drives)
    finally:
        v.stop()
    assert got["block_size"] == 256 * 1024
    assert "VTL-DRIVE" in got["notes"][0]


def test_an_unreachable_drive_keeps_the_default_and_says_so(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"iscsi://127.0.0.1:{port}/iqn.2024-01.org.reelfs:none/1"
    got = _init(tmp_path / "archive", url.replace("/1", "/2"), [url])
    assert got["block_size"] == 256 * 1024
    assert got["notes"][0].startswith(f"block_size 256KiB: could not ask drive {url}")
    assert (tmp_path / "archive" / "catalog.db").exists()

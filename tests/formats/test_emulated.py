"""The formats on the emulated drive (drivers/emulated): what the mover will really do."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.emulated import create_library, open_library
from drivers.formats.ansi import (
    check_trailer,
    read_header,
    read_trailer,
    read_vol1,
    write_header,
    write_trailer,
    write_vol1,
)
from drivers.formats.foreign import Format, open_tape_file
from drivers.formats.pax import (
    MemberInfo,
    TapeFileWriter,
    iter_members,
    read_member,
    reelfs_records,
)
from drivers.tape import ElementType, Library, TapeDrive
from tests.formats.util import run_tar

BS = 256 * 1024
CAPACITY = 64 << 20
EARLY_WARNING = 8 << 20


@pytest.fixture
def library(tmp_path: Path) -> Iterator[tuple[Path, Library]]:
    path = tmp_path / "library"
    create_library(
        path,
        drives=1,
        slots=2,
        volumes=["FMT001"],
        capacity=CAPACITY,
        early_warning=EARLY_WARNING,
    )
    lib = open_library(path)
    yield path, lib
    lib.close()


def mount(lib: Library) -> TapeDrive:
    inv = lib.changer.inventory()
    (drive_el,) = inv.of_type(ElementType.DRIVE)
    if not drive_el.full:
        slot = inv.find("FMT001")
        assert slot is not None
        lib.changer.move(slot.address, drive_el.address)
    drive = lib.drives[drive_el.address]
    drive.load()
    drive.set_block_size(BS)  # fixed blocks, as the mover mounts
    return drive


def data(n: int, seed: int) -> bytes:
    return bytes((i * 31 + seed) % 256 for i in range(n))


def test_pax_and_labels_on_the_emulated_drive(library, gnu_tar):
    path, lib = library
    drive = mount(lib)
    write_vol1(drive, "FMT001", owner="REELFS")
    files = {"small/a.txt": data(100, 1), "b.bin": data(3 * BS + 17, 2), "c": b""}
    write_header(drive, volser="FMT001", file_id="F1", file_sequence=1, block_size=BS)
    start = drive.read_position().block
    writer = TapeFileWriter(drive, BS)
    extents = {
        name: writer.add(
            MemberInfo(
                name,
                len(d),
                1_700_000_000_000_000_001,
                0o600,
                records=reelfs_records(bfid=f"B-{name}"),
            ),
            io.BytesIO(d),
        )
        for name, d in files.items()
    }
    count = writer.finish()
    assert not writer.early_warning
    write_trailer(
        drive, volser="FMT001", file_id="F1", file_sequence=1, block_size=BS, block_count=count
    )
    assert drive.status().block_size == BS  # the label helpers put fixed mode back

    # a fresh process: reopen the library and read everything back
    lib.close()
    lib2 = open_library(path)
    try:
        drive = mount(lib2)
        assert read_vol1(drive).volser == "FMT001"
        header = read_header(drive)
        assert drive.read_position().block == start
        got = {m.name: s.read() for m, _, s in iter_members(drive, BS)}
        assert got == files
        check_trailer(header, read_trailer(drive), count)

        for name in reversed(list(files)):
            drive.locate(start + extents[name].record)
            out = io.BytesIO()
            info = read_member(drive, BS, extents[name].offset, out)
            assert (info.name, out.getvalue()) == (name, files[name])
            assert info.records["REELFS.bfid"] == f"B-{name}"

        drive.locate(start)
        records = []
        fmt, source = open_tape_file(drive, BS)
        assert fmt == Format.REELFS_PAX
        while chunk := source.read(BS):
            records.append(chunk)
        listing = run_tar(gnu_tar, ["--warning=no-unknown-keyword", "-tf", "-"], b"".join(records))
        assert listing.returncode == 0 and listing.stdout.decode().split() == list(files)
    finally:
        lib2.close()


def test_early_warning_from_the_emulated_drive(library):
    _, lib = library
    drive = mount(lib)
    writer = TapeFileWriter(drive, BS)
    big = data(EARLY_WARNING + BS, 3)
    writer.add(MemberInfo("big", len(big), 0, 0o644), io.BytesIO(big))
    assert writer.early_warning
    writer.finish()
    drive.rewind()
    ((info, _, stream),) = [(i, e, s.read()) for i, e, s in iter_members(drive, BS)]
    assert info.size == len(big) and stream == big

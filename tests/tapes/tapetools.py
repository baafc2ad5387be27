"""Handling cartridges of an *unmounted* archive's emulated library directly, as an operator
with a tape drive on the side would: to look at what a mover wrote, write a foreign tape,
relabel or damage one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from drivers.emulated import insert_cartridge, open_library
from drivers.emulated.image import TapeImage
from drivers.emulated.layout import LibraryDir
from drivers.tape import BlankCheckError, ElementType, FilemarkDetected, SpaceUnit, TapeDrive


@contextlib.contextmanager
def cartridge(archive: Path, barcode: str) -> Iterator[TapeDrive]:
    """`barcode` loaded in the first empty drive, variable-length records; put back where
    it was afterwards."""
    lib = open_library(archive / "library")
    try:
        inv = lib.changer.inventory()
        el = inv.find(barcode)
        assert el is not None, f"{barcode} is not in the library"
        address = next(e.address for e in inv.of_type(ElementType.DRIVE) if not e.full)
        lib.changer.move(el.address, address)
        drive = lib.drives[address]
        drive.load()
        drive.set_block_size(0)
        try:
            yield drive
        finally:
            drive.unload()
            lib.changer.move(address, el.address)
    finally:
        lib.close()


def new_cartridge(archive: Path, barcode: str) -> int:
    """A blank cartridge in the mail slot, as an operator puts one in; its address."""
    return insert_cartridge(archive / "library", barcode)


def write_records(drive: TapeDrive, data: bytes, record: int) -> int:
    """`data` as records of `record` bytes (the last one zero-padded), then a filemark."""
    n = 0
    for i in range(0, len(data), record):
        chunk = data[i : i + record]
        drive.write_block(chunk.ljust(record, b"\0"))
        n += 1
    drive.write_filemarks(1)
    return n


def read_tape_file(drive: TapeDrive) -> list[bytes]:
    """The records of the tape file at the drive's position, up to its filemark."""
    out = []
    while True:
        try:
            out.append(bytes(drive.read_block((1 << 24) - 1)))
        except (FilemarkDetected, BlankCheckError):
            return out


def goto_tape_file(drive: TapeDrive, n: int) -> None:
    drive.rewind()
    if n:
        drive.space(n, SpaceUnit.FILEMARKS)


def flip_byte(archive: Path, barcode: str, block: int, offset: int) -> None:
    """Damage one byte of record `block` of an unloaded cartridge, as a bad spot on the
    medium would (the drive then reads it back without complaint: only checksums tell)."""
    image = TapeImage(LibraryDir(archive / "library").tape(barcode))
    try:
        assert not image.is_filemark(block)
        at = image.ends[block] + offset
        byte = os.pread(image.fd, 1, at)
        os.pwrite(image.fd, bytes([byte[0] ^ 0xFF]), at)
        os.fsync(image.fd)
    finally:
        image.close()

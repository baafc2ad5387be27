"""Helpers shared by the format tests."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

from drivers.formats.pax import MemberExtent, MemberInfo, TapeFileWriter
from tests.formats.memdrive import MemDrive


def write_tape_file(
    drive: MemDrive, block_size: int, members: list[tuple[MemberInfo, bytes]]
) -> tuple[list[MemberExtent], int]:
    """Write one pax tape file at the drive's position; return the extents and the logical
    object where the tape file starts."""
    start = drive.read_position().block
    writer = TapeFileWriter(drive, block_size)
    extents = [writer.add(info, io.BytesIO(data)) for info, data in members]
    writer.finish()
    return extents, start


def run_tar(tar: str, args: list[str], archive: bytes, cwd: Path | None = None):
    return subprocess.run(
        [tar, *args], input=archive, capture_output=True, cwd=cwd, check=False, timeout=60
    )


def chop(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def load_records(records: list[bytes], *, filemark: bool = True) -> MemDrive:
    """A drive holding one tape file made of `records`, positioned at its start."""
    drive = MemDrive()
    drive.objects = list(records) + ([None] if filemark else [])
    return drive

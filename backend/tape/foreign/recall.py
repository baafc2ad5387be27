"""Recalling a file adopted from a foreign volume: reading its member back from tape.

A foreign file's tape copy records the member's format and where its header starts (the
record, located by the mover, and the byte offset in it): tar members are read through
`drivers.formats.pax.read_member`, cpio members through `drivers.formats.cpio`.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from typing import BinaryIO

from drivers.formats import cpio, pax
from drivers.formats.archive import MemberType
from drivers.formats.errors import FormatError
from drivers.formats.foreign import DEFAULT_MAX_RECORD, Format
from drivers.formats.records import RecordSource
from drivers.tape import TapeDrive

DataCallback = Callable[[memoryview], None]


def read_member(
    drive: TapeDrive,
    fmt: str,
    offset: int,
    dest: BinaryIO,
    *,
    on_data: DataCallback | None = None,
    max_record: int = DEFAULT_MAX_RECORD,
) -> int:
    """Recall: copy the data of the foreign member whose header starts `offset` bytes into
    the record at the drive's position to `dest`; returns its size. The drive must be in
    variable-length mode."""
    f = Format(fmt)
    if f.is_tar:
        block = max(max_record, (offset // tarfile.BLOCKSIZE + 1) * tarfile.BLOCKSIZE)
        return pax.read_member(drive, block, offset, dest, on_data=on_data).size
    if f.is_cpio:
        source = RecordSource(drive, max_record)
        source.skip(offset, "record before the cpio header")
        members = cpio.iter_cpio(source)
        try:
            m = next(members, None)
            if m is None or m.type != MemberType.FILE:
                raise FormatError(f"no cpio file member at byte {offset} of the record")
            m.data.copy_to(dest, on_data)
            return m.size
        finally:
            members.close()
    raise FormatError(f"cannot read a member of a {fmt} tape file")

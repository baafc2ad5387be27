"""Reading cpio archives written by others: odc (070707), newc (070701) and crc (070702).

Streams from a tape file (`RecordSource`) or any binary stream (`StreamSource`): each
member's header and name are parsed, its data exposed as a `MemberStream`, until the
`TRAILER!!!` member. Every header field is checked to be the digits it must be (Python's
`int()` would accept "0x", "+" or "_"), names must fit and be NUL-terminated, data must be
complete, and crc archives have their per-member checksum verified; anything else is a
`FormatError` saying what and where. Every iteration consumes at least a header, so no input
makes the reader loop.

The old binary cpio format is recognised only to be refused by name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from drivers.formats.archive import ArchiveMember, MemberType
from drivers.formats.errors import FormatError
from drivers.formats.records import ByteSource, MemberStream

ODC_MAGIC = b"070707"
NEWC_MAGIC = b"070701"
CRC_MAGIC = b"070702"
BINARY_MAGICS = (b"\xc7\x71", b"\x71\xc7")  # 0o070707 as a little/big-endian short
TRAILER = "TRAILER!!!"

#: the longest name accepted (GNU cpio's own limit is far above PATH_MAX; 64 KiB is plenty)
MAX_NAME = 64 << 10
MAX_SYMLINK = 64 << 10

_ODC_FIELDS = (
    ("dev", 6),
    ("ino", 6),
    ("mode", 6),
    ("uid", 6),
    ("gid", 6),
    ("nlink", 6),
    ("rdev", 6),
    ("mtime", 11),
    ("namesize", 6),
    ("filesize", 11),
)
_NEWC_FIELDS = (
    "ino",
    "mode",
    "uid",
    "gid",
    "nlink",
    "mtime",
    "filesize",
    "devmajor",
    "devminor",
    "rdevmajor",
    "rdevminor",
    "namesize",
    "check",
)
_OCTAL = re.compile(rb"[0-7]+")
_HEX = re.compile(rb"[0-9A-Fa-f]{8}")


class _Sum32:
    """The crc format's "checksum": the sum of the data bytes, modulo 2**32."""

    def __init__(self, name: str, expected: int, offset: int) -> None:
        self.name, self.expected, self.offset = name, expected, offset
        self.total = 0

    def update(self, view: memoryview) -> None:
        self.total += sum(view)

    def finish(self) -> None:
        got = self.total & 0xFFFFFFFF
        if got != self.expected:
            raise FormatError(
                f"cpio crc member {self.name!r}: data checksum {got:08x}, header says"
                f" {self.expected:08x}",
                offset=self.offset,
            )


def _parse_odc(raw: bytes, start: int) -> dict[str, int]:
    fields, pos = {}, 0
    for name, width in _ODC_FIELDS:
        text = raw[pos : pos + width]
        if not _OCTAL.fullmatch(text):
            raise FormatError(f"cpio odc header field {name} is {text!r}: not octal", offset=start)
        fields[name] = int(text, 8)
        pos += width
    return fields


def _parse_newc(raw: bytes, start: int) -> dict[str, int]:
    fields = {}
    for i, name in enumerate(_NEWC_FIELDS):
        text = raw[8 * i : 8 * i + 8]
        if not _HEX.fullmatch(text):
            raise FormatError(
                f"cpio newc header field {name} is {text!r}: not 8 hex digits", offset=start
            )
        fields[name] = int(text, 16)
    return fields


def iter_cpio(source: ByteSource, *, verify: bool = True) -> Iterator[ArchiveMember]:
    """Every member of the cpio archive at the source's position, up to TRAILER!!!.

    Each member's `data` is valid until the next iteration; what is not read is skipped
    (and, with `verify`, still checksummed for crc archives).
    """
    while True:
        start = source.position
        magic = source.read(6)
        if len(magic) < 6:
            if not magic:
                raise FormatError("cpio archive ended without its TRAILER!!! member", offset=start)
            raise FormatError("truncated cpio header", offset=start)
        if magic == ODC_MAGIC:
            fields = _parse_odc(source.read_exact(70, "cpio odc header"), start)
            newc = False
        elif magic in (NEWC_MAGIC, CRC_MAGIC):
            fields = _parse_newc(source.read_exact(104, "cpio newc header"), start)
            newc = True
        elif magic[:2] in BINARY_MAGICS:
            raise FormatError("old binary cpio archive: not supported", offset=start)
        else:
            raise FormatError(f"bad cpio magic {magic!r}", offset=start)

        namesize, size = fields["namesize"], fields["filesize"]
        if not 1 <= namesize <= MAX_NAME:
            raise FormatError(f"cpio name size {namesize} is not in 1..{MAX_NAME}", offset=start)
        raw_name = source.read_exact(namesize, "cpio member name")
        if raw_name[-1] != 0 or 0 in raw_name[:-1]:
            raise FormatError("cpio member name is not one NUL-terminated string", offset=start)
        name = raw_name[:-1].decode("utf-8", "surrogateescape")
        if newc:
            source.skip(-(110 + namesize) % 4, "cpio name padding")
        if name == TRAILER:
            return

        mode = fields["mode"]
        kind = MemberType.from_mode(mode)
        linkname = ""
        if kind == MemberType.SYMLINK:
            if size > MAX_SYMLINK:
                raise FormatError(f"cpio symlink {name!r} target of {size} bytes", offset=start)
            linkname = source.read_exact(size, "cpio symlink target").decode(
                "utf-8", "surrogateescape"
            )
            data_size = 0
        elif kind in (MemberType.FILE, MemberType.OTHER):
            data_size = size
        elif size:
            raise FormatError(f"cpio {kind} member {name!r} has {size} bytes of data", offset=start)
        else:
            data_size = 0

        verifier = None
        if verify and magic == CRC_MAGIC and kind == MemberType.FILE:
            verifier = _Sum32(name, fields["check"], start)
        stream = MemberStream(source, data_size, name, verifier=verifier)
        member = ArchiveMember(
            name=name,
            type=kind,
            size=data_size,
            mode=mode & 0o7777,
            mtime_ns=fields["mtime"] * 1_000_000_000,
            uid=fields["uid"],
            gid=fields["gid"],
            data=stream,
            linkname=linkname,
            ino=fields["ino"],
            nlink=fields["nlink"],
        )
        try:
            yield member
        except GeneratorExit:
            stream.close()  # the caller stopped early: do not read on
            raise
        stream._finish()
        if newc:
            source.skip(-size % 4, "cpio data padding")

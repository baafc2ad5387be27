"""Tape files written by others: telling their format, and reading tar and cpio ones.

`sniff` names the format of a tape file from its first bytes (and the first record's length,
which tells an 80-byte ANSI label from data); `open_tape_file` reads the first record, sniffs
it and returns a `RecordSource` that replays it; `iter_archive` then yields every member of a
tar (v7, ustar, GNU, pax, reelfs) or cpio (odc, newc, crc) archive as an `ArchiveMember`.
Compressed tape files are recognised and refused by name. Only reading: reelfs writes pax
(drivers/formats/pax.py).
"""

from __future__ import annotations

import enum
import tarfile
from collections.abc import Iterator

from drivers.formats import cpio
from drivers.formats.archive import ArchiveMember, MemberType
from drivers.formats.errors import FormatError
from drivers.formats.records import ByteSource, MemberStream, RecordSource
from drivers.formats.tarheaders import HeaderReader, mtime_ns
from drivers.tape import TapeDrive

#: enough for any format's signature and a first tar member's pax header
SNIFF_BYTES = 4096
#: the record size asked of the drive when reading foreign tapes; longer records are
#: re-read at their real length when the drive reports it
DEFAULT_MAX_RECORD = 1 << 20


class Format(enum.StrEnum):
    """What a tape file holds, as `sniff` tells from its first bytes."""

    REELFS_PAX = "reelfs-pax"  # pax whose first member carries REELFS.* records
    PAX = "pax"
    USTAR = "ustar"
    GNU_TAR = "gnu-tar"
    V7_TAR = "v7-tar"
    ZEROS = "zeros"  # all zero bytes: an empty tar archive
    CPIO_ODC = "cpio-odc"
    CPIO_NEWC = "cpio-newc"
    CPIO_CRC = "cpio-crc"
    CPIO_BINARY = "cpio-binary"  # recognised, not readable
    ANSI_LABEL = "ansi-label"  # VOL1/HDR/EOF label records
    GZIP = "gzip"
    BZIP2 = "bzip2"
    XZ = "xz"
    ZSTD = "zstd"
    EMPTY = "empty"  # a tape file without records (two filemarks in a row)
    UNKNOWN = "unknown"

    @property
    def is_tar(self) -> bool:
        return self in _TAR_FORMATS

    @property
    def is_cpio(self) -> bool:
        return self in (Format.CPIO_ODC, Format.CPIO_NEWC, Format.CPIO_CRC)


_TAR_FORMATS = frozenset(
    {Format.REELFS_PAX, Format.PAX, Format.USTAR, Format.GNU_TAR, Format.V7_TAR, Format.ZEROS}
)
_LABELS = (b"VOL1", b"HDR1", b"HDR2", b"EOF1", b"EOF2", b"EOV1", b"EOV2", b"UHL1", b"UTL1")
_COMPRESSED = (
    (b"\x1f\x8b", Format.GZIP),
    (b"BZh", Format.BZIP2),
    (b"\xfd7zXZ\x00", Format.XZ),
    (b"\x28\xb5\x2f\xfd", Format.ZSTD),
)


def sniff(head: bytes, first_record_length: int | None = None) -> Format:
    """The format of an archive starting with `head` (give at least 512 bytes when there
    are). `first_record_length`, when known, tells labels (80-byte records) from data."""
    if not head:
        return Format.EMPTY
    if head[:4] in _LABELS and (first_record_length == 80 or len(head) == 80):
        return Format.ANSI_LABEL
    if head[:6] == cpio.ODC_MAGIC:
        return Format.CPIO_ODC
    if head[:6] == cpio.NEWC_MAGIC:
        return Format.CPIO_NEWC
    if head[:6] == cpio.CRC_MAGIC:
        return Format.CPIO_CRC
    if len(head) >= 512:
        tar = _sniff_tar(head)
        if tar is not None:
            return tar
    for magic, fmt in _COMPRESSED:
        if head.startswith(magic):
            return fmt
    if head[:2] in cpio.BINARY_MAGICS:
        return Format.CPIO_BINARY
    return Format.UNKNOWN


def _sniff_tar(head: bytes) -> Format | None:
    block = head[:512]
    if block.count(0) == 512:
        return Format.ZEROS if head.count(0) == len(head) else None
    try:
        info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except (tarfile.HeaderError, ValueError):
        return None
    magic = block[257:265]
    if magic == b"ustar  \x00":
        return Format.GNU_TAR
    if magic[:6] != b"ustar\x00":
        return Format.V7_TAR
    if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE):
        records = head[512 : 512 + min(info.size, len(head) - 512)]
        if b" REELFS." in records or records.startswith(b"REELFS."):
            return Format.REELFS_PAX
        return Format.PAX
    return Format.USTAR


def open_tape_file(
    drive: TapeDrive, max_record: int = DEFAULT_MAX_RECORD
) -> tuple[Format, RecordSource]:
    """Sniff the tape file at the drive's position. The returned source still holds every
    byte of it (the records read to sniff are replayed), ready for `iter_archive`."""
    source = RecordSource(drive, max_record)
    head = source.peek(SNIFF_BYTES)
    return sniff(head, source.first_record_length), source


def iter_archive(source: ByteSource, fmt: Format | None = None) -> Iterator[ArchiveMember]:
    """Every member of the tar or cpio archive at the source's position (the format is
    sniffed when not given). A `RecordSource` is drained to its filemark at the end."""
    if fmt is None:
        head = source.peek(SNIFF_BYTES)
        first = source.first_record_length if isinstance(source, RecordSource) else None
        fmt = sniff(head, first)
    if fmt.is_tar:
        yield from iter_tar(source)
    elif fmt.is_cpio:
        yield from cpio.iter_cpio(source)
    elif fmt == Format.EMPTY:
        pass
    else:
        raise FormatError(f"cannot read a {fmt} tape file as an archive")
    if isinstance(source, RecordSource):
        source.drain()


#: the member type of each tar header type (sparse files aside: tarfile tells them apart)
TAR_TYPES = {
    tarfile.REGTYPE: MemberType.FILE,
    tarfile.AREGTYPE: MemberType.FILE,
    tarfile.CONTTYPE: MemberType.FILE,
    tarfile.DIRTYPE: MemberType.DIRECTORY,
    tarfile.SYMTYPE: MemberType.SYMLINK,
    tarfile.LNKTYPE: MemberType.HARDLINK,
    tarfile.CHRTYPE: MemberType.CHAR_DEVICE,
    tarfile.BLKTYPE: MemberType.BLOCK_DEVICE,
    tarfile.FIFOTYPE: MemberType.FIFO,
}


def iter_tar(source: ByteSource) -> Iterator[ArchiveMember]:
    """Every member of a tar archive (v7, ustar, GNU, pax) up to its end-of-archive block
    or the end of the source."""
    reader = HeaderReader(source)
    while True:
        ti = reader.next_header()
        if ti is None:
            return
        if ti.sparse is not None:
            kind, size = MemberType.SPARSE, 0
        else:
            kind = TAR_TYPES.get(ti.type, MemberType.OTHER)
            # tarfile's rule: regular files and unknown types have data, the others none
            has_data = ti.isreg() or ti.type not in tarfile.SUPPORTED_TYPES
            size = ti.size if has_data else 0
        stream = MemberStream(source, size, ti.name)
        member = ArchiveMember(
            name=ti.name,
            type=kind,
            size=size,
            mode=ti.mode & 0o7777,
            mtime_ns=mtime_ns(ti),
            uid=ti.uid,
            gid=ti.gid,
            data=stream,
            uname=ti.uname,
            gname=ti.gname,
            linkname=ti.linkname,
        )
        try:
            yield member
        except GeneratorExit:
            stream.close()
            raise
        stream._finish()
        reader.skip_to_next(f"data of {ti.name!r}")


def read_tape_file(
    drive: TapeDrive, max_record: int = DEFAULT_MAX_RECORD
) -> Iterator[ArchiveMember]:
    """Sniff the tape file at the drive's position and yield its members; afterwards the
    drive is after the tape file's filemark."""
    fmt, source = open_tape_file(drive, max_record)
    yield from iter_archive(source, fmt)

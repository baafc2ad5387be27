"""Scanning a foreign volume: every tape file, every tar or cpio member, every file's sums.

`scan_volume` walks the volume (backend.tape.walker): ANSI label files are noted (and VOL1's
volume serial kept), tar (v7, ustar, GNU, pax) and cpio (odc, newc, crc) tape files are
read member by member (every file's data read and checksummed with adler32 and CRC-32C,
the record and byte offset of its header noted) and anything else (compressed, unknown)
is reported and skipped. What it finds, a `ScanResult`, is what backend.tape.foreign.adopt
puts in the catalog and the namespace.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backend.cache.checksum import Checksummer
from backend.tape.walker import Kind, VolumeWalk
from drivers.formats import cpio
from drivers.formats.archive import MemberType
from drivers.formats.errors import FormatError
from drivers.formats.foreign import DEFAULT_MAX_RECORD, TAR_TYPES, Format
from drivers.formats.records import MemberStream, RecordSource
from drivers.formats.tarheaders import HeaderReader, mtime_ns
from drivers.tape import TapeDrive


class _Tracking(RecordSource):
    """A RecordSource that remembers where each record starts, so that a byte position in
    the tape file becomes (record, offset): foreign records need not all be one size."""

    def __init__(self, drive: TapeDrive, max_record: int) -> None:
        super().__init__(drive, max_record)
        self.starts = array("q")
        self.total = 0  # bytes of the records fetched so far

    def _next_chunk(self) -> memoryview | None:
        chunk = super()._next_chunk()
        if chunk is not None:
            self.starts.append(self.total)
            self.total += len(chunk)
        return chunk

    def where(self, pos: int) -> tuple[int, int]:
        i = bisect_right(self.starts, pos) - 1
        if i < 0:
            raise FormatError(f"byte {pos} is before the first record of the tape file")
        return i, pos - self.starts[i]


@dataclass
class ScannedMember:
    """One member of a foreign tape file: its metadata, where its header is, its data's sums."""

    name: str
    type: MemberType
    size: int
    mode: int
    mtime_ns: int
    uid: int
    gid: int
    linkname: str = ""
    ino: int = 0
    nlink: int = 0
    fileno: int = 0  # data file on the volume, from 0
    block: int = 0  # the data file's first record
    record: int = 0  # the record holding the member's first header byte, from `block`
    offset: int = 0  # that byte's offset in the record
    format: str = ""
    adler32: int = 1
    crc32c: int = 0


@dataclass
class ScanResult:
    """What `scan_volume` found on a foreign volume, member by member."""

    members: list[ScannedMember] = field(default_factory=list)
    data_files: int = 0
    labelled: bool = False
    volser: str | None = None
    eod_block: int = 0
    bytes: int = 0  # bytes in all the records read
    formats: dict[str, int] = field(default_factory=dict)  # format -> data files
    skipped: list[str] = field(default_factory=list)  # what was not imported, and why


def _header_length(fmt: Format, name: str) -> int:
    namesize = len(name.encode("utf-8", "surrogateescape")) + 1
    if fmt == Format.CPIO_ODC:
        return 76 + namesize
    return 110 + namesize + (-(110 + namesize) % 4)


def scan_volume(
    drive: TapeDrive,
    *,
    max_record: int = DEFAULT_MAX_RECORD,
    progress: Callable[[ScanResult], None] | None = None,
) -> ScanResult:
    """Read a foreign volume from BOT to end of data (see the module docstring)."""
    res = ScanResult()
    walk = VolumeWalk(drive, max_record, _Tracking)
    for tf in walk:
        source = tf.source
        where = f"data file {tf.data_file} (block {tf.start})"
        if tf.kind == Kind.LABEL:
            res.labelled = True
            vol1 = tf.vol1() if res.volser is None else None
            if vol1 is not None:
                res.volser = vol1.volser
        elif tf.kind in (Kind.TAR, Kind.CPIO):
            assert tf.data_file is not None
            before = len(res.members)
            try:
                if tf.kind == Kind.TAR:
                    _scan_tar(source, tf.format, res, tf.data_file, tf.start)
                else:
                    _scan_cpio(source, tf.format, res, tf.data_file, tf.start)
            except FormatError as e:
                # what was read before the damage stays importable; the rest is reported
                res.skipped.append(f"{where}: {e.message}")
            tf.finish()
            res.formats[tf.format.value] = res.formats.get(tf.format.value, 0) + 1
            if len(res.members) == before:
                res.skipped.append(f"{where}: no members")
        elif tf.kind == Kind.OTHER:
            res.skipped.append(f"{where}: {tf.format.value}, not a tar or cpio archive")
        tf.finish()
        if tf.data_file is not None:
            res.data_files = tf.data_file + 1
        res.bytes += source.total
        if progress is not None:
            progress(res)
    assert walk.eod_block is not None  # the walk ends at end of data or raises
    res.eod_block = walk.eod_block
    return res


def _member(
    res: ScanResult,
    fmt: Format,
    fileno: int,
    start: int,
    **kw: Any,
) -> ScannedMember:
    m = ScannedMember(fileno=fileno, block=start, format=fmt.value, **kw)
    res.members.append(m)
    return m


def _checksum(m: ScannedMember, stream: MemberStream) -> None:
    ck = Checksummer()
    stream.copy_to(None, ck.update)
    m.adler32, m.crc32c = ck.adler, ck.crc


def _scan_tar(source: _Tracking, fmt: Format, res: ScanResult, fileno: int, start: int) -> None:
    reader = HeaderReader(source)
    while True:
        header_at = source.position
        ti = reader.next_header()
        if ti is None:
            return
        kind = MemberType.SPARSE if ti.sparse is not None else TAR_TYPES.get(ti.type)
        if kind is None:
            kind = MemberType.OTHER
        is_file = kind == MemberType.FILE
        m = _member(
            res,
            fmt,
            fileno,
            start,
            name=ti.name,
            type=kind,
            size=ti.size if is_file else 0,
            mode=ti.mode & 0o7777,
            mtime_ns=mtime_ns(ti),
            uid=ti.uid,
            gid=ti.gid,
            linkname=ti.linkname,
        )
        if is_file:
            m.record, m.offset = source.where(header_at)
            _checksum(m, MemberStream(source, ti.size, ti.name))
        reader.skip_to_next(f"data of {ti.name!r}")


def _scan_cpio(source: _Tracking, fmt: Format, res: ScanResult, fileno: int, start: int) -> None:
    for am in cpio.iter_cpio(source):
        m = _member(
            res,
            fmt,
            fileno,
            start,
            name=am.name,
            type=am.type,
            size=am.size if am.type == MemberType.FILE else 0,
            mode=am.mode,
            mtime_ns=am.mtime_ns,
            uid=am.uid,
            gid=am.gid,
            linkname=am.linkname,
            ino=am.ino,
            nlink=am.nlink,
        )
        if am.type == MemberType.FILE:
            # the generator stops at the data: the header is just before it
            m.record, m.offset = source.where(source.position - _header_length(fmt, am.name))
            _checksum(m, am.data)

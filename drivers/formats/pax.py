"""reelfs data files on tape: POSIX.1-2001 pax archives in fixed-size records.

A *tape file* (the records between two filemarks) is one pax archive holding one member or
many (small-file aggregation). Every record is exactly `block_size` bytes, the last one
zero-padded after the two end-of-archive blocks, so that the concatenation of the records is
an archive GNU tar lists and extracts as it is: on a machine with only `mt`, `dd` and `tar`,
`dd if=/dev/nst0 bs=<block_size> | tar -xf -` recovers the files (man/reelfs-tape.5).

Headers are made and parsed by Python's `tarfile` (`TarInfo.tobuf` in PAX_FORMAT;
`TarInfo.fromtarfile` through `tarheaders.HeaderReader`). Each member carries a pax extended
header when it needs one: long or non-ASCII names, sizes of 8 GiB and more, nanosecond
mtimes, large ids, and the `REELFS.*` records (bfid, checksums, family...) that let a
catalog be rebuilt from the tapes alone; GNU tar ignores keywords it does not know.

Data never goes through tarfile: the writer reads the source with `readinto` straight into
its one record buffer, after the header bytes sharing that record, and hands the drive a
`memoryview` of it; the reader hands out slices of the records the drive returned.

Drives must have consumed (copied or written) the buffer when `write_block` returns: the
writer reuses it for the next record.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import BinaryIO

from drivers.formats.errors import FormatError, ShortSourceError, WriterStateError
from drivers.formats.records import MemberStream, RecordSource
from drivers.formats.sparse import (
    SPARSE_KEYWORDS,
    SPARSE_MAJOR,
    SPARSE_MINOR,
    SPARSE_NAME,
    SPARSE_REALSIZE,
    ExpandedStream,
    Extents,
    SparseSource,
    block_aligned,
    check_map,
    copy_expanded,
    stored_size,
)
from drivers.formats.tarheaders import HeaderReader, format_pax_time, mtime_ns
from drivers.tape import TapeDrive

__all__ = [
    "FormatError",
    "MemberExtent",
    "MemberInfo",
    "ShortSourceError",
    "TapeFileWriter",
    "WriterStateError",
    "iter_members",
    "read_member",
    "reelfs_records",
]

TAR_BLOCK = tarfile.BLOCKSIZE  # 512

# The pax records reelfs adds to every member (man/reelfs-tape.5 describes them).
REELFS_BFID = "REELFS.bfid"  # the bitfile id: which version of which file this is
REELFS_VERSION = "REELFS.version"  # the version of the file's data, 1 for the first
REELFS_FAMILY = "REELFS.family"  # the file family (may be empty)
REELFS_PATH = "REELFS.path"  # the file's absolute path in the namespace when written
REELFS_ARCHIVE = "REELFS.archive"  # the archive id, 8 hex digits
REELFS_ADLER32 = "REELFS.adler32"  # Adler-32 of the data, 8 lowercase hex digits
REELFS_CRC32C = "REELFS.crc32c"  # CRC-32C of the data, 8 lowercase hex digits
REELFS_COPY = "REELFS.copy"  # which tape copy of the file this is, when not the first

# Pax keywords the writer derives from MemberInfo's own fields; `records` may not set them.
_RESERVED_KEYWORDS = frozenset(
    {"path", "linkpath", "size", "mtime", "uid", "gid", "uname", "gname", "hdrcharset"}
)
_MAX_ID = 8**7  # ustar's uid/gid field; above it, a pax record


@dataclass
class MemberInfo:
    """A pax member's metadata: what the writer is given and the reader gives back."""

    name: str  # path inside the archive, UTF-8, any length
    size: int
    mtime_ns: int
    mode: int  # permission bits (regular files)
    uid: int = 0
    gid: int = 0
    uname: str = ""
    gname: str = ""
    records: dict[str, str] = field(default_factory=dict)  # extra pax records ("REELFS.bfid")


@dataclass(frozen=True)
class MemberExtent:
    """Where a member landed in the tape file a `TapeFileWriter` wrote."""

    record: int  # index from the start of the tape file of the record with the first header byte
    offset: int  # byte offset of that header byte inside the record
    data_offset: int  # byte offset of the member's data from the start of the tape file
    size: int


def sparse_member(info: MemberInfo, extents: Extents) -> MemberInfo:
    """The member that stores `info`'s file as its data regions `extents`."""
    head, base = posixpath.split(info.name)
    name = posixpath.join(head, "GNUSparseFile.0", base)
    records = {
        **info.records,
        SPARSE_MAJOR: "1",
        SPARSE_MINOR: "0",
        SPARSE_NAME: info.name,
        SPARSE_REALSIZE: str(info.size),
    }
    return replace(info, name=name, size=stored_size(extents, info.size), records=records)


def reelfs_records(
    *,
    bfid: str,
    version: int = 1,
    family: str | None = None,
    path: str | None = None,
    archive: str | None = None,
    adler32: int | None = None,
    crc32c: int | None = None,
    copy: int = 1,
) -> dict[str, str]:
    """The REELFS.* pax records of a member, encoded as man/reelfs-tape.5 documents."""
    recs = {REELFS_BFID: bfid, REELFS_VERSION: str(version)}
    if family is not None:
        recs[REELFS_FAMILY] = family
    if path is not None:
        recs[REELFS_PATH] = path
    if archive is not None:
        recs[REELFS_ARCHIVE] = archive
    if adler32 is not None:
        recs[REELFS_ADLER32] = f"{adler32 & 0xFFFFFFFF:08x}"
    if crc32c is not None:
        recs[REELFS_CRC32C] = f"{crc32c & 0xFFFFFFFF:08x}"
    if copy != 1:
        # only then: the members of single-copy families stay as they always were
        recs[REELFS_COPY] = str(copy)
    return recs


def check_block_size(block_size: int) -> None:
    if block_size < TAR_BLOCK or block_size % TAR_BLOCK:
        raise ValueError(f"block_size must be a positive multiple of 512, not {block_size}")


def _tarinfo(info: MemberInfo) -> tarfile.TarInfo:
    if not info.name or "\0" in info.name or info.name.endswith("/"):
        raise ValueError(f"invalid member name {info.name!r}")
    if info.size < 0:
        raise ValueError(f"negative size {info.size} for {info.name!r}")
    if info.uid < 0 or info.gid < 0:
        raise ValueError(f"negative uid/gid for {info.name!r}")
    ti = tarfile.TarInfo(info.name)
    ti.type = tarfile.REGTYPE
    ti.size = info.size
    ti.mode = info.mode & 0o7777
    ti.uid, ti.gid = info.uid, info.gid
    ti.uname, ti.gname = info.uname, info.gname
    pax: dict[str, str] = {}
    for key, value in info.records.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"pax record {key!r}: keyword and value must be str")
        if not key or "=" in key or "\n" in key or "\0" in key or " " in key:
            raise ValueError(f"invalid pax keyword {key!r}")
        if key in _RESERVED_KEYWORDS:
            raise ValueError(f"pax keyword {key!r} is set from MemberInfo, not records")
        pax[key] = value
    secs, frac = divmod(info.mtime_ns, 1_000_000_000)
    ti.mtime = secs  # tarfile moves it to a pax record when out of the ustar range
    if frac:
        pax["mtime"] = format_pax_time(info.mtime_ns)
    # tarfile puts uid/gid >= 8**7 into pax records itself; nothing to do for them.
    ti.pax_headers = pax
    return ti


def header_bytes(info: MemberInfo) -> bytes:
    """The member's header blocks (pax extended header included), as tarfile makes them."""
    return _tarinfo(info).tobuf(tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")


def member_info(ti: tarfile.TarInfo) -> MemberInfo:
    return MemberInfo(
        name=ti.name,
        size=ti.size,
        mtime_ns=mtime_ns(ti),
        mode=ti.mode & 0o7777,
        uid=ti.uid,
        gid=ti.gid,
        uname=ti.uname,
        gname=ti.gname,
        records={
            k: v
            for k, v in ti.pax_headers.items()
            if k not in _RESERVED_KEYWORDS and k not in SPARSE_KEYWORDS
        },
    )


class TapeFileWriter:
    """Writes one tape file: a POSIX.1-2001 pax archive of one or more members in fixed-size
    records.

    One `bytearray` of `block_size` bytes is the only buffer: header bytes are copied into
    it, data is read into it with `readinto`, and each full record goes to the drive as a
    `memoryview` of it.
    """

    def __init__(self, drive: TapeDrive, block_size: int) -> None:
        check_block_size(block_size)
        self.drive = drive
        self.block_size = block_size
        self.early_warning = False
        self.records_written = 0
        self._buf = bytearray(block_size)
        self._mv = memoryview(self._buf)
        self._fill = 0
        self._state = "open"  # "open", "finished", or why it is unusable

    @property
    def position(self) -> int:
        """Bytes of archive produced so far (written or buffered)."""
        return self.records_written * self.block_size + self._fill

    def _check_open(self) -> None:
        if self._state != "open":
            raise WriterStateError(f"tape file writer is {self._state}")

    def _flush(self) -> None:
        try:
            if self.drive.write_block(self._mv):
                self.early_warning = True
        except BaseException:
            self._state = "broken by a failed write"
            raise
        self.records_written += 1
        self._fill = 0

    def _put(self, data: bytes) -> None:
        view = memoryview(data)
        bs, mv = self.block_size, self._mv
        while view:
            k = min(bs - self._fill, len(view))
            mv[self._fill : self._fill + k] = view[:k]
            self._fill += k
            view = view[k:]
            if self._fill == bs:
                self._flush()

    def _put_zeros(self, n: int) -> None:
        bs, mv = self.block_size, self._mv
        while n:
            k = min(bs - self._fill, n)
            mv[self._fill : self._fill + k] = bytes(k)
            self._fill += k
            n -= k
            if self._fill == bs:
                self._flush()

    def add(
        self,
        info: MemberInfo,
        src: BinaryIO,
        *,
        on_data: Callable[[memoryview], None] | None = None,
        sparse: list[tuple[int, int]] | None = None,
    ) -> MemberExtent:
        """Write header(s) and exactly `info.size` bytes read from `src` (`readinto`),
        calling `on_data` on each data chunk in order. With `sparse` (the file's data
        regions, offset and length), only those are stored, in GNU sparse format 1.0
        (drivers.formats.sparse); the extent's size is then that of the stored data.

        Raises ShortSourceError if `src` ends early (the caller abandons this tape file),
        ValueError for an invalid `info`, and the drive's TapeError (EndOfMediumError...)
        as they come; after any of those but ValueError the writer is unusable.
        """
        self._check_open()
        if sparse is not None:
            # GNU sparse 1.0: the data regions only; `on_data` still sees the real content
            sparse = block_aligned(sparse, info.size)
            src = SparseSource(src, info.size, sparse, on_data)
            info, on_data = sparse_member(info, sparse), None
        header = header_bytes(info)
        record, offset = self.records_written, self._fill
        self._put(header)
        data_offset = self.position
        try:
            self._copy_data(info, src, on_data)
        except ShortSourceError:
            self._state = "abandoned: a source ended early"
            raise
        except BaseException:
            if self._state == "open":
                self._state = "broken by an error while writing a member"
            raise
        self._put_zeros(-info.size % TAR_BLOCK)
        return MemberExtent(record=record, offset=offset, data_offset=data_offset, size=info.size)

    def _copy_data(
        self, info: MemberInfo, src: BinaryIO, on_data: Callable[[memoryview], None] | None
    ) -> None:
        readinto = getattr(src, "readinto", None)
        if readinto is None:

            def readinto(chunk: memoryview) -> int:
                return _read_into(src, chunk)

        bs, mv = self.block_size, self._mv
        left = info.size

        def short(chunk: memoryview, got: int | None) -> None:
            got = self._read_rest(readinto, chunk, got or 0)
            if got < len(chunk):
                raise ShortSourceError(info.name, info.size, info.size - left + got)

        # The record the header began: fill it up.
        if self._fill and left:
            fill = self._fill
            want = min(bs - fill, left)
            chunk = mv[fill : fill + want]
            got = readinto(chunk)
            if got != want:
                short(chunk, got)
            if on_data is not None:
                on_data(chunk)
            left -= want
            self._fill = fill + want
            if self._fill == bs:
                self._flush()
        if left >= bs:
            # Steady state: whole records straight from the source to the drive. This loop
            # is the writer's cost per record; keep it to local names and no calls but the
            # source's, the callback's and the drive's.
            write_block = self.drive.write_block
            written = 0
            try:
                while left >= bs:
                    got = readinto(mv)
                    if got != bs:
                        short(mv, got)
                    if on_data is not None:
                        on_data(mv)
                    if write_block(mv):
                        self.early_warning = True
                    written += 1
                    left -= bs
            finally:
                self.records_written += written
        if left:
            chunk = mv[:left]
            got = readinto(chunk)
            if got != left:
                short(chunk, got)
            if on_data is not None:
                on_data(chunk)
            self._fill = left

    @staticmethod
    def _read_rest(
        readinto: Callable[[memoryview], int | None], chunk: memoryview, got: int
    ) -> int:
        """Short reads happen on pipes and raw files: keep reading until full or EOF."""
        while got < len(chunk):
            n = readinto(chunk[got:])
            if not n:
                break
            got += n
        return got

    def finish(self, *, filemark: bool = True) -> int:
        """Write the end-of-archive blocks, zero-pad the last record to `block_size`, then
        (unless `filemark` is False) a filemark, not immediate, so that everything is on the
        medium when this returns. Returns the number of records written."""
        self._check_open()
        self._put_zeros(2 * TAR_BLOCK)
        if self._fill:
            self._put_zeros(self.block_size - self._fill)
        self._state = "finished"
        if filemark:
            self.drive.write_filemarks(1, immediate=False)
        return self.records_written


def _read_into(src: BinaryIO, chunk: memoryview) -> int:
    data = src.read(len(chunk))
    chunk[: len(data)] = data
    return len(data)


def read_member(
    drive: TapeDrive,
    block_size: int,
    offset: int,
    dest: BinaryIO,
    *,
    on_data: Callable[[memoryview], None] | None = None,
) -> MemberInfo:
    """Read the member whose header starts `offset` bytes into the record at the drive's
    position: its pax extended header included, its data to `dest` (and `on_data`).

    The drive is left after the last record holding the member's data. Raises FormatError
    when there is no regular member there or the tape file ends inside it.
    """
    check_block_size(block_size)
    if not 0 <= offset < block_size or offset % TAR_BLOCK:
        raise ValueError(f"member offset {offset} is not a 512-byte boundary in a record")
    source = RecordSource(drive, block_size)
    source.skip(offset, "record before the member header")
    reader = HeaderReader(source)
    ti = reader.next_header()
    if ti is None:
        raise FormatError(f"no member at offset {offset} of the record: end of archive")
    if not ti.isreg():
        raise FormatError(f"member {ti.name!r} is not a regular file (type {ti.type!r})")
    info = member_info(ti)
    if ti.sparse is not None:
        copy_expanded(source, ti, dest, on_data)  # the holes read as zeros
    else:
        source.copy(ti.size, dest, on_data, f"data of {ti.name!r}")
    return info


def iter_members(
    drive: TapeDrive, block_size: int
) -> Iterator[tuple[MemberInfo, MemberExtent, BinaryIO]]:
    """Every regular member of the tape file at the drive's position, with its extent and a
    stream of its data (valid until the next iteration; what is not read is skipped, by
    spacing over whole records where possible).

    Members of other types (directories, links) in archives written by other tools are
    skipped. Once exhausted, the drive is after the tape file's filemark.
    """
    check_block_size(block_size)
    source = RecordSource(drive, block_size, fixed_size=block_size)
    reader = HeaderReader(source)
    while True:
        record, offset = source.location()
        ti = reader.next_header()
        if ti is None:
            break
        if ti.isreg():
            info = member_info(ti)
            extent = MemberExtent(
                record=record, offset=offset, data_offset=source.position, size=ti.size
            )
            stream: MemberStream | ExpandedStream = MemberStream(source, ti.size, ti.name)
            if ti.sparse is not None:
                # GNU sparse 1.0: the stored regions, read as the real content
                stored = sum(n for _, n in check_map(ti))
                stream = ExpandedStream(MemberStream(source, stored, ti.name), ti)
            try:
                yield info, extent, stream  # type: ignore[misc]
            except GeneratorExit:
                stream.close()  # the caller stopped early: do not read on
                raise
            stream._finish()
        reader.skip_to_next(f"data of {ti.name!r}")
    source.drain()

"""Foreign volumes: tapes written by other programs, adopted read-only (`reelfs import-volume`).

A foreign volume is scanned once, tape file by tape file: ANSI label files are skipped,
tar (v7, ustar, GNU, pax) and cpio (odc, newc, crc) tape files are read member by member
(every file's data read and checksummed with adler32 and CRC-32C, the record and byte offset
of its header noted) and anything else (compressed, unknown) is reported and skipped. The
files then appear in the namespace under the chosen directory as released files with one
tape copy each, whose `format` tells the recall how to read the member back
(`read_member`): tar members through `drivers.formats.pax.read_member`, cpio members
through `drivers.formats.cpio`. Since the checksums were computed at import, recalls of
foreign files are verified like any other.

The volume becomes `readonly` with origin `foreign`. Nothing is ever written to it: the
library manager only writes `writable` volumes, and the mover refuses foreign ones anyway.
While the scan runs the volume is `noaccess`, so no mover takes it for anything else.
"""

from __future__ import annotations

import errno
import stat
import tarfile
import time
from array import array
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from backend.cache.checksum import Checksummer
from backend.catalog import events
from backend.catalog.db import Catalog
from backend.catalog.files import FileClerk
from backend.catalog.foreign import ForeignVolumes
from backend.catalog.namespace import Namespace
from backend.catalog.schema import ROOT_INODE
from backend.catalog.tapefiles import TapeFiles
from backend.catalog.volumes import BLANK, NOACCESS, VolumeClerk
from backend.errors import ArchiveError, FsError
from backend.tape.layout import ANSI, NONE, volume_format
from backend.tape.walker import Kind, VolumeWalk
from drivers.formats import cpio, pax
from drivers.formats.archive import MemberType
from drivers.formats.errors import FormatError
from drivers.formats.foreign import DEFAULT_MAX_RECORD, Format
from drivers.formats.records import MemberStream, RecordSource
from drivers.formats.tarheaders import HeaderReader, mtime_ns
from drivers.tape import ElementType, MediaChanger, TapeDrive

DataCallback = Callable[[memoryview], None]

_TAR_KINDS = {
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
        kind = MemberType.SPARSE if ti.sparse is not None else _TAR_KINDS.get(ti.type)
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


# -- adoption ------------------------------------------------------------------------------


@dataclass
class ImportReport:
    volume: str
    directory: str
    files: int = 0
    directories: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    bytes: int = 0
    data_files: int = 0
    labelled: bool = False
    formats: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def _parts(name: str) -> list[bytes] | None:
    """A member name as path components below the import directory; None if it would
    escape it."""
    raw = name.encode("utf-8", "surrogateescape")
    parts = [p for p in raw.split(b"/") if p not in (b"", b".")]
    if b".." in parts:
        return None
    return parts


def check_target(cat: Catalog, directory: str) -> None:
    """The import directory must be new or an empty directory."""
    if not directory.startswith("/"):
        raise ArchiveError(
            f"import directory {directory!r}: an archive path starting with / (like /imported/T1)"
        )
    ns = Namespace(cat)
    try:
        node = ns.resolve(directory)
    except FsError as e:
        if e.errno == errno.ENOENT:
            return
        raise ArchiveError(f"import directory {directory}: {e.strerror}") from None
    if not node.is_dir or not ns.is_empty_dir(node.id):
        raise ArchiveError(f"import directory {directory} exists and is not an empty directory")


def check_volume(cat: Catalog, barcode: str) -> None:
    """A cartridge the catalog has as a volume of this archive with data, or as an imported
    one, is not imported (again)."""
    vol = VolumeClerk(cat).get(barcode)
    if vol is None:
        return
    copies = TapeFiles(cat).copies_on(barcode)
    fmt = volume_format(cat, barcode)
    foreign = fmt is not None and fmt.foreign
    if copies and foreign:
        raise ArchiveError(f"volume {barcode} is already imported ({copies} file(s))")
    if copies or vol.eod_block or (not foreign and vol.state != BLANK):
        raise ArchiveError(
            f"volume {barcode} is a {vol.state} volume of this archive: not importing it"
        )


def prepare_volume(
    cat: Catalog, changer: MediaChanger, barcode: str, *, media_type: str, capacity: int
) -> int:
    """Bring the cartridge from a mail slot into a free storage slot (where it stays if it
    already is in one) and into the catalog as a foreign volume being imported (noaccess);
    returns its slot. A volume of this archive holding data is refused."""
    check_volume(cat, barcode)
    vol = VolumeClerk(cat).get(barcode)
    inv = changer.inventory()
    el = inv.find(barcode)
    if el is None:
        raise ArchiveError(
            f"cartridge {barcode} is not in the library: put it in a mail slot first"
        )
    if el.type == ElementType.DRIVE:
        raise ArchiveError(f"cartridge {barcode} is in a drive (element {el.address})")
    home = el.address
    if el.type == ElementType.IMPORT_EXPORT:
        free = [e.address for e in inv.of_type(ElementType.SLOT) if not e.full]
        if not free:
            raise ArchiveError(f"no free storage slot for {barcode}: export something first")
        changer.close_import_export(el.address)
        changer.move(el.address, free[0])
        home = free[0]
    with cat.tx():
        if vol is None:
            VolumeClerk(cat).add(
                barcode, capacity=capacity, home=home, media_type=media_type, state=NOACCESS
            )
        ForeignVolumes(cat).mark_being_imported(barcode, home)
    return home


def import_failed(cat: Catalog, barcode: str, why: str) -> None:
    """Leave the volume out of service, saying why; importing it again is allowed."""
    ForeignVolumes(cat).mark_import_failed(barcode, why)
    events.record(cat, "import_failed", why, subject=barcode, level="error")


def adopt(
    cat: Catalog,
    archive_id: str,
    barcode: str,
    directory: str,
    scan: ScanResult,
    *,
    uid: int,
    gid: int,
    same_owner: bool = False,
) -> ImportReport:
    """Create the namespace entries, bitfiles and tape copies of a scanned foreign volume
    under `directory`, and make the volume a readonly foreign one: one transaction.

    Owners are the importer's (`uid`, `gid`) unless `same_owner`; modes and mtimes are the
    tape's. Of two members with one name the later wins, as with tar. Members that would
    escape the directory, devices, FIFOs, sparse files and names the namespace refuses are
    skipped and reported.
    """
    rep = ImportReport(
        volume=barcode,
        directory=directory,
        data_files=scan.data_files,
        labelled=scan.labelled,
        formats=dict(scan.formats),
        skipped=list(scan.skipped),
    )
    ns = Namespace(cat)
    files = FileClerk(cat, archive_id)
    now = time.time_ns()
    with cat.tx():
        check_target(cat, directory)
        root = _mkdirs(ns, ROOT_INODE, _parts(directory) or [], uid, gid)  # checked above
        fam = ns.get_xattr(root, b"user.reelfs.file_family")
        family = fam.decode() if fam else "default"
        dirs: dict[tuple[bytes, ...], int] = {(): root}
        made: dict[tuple[bytes, ...], int] = {}  # regular files created here -> inode
        links: dict[tuple[int, int], int] = {}  # cpio (data file, ino) -> inode

        def parent_of(parts: list[bytes]) -> int:
            key = tuple(parts[:-1])
            if key not in dirs:
                dirs[key] = _mkdirs(ns, root, parts[:-1], uid, gid)
            return dirs[key]

        for m in scan.members:
            parts = _parts(m.name)
            where = f"{m.name!r} (data file {m.fileno})"
            if parts == [] and m.type == MemberType.DIRECTORY:
                continue  # "." or "./": the import directory itself
            if not parts:
                rep.skipped.append(f"{where}: the name leaves the import directory")
                continue
            owner = (m.uid, m.gid) if same_owner else (uid, gid)
            try:
                if m.type == MemberType.DIRECTORY:
                    key = tuple(parts)
                    if key not in dirs:
                        dirs[key] = _mkdirs(ns, root, parts, *owner)
                        rep.directories += 1
                    ns.set_attrs(dirs[key], mode=stat.S_IFDIR | m.mode, mtime_ns=m.mtime_ns)
                elif m.type == MemberType.SYMLINK:
                    ns.create(
                        parent_of(parts),
                        parts[-1],
                        stat.S_IFLNK | 0o777,
                        *owner,
                        target=m.linkname.encode("utf-8", "surrogateescape"),
                    )
                    rep.symlinks += 1
                elif m.type == MemberType.HARDLINK:
                    target = _parts(m.linkname)
                    inode = made.get(tuple(target)) if target else None  # earlier members only
                    if inode is None:
                        rep.skipped.append(f"{where}: hard link to {m.linkname!r}, not imported")
                        continue
                    ns.link(inode, parent_of(parts), parts[-1])
                    rep.hardlinks += 1
                elif m.type == MemberType.FILE:
                    key_link = (m.fileno, m.ino)
                    if m.nlink > 1 and m.format.startswith("cpio") and key_link in links:
                        # cpio hard links: one inode; newc keeps the data in the last link
                        inode = links[key_link]
                        ns.link(inode, parent_of(parts), parts[-1])
                        rep.hardlinks += 1
                        if m.size:
                            _set_data(cat, ns, files, inode, m, barcode, now)
                            rep.bytes += m.size
                        continue
                    inode = _new_file(cat, ns, files, parent_of(parts), parts, m, owner, made)
                    bf = files.create(inode, family=family, size=m.size)
                    _set_data(cat, ns, files, inode, m, barcode, now, bitfile=bf.id)
                    made[tuple(parts)] = inode
                    if m.nlink > 1 and m.format.startswith("cpio"):
                        links[key_link] = inode
                    rep.files += 1
                    rep.bytes += m.size
                else:
                    rep.skipped.append(f"{where}: a {m.type.value}, not imported")
            except FsError as e:
                rep.skipped.append(f"{where}: {e.strerror}")
        ForeignVolumes(cat).mark_adopted(
            barcode,
            label_format=ANSI if scan.labelled else NONE,
            volser=scan.volser,
            eod_block=scan.eod_block,
            data_files=scan.data_files,
            files=rep.files,
            bytes_used=scan.bytes,
        )
        events.record(
            cat,
            "volume_imported",
            f"foreign volume adopted read-only under {directory}: {rep.files} file(s), "
            f"{rep.bytes} bytes in {scan.data_files} data file(s)"
            + (f"; {len(rep.skipped)} member(s) skipped" if rep.skipped else ""),
            subject=barcode,
            formats=rep.formats,
        )
    return rep


def _mkdirs(ns: Namespace, base: int, parts: list[bytes], uid: int, gid: int) -> int:
    cur = base
    for p in parts:
        node_id = ns.entry_inode(cur, p)
        if node_id is None:
            cur = ns.create(cur, p, stat.S_IFDIR | 0o755, uid, gid).id
        else:
            if not ns.get(node_id).is_dir:
                raise FsError(errno.ENOTDIR, f"{p!r} is not a directory")
            cur = node_id
    return cur


def _new_file(
    cat: Catalog,
    ns: Namespace,
    files: FileClerk,
    parent: int,
    parts: list[bytes],
    m: ScannedMember,
    owner: tuple[int, int],
    made: dict[tuple[bytes, ...], int],
) -> int:
    """The inode for a file member: a new one, or the one an earlier member of the same
    name created (the later member wins; the earlier data becomes a deleted version)."""
    existing = ns.entry_inode(parent, parts[-1])
    if existing is not None:
        if made.get(tuple(parts)) != existing:
            raise FsError(errno.EEXIST, "exists")
        old = ns.get(existing).bitfile
        if old is not None:
            files.supersede(old)
        ns.set_attrs(existing, mode=stat.S_IFREG | m.mode, uid=owner[0], gid=owner[1])
        return existing
    return ns.create(parent, parts[-1], stat.S_IFREG | m.mode, *owner).id


def _set_data(
    cat: Catalog,
    ns: Namespace,
    files: FileClerk,
    inode: int,
    m: ScannedMember,
    barcode: str,
    now: int,
    *,
    bitfile: int | None = None,
) -> None:
    """Point the inode's bitfile at member `m`: released, with its checksums and its one
    tape copy."""
    if bitfile is None:
        bitfile = ns.get(inode).bitfile
        assert bitfile is not None
    ForeignVolumes(cat).set_member_data(
        bitfile,
        size=m.size,
        adler32=m.adler32,
        crc32c=m.crc32c,
        path=m.name,
        mtime_ns=m.mtime_ns,
        archived_ns=now,
    )
    TapeFiles(cat).add_copy(
        bitfile,
        barcode,
        copy=1,
        fileno=m.fileno,
        block=m.block,
        record=m.record,
        offset=m.offset,
        length=m.size,
        state="active",
        written_ns=now,
        format=m.format,
    )
    ns.set_attrs(inode, size=m.size, mtime_ns=m.mtime_ns, atime_ns=m.mtime_ns)

"""Adopting a scanned foreign volume: its files in the namespace, the volume readonly.

`check_volume` and `check_target` refuse what must not be imported (a volume of this
archive holding data, an import directory that is not new or empty); `prepare_volume`
brings the cartridge into a storage slot and the catalog as a foreign volume being
imported (noaccess, so no mover takes it meanwhile); `adopt` creates, in one transaction,
the directories, files, symlinks and hard links of the members under the import
directory, each file released with one tape copy, and makes the volume a readonly foreign
one; `import_failed` leaves it out of service, saying why.
"""

from __future__ import annotations

import errno
import stat
import time
from dataclasses import dataclass, field

from backend.catalog import events
from backend.catalog.db import Catalog
from backend.catalog.files import FileClerk
from backend.catalog.foreign import ForeignVolumes
from backend.catalog.namespace import Namespace
from backend.catalog.schema import ROOT_INODE
from backend.catalog.tapefiles import TapeFiles
from backend.catalog.volumes import BLANK, NOACCESS, VolumeClerk
from backend.errors import ArchiveError, FsError
from backend.tape.foreign.scan import ScannedMember, ScanResult
from backend.tape.layout import ANSI, NONE, volume_format
from drivers.formats.archive import MemberType
from drivers.tape import ElementType, MediaChanger


@dataclass
class ImportReport:
    """What `adopt` made of a foreign volume, and what it left out and why."""

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
                            _set_data(cat, ns, inode, m, barcode, now)
                            rep.bytes += m.size
                        continue
                    inode = _new_file(ns, files, parent_of(parts), parts, m, owner, made)
                    bf = files.create(inode, family=family, size=m.size)
                    _set_data(cat, ns, inode, m, barcode, now, bitfile=bf.id)
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

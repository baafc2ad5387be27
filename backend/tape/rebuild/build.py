"""Rebuilding the catalog from scans of every volume (see backend.tape.rebuild).

`rebuild` scans the library's volumes (backend.tape.rebuild.scan) into a new catalog beside
the old one: for each bfid of this archive the data it keeps and every place it is on
tape, the namespace from the members' `REELFS.path`, each volume's state and pool, the
cache files whose data is a rebuilt file's; then it renames the new catalog into place.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from backend.cache.checksum import file_sums
from backend.cache.store import Cache
from backend.catalog import events, meta
from backend.catalog.db import Catalog, open_catalog
from backend.catalog.families import pool_name
from backend.catalog.files import ARCHIVED, DELETED, RELEASED, FileClerk
from backend.catalog.namespace import Namespace
from backend.catalog.rebuild import RebuiltCatalog
from backend.catalog.schema import ROOT_INODE
from backend.catalog.tapefiles import TapeFiles
from backend.catalog.volumes import CLEANING, VolumeClerk
from backend.config import Config
from backend.errors import ArchiveError, FsError
from backend.library.offline import volume_in_drive
from backend.library.reconcile import reconcile_library
from backend.tape.layout import ANSI, volser_for
from backend.tape.rebuild.scan import Occurrence, VolumeScan, scan_volume
from drivers.library import open_library
from drivers.tape import Library

#: a volume is full once this much of it is used (the drives' early warning)
FULL_FRACTION = 0.95


@dataclass
class RebuildReport:
    """What `rebuild` made of the tapes, for `reelfs rebuild-catalog` to print."""

    volumes_scanned: int = 0
    files: int = 0
    versions: int = 0  # bitfiles, deleted versions included
    copies: int = 0
    directories: int = 0
    cached: int = 0
    lost_and_found: int = 0
    other_archives: int = 0  # members written by another archive, left out
    previous: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _capacity(config: Config, lib_path: Path, barcode: str, default: int) -> int:
    """A cartridge's capacity: the emulated cartridge's own header, else the configured
    default (what a real library's catalog was given)."""
    if config.library.type == "emulated":
        try:
            from drivers.emulated.image import read_header
            from drivers.emulated.layout import LibraryDir

            return read_header(LibraryDir(lib_path).tape(barcode)).capacity
        except (OSError, ValueError, ImportError):
            pass
    return default


def rebuild(
    config: Config, *, force: bool = False, progress: Callable[[str], None] = lambda s: None
) -> RebuildReport:
    """Scan every volume and write a new catalog (the caller holds the archive lock)."""
    target = config.catalog_path
    if target.exists() and not force:
        raise ArchiveError(
            f"{target} exists: give --force to replace it (it is kept aside), or move it away"
        )
    work = target.with_name(target.name + ".rebuilding")
    for suffix in ("", "-wal", "-shm"):
        Path(str(work) + suffix).unlink(missing_ok=True)
    rep = RebuildReport()
    lib = open_library(config.library.spec, config.archive)
    cat = open_catalog(work, create=True)
    try:
        meta.set_archive_id(cat, config.archive_id)
        configured = config.library.default_capacity
        lib_path = config.archive / config.library.spec.get("path", "library")
        reconcile_library(
            cat,
            lib.changer,
            media_type=config.library.type,
            default_capacity=configured,
        )
        scans = _scan_all(config, lib, cat, lib_path, configured, rep, progress)
        _build(config, cat, scans, rep)
        _adopt_cache(config, cat, rep)
        events.record(
            cat,
            "catalog_rebuilt",
            f"catalog rebuilt from {rep.volumes_scanned} volume(s): {rep.files} file(s), "
            f"{rep.copies} tape copies",
            level="warning",
        )
        RebuiltCatalog(cat).checkpoint()
    except BaseException:
        cat.close()
        lib.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(work) + suffix).unlink(missing_ok=True)
        raise
    cat.close()
    lib.close()
    if target.exists():
        keep = target.with_name(f"{target.name}.before-rebuild.{time.strftime('%Y%m%dT%H%M%S')}")
        for suffix in ("-wal", "-shm", ""):
            old = Path(str(target) + suffix)
            if old.exists():
                os.replace(old, str(keep) + suffix)
        rep.previous = str(keep)
    os.replace(work, target)
    return rep


def _scan_all(
    config: Config,
    lib: Library,
    cat: Catalog,
    lib_path: Path,
    configured: int,
    rep: RebuildReport,
    progress: Callable[[str], None],
) -> list[VolumeScan]:
    scans = []
    labels = [v.label for v in VolumeClerk(cat).all() if v.state != CLEANING]
    for i, label in enumerate(labels):
        capacity = _capacity(config, lib_path, label, configured)
        if capacity:
            RebuiltCatalog(cat).set_capacity(label, capacity)
        progress(f"scanning {label} ({i + 1} of {len(labels)})")
        with volume_in_drive(lib, label) as drive:
            vs = scan_volume(drive, label, order_base=i * 10**15)
        rep.volumes_scanned += 1
        rep.notes += vs.notes
        scans.append(vs)
        progress(
            f"  {label}: "
            + (
                "blank"
                if vs.blank
                else f"{vs.data_files} data file(s), {len(vs.members)} member(s)"
            )
        )
    return scans


def _build(config: Config, cat: Catalog, scans: list[VolumeScan], rep: RebuildReport) -> None:
    aid = config.archive_id
    by_bfid: dict[str, list[Occurrence]] = defaultdict(list)
    for vs in scans:
        for occ in vs.members:
            if occ.archive != aid or not occ.bfid.startswith(aid) or not occ.bfid[8:].isdigit():
                rep.other_archives += 1
                continue
            by_bfid[occ.bfid].append(occ)
    # the data each bfid ends up with, and where it is
    chosen: dict[str, tuple[Occurrence, list[Occurrence], list[Occurrence]]] = {}
    for bfid, occs in by_bfid.items():
        groups: dict[tuple, list[Occurrence]] = defaultdict(list)
        for o in occs:
            groups[(o.size, o.adler32, o.crc32c)].append(o)
        best = max(groups.values(), key=lambda g: max((o.mtime_ns, o.order) for o in g))
        newest = max(best, key=lambda o: o.order)
        stale = [o for o in occs if o not in best]
        chosen[bfid] = (newest, sorted(best, key=lambda o: (o.copy, o.volume, o.order)), stale)
    # the namespace: of several bitfiles with one path, the newest
    by_path: dict[str, list[str]] = defaultdict(list)
    for bfid, (o, _, _) in chosen.items():
        by_path[o.path].append(bfid)
    winners = {max(bfids, key=lambda b: int(b[8:])) for bfids in by_path.values()}
    ns = Namespace(cat)
    dirs: dict[str, int] = {"/": ROOT_INODE}
    dir_families: dict[int, Counter] = defaultdict(Counter)
    uid, gid = os.getuid(), os.getgid()
    now = time.time_ns()
    archived_on: Counter = Counter()
    rebuilt = RebuiltCatalog(cat)
    with cat.tx():
        for bfid, (o, copies, stale) in sorted(chosen.items(), key=lambda kv: int(kv[0][8:])):
            bid = int(bfid[8:])
            inode = None
            if bfid in winners:
                try:
                    inode = _file(ns, dirs, o, uid, gid)
                    dir_families[ns.parent_of(inode) or ROOT_INODE][o.family] += 1
                except FsError as e:
                    rep.notes.append(f"{o.path}: {e.strerror}; its data stays as {bfid}")
            state = RELEASED if inode is not None else DELETED
            rebuilt.add_bitfile(
                bid,
                bfid,
                inode=inode,
                version=o.version,
                size=o.size,
                adler32=o.adler32,
                crc32c=o.crc32c,
                state=state,
                family=o.family,
                path=o.path,
                mtime_ns=o.mtime_ns,
                archived_ns=now,
            )
            if inode is not None:
                ns.set_attrs(inode, bitfile=bid)
                rep.files += 1
            rep.versions += 1
            live = "active" if inode is not None else "deleted"
            for n, c in enumerate(copies, 1):
                _copy(cat, bid, c, n, live, now)
                # volumes.files counts the files archived there, later versions or not
                archived_on[c.volume] += 1
                if inode is not None:
                    rep.copies += 1
            for c in stale:
                _copy(cat, bid, c, 0, "deleted", now)
        for parent, fams in dir_families.items():
            (fam, n), *_ = fams.most_common(1)
            if len(fams) == 1 and fam != "default" and parent != ROOT_INODE:
                ns.set_xattr(
                    parent, b"user.reelfs.file_family", fam.encode(), create=False, replace=False
                )
        rep.directories = len(dirs) - 1
        for vs in scans:
            _volume(cat, config, vs, archived_on[vs.label])


def _file(ns: Namespace, dirs: dict[str, int], o: Occurrence, uid: int, gid: int) -> int:
    parts = [p for p in o.path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise FsError(22, "not an archive path")
    cur, path = ROOT_INODE, ""
    for p in parts[:-1]:
        path += "/" + p
        if path not in dirs:
            name = p.encode("utf-8", "surrogateescape")
            existing = ns.entry_inode(cur, name)
            if existing is not None and ns.get(existing).is_dir:
                dirs[path] = existing
            else:
                dirs[path] = ns.create(cur, name, stat.S_IFDIR | 0o755, uid, gid).id
        cur = dirs[path]
    node = ns.create(
        cur, parts[-1].encode("utf-8", "surrogateescape"), stat.S_IFREG | o.mode, o.uid, o.gid
    )
    ns.set_attrs(node.id, size=o.size, mtime_ns=o.mtime_ns, atime_ns=o.mtime_ns)
    return node.id


def _copy(cat: Catalog, bid: int, o: Occurrence, copy: int, state: str, now: int) -> None:
    TapeFiles(cat).add_copy(
        bid,
        o.volume,
        copy=copy or 1,
        fileno=o.fileno,
        block=o.block,
        record=o.record,
        offset=o.offset,
        length=o.size,
        state=state,
        written_ns=now,
    )


def _volume(cat: Catalog, config: Config, vs: VolumeScan, files: int) -> None:
    if vs.blank:
        return
    families = Counter(pool_name(o.family, o.copy) for o in vs.members)
    family = families.most_common(1)[0][0] if families else None
    vol = VolumeClerk(cat).get(vs.label)
    capacity = vol.capacity if vol is not None else 0
    # the mover's rule: a volume that cannot take a file of two records is full
    least = 2 * (vs.block_size or config.library.block_size)
    left = vs.remaining if vs.remaining is not None else capacity - vs.bytes
    if vs.foreign_files and not vs.members:
        state, error = "noaccess", "holds data reelfs did not write (see reelfs import-volume)"
    elif (capacity and vs.bytes >= FULL_FRACTION * capacity) or left < least:
        state, error = "full", None
    else:
        state, error = "writable", None
    RebuiltCatalog(cat).record_volume(
        vs.label,
        state=state,
        error=error,
        family=family,
        label_format=vs.layout,
        volser=vs.volser or (volser_for(vs.label) if vs.layout == ANSI else None),
        block_size=vs.block_size,
        eod_block=vs.eod_block,
        next_fileno=vs.data_files,
        files=files,
        bytes_used=vs.bytes,
    )


def _adopt_cache(config: Config, cat: Catalog, rep: RebuildReport) -> None:
    """Keep cache files whose data is a rebuilt file's; move the rest to lost+found."""
    cc = config.cache
    cache = Cache(cc.path, cc.size, cc.high_watermark, cc.low_watermark)
    lost = config.archive / "lost+found"
    files = FileClerk(cat, config.archive_id)
    for bfid in sorted(cache.bfids()):
        bf = files.by_bfid(bfid)
        path = cache.path(bfid)
        if bf is not None and bf.state == RELEASED and path.stat().st_size == bf.size:
            fd = os.open(path, os.O_RDONLY)
            try:
                sums = file_sums(fd, bf.size)
            finally:
                os.close(fd)
            if (sums.adler32, sums.crc32c) == (bf.adler32, bf.crc32c):
                files.set_state(bf.id, ARCHIVED)
                rep.cached += 1
                continue
        lost.mkdir(exist_ok=True)
        shutil.move(str(path), lost / bfid)
        rep.lost_and_found += 1
    if rep.lost_and_found:
        rep.notes.append(
            f"{rep.lost_and_found} cache file(s) matching no rebuilt file moved to {lost}"
        )

"""Open files and their data in the staging cache: the write path of the archive.

One `OpenInode` per inode with open handles shares one cache file descriptor. The first
change of a modification session (write or truncate) makes the data *dirty*: if the
current version is already on tape a new version (bitfile) takes over the cached data,
because tape is write-once. When the last handle is released (not at a FLUSH:
every close(2) of an inherited descriptor sends one), the session ends in one
transaction: size and checksums recorded, write requests queued for the file's family
(one per tape copy it keeps).

Everything here is synchronous and quick; the caller (the FUSE front end) runs what can
block (checksum recomputation, recalls) in worker threads.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from backend.cache.checksum import Checksummer, Sums, file_sums
from backend.cache.holes import allocated_bytes, copy_sparse
from backend.cache.store import Cache
from backend.catalog import events, families
from backend.catalog.db import Catalog
from backend.catalog.files import ARCHIVED, DIRTY, RELEASED, Bitfile, FileClerk
from backend.catalog.namespace import Inode, Namespace
from backend.catalog.queue import RequestQueue
from backend.config.units import format_size
from backend.errors import FsError

log = logging.getLogger("reelfs.staging")

NO_FILE = -1  # an empty file's OpenInode.fd until its first byte: it has no cache file


class NeedsRecall(Exception):
    """The data is on tape only: recall bitfile `bitfile_id` and try again."""

    def __init__(self, bitfile_id: int) -> None:
        super().__init__(bitfile_id)
        self.bitfile_id = bitfile_id


@dataclass
class OpenInode:
    """An inode with open handles: its cache file, size and times as writes left them."""

    inode: int
    bitfile: int
    bfid: str
    fd: int
    size: int
    mtime_ns: int
    ctime_ns: int
    handles: int = 0
    modifying: bool = False  # a modification session is open (writers counted in catalog)
    attrs_dirty: bool = False
    ck: Checksummer | None = None
    changes: int = 0  # writes and truncates so far: tells whether sums went stale
    created: bool = False  # made by create(2): announced at close even if never written
    too_large_told: bool = False  # the EFBIG event is recorded once per open, not per write


@dataclass
class Handle:
    """One open file handle of the mount."""

    fh: int
    oi: OpenInode
    flags: int
    write: bool


@dataclass
class SessionEnd:
    """What the last close of a modified file must finish (maybe in a worker thread)."""

    oi: OpenInode
    sums: Sums | None
    fd: int
    close_fd: bool
    changes: int = -1  # oi.changes when the sums were taken
    extra: dict = field(default_factory=dict)


class CacheDiskFull(FsError):
    """The cache's file system itself is full (a real ENOSPC, whatever the cache's count
    says): eviction can make room on it."""

    def __init__(self, nbytes: int) -> None:
        super().__init__(errno.ENOSPC, "the cache file system is full")
        self.nbytes = nbytes


class Staging:
    """The open files of the mount and their modification sessions, on one catalog connection."""

    def __init__(
        self,
        cat: Catalog,
        cache: Cache,
        archive_id: str,
        *,
        max_file_size: int,
        on_queued: Callable[[], None] = lambda: None,
    ) -> None:
        self.cat = cat
        self.ns = Namespace(cat)
        self.files = FileClerk(cat, archive_id)
        self.queue = RequestQueue(cat)
        self.cache = cache
        self.max_file_size = max_file_size
        self.on_queued = on_queued
        self.open_inodes: dict[int, OpenInode] = {}
        self.handles: dict[int, Handle] = {}
        self._next_fh = 1

    # -- creating and opening --------------------------------------------------------------

    def family_of(self, inode: int) -> tuple[str, str | None]:
        return families.of_entry(lambda name: self.ns.get_xattr(inode, name))

    def new_file(self, node: Inode) -> Bitfile:
        """Give a just-created regular file its first (empty, dirty) version.

        An empty file has no cache file: it is made at the first byte written (creating
        one per create doubled the cost of making files)."""
        family, group = self.family_of(node.id)
        with self.cat.tx():
            bf = self.files.create(node.id, family=family, storage_group=group)
            # not due before [mover] flush_delay: no need to wake the library manager
            self.queue.enqueue_write(bf.id, family)
        return bf

    def create(self, node: Inode, flags: int) -> Handle:
        """create(2): a new file's first version, opened."""
        bf = self.new_file(node)
        oi = OpenInode(
            inode=node.id,
            bitfile=bf.id,
            bfid=bf.bfid,
            fd=NO_FILE,
            size=0,
            mtime_ns=node.mtime_ns,
            ctime_ns=node.ctime_ns,
            created=True,
        )
        self.open_inodes[node.id] = oi
        h = Handle(self._next_fh, oi, flags, (flags & os.O_ACCMODE) != os.O_RDONLY)
        self._next_fh += 1
        oi.handles += 1
        self.handles[h.fh] = h
        return h

    def open(self, node: Inode, flags: int) -> Handle:
        """Open a regular file. Raises NeedsRecall when its data must come from tape first."""
        write = (flags & os.O_ACCMODE) != os.O_RDONLY
        truncate = bool(flags & os.O_TRUNC) and write
        oi = self.open_inodes.get(node.id)
        if oi is None:
            oi = self._open_inode(node, truncate=truncate)
            self.open_inodes[node.id] = oi
        h = Handle(self._next_fh, oi, flags, write)
        self._next_fh += 1
        oi.handles += 1
        self.handles[h.fh] = h
        if truncate and oi.size:
            self.truncate(node.id, 0)
        return h

    def _open_inode(self, node: Inode, *, truncate: bool) -> OpenInode:
        if node.bitfile is None:
            bf = self.new_file(node)
        else:
            bf = self.files.get(node.bitfile)
            if bf is None:
                raise FsError(errno.EIO, f"inode {node.id}: bitfile {node.bitfile} missing")
        if bf.state == RELEASED and truncate:
            # All of the old data goes: no need to bring it back from tape.
            bf = self._new_version(node, bf, carry_data=False)
            fd = NO_FILE
        else:
            if bf.state == RELEASED:
                raise NeedsRecall(bf.id)
            fd = self._open_cached(bf)
            self.files.touch(bf.id)
        return OpenInode(
            inode=node.id,
            bitfile=bf.id,
            bfid=bf.bfid,
            fd=fd,
            size=node.size,
            mtime_ns=node.mtime_ns,
            ctime_ns=node.ctime_ns,
        )

    def _open_cached(self, bf: Bitfile) -> int:
        """The cache file of a cached version (NO_FILE for an empty one that has none)."""
        try:
            return self.cache.open(bf.bfid)
        except FileNotFoundError:
            if bf.size == 0:
                return NO_FILE
            # evicted between the catalog read and the open
            fresh = self.files.get(bf.id)
            if fresh is not None and fresh.state == RELEASED:
                raise NeedsRecall(bf.id) from None
            raise FsError(
                errno.EIO, f"{bf.bfid}: cache file missing for a {bf.state} file"
            ) from None

    def _fd(self, oi: OpenInode) -> int:
        """The open inode's cache file, made now if it had none (its first byte)."""
        if oi.fd == NO_FILE:
            oi.fd = self.cache.create(oi.bfid)
        return oi.fd

    def handle(self, fh: int) -> Handle:
        try:
            return self.handles[fh]
        except KeyError:
            raise FsError(errno.EBADF, f"no open file handle {fh}") from None

    # -- modification sessions -------------------------------------------------------------

    def _new_version(self, node: Inode, old: Bitfile, *, carry_data: bool, fd: int = -1) -> Bitfile:
        family, group = self.family_of(node.id)
        with self.cat.tx():
            new = self.files.create(
                node.id,
                family=family,
                storage_group=group,
                version=old.version + 1,
                size=old.size if carry_data else 0,
            )
            self.files.supersede(old.id)
            # dirty from its first moment, so queued in the same transaction: whether a
            # session then begins on it or not (an O_TRUNC open of an empty file), it is
            # never dirty without a write request and nobody writing it
            self.queue.enqueue_write(new.id, family)
            if carry_data and old.size:
                try:
                    self.cache.rename(old.bfid, new.bfid)
                except FileNotFoundError:
                    if fd < 0:
                        raise
                    # evicted under our open descriptor: the data is still readable there
                    self._copy_from_fd(fd, new.bfid, old.size)
            elif old.state != RELEASED:
                self.cache.remove(old.bfid, old.size)
        log.info("inode %d: new version %s replaces %s", node.id, new.bfid, old.bfid)
        return new

    def _copy_from_fd(self, src: int, bfid: str, size: int) -> None:
        dst = self.cache.create(bfid)
        try:
            copy_sparse(src, dst, size)  # a sparse file keeps its holes
        finally:
            os.close(dst)
        self.cache.charge(size)

    def _begin(self, oi: OpenInode) -> None:
        """First change in a session: make the data dirty (a new version if it was on tape)."""
        if oi.modifying:
            return
        while True:
            bf = self.files.get(oi.bitfile)
            if bf is None:
                raise FsError(errno.EIO, f"bitfile {oi.bitfile} vanished")
            if bf.state != DIRTY:
                node = self.ns.get(oi.inode)
                new = self._new_version(node, bf, carry_data=True, fd=oi.fd)
                if oi.fd != NO_FILE:
                    os.close(oi.fd)
                oi.fd = self._open_cached(new)
                oi.bitfile, oi.bfid = new.id, new.bfid
                bf = new
            if self.files.begin_session(oi.bitfile):
                break
            # A mover archived it between the read and the update (the update waited for
            # the mover's transaction): it is on tape now, so it gets a new version after all.
        oi.modifying = True
        if bf.adler32 is not None and bf.crc32c is not None and bf.size == oi.size:
            ck = Checksummer()
            ck.adler, ck.crc, ck.length = bf.adler32, bf.crc32c, bf.size
            oi.ck = ck  # appends continue the stored checksums
        elif oi.size == 0:
            oi.ck = Checksummer()
        else:
            oi.ck = None

    def write(self, fh: int, offset: int, data: bytes) -> int:
        h = self.handle(fh)
        if not h.write:
            raise FsError(errno.EBADF, "file not open for writing")
        oi = h.oi
        end = offset + len(data)
        if end > self.max_file_size:
            raise self._too_large(oi, end)
        self._begin(oi)
        growth = end - oi.size
        if growth > 0 and not self.cache.try_charge(growth):
            raise FsError(errno.ENOSPC, "cache full")
        try:
            n = os.pwrite(self._fd(oi), data, offset)
        except OSError as e:
            if growth > 0:
                self.cache.uncharge(growth)
            if e.errno == errno.ENOSPC:
                raise CacheDiskFull(len(data)) from None
            raise
        if growth > 0:
            oi.size = end
        oi.changes += 1
        ck = oi.ck
        if ck is not None:
            if offset == ck.length:
                ck.update(data)
            else:
                oi.ck = None
        now = time.time_ns()
        oi.mtime_ns = oi.ctime_ns = now
        oi.attrs_dirty = True
        return n

    def _too_large(self, oi: OpenInode | None, size: int) -> FsError:
        """EFBIG for a file that would outgrow what can reach tape, said once per open
        as an event naming the limit (the file is left as it was: no session begins)."""
        limit = self.max_file_size
        why = (
            f"a file of {size} bytes exceeds the largest file this archive takes, "
            f"{limit} bytes ({format_size(limit)}: what a volume holds less tape headers, "
            "or [mount] max_file_size)"
        )
        if oi is not None and not oi.too_large_told:
            oi.too_large_told = True
            events.record(
                self.cat,
                "file_too_large",
                why,
                subject=oi.bfid,
                level="warning",
                inode=oi.inode,
                size=size,
                limit=limit,
            )
        return FsError(errno.EFBIG, why)

    def read(self, fh: int, offset: int, size: int) -> bytes:
        fd = self.handle(fh).oi.fd
        return b"" if fd == NO_FILE else os.pread(fd, size, offset)

    def truncate(self, inode: int, size: int) -> None:
        """truncate(2) on a file that is open here, or opened just for this."""
        oi = self.open_inodes.get(inode)
        if size > self.max_file_size:
            raise self._too_large(oi, size)
        if oi is None:
            raise FsError(errno.EIO, "truncate of a file that is not open")
        self._begin(oi)
        growth = size - oi.size
        if growth > 0 and not self.cache.try_charge(growth):
            raise FsError(errno.ENOSPC, "cache full")
        if size or oi.fd != NO_FILE:
            os.ftruncate(self._fd(oi), size)
        oi.changes += 1
        if growth < 0:
            self.cache.uncharge(-growth)
        oi.size = size
        if size == 0:
            oi.ck = Checksummer()
        elif oi.ck is not None and oi.ck.length != size:
            oi.ck = None
        oi.mtime_ns = oi.ctime_ns = time.time_ns()
        oi.attrs_dirty = True

    # -- attributes of open files ----------------------------------------------------------

    def overlay(self, node: Inode) -> Inode:
        """The catalog's attributes with what open files know better (size, times)."""
        oi = self.open_inodes.get(node.id)
        if oi is not None and oi.attrs_dirty:
            node.size = oi.size
            node.mtime_ns = oi.mtime_ns
            node.ctime_ns = max(node.ctime_ns, oi.ctime_ns)
        return node

    def blocks(self, node: Inode) -> int:
        """st_blocks of a regular file from what its data takes (holes take nothing), as
        `du` counts: the cache file's allocation, or for a released file the allocation
        recorded when its session ended (the size when none was recorded)."""
        by_size = (node.size + 511) // 512
        oi = self.open_inodes.get(node.id)
        if oi is not None:
            return 0 if oi.fd == NO_FILE else os.fstat(oi.fd).st_blocks
        if node.bitfile is None:
            return by_size
        row = self.files.allocation(node.bitfile)
        if row is None:
            return by_size
        state, bfid, allocated = row
        if state in (DIRTY, ARCHIVED):
            try:
                return os.stat(self.cache.path(bfid)).st_blocks
            except FileNotFoundError:
                return 0 if node.size == 0 else by_size
        return by_size if allocated is None else (allocated + 511) // 512

    def set_times(self, inode: int, mtime_ns: int | None) -> None:
        oi = self.open_inodes.get(inode)
        if oi is not None and mtime_ns is not None:
            oi.mtime_ns = mtime_ns

    def flush_attrs(self, oi: OpenInode) -> None:
        if oi.attrs_dirty:
            with self.cat.tx():
                self.ns.set_written(oi.inode, oi.size, oi.mtime_ns, oi.ctime_ns)
                self.files.set_size(oi.bitfile, oi.size)
            oi.attrs_dirty = False

    # -- closing ---------------------------------------------------------------------------

    def release(self, fh: int) -> SessionEnd | None:
        """Drop a handle. On the last one, returns the session's end for `finish` (after
        `compute_sums` in a worker thread if `sums` is None)."""
        h = self.handles.pop(fh, None)
        if h is None:
            return None
        oi = h.oi
        oi.handles -= 1
        if oi.handles > 0:
            return None
        del self.open_inodes[oi.inode]
        self.flush_attrs(oi)
        if not oi.modifying:
            if oi.fd != NO_FILE:
                os.close(oi.fd)
            return None
        sums = oi.ck.sums if oi.ck is not None and oi.ck.length == oi.size else None
        return SessionEnd(oi, sums, oi.fd, True, oi.changes)

    def take_created(self, fh: int) -> int | None:
        """The inode a create(2) made, once, at its last release when it was never
        written (a new empty file is a change to announce too; a written one is announced
        by its session's end)."""
        oi = self.handle(fh).oi
        if not oi.created or oi.modifying:
            return None
        oi.created = False
        return oi.inode

    @staticmethod
    def compute_sums(end: SessionEnd) -> None:
        """Blocking: re-read the cache file when writes were not sequential."""
        end.sums = Checksummer().sums if end.fd == NO_FILE else file_sums(end.fd, end.oi.size)

    @staticmethod
    def can_finish(end: SessionEnd) -> bool:
        """Whether `finish` would commit: the file did not change since its sums were
        taken (a write through a duplicated descriptor meanwhile)."""
        return end.close_fd or (end.changes == end.oi.changes and end.oi.modifying)

    def abandon(self, end: SessionEnd) -> None:
        """A last close whose end could not be committed: its descriptor goes, and the
        catalog keeps the session counted; the next start closes it and queues the file
        (backend.daemon.recovery)."""
        log.error(
            "inode %d: the end of its modification session was not committed; "
            "the next start of the archive closes it",
            end.oi.inode,
        )
        if end.close_fd and end.fd != NO_FILE:
            os.close(end.fd)

    def finish(self, end: SessionEnd) -> bool:
        """Commit the end of a session; False (nothing done) if the file changed since
        its sums were taken (a write through a duplicated descriptor meanwhile)."""
        oi = end.oi
        assert end.sums is not None
        if not self.can_finish(end):
            return False
        family, _group = self.family_of(oi.inode)
        try:
            self.files.end_session(
                oi.bitfile,
                size=oi.size,
                adler32=end.sums.adler32,
                crc32c=end.sums.crc32c,
                family=family,
            )
            oi.modifying = False  # a later write through a dup'ed fd opens a new session
            oi.created = False
            self.flush_attrs(oi)
            # what the data takes on disk, kept for st_blocks once it is released
            self.files.set_allocated(
                oi.bitfile, 0 if end.fd == NO_FILE else allocated_bytes(end.fd)
            )
        finally:
            if end.close_fd and end.fd != NO_FILE:
                os.close(end.fd)
        self.on_queued()
        return True

    def fsync(self, fh: int) -> int:
        """Persist attributes; returns the fd the caller must fsync (in a worker thread)."""
        h = self.handle(fh)
        self.flush_attrs(h.oi)
        return h.oi.fd

    # -- removal ---------------------------------------------------------------------------

    def is_open(self, inode: int) -> bool:
        return inode in self.open_inodes

    def drop_inode(self, inode: int) -> None:
        """The inode has no links, no handles and no kernel references: free it."""
        bitfile = self.ns.delete_inode(inode)
        if bitfile is not None:
            bf = self.files.get(bitfile)
            if bf is not None:
                self.files.supersede(bf.id)
                if bf.state in (DIRTY, ARCHIVED):
                    self.cache.remove(bf.bfid, bf.size)

"""The FUSE operations: thin translations between pyfuse3 and the archive backend.

Each operation converts arguments, calls the namespace, staging, xattr or recall code in
`backend/`, and converts the answer. `FsError` becomes its errno; anything unexpected
becomes EIO with a logged traceback, because an exception escaping a pyfuse3 handler
would kill the mount (and leave ENOTCONN behind).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pyfuse3
import trio

from backend.cache.staging import CacheDiskFull, Handle, NeedsRecall, SessionEnd
from backend.catalog import events
from backend.catalog.namespace import Inode, Namespace
from backend.catalog.schema import ROOT_INODE
from backend.catalog.volumes import VolumeClerk
from backend.daemon.archive import ArchiveDaemon
from backend.errors import FsError
from mountfs.fuseop import fuse_op
from mountfs.xattrs import Xattrs

log = logging.getLogger("reelfs.fs")

READDIR_BATCH = 1024
REAP_DELAY = 0.02  # s: the forgets of an `rm -r` gather for one commit
BLKSIZE = 1024 * 1024  # tools like cp size their I/O by it: fewer, larger requests


class JournalFailed(FsError):
    """The change journal could not record a change: the change is rolled back."""


class ReelFS(pyfuse3.Operations):
    """The FUSE operations of one mounted archive, on the daemon's catalog connection."""

    supports_dot_lookup = True
    enable_writeback_cache = False

    def __init__(self, daemon: ArchiveDaemon) -> None:
        super().__init__()
        self.daemon = daemon
        self.cat = daemon.cat
        self.ns = Namespace(daemon.cat)
        self.staging = daemon.staging
        self.xattrs = Xattrs(daemon.cat, daemon.config.archive_id, str(daemon.config.archive))
        self.timeout = daemon.config.mount.cache_timeout
        self.lookups: Counter[int] = Counter()
        self.on_open = daemon.config.recall_on_open
        self.changes = daemon.journal  # the change journal when [post] is configured
        # inodes the kernel forgot, freed together by `reaper` (see `forget`)
        self._forgotten: set[int] = set()
        self._reap_due = trio.Event()

    # -- helpers ---------------------------------------------------------------------------

    def entry(self, node: Inode) -> pyfuse3.EntryAttributes:
        node = self.staging.overlay(node)
        e = pyfuse3.EntryAttributes()
        e.st_ino = node.id
        e.generation = 0
        e.entry_timeout = self.timeout
        e.attr_timeout = self.timeout
        e.st_mode = node.mode
        e.st_nlink = node.nlink
        e.st_uid = node.uid
        e.st_gid = node.gid
        e.st_rdev = node.rdev
        e.st_size = 4096 if node.is_dir else node.size
        e.st_blksize = BLKSIZE
        # from allocation, not size: a sparse file's holes take no blocks (du)
        e.st_blocks = self.staging.blocks(node) if node.is_reg else (e.st_size + 511) // 512
        e.st_atime_ns = node.atime_ns
        e.st_mtime_ns = node.mtime_ns
        e.st_ctime_ns = node.ctime_ns
        return e

    def _looked_up(self, node: Inode) -> pyfuse3.EntryAttributes:
        self.lookups[node.id] += 1
        return self.entry(node)

    def _maybe_drop(self, inode: int) -> None:
        """Free an inode once it has no links, no handles and no kernel references."""
        if self.lookups.get(inode, 0) > 0 or self.staging.is_open(inode):
            return
        try:
            node = self.ns.get(inode)
        except FsError:
            return
        if node.nlink == 0:
            self.staging.drop_inode(inode)

    @contextlib.contextmanager
    def _change(self, *, queued: bool = False) -> Iterator[None]:
        """A change of the namespace and its journal row commit together (nothing changes
        without its announcement); the poster (and with `queued`, the movers) are woken
        after the commit. When the journal fails the whole change rolls back, the
        operation answers EIO, and an event says why."""
        try:
            with self.cat.tx():
                yield
        except JournalFailed as e:
            with contextlib.suppress(Exception):  # the catalog itself may be what failed
                events.record(self.cat, "journal_failed", e.strerror, level="error")
            raise
        if self.changes is not None:
            self.changes.wake()
        if queued:
            self.daemon.lm.wake()

    def _notify(self, method: str, *args: Any) -> None:
        """Journal a change inside its transaction (see `_change`): a failure here fails
        the operation, or the change would commit unannounced and replicas diverge."""
        if self.changes is None:
            return
        try:
            if self.daemon.faults and self.daemon.take_fault("journal"):
                raise RuntimeError("injected fault in the change journal")
            getattr(self.changes, method)(*args)
        except Exception as e:
            log.exception("change journal: %s failed; the change is rolled back", method)
            raise JournalFailed(errno.EIO, f"change journal ({method}) failed: {e}") from e

    # -- lookups and attributes ------------------------------------------------------------

    @fuse_op
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext = None
    ) -> pyfuse3.EntryAttributes:
        if name == b".":
            node = self.ns.get(parent_inode)
        elif name == b"..":
            p = self.ns.parent_of(parent_inode) if parent_inode != ROOT_INODE else ROOT_INODE
            node = self.ns.get(p if p is not None else ROOT_INODE)
        else:
            node = self.ns.lookup(parent_inode, name)
        return self._looked_up(node)

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        # Freeing an unlinked inode is a transaction; `rm` of many files sends one forget
        # per file, so the reaper frees what was forgotten in the last moment in one commit
        # (half the cost of each unlink). A crash in between loses nothing: recovery reaps
        # inodes without links.
        for inode, n in inode_list:
            left = self.lookups.get(inode, 0) - n
            if left > 0:
                self.lookups[inode] = left
            else:
                self.lookups.pop(inode, None)
                self._forgotten.add(inode)
        if self._forgotten:
            self._reap_due.set()

    async def reaper(self) -> None:
        """Free forgotten inodes that have no links left, a batch at a time."""
        while True:
            await self._reap_due.wait()
            self._reap_due = trio.Event()
            await trio.sleep(REAP_DELAY)
            self.reap_now()

    def reap_now(self) -> None:
        """Free every forgotten inode without links now (also before the cache is found
        full, and at unmount: a clean stop must leave nothing for recovery)."""
        batch, self._forgotten = self._forgotten, set()
        if not batch:
            return
        try:
            with self.cat.tx():
                for inode in batch:
                    self._maybe_drop(inode)
        except Exception:
            log.exception("freeing %d forgotten inode(s) failed", len(batch))

    @fuse_op
    async def getattr(
        self, inode: int, ctx: pyfuse3.RequestContext = None
    ) -> pyfuse3.EntryAttributes:
        return self.entry(self.ns.get(inode))

    @fuse_op
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        node = self.ns.get(inode)
        now = time.time_ns()
        changes: dict[str, int] = {}
        if fields.update_size:
            if not node.is_reg:
                raise FsError(errno.EISDIR if node.is_dir else errno.EINVAL)
            await self._truncate(node, attr.st_size)
            changes["size"] = attr.st_size
            changes["mtime_ns"] = now
        if fields.update_mode:
            changes["mode"] = stat.S_IFMT(node.mode) | stat.S_IMODE(attr.st_mode)
        if fields.update_uid or fields.update_gid:
            if fields.update_uid:
                changes["uid"] = attr.st_uid
            if fields.update_gid:
                changes["gid"] = attr.st_gid
            if ctx.uid != 0 and not node.is_dir and "mode" not in changes:
                # chown by a non-root user drops set-user/group-ID, as on a disk
                changes["mode"] = node.mode & ~(stat.S_ISUID | stat.S_ISGID)
        if fields.update_atime:
            changes["atime_ns"] = attr.st_atime_ns
        if fields.update_mtime:
            changes["mtime_ns"] = attr.st_mtime_ns
            self.staging.set_times(inode, attr.st_mtime_ns)
        changes["ctime_ns"] = attr.st_ctime_ns if fields.update_ctime else now
        node = self.ns.set_attrs(inode, **changes)
        return self.entry(node)

    async def _truncate(self, node: Inode, size: int) -> None:
        if self.staging.is_open(node.id):
            self.staging.truncate(node.id, size)
            return
        flags = os.O_WRONLY | (os.O_TRUNC if size == 0 else 0)
        h = await self._open_data(node, flags)
        try:
            self.staging.truncate(node.id, size)
        finally:
            await self._release(h.fh)

    # -- directories -----------------------------------------------------------------------

    @fuse_op
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = self.ns.get(inode)
        if not node.is_dir:
            raise FsError(errno.ENOTDIR)
        return inode

    @fuse_op
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        # offsets: 1 after '.', 2 after '..', entry id + 2 after an entry
        if start_id == 0:
            if not pyfuse3.readdir_reply(token, b".", self.entry(self.ns.get(fh)), 1):
                return
            start_id = 1
        if start_id == 1:
            parent = self.ns.parent_of(fh) if fh != ROOT_INODE else ROOT_INODE
            if not pyfuse3.readdir_reply(
                token, b"..", self.entry(self.ns.get(parent or ROOT_INODE)), 2
            ):
                return
            start_id = 2
        after = start_id - 2
        while True:
            batch = self.ns.readdir(fh, after, READDIR_BATCH)
            for entry_id, name, node in batch:
                if not pyfuse3.readdir_reply(token, name, self.entry(node), entry_id + 2):
                    return
                self.lookups[node.id] += 1
                after = entry_id
            if len(batch) < READDIR_BATCH:
                return

    @fuse_op
    async def releasedir(self, fh: int) -> None:
        return None

    @fuse_op
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        with self._change():
            node = self.ns.create(
                parent_inode, name, stat.S_IFDIR | (mode & ~ctx.umask & 0o7777), ctx.uid, ctx.gid
            )
            self._notify("mkdir", node.id)
        return self._looked_up(node)

    @fuse_op
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        with self._change():
            path = self._path(parent_inode, name)
            node = self.ns.rmdir(parent_inode, name)
            self._notify("rmdir", path)  # first: dropping the inode removes cache files
            self._maybe_drop(node.id)

    # -- creating and removing -------------------------------------------------------------

    @fuse_op
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        kind = stat.S_IFMT(mode)
        if kind not in (stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK):
            raise FsError(errno.EINVAL, f"mknod of type {kind:o}")
        node = self.ns.create(
            parent_inode, name, kind | (mode & ~ctx.umask & 0o7777), ctx.uid, ctx.gid, rdev=rdev
        )
        if kind == stat.S_IFREG:
            self.staging.new_file(node)
            node = self.ns.get(node.id)
        return self._looked_up(node)

    @fuse_op
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        with self.cat.tx():  # one commit per create
            node = self.ns.create(
                parent_inode, name, stat.S_IFREG | (mode & ~ctx.umask & 0o7777), ctx.uid, ctx.gid
            )
            h = self.staging.create(node, flags)
        return self._file_info(h), self._looked_up(self.ns.get(node.id))

    @fuse_op
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        with self._change():
            node = self.ns.create(
                parent_inode, name, stat.S_IFLNK | 0o777, ctx.uid, ctx.gid, target=target
            )
            self._notify("symlink", node.id, target)
        return self._looked_up(node)

    @fuse_op
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return self.ns.readlink(inode)

    @fuse_op
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        with self._change():
            node = self.ns.link(inode, new_parent_inode, new_name)
            self._notify("link", inode, new_parent_inode, new_name)
        return self._looked_up(node)

    @fuse_op
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        with self._change():
            path = self._path(parent_inode, name)
            node = self.ns.unlink(parent_inode, name)
            self._notify("unlink", path)  # first: dropping the inode removes cache files
            self._maybe_drop(node.id)

    @fuse_op
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        with self._change():
            old_path = self._path(parent_inode_old, name_old)
            replaced = self.ns.rename(parent_inode_old, name_old, parent_inode_new, name_new, flags)
            self._notify("rename", old_path, parent_inode_new, name_new, flags)
            if replaced is not None:
                self._maybe_drop(replaced.id)

    def _path(self, parent: int, name: bytes) -> str | None:
        if self.changes is None:
            return None
        base = self.ns.path_of(parent)
        return (
            None
            if base is None
            else base.rstrip("/") + "/" + name.decode("utf-8", "surrogateescape")
        )

    # -- file data -------------------------------------------------------------------------

    def _file_info(self, h: Handle) -> pyfuse3.FileInfo:
        fi = pyfuse3.FileInfo(fh=h.fh)
        fi.keep_cache = True  # only this daemon changes data, and the kernel sees it do so
        if h.flags & os.O_DIRECT:
            fi.direct_io = True
            fi.keep_cache = False
        return fi

    @fuse_op
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        node = self.ns.get(inode)
        if node.is_dir:
            raise FsError(errno.EISDIR)
        if not node.is_reg:
            raise FsError(errno.ENXIO, "special files have no data here")
        h = await self._open_data(node, flags)
        return self._file_info(h)

    async def _open_data(self, node: Inode, flags: int) -> Handle:
        while True:
            try:
                h = self.staging.open(node, flags)
                break
            except NeedsRecall as r:
                if flags & os.O_NONBLOCK:
                    self.daemon.request_recall(r.bitfile_id)
                    raise FsError(errno.EAGAIN, "recall queued; try again later") from None
                if self.on_open == "refuse":
                    raise FsError(
                        errno.EAGAIN, "transparent recalls are refused here; use reelfs recall"
                    ) from None
                log.info("inode %d: open waits for a recall from tape", node.id)
                # at most [cache] recall_timeout: ETIMEDOUT, ENOSPC or EIO with the reason
                # in user.reelfs.error (the kernel lets not even kill -9 end this wait)
                error = await self.daemon.wait_recall(r.bitfile_id)
                if error:
                    log.error("inode %d: %s", node.id, error.message)
                    raise FsError(error.errno, error.message) from None
                node = self.ns.get(node.id)
        self._relatime(node, h)
        return h

    def _relatime(self, node: Inode, h: Handle) -> None:
        if h.write:
            return
        now = time.time_ns()
        if node.atime_ns <= node.mtime_ns or now - node.atime_ns > 86400 * 10**9:
            self.ns.set_attrs(node.id, atime_ns=now)

    @fuse_op
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return self.staging.read(fh, off, size)

    @fuse_op
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        disk = False
        try:
            return self.staging.write(fh, off, buf)
        except CacheDiskFull:
            disk = True  # the cache's count has room; its file system has not
        except FsError as e:
            if e.errno != errno.ENOSPC:
                raise
        h = self.staging.handle(fh)
        growth = len(buf) if disk else max(0, off + len(buf) - h.oi.size)
        what = "cache file system full" if disk else "cache full"
        log.info("%s: making room for %d bytes", what, growth)
        self.reap_now()  # files just removed may still hold cache space
        if not await self.daemon.make_room(growth, disk=disk):
            log.error("%s: nothing could be evicted or flushed in time", what)
            raise FsError(errno.ENOSPC, what)
        return self.staging.write(fh, off, buf)

    @fuse_op
    async def flush(self, fh: int) -> None:
        # Every close(2) of a descriptor sends a FLUSH, also a child's close of one it
        # inherited (`cmd > file` closes the shell's copy before cmd writes a byte): ending
        # the session here made an empty version, or one version and tape copy per close.
        # The size and times are made durable; the session ends at the last RELEASE.
        self.staging.flush_attrs(self.staging.handle(fh).oi)

    @fuse_op
    async def release(self, fh: int) -> None:
        await self._release(fh)

    async def _release(self, fh: int) -> None:
        h = self.staging.handles.get(fh)
        created = None
        if h is not None and h.oi.handles == 1 and self.changes is not None:
            created = self.staging.take_created(fh)
        end = self.staging.release(fh)
        if end is not None:
            await self._end_session(end)
        elif created is not None:
            with self._change():
                self._notify("closed", created)
        if h is not None and not self.staging.is_open(h.oi.inode):
            self._maybe_drop(h.oi.inode)

    async def _end_session(self, end: SessionEnd) -> None:
        if end.sums is None:
            await trio.to_thread.run_sync(self.staging.compute_sums, end)
        try:
            with self._change(queued=True):
                if self.staging.can_finish(end):
                    # journalled first: a failure then leaves the open file as it was
                    self._notify("closed", end.oi.inode)
                    self.staging.finish(end)
        except JournalFailed:
            if end.close_fd:
                self.staging.abandon(end)
            raise

    @fuse_op
    async def fsync(self, fh: int, datasync: bool) -> None:
        fd = self.staging.fsync(fh)
        if fd >= 0:  # an empty file has no cache file to sync
            await trio.to_thread.run_sync(os.fsync, fd)
        await self.daemon.in_worker(lambda cat: cat.sync())

    @fuse_op
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        await self.daemon.in_worker(lambda cat: cat.sync())

    # -- file system -----------------------------------------------------------------------

    @fuse_op
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        vc = VolumeClerk(self.cat)
        total, free = vc.pool_capacity()
        s = pyfuse3.StatvfsData()
        s.f_bsize = BLKSIZE
        s.f_frsize = 4096
        s.f_blocks = total // s.f_frsize
        # Deleted copies (rm, overwrites) are free space that only a repack hands back:
        # df's "Used" leaves them out, its "Avail" (writable now) does not count them.
        s.f_bfree = min(total, free + vc.reclaimable()) // s.f_frsize
        s.f_bavail = free // s.f_frsize
        inodes = self.ns.count_inodes()
        s.f_files = inodes + 2**32
        s.f_ffree = s.f_favail = 2**32
        s.f_namemax = 255
        return s

    @fuse_op
    async def access(self, inode: int, mode: int, ctx: pyfuse3.RequestContext) -> bool:
        node = self.ns.get(inode)
        if ctx.uid == 0:
            return not (mode & os.X_OK) or bool(node.mode & 0o111) or node.is_dir
        if ctx.uid == node.uid:
            perm = (node.mode >> 6) & 7
        elif ctx.gid == node.gid or node.gid in pyfuse3.get_sup_groups(ctx.pid):
            perm = (node.mode >> 3) & 7
        else:
            perm = node.mode & 7
        return (mode & perm) == mode

    # -- xattrs ----------------------------------------------------------------------------

    @fuse_op
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if not self.xattrs.may_have(inode, name):
            # the kernel asks for security.capability before every write and ls -l for
            # ACLs: answered without touching the catalog
            raise pyfuse3.FUSEError(errno.ENODATA)
        return self.xattrs.get(self.ns.get(inode), name)

    @fuse_op
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        return self.xattrs.list(self.ns.get(inode))

    @fuse_op
    async def setxattr(
        self, inode: int, name: bytes, value: bytes, ctx: pyfuse3.RequestContext
    ) -> None:
        self.xattrs.set(self.ns.get(inode), name, value)

    @fuse_op
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self.xattrs.remove(self.ns.get(inode), name)

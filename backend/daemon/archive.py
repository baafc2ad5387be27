"""The archive daemon: the one process that owns an archive's library and cache.

It holds the archive lock, recovers after a crash, reconciles the library with the
catalog, runs one mover thread per drive and the library manager, evicts the cache to
its watermarks, runs the replication services, and answers the control socket
(backend.daemon.controls). `reelfs mount` runs the FUSE front end inside it, in the trio
loop of the main thread; the front end waits here for recalls and for room in the cache.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from backend.admin.files import pending_writes
from backend.admin.lock import lock_archive
from backend.cache.eviction import disk_shortfall, evict, to_watermark
from backend.cache.staging import Staging
from backend.cache.store import Cache, fs_smaller_than
from backend.catalog import events, families, meta
from backend.catalog.db import Catalog, open_catalog
from backend.catalog.drives import DriveTable
from backend.catalog.files import ARCHIVED, DIRTY, FileClerk
from backend.catalog.queue import RECALL, RequestQueue
from backend.catalog.volumes import VolumeClerk
from backend.config import Config, check_archive_id
from backend.daemon.admin import DaemonContext
from backend.daemon.controls import ControlServer
from backend.daemon.recovery import RecoveryReport, recover
from backend.daemon.services import ReplicationServices
from backend.errors import ArchiveError
from backend.library.diagnosis import BLOCKING, Reason
from backend.library.manager import LibraryManager
from backend.library.recall import expire as recall_expire
from backend.library.recall import give_up as recall_give_up
from backend.library.recall import queue_recall
from backend.library.reconcile import reconcile_library
from backend.mover.session import Mover, MoverContext, MoverHooks
from backend.permissions import Tightened, set_private_umask, tighten
from backend.supervision import Health, catalog_busy
from backend.tape.limits import check_max_file_size, limit_of
from drivers.library import open_library
from drivers.tape import ElementType, Library, TapeDrive

log = logging.getLogger("reelfs.daemon")

EVICTION_INTERVAL = 2.0
RECALL_POLL = 2.0
#: how long the upstream origin a subscriber announced for a path is kept for its change
ORIGIN_TTL = 300.0
#: how often a dismount asked of a mover is looked for
DISMOUNT_POLL = 0.05


@dataclass
class RecallWait:
    """Opens waiting for one file's recall."""

    event: trio.Event = field(default_factory=trio.Event)
    error: Reason | None = None


class ArchiveDaemon:
    """One archive's daemon; `open` starts it, `run_services` serves it, `close` stops it."""

    def __init__(self, config: Config, *, mountpoint: str | None = None) -> None:
        self.config = config
        self.mountpoint = mountpoint
        self.lock_fd: int | None = None
        self.cat: Catalog
        self.worker_cat: Catalog
        self.worker_lock = trio.Lock()
        self.cache: Cache
        self.staging: Staging
        self.library: Library | None = None
        self.lm = LibraryManager(config)
        self.movers: list[Mover] = []
        self.trio_token: trio.lowlevel.TrioToken | None = None
        self.recall_waits: dict[int, RecallWait] = {}
        self.archived_event = trio.Event()
        self.recovery: RecoveryReport | None = None
        self.changer_lock = threading.Lock()
        self.faults: dict[str, int] = {}  # FUSE op name -> injected failures left (tests)
        # archive path -> (deadline, upstream message fields): the next change of that
        # path was made by a subscriber storing what another site announced
        self.origins: dict[str, tuple[float, dict[str, Any]]] = {}
        self.services: ReplicationServices | None = None
        self.eviction_health = Health("eviction", "eviction")
        self.controls = ControlServer(
            config.socket_path,
            {
                "ping": self._ping,
                "wake": self._wake,
                "status": self._status,
                "drain": self._drain,
                "undrain": self._undrain,
                "expect_origin": self._expect_origin,
                "inject_fault": self._inject_fault,
            },
            functools.partial(DaemonContext, self),
        )

    @property
    def journal(self) -> Any:
        """The FUSE front end's change hook when [post] is set, else None."""
        return self.services.journal if self.services is not None else None

    # -- life cycle ------------------------------------------------------------------------

    def open(self) -> None:
        """Everything that must happen before the archive serves anything (blocking)."""
        cfg = self.config
        set_private_umask()  # all the daemon writes is under the archive, for its user only
        self.services = ReplicationServices(cfg)  # a bad [post] or [serve] stops the start
        self.lock_fd = lock_archive(cfg)
        try:
            # before SQLite makes the catalog's -wal and -shm, which take the catalog's mode
            tightened = self._tighten_permissions()
            self.cat = open_catalog(cfg.catalog_path)
            check_archive_id(cfg, meta.archive_id(self.cat))  # before anything is written
            self._record_tightened(tightened)
            self.worker_cat = open_catalog(cfg.catalog_path, any_thread=True)
            self.cache = Cache(
                cfg.cache.path,
                cfg.cache.size,
                cfg.cache.high_watermark,
                cfg.cache.low_watermark,
            )
            # before recovery, which queues the copies the families keep
            families.sync_from_config(self.cat, cfg.families, cfg.family_copies)
            self.recovery = recover(
                self.cat, self.cache, cfg.archive_id, clean=meta.take_clean_stop(self.cat)
            )
            DriveTable(self.cat).reset_sessions()
            self.library = open_library(cfg.library.spec, cfg.archive)
            volumes = VolumeClerk(self.cat)
            reconcile_library(
                self.cat,
                self.library.changer,
                media_type=cfg.library.type,
                default_capacity=volumes.default_capacity(cfg.library.default_capacity),
            )
            limit = limit_of(self.cat, cfg)
            check_max_file_size(cfg.mount.max_file_size, limit)
            self.staging = Staging(
                self.cat,
                self.cache,
                cfg.archive_id,
                max_file_size=cfg.mount.max_file_size or limit or 2**63 - 1,
                on_queued=self.lm.wake,
            )
            self._warn_small_cache_fs()
            self.lm.on_recall_failed = self._recall_failed_from_thread  # type: ignore[method-assign]
            self._start_movers()
            self.services.start(self.cat, self.cache, self.take_origin)
            events.record(
                self.cat,
                "daemon_start",
                "archive daemon started",
                subject=cfg.name,
                pid=os.getpid(),
                mountpoint=self.mountpoint,
            )
        except BaseException:
            self.close()
            raise

    def _tighten_permissions(self) -> Tightened:
        """Make what an older reelfs, a restore or an operator left readable by other
        users private again (files 0600, directories 0700)."""
        cfg = self.config
        roots = [cfg.archive, cfg.cache.path]
        if cfg.library.type == "emulated":
            roots.append(cfg.archive / cfg.library.path)
        return tighten(roots, mountpoint=Path(self.mountpoint) if self.mountpoint else None)

    def _record_tightened(self, done: Tightened) -> None:
        cfg = self.config
        trouble = done.foreign_count or done.failed_count
        if done.changed or trouble:
            events.record(
                self.cat,
                "permissions_tightened",
                f"{done.files} file(s) and {done.dirs} directory(ies) under the archive were "
                "open to other users and are private now"
                + (f"; {done.foreign_count} owned by another user" if done.foreign_count else "")
                + (f"; {done.failed_count} could not be changed" if done.failed_count else ""),
                subject=cfg.name,
                level="warning" if trouble else "info",
                **done.details(),
            )

    def _warn_small_cache_fs(self) -> None:
        cache = self.config.cache
        why = fs_smaller_than(cache.path, cache.size)
        if why is not None:
            events.record(self.cat, "cache_fs_small", why, subject=str(cache.path), level="warning")

    def _start_movers(self) -> None:
        assert self.library is not None
        inv = self.library.changer.inventory()
        names = {e.address: e.identifier for e in inv.of_type(ElementType.DRIVE)}
        for i, (address, drive) in enumerate(sorted(self.library.drives.items())):
            name = getattr(drive, "name", None) or names.get(address) or f"drive{i}"
            self.start_mover(name, address, drive)

    def start_mover(self, name: str, address: int, drive: TapeDrive) -> Mover:
        """A new mover thread for a drive (replacing the stopped one of a drive set up)."""
        assert self.library is not None
        hooks = MoverHooks(
            recall_done=self._recall_done_from_thread,
            archived=self._archived_from_thread,
            archived_many=self._archived_many_from_thread,
            fault=self.take_fault,
        )
        m = Mover(
            MoverContext(
                name=name,
                address=address,
                drive=drive,
                changer=self.library.changer,
                changer_lock=self.changer_lock,
                lm=self.lm,
                config=self.config,
                cache=self.cache,
                hooks=hooks,
            )
        )
        self.movers = [x for x in self.movers if x.ctx.name != name] + [m]
        m.start()
        return m

    def mover(self, name: str) -> Mover:
        mover = next((m for m in self.movers if m.ctx.name == name), None)
        if mover is None:
            raise ArchiveError(f"no drive named {name!r} (see reelfs drives)")
        return mover

    def dismount_volume(self, label: str, timeout: float) -> None:
        """Have the mover holding `label` put it home (it is taken out of service already);
        blocking, for a command's worker thread."""
        ctx = next((m.ctx for m in self.movers if m.ctx.mounted == label), None)
        if ctx is None:
            return
        ctx.dismount_requested = True
        self.lm.wake()
        deadline = time.monotonic() + timeout
        while ctx.mounted == label and time.monotonic() < deadline:
            time.sleep(DISMOUNT_POLL)
        if ctx.mounted == label:
            raise ArchiveError(
                f"volume {label} is still in use by {ctx.name}; try again when its transfer is done"
            )

    def close(self, *, timeout: float = 120.0) -> None:
        """Stop the movers (each puts its tape home), close the library and the catalog."""
        if self.services is not None:
            self.services.stop()
        self.lm.stopping = True
        self.lm.wake()
        deadline = time.monotonic() + timeout
        for m in self.movers:
            m.join(max(0.1, deadline - time.monotonic()))
            if m.is_alive():
                log.error("mover %s did not stop within %ss", m.ctx.name, timeout)
        if self.library is not None:
            try:
                self.library.close()
            except Exception:
                log.exception("closing the library")
        staging = getattr(self, "staging", None)
        if staging is not None:
            for oi in list(staging.open_inodes.values()):
                try:
                    staging.flush_attrs(oi)
                except Exception:
                    log.exception("saving attributes of inode %d", oi.inode)
        for attr in ("cat", "worker_cat"):
            c = getattr(self, attr, None)
            if c is None:
                continue
            try:
                if attr == "cat":
                    if (
                        self.recovery is not None
                        and all(not m.is_alive() for m in self.movers)
                        and not FileClerk(c).any_session_open()
                    ):
                        meta.mark_clean_stop(c)  # nothing in flux: the next start can trust it
                    events.record(
                        c, "daemon_stop", "archive daemon stopped", subject=self.config.name
                    )
                c.close()
            except Exception:
                log.exception("closing the catalog")
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    # -- hooks called by movers (their threads) --------------------------------------------

    def _to_trio(self, fn, *args) -> None:
        if self.trio_token is None:
            return
        try:
            trio.from_thread.run_sync(fn, *args, trio_token=self.trio_token)
        except (trio.RunFinishedError, RuntimeError):
            pass

    def _recall_done_from_thread(self, bitfile: int, error: str | None) -> None:
        self._to_trio(self._recall_done, bitfile, error)

    def _recall_failed_from_thread(self, bitfiles: list[int], why: str) -> None:
        for b in bitfiles:
            self._to_trio(self._recall_done, b, why)

    def _archived_from_thread(self, bitfile: int) -> None:
        self._to_trio(self._archived, bitfile)

    def _archived_many_from_thread(self, bitfiles: list[int]) -> None:
        # one round trip into the event loop per tape file, not per file in it
        if bitfiles:
            self._to_trio(self._archived, bitfiles[-1])

    def _recall_done(self, bitfile: int, error: str | Reason | None) -> None:
        w = self.recall_waits.pop(bitfile, None)
        if w is not None:
            # a mover's failure means no copy could be read: EIO
            w.error = Reason("no_good_copy", errno.EIO, error) if isinstance(error, str) else error
            w.event.set()

    def _archived(self, bitfile: int) -> None:
        self.archived_event.set()
        self.archived_event = trio.Event()

    # -- services in the trio loop ---------------------------------------------------------

    async def run_services(self, nursery: trio.Nursery) -> None:
        self.trio_token = trio.lowlevel.current_trio_token()
        nursery.start_soon(self._eviction_loop)
        nursery.start_soon(self._recall_expiry_loop)
        await nursery.start(self.controls.serve)

    async def in_worker(self, fn, *args, **kw):
        """Run `fn(worker_cat, *args, **kw)` in a worker thread on the worker connection."""
        async with self.worker_lock:
            return await trio.to_thread.run_sync(
                functools.partial(fn, self.worker_cat, *args, **kw)
            )

    async def _eviction_loop(self) -> None:
        h = self.eviction_health
        h.set(alive=True, state="running")
        try:
            while True:
                await trio.sleep(EVICTION_INTERVAL)
                if self.cache.above_high():
                    protect = frozenset(oi.bitfile for oi in self.staging.open_inodes.values())
                    try:
                        await self.in_worker(to_watermark, self.cache, protect)
                        h.set(state="running")
                    except Exception as e:
                        # the next round tries again; what failed is shown in `status`
                        log.exception("cache eviction failed")
                        h.error(f"{type(e).__name__}: {e}")
                        h.set(
                            state="paused: catalog busy" if catalog_busy(e) else "retrying",
                            busy_waits=h.busy_waits + catalog_busy(e),
                        )
        finally:
            h.set(alive=False, state="stopped")

    async def _recall_expiry_loop(self) -> None:
        """Fail the recalls blocked past `[cache] recall_timeout` and wake their waiters."""
        # each open keeps its own deadline: the sweep ends the recalls nobody waits on
        # and wakes waiters early, so a tenth of the timeout is soon enough (it reads every
        # old recall: ~70 ms for 10,000)
        interval = min(15.0, max(0.5, self.config.cache.recall_timeout / 10))
        while True:
            await trio.sleep(interval)
            try:
                expired = await self.in_worker(recall_expire, self.config, time.time_ns())
            except Exception:
                log.exception("recall expiry sweep failed")
                continue
            for bitfile, reason in expired:
                log.error("bitfile %d: %s", bitfile, reason)
                self._recall_done(bitfile, reason)

    def _cache_shortfall(self, nbytes: int, disk: bool) -> int:
        """Bytes to free for `nbytes` more: by the cache's count, and after a real ENOSPC
        also on its file system (with a margin for the file system's own blocks)."""
        need = self.cache.used + nbytes - self.cache.limit
        if disk:
            need = max(need, disk_shortfall(self.cache, nbytes))
        return need

    async def make_room(self, nbytes: int, *, disk: bool = False) -> bool:
        """Wait until `nbytes` more fit in the cache: evict, then flush and evict again,
        for at most `[cache] full_timeout`. False when it did not work out. `disk`: a
        write met a full cache file system, which eviction must make room on too."""
        deadline = trio.current_time() + self.config.cache.full_timeout
        urged = False
        while True:
            need = self._cache_shortfall(nbytes, disk)
            if need <= 0:
                return True
            protect = frozenset(oi.bitfile for oi in self.staging.open_inodes.values())
            await self.in_worker(evict, self.cache, need, protect=protect)
            if self._cache_shortfall(nbytes, disk) <= 0:
                return True
            if trio.current_time() >= deadline:
                return False
            if not urged:
                RequestQueue(self.cat).make_all_urgent()
                self.lm.wake()
                urged = True
            with trio.move_on_at(min(deadline, trio.current_time() + 1.0)):
                await self.archived_event.wait()

    async def wait_recall(self, bitfile: int) -> Reason | None:
        """Queue a recall of `bitfile` if needed and wait for it, at most
        `[cache] recall_timeout`; returns why it failed (with its errno) or None."""
        files = FileClerk(self.cat, self.config.archive_id)
        timeout = self.config.cache.recall_timeout
        deadline = trio.current_time() + timeout
        while True:
            w = self.recall_waits.get(bitfile)
            if w is None:
                w = self.recall_waits[bitfile] = RecallWait()
            bf = files.get(bitfile)
            if bf is None:
                return Reason("no_good_copy", errno.EIO, "file deleted")
            if bf.state in (ARCHIVED, DIRTY):
                self.recall_waits.pop(bitfile, None)
                return None
            try:
                if queue_recall(self.cat, self.config.archive_id, bitfile):
                    self.lm.wake()
            except ArchiveError as e:
                self.recall_waits.pop(bitfile, None)
                return Reason("no_good_copy", errno.EIO, str(e))
            # the open waits in trio, never on the loop thread: other requests go on
            with trio.move_on_at(min(deadline, trio.current_time() + RECALL_POLL)):
                await w.event.wait()
            if w.event.is_set() and w.error:
                return w.error
            if not w.event.is_set() and trio.current_time() >= deadline:
                reason = await self.in_worker(recall_give_up, self.config, bitfile, timeout)
                if w.event.is_set() and w.error:
                    return w.error  # the sweep failed it meanwhile, with its own reason
                if reason is not None:
                    if reason.code in BLOCKING:
                        # give_up took the recall out of the queue: the other opens of the
                        # file fail with this reason now, not with the error it left on
                        # the file at their own deadline (which read as "no good copy": EIO)
                        self._recall_done(bitfile, reason)
                    return reason
            # loop: re-read the state (cached now, or still waiting)

    def request_recall(self, bitfile: int) -> None:
        """Queue without waiting (O_NONBLOCK opens)."""
        if queue_recall(self.cat, self.config.archive_id, bitfile):
            self.lm.wake()

    def recalling(self, bitfile: int) -> bool:
        return RequestQueue(self.cat).has(bitfile, RECALL)

    # -- the daemon's own control operations (backend.daemon.controls) ---------------------

    async def _ping(self, req: dict[str, Any]) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "mountpoint": self.mountpoint,
            "archive": str(self.config.archive),
        }

    async def _wake(self, req: dict[str, Any]) -> dict[str, Any]:
        self.lm.wake()
        return {}

    async def _status(self, req: dict[str, Any]) -> dict[str, Any]:
        return self.status()

    async def _drain(self, req: dict[str, Any]) -> dict[str, Any]:
        """Unmounting: everything not on tape yet is written now."""
        self.lm.drain = True
        RequestQueue(self.cat).make_all_urgent()
        self.lm.wake()
        files, nbytes = pending_writes(self.cat)
        return {"files": files, "bytes": nbytes}

    async def _undrain(self, req: dict[str, Any]) -> dict[str, Any]:
        self.lm.drain = False
        return {}

    async def _expect_origin(self, req: dict[str, Any]) -> dict[str, Any]:
        """A subscriber's next change of `path` stores what another site announced."""
        path = str(req.get("path", ""))
        if not path.startswith("/"):
            raise ArchiveError("expect_origin: path must be an archive path starting with /")
        origin = req.get("origin")
        if not isinstance(origin, dict):
            raise ArchiveError("expect_origin: origin must be an object")
        if self.journal is None:
            return {"ignored": "this archive does not post ([post] is not configured)"}
        self.origins[path] = (time.monotonic() + ORIGIN_TTL, origin)
        return {}

    async def _inject_fault(self, req: dict[str, Any]) -> dict[str, Any]:
        name = str(req.get("target", ""))
        self.faults[name] = int(req.get("count", 1))
        log.warning("fault injection armed: %s x%d", name, self.faults[name])
        return {}

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "mountpoint": self.mountpoint,
            "cache": {"used": self.cache.used, "limit": self.cache.limit},
            "open_files": len(self.staging.open_inodes),
            "movers": [
                {
                    "drive": m.ctx.name,
                    "session": m.ctx.session,
                    "volume": m.ctx.mounted,
                    "down": m.ctx.down,
                    **m.ctx.health.to_json(),
                    "alive": m.is_alive(),
                }
                for m in self.movers
            ],
            "workers": [
                self.eviction_health.to_json(),
                *(self.services.health() if self.services is not None else []),
            ],
            "drain": self.lm.drain,
        }

    def take_origin(self, path: str | None) -> dict[str, Any] | None:
        """The upstream origin announced for the change of `path` now happening, if any."""
        if not self.origins or path is None:
            return None
        now = time.monotonic()
        for p, (deadline, _) in list(self.origins.items()):
            if deadline < now:
                del self.origins[p]
        entry = self.origins.pop(path, None)
        return entry[1] if entry else None

    def take_fault(self, name: str) -> bool:
        """True if an injected failure is armed for `name` (consumes one)."""
        n = self.faults.get(name, 0)
        if n <= 0:
            return False
        self.faults[name] = n - 1
        return True

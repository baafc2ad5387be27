"""The archive daemon: the one process that owns an archive's library and cache.

It holds the archive lock, recovers after a crash, reconciles the library with the
catalog, runs one mover thread per drive and the library manager, evicts the cache to
its watermarks, and answers the control socket. `reelfs mount` runs the FUSE front end
inside it (in the trio loop of the main thread).
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from backend.admin import files as admin
from backend.admin import tapes as tapejobs
from backend.cache.eviction import evict, to_watermark
from backend.cache.staging import Staging
from backend.cache.store import Cache
from backend.catalog import events, meta
from backend.catalog.db import Catalog, open_catalog
from backend.catalog.files import ARCHIVED, DIRTY, RELEASED, FileClerk
from backend.catalog.queue import RequestQueue
from backend.catalog.volumes import VolumeClerk
from backend.config import Config, parse_size
from backend.daemon.recovery import RecoveryReport, recover
from backend.errors import ArchiveError
from backend.library import cleaning
from backend.library import operations as library_ops
from backend.library.manager import LibraryManager
from backend.library.recall import queue_recall
from backend.library.reconcile import reconcile_library
from backend.mover.session import Mover, MoverHooks
from drivers.library import open_library
from drivers.tape import ElementType, Library

log = logging.getLogger("reelfs.daemon")

EVICTION_INTERVAL = 2.0
RECALL_POLL = 2.0
ORIGIN_TTL = 300.0


class ArchiveLocked(ArchiveError):
    pass


def lock_archive(config: Config) -> int:
    """Take the archive's exclusive lock; ArchiveLocked if another process holds it."""
    config.run_dir.mkdir(parents=True, exist_ok=True)
    path = config.run_dir / "daemon.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 64, 0).decode().strip()
        finally:
            os.close(fd)
        raise ArchiveLocked(
            f"archive {config.archive} is in use by another reelfs process"
            + (f" (pid {holder})" if holder else "")
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def sync_families(cat: Catalog, config: Config) -> None:
    """`[families.NAME]` tables win at start: their width, and their number of tape
    copies when they give one (else what `user.reelfs.copies` set stays)."""
    with cat.tx():
        for fam, width in config.families.items():
            cat.execute(
                "INSERT INTO families(name, width) VALUES (?,?) "
                "ON CONFLICT(name) DO UPDATE SET width=excluded.width",
                (fam, width),
            )
        for fam, copies in config.family_copies.items():
            cat.execute(
                "INSERT INTO families(name, copies) VALUES (?,?) "
                "ON CONFLICT(name) DO UPDATE SET copies=excluded.copies",
                (fam, copies),
            )


@dataclass
class RecallWait:
    event: trio.Event = field(default_factory=trio.Event)
    error: str | None = None


class ArchiveDaemon:
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
        self.post = None
        self.serve_cfg = None
        self.journal = None  # the FUSE front end's change hook when [post] is set

    # -- life cycle ------------------------------------------------------------------------

    def open(self) -> None:
        """Everything that must happen before the archive serves anything (blocking)."""
        cfg = self.config
        from backend.replication.post_config import load_post, load_serve

        self.post = load_post(cfg.raw)  # bad [post]/[serve] stop the start, not a thread
        self.serve_cfg = load_serve(cfg.raw)
        self.lock_fd = lock_archive(cfg)
        try:
            self.cat = open_catalog(cfg.catalog_path)
            self.worker_cat = open_catalog(cfg.catalog_path, any_thread=True)
            self.cache = Cache(
                cfg.cache.path,
                cfg.cache.size,
                cfg.cache.high_watermark,
                cfg.cache.low_watermark,
            )
            # before recovery, which queues the copies the families keep
            sync_families(self.cat, cfg)
            self.recovery = recover(
                self.cat, self.cache, cfg.archive_id, clean=meta.take_clean_stop(self.cat)
            )
            with self.cat.tx():
                self.cat.execute("UPDATE drives SET session='idle', volume=NULL WHERE state='up'")
            self.library = open_library(cfg.library.spec, cfg.archive)
            reconcile_library(
                self.cat,
                self.library.changer,
                media_type=cfg.library.type,
                default_capacity=parse_size(cfg.raw["library"].get("default_capacity", 0))
                or VolumeClerk(self.cat).largest_capacity(),
            )
            max_size = cfg.mount.max_file_size or VolumeClerk(self.cat).largest_capacity()
            self.staging = Staging(
                self.cat,
                self.cache,
                cfg.archive_id,
                max_file_size=max_size or 2**63 - 1,
                on_queued=self.lm.wake,
            )
            self.lm.on_recall_failed = self._recall_failed_from_thread  # type: ignore[method-assign]
            self._start_movers()
            self._start_replication()
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

    def _start_replication(self) -> None:
        """The poster and outbox publisher ([post]) and the HTTP data service ([serve])."""
        if self.post is not None:
            from backend.replication.credentials import Credentials, CredentialsError
            from backend.replication.journal import ChangeJournal
            from backend.replication.outbox import Publisher
            from backend.replication.poster import ArchivePoster

            try:
                creds = Credentials.load(missing_ok=True)
            except CredentialsError as e:
                raise ArchiveError(str(e)) from None
            self.publisher = Publisher(
                str(self.config.catalog_path), self.post.broker, credentials=creds
            )
            self.publisher.start()
            self.poster = ArchivePoster(self.config, self.post, self.cache, self.publisher.wake)
            self.poster.start()
            self.journal = ChangeJournal(self.cat, self.take_origin, self.poster.wake)
        if self.serve_cfg is not None:
            from backend.replication.archive_source import ArchiveSource
            from backend.replication.credentials import Credentials, CredentialsError
            from backend.replication.http_service import serve

            auth = None
            if self.serve_cfg.auth:
                host, _, port = self.serve_cfg.listen.rpartition(":")
                try:
                    auth = Credentials.load(missing_ok=False).http_users(host, int(port))
                except CredentialsError as e:
                    raise ArchiveError(str(e)) from None
            self.http_source = ArchiveSource(self.config)
            self.http = serve(
                self.http_source,
                self.serve_cfg.listen,
                auth=auth,
                recall_wait=self.serve_cfg.recall_wait,
                url_prefix=self.serve_cfg.url_prefix,
            )
            log.info("serving the archive on %s", self.http.url)

    def _stop_replication(self) -> None:
        for name in ("http",):
            srv = getattr(self, name, None)
            if srv is not None:
                srv.shutdown()
        poster = getattr(self, "poster", None)
        if poster is not None:
            poster.stop()
        publisher = getattr(self, "publisher", None)
        if publisher is not None:
            publisher.stop()

    def _start_movers(self) -> None:
        assert self.library is not None
        inv = self.library.changer.inventory()
        names = {e.address: e.identifier for e in inv.of_type(ElementType.DRIVE)}
        for i, (address, drive) in enumerate(sorted(self.library.drives.items())):
            name = getattr(drive, "name", None) or names.get(address) or f"drive{i}"
            self._start_mover(name, address, drive)

    def _start_mover(self, name: str, address: int, drive) -> Mover:
        assert self.library is not None
        hooks = MoverHooks(
            recall_done=self._recall_done_from_thread,
            archived=self._archived_from_thread,
            archived_many=self._archived_many_from_thread,
            fault=self.take_fault,
        )
        m = Mover(
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
        self.movers = [x for x in self.movers if x.drive_name != name] + [m]
        m.start()
        return m

    async def set_drive(self, name: str, up: bool, reason: str) -> dict[str, Any]:
        """An operator takes a drive out of service or puts it back."""
        mover = next((m for m in self.movers if m.drive_name == name), None)
        if mover is None:
            raise ArchiveError(f"no drive named {name!r} (see reelfs drives)")
        if not up:
            with self.cat.tx():
                self.cat.execute(
                    "UPDATE drives SET state='down', reason=?, updated_ns=? WHERE name=?",
                    (reason or "set down by the operator", time.time_ns(), name),
                )
            events.record(
                self.cat,
                "drive_down",
                reason or "set down by the operator",
                subject=name,
                level="warning",
            )
            mover.down = True
            self.lm.set_down(name)
            # the mover finishes its current work, puts its tape home and stops
            await trio.to_thread.run_sync(mover.join, 300)
            return {"drive": name, "state": "down"}
        if mover.is_alive() and not mover.down:
            return {"drive": name, "state": "up"}
        await trio.to_thread.run_sync(mover.join, 300)
        with self.cat.tx():
            self.cat.execute(
                "UPDATE drives SET state='up', session='idle', reason=NULL, updated_ns=? "
                "WHERE name=?",
                (time.time_ns(), name),
            )
        events.record(self.cat, "drive_up", reason or "put back in service", subject=name)
        with self.lm.cond:
            self.lm.movers[name].down = False
        self._start_mover(name, mover.address, mover.drive)
        return {"drive": name, "state": "up"}

    def close(self, *, timeout: float = 120.0) -> None:
        """Stop the movers (each puts its tape home), close the library and the catalog."""
        self._stop_replication()
        self.lm.stopping = True
        self.lm.wake()
        deadline = time.monotonic() + timeout
        for m in self.movers:
            m.join(max(0.1, deadline - time.monotonic()))
            if m.is_alive():
                log.error("mover %s did not stop within %ss", m.drive_name, timeout)
        if self.library is not None:
            try:
                self.library.close()
            except Exception:
                log.exception("closing the library")
        for attr in ("staging",):
            st = getattr(self, attr, None)
            if st is not None:
                for oi in list(st.open_inodes.values()):
                    try:
                        st.flush_attrs(oi)
                    except Exception:
                        log.exception("saving attributes of inode %d", oi.inode)
        for attr in ("cat", "worker_cat"):
            c = getattr(self, attr, None)
            if c is not None:
                try:
                    if attr == "cat":
                        if (
                            self.recovery is not None
                            and all(not m.is_alive() for m in self.movers)
                            and c.one("SELECT 1 FROM bitfiles WHERE writers > 0") is None
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

    def _recall_done(self, bitfile: int, error: str | None) -> None:
        w = self.recall_waits.pop(bitfile, None)
        if w is not None:
            w.error = error
            w.event.set()

    def _archived(self, bitfile: int) -> None:
        self.archived_event.set()
        self.archived_event = trio.Event()

    # -- services in the trio loop ---------------------------------------------------------

    async def run_services(self, nursery: trio.Nursery) -> None:
        self.trio_token = trio.lowlevel.current_trio_token()
        nursery.start_soon(self._eviction_loop)
        await nursery.start(self._control_server)

    async def in_worker(self, fn, *args, **kw):
        """Run `fn(worker_cat, *args, **kw)` in a worker thread on the worker connection."""
        async with self.worker_lock:
            return await trio.to_thread.run_sync(
                functools.partial(fn, self.worker_cat, *args, **kw)
            )

    async def _eviction_loop(self) -> None:
        while True:
            await trio.sleep(EVICTION_INTERVAL)
            if self.cache.above_high():
                protect = frozenset(oi.bitfile for oi in self.staging.open_inodes.values())
                try:
                    await self.in_worker(to_watermark, self.cache, protect)
                except Exception:
                    log.exception("cache eviction failed")

    async def make_room(self, nbytes: int) -> bool:
        """Wait until `nbytes` more fit in the cache: evict, then flush and evict again,
        for at most `[cache] full_timeout`. False when it did not work out."""
        deadline = trio.current_time() + self.config.cache.full_timeout
        urged = False
        while True:
            need = self.cache.used + nbytes - self.cache.limit
            if need <= 0:
                return True
            protect = frozenset(oi.bitfile for oi in self.staging.open_inodes.values())
            await self.in_worker(evict, self.cache, need, protect=protect)
            if self.cache.used + nbytes <= self.cache.limit:
                return True
            if trio.current_time() >= deadline:
                return False
            if not urged:
                RequestQueue(self.cat).make_all_urgent()
                self.lm.wake()
                urged = True
            with trio.move_on_at(min(deadline, trio.current_time() + 1.0)):
                await self.archived_event.wait()

    async def wait_recall(self, bitfile: int) -> str | None:
        """Queue a recall of `bitfile` if needed and wait for it; returns the error or None."""
        files = FileClerk(self.cat, self.config.archive_id)
        while True:
            w = self.recall_waits.get(bitfile)
            if w is None:
                w = self.recall_waits[bitfile] = RecallWait()
            bf = files.get(bitfile)
            if bf is None:
                return "file deleted"
            if bf.state in (ARCHIVED, DIRTY):
                self.recall_waits.pop(bitfile, None)
                return None
            try:
                if queue_recall(self.cat, self.config.archive_id, bitfile):
                    self.lm.wake()
            except ArchiveError as e:
                self.recall_waits.pop(bitfile, None)
                return str(e)
            with trio.move_on_after(RECALL_POLL):
                await w.event.wait()
            if w.event.is_set() and w.error:
                return w.error
            # loop: re-read the state (cached now, or still waiting)

    def request_recall(self, bitfile: int) -> None:
        """Queue without waiting (O_NONBLOCK opens)."""
        if queue_recall(self.cat, self.config.archive_id, bitfile):
            self.lm.wake()

    def recalling(self, bitfile: int) -> bool:
        return RequestQueue(self.cat).has(bitfile, "recall")

    # -- control socket --------------------------------------------------------------------

    async def _control_server(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        from backend.admin.control import bind

        sock = trio.socket.from_stdlib_socket(bind(self.config.socket_path))
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                conn, _ = await sock.accept()
                nursery.start_soon(self._serve_control, trio.SocketStream(conn))

    async def _serve_control(self, stream: trio.SocketStream) -> None:
        async with stream:
            buf = b""
            try:
                with trio.fail_after(30):
                    while not buf.endswith(b"\n"):
                        chunk = await stream.receive_some(65536)
                        if not chunk:
                            break
                        buf += chunk
                        if len(buf) > 4 * 1024 * 1024:
                            raise ValueError("request too large")
                req = json.loads(buf)
                answer = await self.control(req)
                answer["ok"] = True
            except Exception as e:
                if not isinstance(e, ArchiveError | ValueError | OSError):
                    log.exception("control request failed")
                answer = {"ok": False, "error": str(e)}
            try:
                await stream.send_all(json.dumps(answer, default=str).encode())
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    async def control(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        inodes = [int(i) for i in req.get("inodes", [])]
        if op == "ping":
            return {
                "pid": os.getpid(),
                "mountpoint": self.mountpoint,
                "archive": str(self.config.archive),
            }
        if op == "wake":
            self.lm.wake()
            return {}
        if op == "status":
            return self.status()
        if op == "flush":
            s = await self.in_worker(admin.flush, inodes)
            self.lm.wake()
            return s.as_dict()
        if op == "release":
            s = await self.in_worker(admin.release, self.cache, inodes)
            return s.as_dict()
        if op == "recall":
            s, queued = await self.in_worker(admin.recall, self.config.archive_id, inodes)
            self.lm.wake()
            return {**s.as_dict(), "queued": queued}
        if op in ("pin", "unpin"):
            s = await self.in_worker(admin.pin, inodes, op == "pin")
            return s.as_dict()
        if op == "drain":
            self.lm.drain = True
            RequestQueue(self.cat).make_all_urgent()
            self.lm.wake()
            files, nbytes = admin.pending_writes(self.cat)
            return {"files": files, "bytes": nbytes}
        if op == "undrain":
            self.lm.drain = False
            return {}
        if op == "expect_origin":
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
        if op == "library":
            return await self.library_op(req)
        if op == "drive":
            return await self.set_drive(
                str(req.get("name")), req.get("state") == "up", str(req.get("reason") or "")
            )
        if op == "inject_fault":
            name = str(req.get("target", ""))
            self.faults[name] = int(req.get("count", 1))
            log.warning("fault injection armed: %s x%d", name, self.faults[name])
            return {}
        if op in tapejobs.OPS:
            return await tapejobs.control(self, op, req)
        raise ArchiveError(f"unknown control operation {op!r}")

    async def library_op(self, req: dict[str, Any]) -> dict[str, Any]:
        """inventory / import / export VOLUME / clean DRIVE, under the changer lock."""
        assert self.library is not None
        changer = self.library.changer
        action = req.get("action")

        def locked(fn, *args, **kw):
            def run(cat: Catalog) -> Any:
                with self.changer_lock:
                    return fn(cat, changer, *args, **kw)

            return run

        if action == "inventory":
            return {"elements": await self.in_worker(locked(library_ops.inventory))}
        if action == "import":
            cfg = self.config
            out = await self.in_worker(
                locked(
                    library_ops.import_cartridges,
                    media_type=cfg.library.type,
                    default_capacity=parse_size(cfg.raw["library"].get("default_capacity", 0))
                    or VolumeClerk(self.cat).largest_capacity(),
                )
            )
            self.lm.wake()
            return out
        if action == "export":
            label = str(req.get("volume"))
            previous = library_ops.mark_exporting(self.cat, label)
            try:
                await self._dismount_volume(label)
                return await self.in_worker(locked(library_ops.export_volume, label))
            except BaseException:
                library_ops.undo_exporting(self.cat, label, previous)
                raise
        if action == "clean":
            name = str(req.get("drive"))
            if not any(m.drive_name == name for m in self.movers):
                raise ArchiveError(f"no drive named {name!r} (see reelfs drives)")
            cleaning.mark_needed(self.cat, name, "requested by the operator")
            self.lm.wake()
            return {"drive": name, "queued": True}
        raise ArchiveError(f"unknown library action {action!r}")

    async def _dismount_volume(self, label: str, timeout: float = 120.0) -> None:
        """Have the mover holding `label` put it home (it is taken out of service already)."""
        mover = next((m for m in self.movers if m.mounted == label), None)
        if mover is None:
            return
        mover.dismount_requested = True
        self.lm.wake()
        with trio.move_on_after(timeout):
            while mover.mounted == label:
                await trio.sleep(0.05)
        if mover.mounted == label:
            raise ArchiveError(
                f"volume {label} is still in use by {mover.drive_name}; "
                "try again when its transfer is done"
            )

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "mountpoint": self.mountpoint,
            "cache": {"used": self.cache.used, "limit": self.cache.limit},
            "open_files": len(self.staging.open_inodes),
            "movers": [
                {
                    "drive": m.drive_name,
                    "session": m.session,
                    "volume": m.mounted,
                    "down": m.down,
                    "alive": m.is_alive(),
                }
                for m in self.movers
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


def eio(msg: str) -> OSError:
    return OSError(errno.EIO, msg)


__all__ = ["RELEASED", "ArchiveDaemon", "ArchiveLocked", "Path", "lock_archive"]

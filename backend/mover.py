"""A mover: one thread per tape drive, moving data between the cache and tape.

Like CTA's tape daemon, a mover runs sessions with explicit states recorded in the
`drives` table (`cleaner`, `mounting`, `positioning`, `transferring`, `unloading`,
`unmounting`, `idle`, `down`). Its first session is a *cleaner session*: if the changer
says a cartridge sits in its drive (a crash left it there), it unloads it and puts it
home before anything else. Whatever happens during a session, the mover still tries to
unload and put the tape home.

Writes: each file becomes one tape file (a pax archive followed by a filemark, see
`drivers.formats.pax`); once the filemark is on tape, the copy and the `archived` state
are recorded in one transaction, only if the file did not change meanwhile. Recalls: read
into a temporary cache file, verify size and checksums, then publish it.

Errors act on their class: media -> the volume is suspect and the work goes elsewhere;
drive -> the drive is down and the work goes to another drive; end of medium -> the
volume is full and the file is written again on another volume (never split).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from backend import cleaning
from backend.cache import Cache
from backend.catalog import events
from backend.catalog.db import Catalog, open_catalog
from backend.catalog.files import ARCHIVED, DIRTY, RELEASED, FileClerk
from backend.catalog.namespace import Namespace
from backend.catalog.queue import RECALL, RequestQueue
from backend.catalog.volumes import FULL, MISSING, READABLE, READONLY, SUSPECT, VolumeClerk
from backend.checksum import Checksummer
from backend.config import Config
from backend.eviction import evict
from backend.library_manager import LibraryManager, Request, Work
from drivers.formats.pax import MemberInfo, ShortSourceError, TapeFileWriter, read_member
from drivers.tape import (
    ElementType,
    ErrorClass,
    MediaChanger,
    NotReadyError,
    TapeDrive,
    TapeError,
)

log = logging.getLogger("reelfs.mover")

RETRY_DELAY = 5.0


class VolumeUnavailable(Exception):
    pass


class ChecksumMismatch(Exception):
    pass


@dataclass
class MoverHooks:
    """How a mover tells the rest of the daemon what happened (called from its thread)."""

    recall_done: Callable[[int, str | None], None] = lambda bitfile, error: None
    archived: Callable[[int], None] = lambda bitfile: None


class Mover(threading.Thread):
    def __init__(
        self,
        *,
        name: str,
        address: int,
        drive: TapeDrive,
        changer: MediaChanger,
        changer_lock: threading.Lock,
        lm: LibraryManager,
        config: Config,
        cache: Cache,
        hooks: MoverHooks,
    ) -> None:
        super().__init__(name=f"mover-{name}", daemon=True)
        self.drive_name = name
        self.address = address
        self.drive = drive
        self.changer = changer
        self.changer_lock = changer_lock
        self.lm = lm
        self.config = config
        self.cache = cache
        self.hooks = hooks
        self.block_size = config.library.block_size
        self.mounted: str | None = None
        self.mount_started = 0.0
        self.last_activity = time.monotonic()
        self.session = "idle"
        self.down = False
        self.dismount_requested = False  # the operator wants the mounted volume out
        self.cat: Catalog | None = None
        self.lm.register(name)

    # -- the thread ------------------------------------------------------------------------

    def run(self) -> None:
        self.cat = open_catalog(self.config.catalog_path)
        try:
            self._register_drive()
            if self._is_down():
                self.lm.set_down(self.drive_name)
                return
            self.cleaner_session()
            cleaning.check_drive(self)
            while not self.lm.stopping and not self.down:
                if cleaning.needed(self.cat, self.drive_name):
                    self._clean()  # between sessions, before any new work
                    if self.down:
                        break
                work = self.lm.next_work(self.drive_name, self.cat)
                if work is None:
                    if self.mounted and (
                        self.dismount_requested or self._idle() >= self.config.mover.idle_dismount
                    ):
                        self.dismount()
                    self.dismount_requested = False
                    wait = 1.0
                    if self.mounted:
                        wait = max(0.05, self.config.mover.idle_dismount - self._idle())
                    self.lm.wait(min(wait, 1.0))
                    continue
                try:
                    self.execute(work)
                finally:
                    self.last_activity = time.monotonic()
                    self.lm.finished(self.drive_name)
                if not self.down:
                    # CTA's "mounted, idle": the tape stays for a while in case more comes
                    self._session("mounted" if self.mounted else "idle")
        except Exception:
            log.exception("mover %s crashed", self.drive_name)
            events.record(
                self.cat,
                "mover_crashed",
                "mover thread stopped on an unexpected error",
                subject=self.drive_name,
                level="error",
            )
        finally:
            try:
                if self.mounted:
                    self.dismount()
            except Exception as e:
                log.error(
                    "mover %s: could not dismount %s at exit: %s", self.drive_name, self.mounted, e
                )
            if not self.down:
                self._session("idle")
            self.cat.close()

    def _idle(self) -> float:
        return time.monotonic() - self.last_activity

    def _register_drive(self) -> None:
        assert self.cat is not None
        with self.cat.tx():
            self.cat.execute(
                "INSERT INTO drives(name, address, serial, state, session, updated_ns) "
                "VALUES (?,?,?,?,?,?) ON CONFLICT(name) DO UPDATE SET address=excluded.address, "
                "serial=excluded.serial, updated_ns=excluded.updated_ns",
                (
                    self.drive_name,
                    self.address,
                    getattr(self.drive, "serial", ""),
                    "up",
                    "idle",
                    time.time_ns(),
                ),
            )

    def _is_down(self) -> bool:
        assert self.cat is not None
        return self.cat.value("SELECT state FROM drives WHERE name=?", (self.drive_name,)) == "down"

    def _session(self, state: str) -> None:
        self.session = state
        assert self.cat is not None
        with self.cat.tx():
            self.cat.execute(
                "UPDATE drives SET session=?, volume=?, updated_ns=? WHERE name=?",
                (state, self.mounted, time.time_ns(), self.drive_name),
            )

    # -- mounting --------------------------------------------------------------------------

    def cleaner_session(self) -> None:
        """Put home any cartridge a previous session left in this drive."""
        with self.changer_lock:
            inv = self.changer.inventory()
        el = inv.by_address(self.address)
        if not el.full:
            return
        self._session("cleaner")
        label = el.barcode or "?"
        events.record(
            self.cat,
            "cleaner_session",
            f"found {label} in the drive; unloading it",
            subject=self.drive_name,
            level="warning",
            volume=label,
        )
        try:
            self.drive.unload()
        except NotReadyError:
            pass  # never loaded, or already unloaded
        self.mounted = label
        self._put_home(label, el.source)
        self.mounted = None
        self._session("idle")

    def mount(self, label: str) -> None:
        assert self.cat is not None
        vc = VolumeClerk(self.cat)
        vol = vc.get(label)
        if vol is None:
            raise VolumeUnavailable(f"volume {label} is not in the catalog")
        self.lm.set_volume(self.drive_name, label)
        self.mounted = label
        self._session("mounting")
        with self.changer_lock:
            inv = self.changer.inventory()
            el = inv.find(label)
            if el is None:
                self.mounted = None
                vc.set_state(label, MISSING, "not found in the library")
                events.record(
                    self.cat,
                    "volume_missing",
                    "volume not found in the library",
                    subject=label,
                    level="error",
                )
                raise VolumeUnavailable(f"volume {label} is not in the library")
            if el.address != self.address:
                if el.type == ElementType.DRIVE:
                    self.mounted = None
                    raise VolumeUnavailable(f"volume {label} is in another drive ({el.address})")
                if el.type == ElementType.SLOT and vol.home != el.address:
                    vc.set_home(label, el.address)
                self.changer.move(el.address, self.address)
        self.drive.load()
        self.drive.set_block_size(self.block_size)
        vc.mounted(label)
        self.mount_started = time.monotonic()
        events.record(self.cat, "mount", f"mounted {label}", subject=self.drive_name, volume=label)

    def _clean(self) -> None:
        if self.mounted:
            self.dismount()
        try:
            cleaning.clean_session(self, self.config.library.cleaning_uses)
        except TapeError as e:
            log.error("mover %s: cleaning failed: %s", self.drive_name, e)
            events.record(
                self.cat, "cleaning_failed", str(e), subject=self.drive_name, level="error"
            )
            if e.error_class == ErrorClass.DRIVE:
                self._drive_down(f"cleaning failed: {e.message}")
            else:
                cleaning.mark_done(self.cat, self.drive_name)

    def dismount(self) -> None:
        label = self.mounted
        if label is None:
            return
        cleaning.check_drive(self)
        stats: dict = {}
        try:
            stats = dict(self.drive.statistics())
        except TapeError:
            pass
        self._session("unloading")
        try:
            self.drive.unload()
        except NotReadyError:
            pass
        self._put_home(label, None)
        stats["mount_seconds"] = round(time.monotonic() - self.mount_started, 3)
        events.record(
            self.cat,
            "dismount",
            f"dismounted {label}",
            subject=self.drive_name,
            volume=label,
            **stats,
        )
        self.mounted = None
        self.lm.set_volume(self.drive_name, None)
        self._session("idle")

    def _put_home(self, label: str, source: int | None) -> None:
        assert self.cat is not None
        self._session("unmounting")
        vc = VolumeClerk(self.cat)
        vol = vc.get(label)
        with self.changer_lock:
            inv = self.changer.inventory()
            candidates = [a for a in (vol.home if vol else None, source) if a is not None]
            empty_slots = [e.address for e in inv.of_type(ElementType.SLOT) if not e.full]
            home = next(
                (a for a in candidates if a in empty_slots),
                empty_slots[0] if empty_slots else None,
            )
            if home is None:
                raise TapeError(f"no free slot to put {label} back", error_class=ErrorClass.DRIVE)
            self.changer.move(self.address, home)
        if vol is not None and vol.home != home:
            vc.set_home(label, home)

    # -- work ------------------------------------------------------------------------------

    def execute(self, work: Work) -> None:
        assert self.cat is not None
        pending = list(work.requests)
        try:
            if self.mounted != work.volume:
                if self.mounted:
                    self.dismount()
                self.mount(work.volume)
            if work.kind == RECALL:
                self._recall(work, pending)
            else:
                self._write(work, pending)
        except VolumeUnavailable as e:
            self._fail_or_requeue(work, pending, str(e), volume_bad=True)
        except TapeError as e:
            self._tape_error(work, pending, e)
        except Exception as e:
            log.exception("mover %s: %s work on %s failed", self.drive_name, work.kind, work.volume)
            self._requeue(pending, f"unexpected error: {e}", delay=RETRY_DELAY)
            raise

    # writes

    def _write(self, work: Work, pending: list[Request]) -> None:
        assert self.cat is not None
        vc = VolumeClerk(self.cat)
        vol = vc.get(work.volume)
        assert vol is not None
        self._session("positioning")
        if vol.eod_block == 0:
            self.drive.rewind()
        else:
            self.drive.locate(vol.eod_block)
        self._session("transferring")
        while pending:
            req = pending[0]
            outcome = self._write_one(req, work.volume)
            pending.pop(0)
            if outcome == "full":
                vc.set_state(work.volume, FULL)
                events.record(
                    self.cat,
                    "volume_full",
                    "early warning reached; volume closed",
                    subject=work.volume,
                )
                break
        self._requeue(pending, None)

    def _write_one(self, req: Request, label: str) -> str:
        """Write one file; returns 'ok', 'skipped' or 'full' (written, volume now full)."""
        assert self.cat is not None
        files = FileClerk(self.cat, self.config.archive_id)
        bf = files.get(req.bitfile)
        if bf is None or bf.state != DIRTY or bf.inode is None or bf.writers:
            RequestQueue(self.cat).done(req.id)
            return "skipped"
        ns = Namespace(self.cat)
        try:
            node = ns.get(bf.inode)
        except OSError:
            RequestQueue(self.cat).done(req.id)
            return "skipped"
        path = ns.path_of(bf.inode) or f"/.orphans/{bf.bfid}"
        vol = VolumeClerk(self.cat).get(label)
        assert vol is not None
        start_block, fileno = vol.eod_block, vol.next_fileno
        ck = Checksummer()
        info = MemberInfo(
            name=path.lstrip("/") or bf.bfid,
            size=bf.size,
            mtime_ns=node.mtime_ns,
            mode=node.mode & 0o7777,
            uid=node.uid,
            gid=node.gid,
            records={
                "REELFS.bfid": bf.bfid,
                "REELFS.version": str(bf.version),
                "REELFS.family": bf.family or "",
                "REELFS.path": path,
                "REELFS.archive": self.config.archive_id,
            },
        )
        if bf.adler32 is not None and bf.crc32c is not None:
            info.records["REELFS.adler32"] = f"{bf.adler32:08x}"
            info.records["REELFS.crc32c"] = f"{bf.crc32c:08x}"
        writer = TapeFileWriter(self.drive, self.block_size)
        try:
            with open(self.cache.path(bf.bfid), "rb", buffering=0) as src:
                extent = writer.add(info, src, on_data=ck.update)
        except (FileNotFoundError, ShortSourceError) as e:
            # The cache file changed under us: the file is being modified again. What was
            # written of it is abandoned: the next file starts at the same place.
            RequestQueue(self.cat).requeue(req.id, f"source changed: {e}", delay=RETRY_DELAY)
            self.drive.locate(start_block)
            return "skipped"
        records = writer.finish()
        sums = ck.sums
        with self.cat.tx():
            fresh = files.get(bf.id)
            good = (
                fresh is not None
                and fresh.state == DIRTY
                and fresh.generation == bf.generation
                and fresh.writers == 0
                and fresh.size == bf.size
            )
            mismatch = (
                good
                and fresh is not None
                and fresh.adler32 is not None
                and ((fresh.adler32, fresh.crc32c) != (sums.adler32, sums.crc32c))
            )
            self.cat.execute(
                "INSERT INTO tape_copies(bitfile, volume, copy, fileno, block, record, offset, "
                "length, state, written_ns) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    bf.id,
                    label,
                    1,
                    fileno,
                    start_block,
                    extent.record,
                    extent.offset,
                    bf.size,
                    "active" if good and not mismatch else "deleted",
                    time.time_ns(),
                ),
            )
            self.cat.execute(
                "UPDATE volumes SET bytes_used = bytes_used + ?, files = files + 1, "
                "next_fileno = next_fileno + 1, eod_block = eod_block + ? WHERE label=?",
                (records * self.block_size, records + 1, label),
            )
            if good and not mismatch:
                self.cat.execute(
                    "UPDATE bitfiles SET state=?, archived_ns=?, path=?, adler32=?, crc32c=?, "
                    "error=NULL WHERE id=?",
                    (ARCHIVED, time.time_ns(), path, sums.adler32, sums.crc32c, bf.id),
                )
                self.cat.execute("DELETE FROM requests WHERE id=?", (req.id,))
            elif mismatch:
                msg = (
                    f"cache data of {bf.bfid} does not match its checksums "
                    f"(adler32 {sums.adler32:08x}, expected {fresh.adler32:08x})"
                )
                self.cat.execute("UPDATE bitfiles SET error=? WHERE id=?", (msg, bf.id))
                events.record(self.cat, "checksum_mismatch", msg, subject=bf.bfid, level="error")
                self.cat.execute(
                    "UPDATE requests SET state='queued', drive=NULL, error=?, not_before_ns=? "
                    "WHERE id=?",
                    (msg, time.time_ns() + int(60e9), req.id),
                )
            else:
                self.cat.execute(
                    "UPDATE requests SET state='queued', drive=NULL WHERE id=?", (req.id,)
                )
        if good and not mismatch:
            self.hooks.archived(bf.id)
        return "full" if writer.early_warning else "ok"

    # recalls

    def _recall(self, work: Work, pending: list[Request]) -> None:
        assert self.cat is not None
        self._session("transferring")
        while pending:
            req = pending[0]
            self._recall_one(req, work.volume)
            pending.pop(0)

    def _recall_one(self, req: Request, label: str) -> None:
        assert self.cat is not None
        files = FileClerk(self.cat, self.config.archive_id)
        queue = RequestQueue(self.cat)
        bf = files.get(req.bitfile)
        if bf is None or bf.state != RELEASED:
            queue.done(req.id)
            self.hooks.recall_done(req.bitfile, None if bf and bf.cached else "file deleted")
            return
        copy = next((c for c in files.copies(bf.id) if c.volume == label), None)
        if copy is None:
            self._recall_elsewhere(req, bf.id, label, f"no copy of {bf.bfid} on {label}")
            return
        if not self.cache.try_charge(bf.size):
            evict(self.cat, self.cache, bf.size - (self.cache.limit - self.cache.used))
            if not self.cache.try_charge(bf.size):
                queue.requeue(req.id, "waiting for room in the cache", delay=RETRY_DELAY)
                events.record(
                    self.cat,
                    "cache_full",
                    f"no room to recall {bf.bfid}",
                    subject=bf.bfid,
                    level="warning",
                )
                return
        temp = self.cache.temp_path(bf.bfid)
        try:
            self.drive.locate(copy.block + copy.record)
            ck = Checksummer()
            with open(temp, "wb", buffering=0) as dest:
                info = read_member(
                    self.drive, self.block_size, copy.offset, dest, on_data=ck.update
                )
            if info.size != bf.size or ck.length != bf.size:
                raise ChecksumMismatch(
                    f"{bf.bfid} on {copy.location}: {ck.length} bytes read, {bf.size} expected"
                )
            if bf.adler32 is not None and (ck.adler, ck.crc) != (bf.adler32, bf.crc32c):
                raise ChecksumMismatch(
                    f"{bf.bfid} on {copy.location}: checksums {ck.adler:08x}/{ck.crc:08x}, "
                    f"expected {bf.adler32:08x}/{bf.crc32c:08x}"
                )
        except (TapeError, ChecksumMismatch) as e:
            _unlink(temp)
            self.cache.uncharge(bf.size)
            if isinstance(e, TapeError) and e.error_class == ErrorClass.DRIVE:
                raise
            events.record(
                self.cat,
                "copy_bad",
                f"copy unreadable: {e}",
                subject=bf.bfid,
                level="error",
                volume=label,
            )
            self._recall_elsewhere(req, bf.id, label, str(e))
            if isinstance(e, TapeError) and e.error_class == ErrorClass.MEDIA:
                raise
            return
        except BaseException:
            _unlink(temp)
            self.cache.uncharge(bf.size)
            raise
        self.cache.adopt(temp, bf.bfid)
        with self.cat.tx():
            self.cat.execute(
                "UPDATE bitfiles SET state=?, error=NULL, accessed_ns=? WHERE id=? AND state=?",
                (ARCHIVED, time.time_ns(), bf.id, RELEASED),
            )
            self.cat.execute("DELETE FROM requests WHERE id=?", (req.id,))
        self.hooks.recall_done(bf.id, None)

    def _recall_elsewhere(self, req: Request, bitfile: int, bad_volume: str, why: str) -> None:
        """Point the recall at another good copy, or fail it with `why`."""
        assert self.cat is not None
        files = FileClerk(self.cat, self.config.archive_id)
        vc = VolumeClerk(self.cat)
        for c in files.copies(bitfile):
            v = vc.get(c.volume)
            if c.volume != bad_volume and v is not None and v.state in READABLE:
                with self.cat.tx():
                    self.cat.execute(
                        "UPDATE requests SET volume=?, fileno=?, block=?, state='queued', "
                        "drive=NULL, error=? WHERE id=?",
                        (c.volume, c.fileno, c.block + c.record, why, req.id),
                    )
                return
        msg = f"recall failed: {why}"
        with self.cat.tx():
            self.cat.execute("UPDATE bitfiles SET error=? WHERE id=?", (msg, bitfile))
            self.cat.execute("DELETE FROM requests WHERE id=?", (req.id,))
        self.hooks.recall_done(bitfile, msg)

    # errors

    def _requeue(self, pending: list[Request], error: str | None, delay: float = 0.0) -> None:
        assert self.cat is not None
        q = RequestQueue(self.cat)
        for r in pending:
            q.requeue(r.id, error, delay=delay)
        pending.clear()

    def _fail_or_requeue(
        self, work: Work, pending: list[Request], why: str, volume_bad: bool
    ) -> None:
        if work.kind == RECALL:
            for r in list(pending):
                self._recall_elsewhere(r, r.bitfile, work.volume, why)
            pending.clear()
        else:
            self._requeue(pending, why, delay=RETRY_DELAY)

    def _tape_error(self, work: Work, pending: list[Request], e: TapeError) -> None:
        assert self.cat is not None
        cls = e.error_class
        label = work.volume
        log.error("mover %s: %s on %s: %s", self.drive_name, work.kind, label, e)
        if cls == ErrorClass.DRIVE:
            self._drive_down(str(e))
            self._requeue(pending, f"drive {self.drive_name} failed: {e.message}")
            return
        vc = VolumeClerk(self.cat)
        if cls in (ErrorClass.MEDIA, ErrorClass.BLANK):
            vc.set_state(label, SUSPECT, e.message)
            events.record(
                self.cat,
                "volume_suspect",
                f"media error: {e.message}",
                subject=label,
                level="error",
                drive=self.drive_name,
                alerts=sorted(e.alerts),
            )
            self._fail_or_requeue(work, pending, f"media error on {label}: {e.message}", True)
        elif cls == ErrorClass.DATA_PROTECT:
            vc.set_state(label, READONLY, f"write-protected: {e.message}")
            events.record(
                self.cat,
                "volume_readonly",
                f"write-protected: {e.message}",
                subject=label,
                level="warning",
            )
            self._requeue(pending, None)
        elif cls == ErrorClass.END_OF_MEDIUM:
            vc.set_state(label, FULL, "end of medium")
            events.record(self.cat, "volume_full", f"end of medium: {e.message}", subject=label)
            self._requeue(pending, None)
        else:
            events.record(
                self.cat,
                "tape_error",
                str(e),
                subject=self.drive_name,
                level="warning",
                volume=label,
            )
            retryable = [r for r in pending if r.tries < self.config.mover.retries]
            exhausted = [r for r in pending if r.tries >= self.config.mover.retries]
            self._requeue(retryable, str(e), delay=RETRY_DELAY)
            if exhausted:
                self._fail_or_requeue(work, exhausted, str(e), False)
        try:
            self.dismount()
        except TapeError as e2:
            if e2.error_class == ErrorClass.DRIVE:
                self._drive_down(f"dismount failed: {e2.message}")

    def _drive_down(self, reason: str) -> None:
        assert self.cat is not None
        self.down = True
        events.record(self.cat, "drive_down", reason, subject=self.drive_name, level="error")
        self.lm.set_down(self.drive_name)
        stuck = None
        try:
            self.drive.unload()
        except TapeError:
            pass
        if self.mounted:
            try:
                self._put_home(self.mounted, None)
            except TapeError as e:
                stuck = self.mounted
                log.error("drive %s down and %s stuck in it: %s", self.drive_name, stuck, e)
            # a stuck tape is the business of the next start's cleaner session
            self.mounted = None
        with self.cat.tx():
            self.cat.execute(
                "UPDATE drives SET state='down', session='down', volume=?, reason=?, "
                "updated_ns=? WHERE name=?",
                (stuck, reason, time.time_ns(), self.drive_name),
            )


def _unlink(p: Path) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass

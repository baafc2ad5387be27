"""A mover: one thread per tape drive, moving data between the cache and tape.

Like CTA's tape daemon, a mover runs sessions with explicit states recorded in the
`drives` table (`cleaner`, `mounting`, `positioning`, `transferring`, `verifying`,
`unloading`, `unmounting`, `idle`, `down`). Its first session is a *cleaner session*: if the changer
says a cartridge sits in its drive (a crash left it there), it unloads it and puts it
home before anything else. Whatever happens during a session, the mover still tries to
unload and put the tape home.

Mounts: the volume's label is checked against the catalog (backend.tapelayout): a
labelled volume must carry its VOL1, a volume the catalog has blank must be blank (or
hold this archive's own uncommitted data); otherwise the volume goes `noaccess`, with an
event, and its work goes elsewhere.

Writes: small files are aggregated (backend.aggregation): each tape file is one pax
archive of one or many members (`drivers.formats.pax`), between ANSI header and trailer
labels on a labelled volume (VOL1 is written at a blank volume's first use). Once the
tape file's last filemark is on tape, and it read back right when the family asks for
read-after-write verification, all its members are recorded in one transaction, each
copy counting only if its file did not change meanwhile. A family may keep several
copies, each written from its own pool's request (backend.catalog.pools): a file is
`archived` by the transaction that records the last of them.

Recalls locate straight to the member's record, read it into a temporary cache file
(pax, or a foreign tar/cpio member), verify size, bfid and checksums, then publish it. A
copy that reads wrong is marked bad (a media error of that copy) and the recall tries the
file's other copies; it fails, and `open` gets EIO, only when no good copy is left.
A recall that succeeds queues the copies the file lacks (found bad, or never made) to be
written again from the cache; the write path takes such an `archived` file like a dirty
one and records the new copy (event `copy_recreated`) without changing its state.

Operator jobs (`TapeJob`: tape read, import of a foreign volume) run here too, with the
volume mounted, so that the daemon stays the only user of the library.

Errors act on their class: media -> the volume is suspect and the work goes elsewhere;
drive -> the drive is down and the work goes to another drive; end of medium -> the
volume is full and the file is written again on another volume (never split).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from backend.cache.checksum import Checksummer, Sums
from backend.cache.eviction import evict
from backend.cache.store import Cache
from backend.catalog import events
from backend.catalog.db import Catalog, open_catalog
from backend.catalog.families import family_of_pool, pool_name, split_pool
from backend.catalog.files import ARCHIVED, DIRTY, RELEASED, Bitfile, FileClerk, TapeCopy
from backend.catalog.namespace import Namespace
from backend.catalog.queue import RECALL, RequestQueue
from backend.catalog.volumes import (
    FULL,
    MISSING,
    NOACCESS,
    READABLE,
    READONLY,
    SUSPECT,
    VolumeClerk,
)
from backend.config import Config
from backend.errors import ArchiveError
from backend.library import cleaning
from backend.library.manager import JOB, LibraryManager, Request, Work
from backend.tape import foreign
from backend.tape.aggregation import plan
from backend.tape.layout import (
    ANSI,
    NONE,
    VolumeFormat,
    data_start,
    describe,
    file_identifier,
    objects_of,
    read_bot,
    volser_for,
    volume_format,
)
from drivers.formats.ansi import write_header, write_trailer, write_vol1
from drivers.formats.pax import (
    REELFS_BFID,
    MemberExtent,
    MemberInfo,
    ShortSourceError,
    TapeFileWriter,
    iter_members,
    read_member,
    reelfs_records,
)
from drivers.tape import (
    ElementType,
    ErrorClass,
    MediaChanger,
    MediaError,
    NotReadyError,
    TapeDrive,
    TapeError,
)

log = logging.getLogger("reelfs.mover")

RETRY_DELAY = 5.0
MAX_FAILURES = 3  # unexpected errors in a row before the mover takes its drive down


class VolumeUnavailable(Exception):
    pass


class LabelMismatch(VolumeUnavailable):
    """The tape is not what the catalog says: the volume was set `noaccess`."""


class ChecksumMismatch(Exception):
    pass


class VerifyFailed(MediaError):
    """A tape file just written does not read back as written."""


class CopyReadError(MediaError):
    """A recall's read of one copy failed: the volume is suspect, but the other files of
    the batch are still worth reading from it."""


@dataclass
class _Member:
    """One file of a tape file being written."""

    req: Request
    bf: Bitfile
    path: str
    info: MemberInfo
    extent: MemberExtent | None = None
    sums: Sums | None = None


class _SourceChanged(Exception):
    def __init__(self, member: _Member, cause: ShortSourceError) -> None:
        super().__init__(str(cause))
        self.member = member


@dataclass
class MoverHooks:
    """How a mover tells the rest of the daemon what happened (called from its thread)."""

    recall_done: Callable[[int, str | None], None] = lambda bitfile, error: None
    archived: Callable[[int], None] = lambda bitfile: None
    # Once per tape file with every file it archived, instead of `archived` per file: a
    # tape file of small files archives thousands at once, and a hook that waits for the
    # daemon's event loop costs a round trip each time.
    archived_many: Callable[[list[int]], None] | None = None
    # tests arm failures through the daemon's control socket ("inject_fault mover")
    fault: Callable[[str], bool] = lambda name: False


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
        self.record_mode = self.block_size  # the mounted volume's: 0 for variable records
        self.mounted: str | None = None
        self.mount_started = 0.0
        self.last_activity = time.monotonic()
        self.session = "idle"
        self.down = False
        self.dismount_requested = False  # the operator wants the mounted volume out
        self.failures = 0  # unexpected errors in a row
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

    def mount(self, label: str, *, check_label: bool = True) -> None:
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
        fmt = volume_format(self.cat, label)
        # a volume keeps the record size it was started with; foreign ones are read in
        # variable-length mode, whatever their records
        self.block_size = (fmt and fmt.block_size) or self.config.library.block_size
        self.record_mode = 0 if fmt is not None and fmt.foreign else self.block_size
        self.drive.set_block_size(self.record_mode)
        vc.mounted(label)
        self.mount_started = time.monotonic()
        events.record(self.cat, "mount", f"mounted {label}", subject=self.drive_name, volume=label)
        if check_label and fmt is not None:
            self._check_label(fmt)

    def _check_label(self, fmt: VolumeFormat) -> None:
        """Refuse a volume whose tape is not what the catalog says it is: a labelled one
        must carry its VOL1, one the catalog has blank must be blank (or hold this
        archive's own data, written before a crash and never committed)."""
        if fmt.foreign:
            return
        layout = fmt.layout(self.config.library.label_format)
        blank = fmt.label_format is None and fmt.eod_block == 0
        if layout == NONE and not blank:
            return
        bot = read_bot(self.drive)
        expected = volser_for(fmt.label)
        ours = self.config.archive_id
        vol1 = bot.vol1
        if blank:
            if (
                bot.kind == "blank"
                or (vol1 is not None and vol1.volser == expected and vol1.owner == ours)
                or (bot.kind == "data" and bot.archive_id == ours)
            ):
                return
            self._refuse_volume(
                fmt.label,
                f"the catalog has it blank but {describe(bot)}: not overwriting it "
                "(reelfs import-volume adopts a foreign tape)",
            )
        if vol1 is not None and vol1.volser == expected:
            return
        self._refuse_volume(fmt.label, f"{describe(bot)}, expected VOL1 {expected}")

    def _refuse_volume(self, label: str, why: str) -> None:
        assert self.cat is not None
        VolumeClerk(self.cat).set_state(label, NOACCESS, why)
        events.record(
            self.cat, "label_mismatch", why, subject=label, level="error", drive=self.drive_name
        )
        self.dismount()
        raise LabelMismatch(f"volume {label} refused: {why}")

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
        if work.kind == JOB:
            self._run_job(work)
            return
        pending = list(work.requests)
        try:
            if self.hooks.fault("mover"):
                raise RuntimeError("injected fault in the mover")
            if self.mounted != work.volume:
                if self.mounted:
                    self.dismount()
                self.mount(work.volume)
            if work.kind == RECALL:
                self._recall(work, pending)
            else:
                self._write(work, pending)
        except LabelMismatch as e:
            # the volume is out of service now: the work goes elsewhere without delay
            self._fail_or_requeue(work, pending, str(e), volume_bad=True, delay=0.0)
        except VolumeUnavailable as e:
            self._fail_or_requeue(work, pending, str(e), volume_bad=True)
        except TapeError as e:
            self._tape_error(work, pending, e)
        except Exception as e:
            # a bug must not take the drive's mover away for good: requeue, reset the
            # drive, carry on; only a mover that keeps failing takes its drive down
            log.exception("mover %s: %s work on %s failed", self.drive_name, work.kind, work.volume)
            self._requeue(pending, f"unexpected error: {e}", delay=RETRY_DELAY)
            self.failures += 1
            events.record(
                self.cat,
                "mover_error",
                f"unexpected error: {e!r}",
                subject=self.drive_name,
                level="error",
                volume=work.volume,
                in_a_row=self.failures,
            )
            if self.failures >= MAX_FAILURES:
                self._drive_down(f"the mover failed {self.failures} times in a row: {e!r}")
                return
            try:
                self.dismount()
            except Exception:
                log.exception("mover %s: dismount after an unexpected error", self.drive_name)
        else:
            self.failures = 0

    # operator jobs

    def _run_job(self, work: Work) -> None:
        """Run an operator's `TapeJob` with its volume mounted; whatever happens, the job
        is told (`done`) and the drive is back in the volume's record mode."""
        assert self.cat is not None and work.job is not None
        job = work.job
        try:
            if self.mounted != job.volume:
                if self.mounted:
                    self.dismount()
                self.mount(job.volume, check_label=job.check_label)
            self._session("transferring")
            job.result = job.action(self)
        except TapeError as e:
            job.error = e.message
            events.record(
                self.cat,
                "job_failed",
                f"{job.what}: {e.message}",
                subject=job.volume,
                level="error",
                drive=self.drive_name,
            )
            if e.error_class == ErrorClass.DRIVE:
                self._drive_down(f"{job.what}: {e.message}")
        except Exception as e:
            if not isinstance(e, ArchiveError | OSError | ValueError | VolumeUnavailable):
                log.exception("mover %s: %s failed", self.drive_name, job.what)
            job.error = str(e)
        finally:
            if self.mounted and not self.down:
                try:
                    self.drive.set_block_size(self.record_mode)
                except TapeError:
                    pass
            job.done.set()

    # writes

    def _write(self, work: Work, pending: list[Request]) -> None:
        """Append the batch at end of data: small files aggregated into tape files of many
        members, large ones in a tape file each (backend.aggregation)."""
        assert self.cat is not None
        vc = VolumeClerk(self.cat)
        fmt = volume_format(self.cat, work.volume)
        assert fmt is not None
        if fmt.foreign:
            raise VolumeUnavailable(f"volume {work.volume} is a foreign volume: read-only")
        layout = fmt.layout(self.config.library.label_format)
        self._session("positioning")
        self._position_for_append(fmt, layout)
        self._session("transferring")
        agg = self.config.aggregation
        verify = family_of_pool(work.family or "") in self.config.verify_families
        for group in plan(list(pending), threshold=agg.threshold, max_bytes=agg.size):
            outcome = self._write_tape_file(group, work.volume, layout, pending, verify)
            why = "early warning reached; volume closed"
            if outcome != "full":
                # Not at early warning, but maybe too close to it for any file: a file
                # takes at least two records (headers and data, padding, labels). The
                # drive knows best; some (tgt) cannot tell, the catalog's count then says.
                try:
                    left = self.drive.remaining_capacity()
                except TapeError:
                    left = None
                after = vc.get(work.volume)
                if left is None and after is not None:
                    left = after.free
                if left is not None and left < 2 * self.block_size:
                    outcome = "full"
                    why = f"{left} bytes left before early warning: too few for a file"
            if outcome == "full":
                vc.set_state(work.volume, FULL)
                events.record(self.cat, "volume_full", why, subject=work.volume)
                break
        self._requeue(pending, None)

    def _position_for_append(self, fmt: VolumeFormat, layout: str) -> None:
        """Go to end of data; a blank volume is first labelled (ANSI) or rewound."""
        assert self.cat is not None
        if fmt.eod_block:
            self.drive.locate(fmt.eod_block)
            return
        volser = volser_for(fmt.label) if layout == ANSI else None
        if volser is not None:
            write_vol1(self.drive, volser, owner=self.config.archive_id)
        else:
            self.drive.rewind()
        with self.cat.tx():
            self.cat.execute(
                "UPDATE volumes SET label_format=?, volser=?, block_size=?, eod_block=? "
                "WHERE label=?",
                (layout, volser, self.block_size, 1 if volser else 0, fmt.label),
            )
        if volser is not None:
            events.record(
                self.cat,
                "volume_labelled",
                f"VOL1 {volser} written at first use (owner {self.config.archive_id})",
                subject=fmt.label,
                drive=self.drive_name,
            )

    def _write_tape_file(
        self, group: list[Request], label: str, layout: str, pending: list[Request], verify: bool
    ) -> str:
        """Write `group` as one tape file at end of data and commit its members in one
        transaction; 'ok', or 'full' at early warning. Requests leave `pending` once
        handled (written, skipped or requeued); those not reached stay in it."""
        assert self.cat is not None
        members = self._prepare(group, pending)
        while members:
            fmt = volume_format(self.cat, label)
            assert fmt is not None
            try:
                written, records, full = self._write_members(members, fmt, layout, pending)
            except _SourceChanged as e:
                # The file changed under us (truncated while being written): this tape file
                # is abandoned and written again without it, from the same place.
                RequestQueue(self.cat).requeue(
                    e.member.req.id, f"source changed: {e}", delay=RETRY_DELAY
                )
                pending.remove(e.member.req)
                members = [m for m in members if m is not e.member]
                self.drive.locate(fmt.eod_block)
                continue
            if not written:
                self.drive.locate(fmt.eod_block)
                return "full" if full else "ok"
            first = data_start(layout, fmt.eod_block)
            eod = fmt.eod_block + objects_of(layout, records)
            if verify:
                self._verify(label, fmt.next_fileno, first, written)
                self.drive.locate(eod)
            self._commit(label, layout, fmt, first, records, eod, written, pending)
            return "full" if full else "ok"
        return "ok"

    def _prepare(self, group: list[Request], pending: list[Request]) -> list[_Member]:
        """The group's files still to write, with their pax member descriptions: read with
        one query per few hundred files (a tape file may hold thousands)."""
        assert self.cat is not None
        ns = Namespace(self.cat)
        queue = RequestQueue(self.cat)
        dirs: dict[int, str | None] = {}
        rows: dict[int, tuple[Bitfile, tuple]] = {}
        for ids in _chunks([r.bitfile for r in group]):
            for row in self.cat.all(
                f"SELECT {_BITFILE_COLS}, i.mode, i.uid, i.gid, i.mtime_ns, e.parent, e.name "
                "FROM bitfiles b JOIN inodes i ON i.id = b.inode "
                "JOIN entries e ON e.id = (SELECT MIN(id) FROM entries WHERE inode = b.inode) "
                f"WHERE b.id IN ({','.join('?' * len(ids))})",
                ids,
            ):
                bf = Bitfile(*row[:_NBITFILE])
                rows[bf.id] = (bf, tuple(row[_NBITFILE:]))
        out: list[_Member] = []
        for req in group:
            bf, node = rows.get(req.bitfile, (None, ()))
            if bf is None or bf.state not in (DIRTY, ARCHIVED) or bf.writers:
                # deleted, unlinked, replaced by a new version, open for writing again
                # (its session's end queues it anew), or released (a re-copy of an
                # archived file whose data left the cache: the next recall queues it anew)
                queue.done(req.id)
                pending.remove(req)
                continue
            mode, uid, gid, mtime_ns, parent, name = node
            if parent not in dirs:
                dirs[parent] = ns.path_of(parent)
            prefix = dirs[parent]
            path = (
                f"{prefix.rstrip('/')}/{bytes(name).decode('utf-8', 'surrogateescape')}"
                if prefix is not None
                else f"/.orphans/{bf.bfid}"
            )
            info = MemberInfo(
                name=path.lstrip("/") or bf.bfid,
                size=bf.size,
                mtime_ns=mtime_ns,
                mode=mode & 0o7777,
                uid=uid,
                gid=gid,
                records=reelfs_records(
                    bfid=bf.bfid,
                    version=bf.version,
                    family=bf.family or "",
                    path=path,
                    archive=self.config.archive_id,
                    adler32=bf.adler32,
                    crc32c=bf.crc32c if bf.adler32 is not None else None,
                    copy=split_pool(req.family or "")[1],
                ),
            )
            out.append(_Member(req, bf, path, info))
        return out

    def _write_members(
        self, members: list[_Member], fmt: VolumeFormat, layout: str, pending: list[Request]
    ) -> tuple[list[_Member], int, bool]:
        """Header labels, the pax archive, its filemark, trailer labels: (members written,
        data records, early warning reached). Members after early warning are left out."""
        fileno = fmt.next_fileno
        volser = volser_for(fmt.label)
        file_id = file_identifier(self.config.archive_id, fileno)
        if layout == ANSI:
            write_header(
                self.drive,
                volser=volser,
                file_id=file_id,
                file_sequence=fileno + 1,
                block_size=self.block_size,
            )
        writer = TapeFileWriter(self.drive, self.block_size)
        written: list[_Member] = []
        for m in members:
            if writer.early_warning:
                break  # the volume is nearly full: close this tape file with what it has
            try:
                src = (
                    io.BytesIO(b"")  # an empty file has no cache file
                    if m.bf.size == 0
                    else open(self.cache.path(m.bf.bfid), "rb", buffering=0)  # noqa: SIM115
                )
            except FileNotFoundError:
                # gone since the batch was made (a new version took over): nothing of it
                # is on tape yet, the next member takes its place
                RequestQueue(self.cat).requeue(m.req.id, "cache file missing", delay=RETRY_DELAY)
                pending.remove(m.req)
                continue
            ck = Checksummer()
            with src:
                try:
                    m.extent = writer.add(m.info, src, on_data=ck.update)
                except ShortSourceError as e:
                    raise _SourceChanged(m, e) from e
            m.sums = ck.sums
            written.append(m)
        if not written:
            return [], 0, writer.early_warning
        if layout == ANSI:
            # the trailer's synchronous filemark makes the data filemark durable too
            records = writer.finish(filemark=False)
            self.drive.write_filemarks(1, immediate=True)
            write_trailer(
                self.drive,
                volser=volser,
                file_id=file_id,
                file_sequence=fileno + 1,
                block_size=self.block_size,
                block_count=records,
                sync=True,
            )
        else:
            records = writer.finish()
        return written, records, writer.early_warning

    def _verify(self, label: str, fileno: int, first: int, written: list[_Member]) -> None:
        """Read-after-write: the tape file must read back member by member as written
        (names, positions, bfids, sizes, checksums). Raises VerifyFailed otherwise."""
        assert self.cat is not None
        self._session("verifying")
        self.drive.locate(first)
        n = 0
        try:
            for info, extent, stream in iter_members(self.drive, self.block_size):
                if n >= len(written):
                    raise VerifyFailed(f"data file {fileno}: an extra member {info.name!r}")
                m = written[n]
                ck = Checksummer()
                stream.copy_to(None, ck.update)
                assert m.extent is not None and m.sums is not None
                if (
                    info.records.get(REELFS_BFID) != m.bf.bfid
                    or (extent.record, extent.offset) != (m.extent.record, m.extent.offset)
                    or ck.length != m.bf.size
                    or (ck.adler, ck.crc) != (m.sums.adler32, m.sums.crc32c)
                ):
                    raise VerifyFailed(
                        f"data file {fileno}: {m.path} ({m.bf.bfid}) does not read back as "
                        f"written (adler32 {ck.adler:08x}, written {m.sums.adler32:08x})"
                    )
                n += 1
        except TapeError as e:
            why = e.message if isinstance(e, VerifyFailed) else f"reading back: {e.message}"
            events.record(
                self.cat, "verify_failed", why, subject=label, level="error", drive=self.drive_name
            )
            if isinstance(e, VerifyFailed):
                raise
            raise VerifyFailed(why, alerts=e.alerts) from e
        if n != len(written):
            why = f"data file {fileno}: {n} of {len(written)} members read back"
            events.record(
                self.cat, "verify_failed", why, subject=label, level="error", drive=self.drive_name
            )
            raise VerifyFailed(why)
        events.record(
            self.cat,
            "write_verified",
            f"data file {fileno}: {n} file(s) read back and checked",
            subject=label,
            drive=self.drive_name,
        )
        self._session("transferring")

    def _commit(
        self,
        label: str,
        layout: str,
        fmt: VolumeFormat,
        first: int,
        records: int,
        eod: int,
        written: list[_Member],
        pending: list[Request],
    ) -> None:
        """Record every member of the tape file and the volume's new end, in one
        transaction: a member's copy counts only if its file did not change meanwhile, and
        the file is archived once no other copy of it waits to be written."""
        assert self.cat is not None
        now = time.time_ns()
        copies, done, again = [], [], []
        recopied: list[tuple[_Member, int, str]] = []
        with self.cat.tx():
            fresh: dict[int, tuple] = {}
            for ids in _chunks([m.bf.id for m in written]):
                for row in self.cat.all(
                    "SELECT id, state, generation, writers, size, adler32, crc32c FROM bitfiles "
                    f"WHERE id IN ({','.join('?' * len(ids))})",
                    ids,
                ):
                    fresh[row[0]] = tuple(row)
            for m in written:
                bf = m.bf
                assert m.extent is not None and m.sums is not None
                sums = m.sums
                now_bf = fresh.get(bf.id)
                # a re-copy of an archived file (bf.state ARCHIVED) stays archived
                good = now_bf is not None and now_bf[1:5] == (
                    bf.state,
                    bf.generation,
                    0,
                    bf.size,
                )
                mismatch = (
                    good
                    and now_bf is not None
                    and now_bf[5] is not None
                    and (now_bf[5], now_bf[6]) != (sums.adler32, sums.crc32c)
                )
                state = "active" if good and not mismatch else "deleted"
                ext = m.extent
                copy = split_pool(m.req.family or "")[1]
                row = (bf.id, label, copy, fmt.next_fileno, first, ext.record, ext.offset)
                copies.append((*row, bf.size, state, now))
                if good and not mismatch and bf.state == ARCHIVED:
                    recopied.append((m, copy, f"{label}:{fmt.next_fileno}:{first + ext.record}"))
                elif good and not mismatch:
                    done.append((m, sums))
                elif mismatch:
                    assert now_bf is not None
                    msg = (
                        f"cache data of {bf.bfid} does not match its checksums "
                        f"(adler32 {sums.adler32:08x}, expected {now_bf[5]:08x})"
                    )
                    self.cat.execute("UPDATE bitfiles SET error=? WHERE id=?", (msg, bf.id))
                    events.record(
                        self.cat, "checksum_mismatch", msg, subject=bf.bfid, level="error"
                    )
                    self.cat.execute(
                        "UPDATE requests SET state='queued', drive=NULL, error=?, "
                        "not_before_ns=? WHERE id=?",
                        (msg, time.time_ns() + int(60e9), m.req.id),
                    )
                else:
                    again.append((m.req.id,))
            self.cat.conn.executemany(
                "INSERT INTO tape_copies(bitfile, volume, copy, fileno, block, record, "
                "offset, length, state, written_ns) VALUES (?,?,?,?,?,?,?,?,?,?)",
                copies,
            )
            self.cat.conn.executemany(
                "DELETE FROM requests WHERE id=?",
                [(m.req.id,) for m, _ in done] + [(m.req.id,) for m, _, _ in recopied],
            )
            for m, copy, where in recopied:
                # the file was archived already: its state, other copies and announcement
                # stay as they were; only the new copy joins them
                events.record(
                    self.cat,
                    "copy_recreated",
                    f"copy {copy} of {m.path} written again at {where}",
                    subject=m.bf.bfid,
                    path=m.path,
                    copy=copy,
                    volume=label,
                    location=where,
                )
            complete = self._complete(done)
            self.cat.conn.executemany(
                "UPDATE bitfiles SET state=?, archived_ns=?, path=?, adler32=?, crc32c=?, "
                "error=NULL WHERE id=?",
                [(ARCHIVED, now, m.path, s.adler32, s.crc32c, m.bf.id) for m, s in complete],
            )
            archived = [m.bf.id for m, _ in complete]
            self.cat.conn.executemany(
                "UPDATE requests SET state='queued', drive=NULL WHERE id=?", again
            )
            self.cat.execute(
                "UPDATE volumes SET bytes_used = bytes_used + ?, files = files + ?, "
                "next_fileno = ?, eod_block = ?, label_format=?, volser=?, block_size=? "
                "WHERE label=?",
                (
                    records * self.block_size,
                    len(done) + len(recopied),
                    fmt.next_fileno + 1,
                    eod,
                    layout,
                    volser_for(label) if layout == ANSI else None,
                    self.block_size,
                    label,
                ),
            )
        ids = {m.req.id for m in written}
        pending[:] = [r for r in pending if r.id not in ids]
        if len(complete) < len(done):
            log.info(
                "mover %s: %d file(s) of data file %d on %s wait for their other copies",
                self.drive_name,
                len(done) - len(complete),
                fmt.next_fileno,
                label,
            )
        if not archived:
            return
        if self.hooks.archived_many is not None:
            self.hooks.archived_many(archived)
        else:
            for b in archived:
                self.hooks.archived(b)

    def _complete(self, done: list[tuple[_Member, Sums]]) -> list[tuple[_Member, Sums]]:
        """Of the members whose copy was just recorded (their requests deleted, in the
        caller's transaction), those with no other copy still to write: a file is
        archived, and may leave the cache, only once every copy its family keeps is on
        tape. Another mover writing another copy commits in its own transaction, so
        exactly one of them sees the last request gone."""
        assert self.cat is not None
        waiting: set[int] = set()
        for ids in _chunks([m.bf.id for m, _ in done]):
            waiting.update(
                r[0]
                for r in self.cat.all(
                    "SELECT DISTINCT bitfile FROM requests WHERE kind='write' "
                    f"AND bitfile IN ({','.join('?' * len(ids))})",
                    ids,
                )
            )
        return [(m, s) for m, s in done if m.bf.id not in waiting]

    # recalls

    def _recall(self, work: Work, pending: list[Request]) -> None:
        assert self.cat is not None
        self._session("transferring")
        while pending:
            # taken out first: _recall_one settles its own request even when it raises
            self._recall_one(pending.pop(0), work.volume)

    def _recall_one(self, req: Request, label: str) -> None:
        assert self.cat is not None
        files = FileClerk(self.cat, self.config.archive_id)
        queue = RequestQueue(self.cat)
        bf = files.get(req.bitfile)
        if bf is None or bf.state != RELEASED:
            queue.done(req.id)
            self.lm.forget_request(req.id)
            self.hooks.recall_done(req.bitfile, None if bf and bf.cached else "file deleted")
            return
        failed = self.lm.failed_copies(req.id)
        here = [c for c in files.copies(bf.id) if c.volume == label and c.id not in failed]
        copy = next(
            (c for c in here if c.fileno == req.fileno and c.block + c.record == req.block),
            here[0] if here else None,
        )
        if copy is None:
            self._recall_elsewhere(req, bf.id, f"no usable copy of {bf.bfid} on {label}")
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
            self._read_copy(copy, bf, temp)
        except ChecksumMismatch as e:
            # The copy reads, but not as written: a media error of this copy only. It is
            # marked bad so that no recall wastes a mount on it again.
            self._drop_temp(temp, bf.size)
            self._copy_failed(req, bf.bfid, copy, str(e), bad=True)
            self._recall_elsewhere(req, bf.id, str(e))
            return
        except TapeError as e:
            self._drop_temp(temp, bf.size)
            if e.error_class == ErrorClass.DRIVE:
                queue.requeue(req.id, f"drive {self.drive_name} failed: {e.message}")
                raise
            self._copy_failed(req, bf.bfid, copy, str(e), bad=False)
            self._recall_elsewhere(req, bf.id, str(e))
            if e.error_class in (ErrorClass.MEDIA, ErrorClass.BLANK):
                raise CopyReadError(
                    e.message, sense=e.sense, alerts=e.alerts, error_class=e.error_class
                ) from e
            return
        except BaseException:
            self._drop_temp(temp, bf.size)
            queue.requeue(req.id, "interrupted", delay=RETRY_DELAY)
            raise
        self.cache.adopt(temp, bf.bfid)
        with self.cat.tx():
            recalled = self.cat.execute(
                "UPDATE bitfiles SET state=?, error=NULL, accessed_ns=? WHERE id=? AND state=?",
                (ARCHIVED, time.time_ns(), bf.id, RELEASED),
            ).rowcount
            self.cat.execute("DELETE FROM requests WHERE id=?", (req.id,))
            if recalled:
                self._queue_recopies(bf, copy)
        self.lm.forget_request(req.id)
        self.hooks.recall_done(bf.id, None)

    def _queue_recopies(self, bf: Bitfile, source: TapeCopy) -> None:
        """In the recall's transaction: the good data is in the cache now, so each copy
        the family keeps that has no active copy (found bad, or never made) is written
        again from it, to its own pool. The file stays `archived` meanwhile, and is not
        evicted before the new copies are on tape (backend.eviction)."""
        assert self.cat is not None
        family = bf.family or "default"
        missing = RequestQueue(self.cat).enqueue_recopies(bf.id, family)
        if missing:
            events.record(
                self.cat,
                "recopy_queued",
                f"copy {', '.join(map(str, missing))} of {bf.bfid} to be written again from "
                f"copy {source.copy} at {source.location}",
                subject=bf.bfid,
                copies=missing,
                pools=[pool_name(family, c) for c in missing],
                source=source.location,
            )

    def _read_copy(self, copy: TapeCopy, bf: Bitfile, temp: Path) -> None:
        """Read one tape copy into `temp`, located straight at its member; raises
        ChecksumMismatch unless it is exactly the file's data."""
        assert self.cat is not None
        # the member's format (schema v3) is not part of files.TapeCopy
        fmt = self.cat.value("SELECT format FROM tape_copies WHERE id=?", (copy.id,))
        self.drive.locate(copy.block + copy.record)
        ck = Checksummer()
        with open(temp, "wb", buffering=0) as dest:
            if fmt is None:
                info = read_member(
                    self.drive, self.block_size, copy.offset, dest, on_data=ck.update
                )
                size = info.size
                holds = info.records.get(REELFS_BFID)
                if holds is not None and holds != bf.bfid:
                    raise ChecksumMismatch(
                        f"{copy.location} holds {holds}, not {bf.bfid}: the catalog and the "
                        "tape disagree"
                    )
            else:
                size = foreign.read_member(self.drive, fmt, copy.offset, dest, on_data=ck.update)
        if size != bf.size or ck.length != bf.size:
            raise ChecksumMismatch(
                f"{bf.bfid} on {copy.location}: {ck.length} bytes read, {bf.size} expected"
            )
        if bf.adler32 is not None and (ck.adler, ck.crc) != (bf.adler32, bf.crc32c):
            raise ChecksumMismatch(
                f"{bf.bfid} on {copy.location}: checksums {ck.adler:08x}/{ck.crc:08x}, "
                f"expected {bf.adler32:08x}/{bf.crc32c:08x}"
            )

    def _drop_temp(self, temp: Path, size: int) -> None:
        _unlink(temp)
        self.cache.uncharge(size)

    def _copy_failed(self, req: Request, bfid: str, copy: TapeCopy, why: str, bad: bool) -> None:
        assert self.cat is not None
        self.lm.note_failed_copy(req.id, copy.id)
        with self.cat.tx():
            if bad:
                self.cat.execute(
                    "UPDATE tape_copies SET state='bad', error=? WHERE id=?", (why, copy.id)
                )
            events.record(
                self.cat,
                "copy_bad",
                f"copy {copy.copy} at {copy.location} "
                + ("is bad" if bad else "unreadable")
                + f": {why}",
                subject=bfid,
                level="error",
                volume=copy.volume,
                location=copy.location,
            )

    def _recall_elsewhere(
        self, req: Request, bitfile: int, why: str, bad_volume: str | None = None
    ) -> None:
        """Point the recall at a good copy not tried yet, or fail it with `why` (and EIO
        for whoever waits): only when no good copy is left."""
        assert self.cat is not None
        files = FileClerk(self.cat, self.config.archive_id)
        vc = VolumeClerk(self.cat)
        copies = files.copies(bitfile)
        if bad_volume is not None:
            for c in copies:
                if c.volume == bad_volume:
                    self.lm.note_failed_copy(req.id, c.id)
        failed = self.lm.failed_copies(req.id)
        for c in copies:
            v = vc.get(c.volume)
            if c.id not in failed and v is not None and v.state in READABLE:
                with self.cat.tx():
                    self.cat.execute(
                        "UPDATE requests SET volume=?, fileno=?, block=?, state='queued', "
                        "drive=NULL, error=? WHERE id=?",
                        (c.volume, c.fileno, c.block + c.record, why, req.id),
                    )
                return
        copies_made = self.cat.value(
            "SELECT count(*) FROM tape_copies WHERE bitfile=? AND state IN ('active','bad')",
            (bitfile,),
        )
        msg = f"recall failed: {why}" + (
            f" (no good copy left of {copies_made})" if copies_made and copies_made > 1 else ""
        )
        with self.cat.tx():
            self.cat.execute("UPDATE bitfiles SET error=? WHERE id=?", (msg, bitfile))
            self.cat.execute("DELETE FROM requests WHERE id=?", (req.id,))
        self.lm.forget_request(req.id)
        self.hooks.recall_done(bitfile, msg)

    # errors

    def _requeue(self, pending: list[Request], error: str | None, delay: float = 0.0) -> None:
        assert self.cat is not None
        q = RequestQueue(self.cat)
        for r in pending:
            q.requeue(r.id, error, delay=delay)
        pending.clear()

    def _fail_or_requeue(
        self,
        work: Work,
        pending: list[Request],
        why: str,
        volume_bad: bool,
        delay: float = RETRY_DELAY,
    ) -> None:
        """The rest of a batch after a failure. Writes wait and go elsewhere. Recalls: when
        the volume cannot be used, to another copy or failed; after a media error on
        another file of the volume, to another copy or back to the queue (the volume is
        suspect but readable)."""
        if work.kind != RECALL:
            self._requeue(pending, why, delay=delay)
            return
        for r in list(pending):
            if volume_bad:
                self._recall_elsewhere(r, r.bitfile, why, bad_volume=work.volume)
            elif not self._redirect(r, work.volume, why):
                RequestQueue(self.cat).requeue(r.id, why, delay=delay)  # type: ignore[arg-type]
        pending.clear()

    def _redirect(self, req: Request, volume: str, why: str) -> bool:
        """Send a recall to a readable copy on another volume, if there is one."""
        assert self.cat is not None
        failed = self.lm.failed_copies(req.id)
        vc = VolumeClerk(self.cat)
        for c in FileClerk(self.cat, self.config.archive_id).copies(req.bitfile):
            v = vc.get(c.volume)
            if c.volume != volume and c.id not in failed and v is not None and v.state in READABLE:
                with self.cat.tx():
                    self.cat.execute(
                        "UPDATE requests SET volume=?, fileno=?, block=?, state='queued', "
                        "drive=NULL, error=? WHERE id=?",
                        (c.volume, c.fileno, c.block + c.record, why, req.id),
                    )
                return True
        return False

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
            self._fail_or_requeue(
                work,
                pending,
                f"media error on {label}: {e.message}",
                volume_bad=not isinstance(e, CopyReadError),
            )
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


_BITFILE_COLS = ", ".join(f"b.{f.name}" for f in dataclasses.fields(Bitfile))
_NBITFILE = len(dataclasses.fields(Bitfile))


def _chunks(ids: list[int], size: int = 500) -> Iterator[list[int]]:
    """Ids in groups small enough for one `IN (...)` (SQLite allows 32766 variables)."""
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


def _unlink(p: Path) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass

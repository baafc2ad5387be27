"""`ScsiTapeDrive`: the `TapeDrive` interface over SSC commands on a `ScsiDevice`.

Every command's outcome goes through the sense decoder; CHECK CONDITION on a tape is often
not an error (a filemark, a short record, early warning) and the data that came with it is
kept. Real failures become `TapeError`s whose `ErrorClass` comes from `classify.py`, with the
TapeAlert flags read right after a medium or hardware error to tell the cartridge's fault
from the drive's.

Where the device lacks a command (see `quirks.py`) the driver falls back and logs it once:
on tgt it tracks the position itself (READ POSITION answers constants) and positions with
`emulation.EmulatedPositioning` (LOCATE by REWIND + SPACE, spacing by one-byte reads), loads
and unloads with START STOP UNIT codes, reads fixed blocks with variable-mode READs, and
repairs the short-read transfer count of tgt < 1.0.94.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from drivers.scsi import cdb, classify, commands, logpages, modepages, position, tapealert
from drivers.scsi.classify import (
    BeginningOfMediumError,
    CleaningCartridgeError,
    is_beginning_of_medium,
    is_end_of_data,
    is_unsupported,
)
from drivers.scsi.device import CheckConditionError, Result, ScsiDevice, Status, TransportError
from drivers.scsi.emulation import EmulatedPositioning
from drivers.scsi.identity import Identity, read_identity
from drivers.scsi.quirks import Quirks, note_fallback, quirks_for
from drivers.scsi.sense import Sense, SenseKey, parse_sense
from drivers.tape import (
    BlankCheckError,
    CleaningResult,
    DriveError,
    DriveStatus,
    EndOfMediumError,
    FilemarkDetected,
    IllegalRequestError,
    IncorrectLengthError,
    NotReadyError,
    Position,
    RecoverableError,
    SpaceUnit,
    TapeDrive,
    TapeError,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

READY_TIMEOUT = 300.0  # a real drive threads a cartridge in well under two minutes
CLEANING_TIMEOUT = 900.0


@dataclass
class _MountStats:
    """What happened since the cartridge was loaded, for `statistics()`."""

    started: float = field(default_factory=time.monotonic)
    bytes_written: int = 0
    bytes_read: int = 0
    records_written: int = 0
    records_read: int = 0
    filemarks_written: int = 0
    filemarks_read: int = 0
    recovered_errors: int = 0
    alerts_seen: set[int] = field(default_factory=set)
    log_base: dict[str, int] = field(default_factory=dict)


class ScsiTapeDrive(EmulatedPositioning, TapeDrive):
    """An SSC tape drive. Blocking, one thread at a time."""

    def __init__(
        self,
        device: ScsiDevice,
        *,
        name: str | None = None,
        quirks: Quirks | None = None,
        identity: Identity | None = None,
        prevent_removal: bool = True,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        self.device = device
        self.identity = identity or read_identity(device)
        self.quirks = quirks or quirks_for(self.identity)
        self.serial = self.identity.serial
        self.name = name or self.serial or device.url
        #: the barcode of the cartridge, when the changer driver told us
        self.volume: str | None = None
        # tgt: this object unloaded the cartridge and no move took it out since, so a
        # LOAD (03h) is safe (on a drive the changer emptied it would load a stale image)
        self._reload_ok = False
        self.prevent_removal = prevent_removal
        self.ready_timeout = ready_timeout
        #: first interval when polling a drive that is becoming ready or cleaning
        self.poll_interval = 0.05
        self._block_size = 0
        self._write_protected = False
        self._loaded = False
        self._prevented = False
        self._early_warning = False
        # Tracked position (used where READ POSITION is not trustworthy): logical object
        # number and filemark count, None when unknown.
        self._block: int | None = None
        self._file: int | None = None
        self._stats = _MountStats()
        self._pending_alerts: set[int] = set()
        self._log_pages: set[int] | None = None
        self._locate16 = True
        self._read_position_form: cdb.ReadPositionForm | None = cdb.ReadPositionForm.LONG
        if not self.quirks.read_position:
            self._read_position_form = None
        if self.quirks.name != "standard":
            note_fallback(self.name, f"{self.identity}: using the '{self.quirks.name}' quirks")

    def __repr__(self) -> str:
        return f"ScsiTapeDrive({self.name!r}, {self.device.url!r})"

    # -- plumbing ---------------------------------------------------------------------

    def _cmd(
        self,
        cdb_bytes: bytes,
        *,
        data_in: int = 0,
        data_out: bytes | bytearray | memoryview | None = None,
        timeout: float | None = None,
    ) -> Result:
        """Run a command; UNIT ATTENTIONs are handled here (the command did not run)."""
        moves_tape = cdb_bytes[0] in (
            cdb.Op.READ_6,
            cdb.Op.WRITE_6,
            cdb.Op.WRITE_FILEMARKS_6,
            cdb.Op.SPACE_6,
            cdb.Op.SPACE_16,
        )
        for _ in range(4):
            try:
                result = self.device.transfer(
                    cdb_bytes, data_in=data_in, data_out=data_out, timeout=timeout
                )
            except TransportError as e:
                if e.position_lost:
                    self._forget_position()
                raise
            s = result.sense
            if not (result.check_condition and s is not None and s.key == SenseKey.UNIT_ATTENTION):
                return result
            log.info("%s: unit attention %s", self.name, s)
            if s.asc in (0x28, 0x29):
                # New medium or a reset: where the tape is cannot be assumed any more.
                self._forget_position()
                if moves_tape:
                    raise RecoverableError(
                        f"{self.name}: {s}; the position is lost, locate before reading or writing",
                        sense=s.raw,
                    )
        raise RecoverableError(f"{self.name}: unit attentions keep coming", sense=s.raw)

    def _error(self, what: str, result: Result, *, residual: int | None = None) -> TapeError:
        """The classified error for a failed command, with TapeAlert flags when they help."""
        alerts: frozenset[int] = frozenset()
        if classify.wants_alerts(result.sense):
            alerts = self._read_alerts(quiet=True)
            self._pending_alerts |= alerts
        if result.sense is None:
            return DriveError(f"{self.name}: {what}: status {result.status.name} without sense")
        return classify.error_for(
            f"{self.name}: {what}", result.sense, alerts=alerts, residual=residual
        )

    def _pyscsi(self, what: str, fn: Callable[..., T], *args: object) -> T:
        """Run one of PyScsi's commands (commands.py); CHECK CONDITION becomes a TapeError
        (a unit attention is retried: the command did not run)."""
        for _ in range(3):
            try:
                return fn(self.device, *args)
            except CheckConditionError as e:
                if e.sense is not None and e.sense.key == SenseKey.UNIT_ATTENTION:
                    if e.sense.asc in (0x28, 0x29):
                        self._forget_position()
                    continue
                raise self._error(what, Result(Status.CHECK_CONDITION, sense=e.sense)) from e
        raise RecoverableError(f"{self.name}: {what}: unit attentions keep coming")

    def _check(self, result: Result, what: str) -> Result:
        """GOOD, or RECOVERED ERROR (counted, the command succeeded); otherwise raise."""
        if result.good:
            return result
        s = result.sense
        if result.check_condition and s is not None and s.key == SenseKey.RECOVERED_ERROR:
            self._stats.recovered_errors += 1
            log.info("%s: %s: %s", self.name, what, s)
            return result
        raise self._error(what, result)

    def _forget_position(self) -> None:
        self._block = None
        self._file = None

    def _advance(self, objects: int, filemarks: int = 0) -> None:
        if self._block is not None:
            self._block += objects
        if self._file is not None:
            self._file += filemarks

    def _wait_ready(self, deadline: float) -> Sense | None:
        """Poll TEST UNIT READY while the drive is becoming ready; the final sense or None."""
        delay = self.poll_interval
        while True:
            sense = commands.test_unit_ready(self.device)
            if sense is None:
                return None
            becoming = sense.key == SenseKey.NOT_READY and (sense.asc, sense.ascq) in (
                (0x04, 0x01),
                (0x04, 0x07),
                (0x30, 0x03),
            )
            ua = sense.key == SenseKey.UNIT_ATTENTION
            if not (becoming or ua) or time.monotonic() > deadline:
                return sense
            if not ua:
                time.sleep(delay)  # the drive is threading the tape; poll it
                delay = min(delay * 2, 2.0)

    # -- mode parameters ----------------------------------------------------------------

    def _mode_sense(self) -> modepages.ModeData:
        data = self._pyscsi("MODE SENSE", commands.mode_sense6, modepages.ALL_PAGES)
        md = modepages.parse_mode6(data)
        self._block_size = md.block_length
        self._write_protected = md.write_protected
        return md

    def _mode_select(self, data: bytes) -> Result:
        return self._cmd(cdb.mode_select6(len(data)), data_out=data)

    def set_block_size(self, size: int) -> None:
        if not 0 <= size < (1 << 24):
            raise ValueError(f"block size {size} out of range")
        md = self._mode_sense()
        params = modepages.build_select6(
            density=md.density, block_length=size, buffered_mode=md.buffered_mode or 1
        )
        self._check(self._mode_select(params), f"MODE SELECT block length {size}")
        if self._mode_sense().block_length != size:
            raise DriveError(f"{self.name}: block length {size} not accepted by the drive")

    def set_compression(self, enable: bool) -> bool:
        """Switch hardware compression; False when the drive cannot (tgt refuses pages)."""
        if not self.quirks.mode_select_pages:
            note_fallback(self.name, "MODE SELECT refuses mode pages: compression stays off")
            return False
        md = self._mode_sense()
        page = md.pages.get(modepages.DATA_COMPRESSION_PAGE)
        if page is None or not md.compression_capable:
            return False
        params = modepages.build_select6(
            density=md.density,
            block_length=md.block_length,
            buffered_mode=md.buffered_mode or 1,
            pages=[modepages.with_compression(page, enable)],
        )
        result = self._mode_select(params)
        if is_unsupported(result.sense):
            note_fallback(self.name, "MODE SELECT refused the compression page")
            return False
        self._check(result, "MODE SELECT compression")
        return self._mode_sense().compression_enabled is enable

    def block_limits(self) -> tuple[int, int, int]:
        """READ BLOCK LIMITS: (granularity exponent, maximum, minimum) record length.

        tgt truncates its current fixed block length to 8 bits here, so the limits are
        used as limits only; the block size in use comes from MODE SENSE.
        """
        r = self._check(self._cmd(cdb.read_block_limits(), data_in=6), "READ BLOCK LIMITS")
        d = r.data.ljust(6, b"\0")
        return d[0] & 0x1F, int.from_bytes(d[1:4], "big"), int.from_bytes(d[4:6], "big")

    # -- loading ------------------------------------------------------------------------

    def load(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        if self.quirks.load_is_start_stop:
            # tgt: a LOAD (03h) on a drive the changer has emptied "succeeds" on a stale
            # image; the changer's MOVE MEDIUM already brought the LU online, so only ask,
            # unless this driver unloaded the cartridge itself and it was not moved since.
            note_fallback(self.name, "load: the changer's move loads the drive (no LOAD sent)")
            sense = self._wait_ready(deadline)
            if sense is not None and sense.asc == 0x3A and self._reload_ok:
                self._check(
                    self._cmd(cdb.load_unload(cdb.LoadAction.LOAD | cdb.LoadAction.RETENSION)),
                    "LOAD (START STOP UNIT 03h)",
                )
                sense = self._wait_ready(deadline)
        else:
            r = self._cmd(cdb.load_unload(cdb.LoadAction.LOAD))
            sense = r.sense if r.check_condition else None
            if sense is None or sense.key in (SenseKey.NOT_READY, SenseKey.RECOVERED_ERROR):
                sense = self._wait_ready(deadline)
        if sense is not None:
            if (sense.asc, sense.ascq) == (0x30, 0x03):
                raise CleaningCartridgeError(f"{self.name}: {sense}", sense=sense.raw)
            raise self._error("load", Result(Status.CHECK_CONDITION, sense=sense))
        self._after_load()

    def _after_load(self) -> None:
        self._loaded = True
        self._early_warning = False
        if self.prevent_removal:
            self._pyscsi("PREVENT MEDIUM REMOVAL", commands.prevent_allow, True)
            self._prevented = True
        if not self.quirks.read_position:
            # tgt keeps the position of a cartridge that was only unloaded: make it known.
            self._check(self._cmd(cdb.rewind()), "REWIND")
        self._block, self._file = 0, 0
        self._mode_sense()
        stale = self._read_alerts(quiet=True)
        if stale:
            log.info(
                "%s: TapeAlert flags left from before this mount: %s",
                self.name,
                tapealert.describe(stale),
            )
        self._pending_alerts.clear()
        self._stats = _MountStats(log_base=self._log_counters())

    def unload(self) -> None:
        if self._prevented or self.prevent_removal:
            self._pyscsi("ALLOW MEDIUM REMOVAL", commands.prevent_allow, False)
            self._prevented = False
        self._stats.alerts_seen |= self._read_alerts(quiet=True)
        if self.quirks.load_is_start_stop:
            note_fallback(self.name, "unload: REWIND, then START STOP UNIT LOEJ (02h)")
            self._check(self._cmd(cdb.rewind()), "REWIND")
            action = cdb.LoadAction.RETENSION  # byte 4 = 02h: LOEJ without START on tgt
        else:
            action = cdb.LoadAction.UNLOAD
        self._check(self._cmd(cdb.load_unload(action)), "UNLOAD")
        self._loaded = False
        self._forget_position()
        self._reload_ok = self.quirks.load_is_start_stop

    def medium_moved(self, barcode: str | None) -> None:
        """The changer put a cartridge into this drive (`barcode`) or took it out (None)."""
        self.volume = barcode
        self._reload_ok = False

    # -- positioning --------------------------------------------------------------------

    def rewind(self) -> None:
        self._check(self._cmd(cdb.rewind()), "REWIND")
        self._block, self._file = 0, 0
        self._early_warning = False

    def read_position(self) -> Position:
        form = self._read_position_form
        while form is not None:
            r = self._cmd(cdb.read_position(form), data_in=cdb.read_position_length(form))
            if is_unsupported(r.sense):
                form = self._next_position_form(form, "not supported")
                continue
            self._check(r, "READ POSITION")
            if form is cdb.ReadPositionForm.LONG and position.looks_constant(r.data):
                # A reserved bit and zeros: tgt's canned reply from an LU renamed beyond
                # recognition. A real drive never sets that bit.
                form = self._next_position_form(None, "returns constant data")
                continue
            parsed = (
                position.parse_long(r.data)
                if form is cdb.ReadPositionForm.LONG
                else position.parse_short(r.data)
            )
            if parsed.block is None:
                raise RecoverableError(f"{self.name}: the drive does not know its position")
            self._block, self._file = parsed.block, parsed.file
            if parsed.bpew:
                self._early_warning = True
            return Position(parsed.block, parsed.file)
        if self._block is None:
            raise RecoverableError(
                f"{self.name}: position unknown (the drive cannot report it); rewind or locate"
            )
        return Position(self._block, self._file)

    def _next_position_form(
        self, form: cdb.ReadPositionForm | None, why: str
    ) -> cdb.ReadPositionForm | None:
        nxt = cdb.ReadPositionForm.SHORT if form is cdb.ReadPositionForm.LONG else None
        if nxt is None:
            note_fallback(self.name, f"READ POSITION {why}: tracking the position in the driver")
        else:
            note_fallback(self.name, f"READ POSITION long form {why}: using the short form")
        self._read_position_form = nxt
        return nxt

    def locate(self, block: int) -> None:
        if block < 0:
            raise ValueError("negative block")
        self._early_warning = False
        while self.quirks.locate:
            if self._locate16:
                r = self._cmd(cdb.locate16(block))
                if is_unsupported(r.sense):
                    note_fallback(self.name, "LOCATE(16) not supported: using LOCATE(10)")
                    self._locate16 = False
                    continue
            else:
                if block > 0xFFFFFFFF:
                    raise IllegalRequestError(f"{self.name}: block {block} beyond LOCATE(10)")
                r = self._cmd(cdb.locate10(block))
                if is_unsupported(r.sense):
                    note_fallback(self.name, "LOCATE not supported: emulating it with SPACE")
                    self.quirks = self.quirks.with_(locate=False)
                    break
            if r.check_condition and is_end_of_data(r.sense):
                self._forget_position()
                raise self._error(f"LOCATE {block}", r)
            self._check(r, f"LOCATE {block}")
            self._block, self._file = block, None
            return
        self._emulated_locate(block)

    def space(self, count: int, unit: SpaceUnit = SpaceUnit.BLOCKS) -> None:
        if unit is SpaceUnit.END_OF_DATA:
            self._space_eod()
            return
        if count == 0:
            return
        if self.quirks.space_counts_filemarks:
            self._emulated_space(count, unit)
            return
        code = cdb.SpaceCode.BLOCKS if unit is SpaceUnit.BLOCKS else cdb.SpaceCode.FILEMARKS
        big = not -(1 << 23) <= count < (1 << 23)
        r = self._cmd(cdb.space16(count, code) if big else cdb.space6(count, code))
        if r.good:
            self._advance(count, count if unit is SpaceUnit.FILEMARKS else 0)
            if unit is SpaceUnit.FILEMARKS:
                self._block = None
            return
        s = r.sense
        residual = s.information if s is not None and s.information is not None else 0
        self._forget_position()
        if s is not None and s.filemark and unit is SpaceUnit.BLOCKS:
            raise FilemarkDetected(abs(residual))
        if is_end_of_data(s):
            raise BlankCheckError(
                f"{self.name}: space {count} {unit}: end of data",
                sense=s.raw if s else None,
                residual=residual,
            )
        if is_beginning_of_medium(s):
            raise BeginningOfMediumError(
                f"{self.name}: space {count} {unit}: beginning of tape",
                sense=s.raw if s else None,
                residual=residual,
            )
        self._check(r, f"SPACE {count} {unit}")

    def _space_eod(self) -> None:
        self._early_warning = False
        if self.quirks.space_counts_filemarks:
            self._find_eod("space to end of data")
            return
        r = self._cmd(cdb.space6(0, cdb.SpaceCode.END_OF_DATA))
        self._check(r, "SPACE EOD")
        self._forget_position()

    # -- data -------------------------------------------------------------------------

    def write_block(self, data: bytes | bytearray | memoryview) -> bool:
        n = len(data)
        if n == 0:
            raise ValueError("empty records are not written (tgt cannot read them back)")
        if self._block_size:
            if n % self._block_size:
                raise ValueError(
                    f"{n} bytes is not a multiple of the block size {self._block_size}"
                )
            blocks = n // self._block_size
            r = self._cmd(cdb.write6(blocks, fixed=True), data_out=data)
        else:
            blocks = 1
            r = self._cmd(cdb.write6(n), data_out=data)
        if r.good:
            self._wrote(blocks, n)
            return self._early_warning
        s = r.sense
        if s is not None and not s.deferred:
            if s.key in (SenseKey.NO_SENSE, SenseKey.RECOVERED_ERROR) and s.eom:
                # Early warning (00/02 on real drives, 00/00 on tgt): the record is written.
                self._wrote(blocks, n)
                if not self._early_warning:
                    log.info("%s: early warning (%s)", self.name, s)
                self._early_warning = True
                return True
            if s.key == SenseKey.RECOVERED_ERROR:
                self._stats.recovered_errors += 1
                self._wrote(blocks, n)
                return self._early_warning
            if s.key == SenseKey.VOLUME_OVERFLOW:
                self._forget_position()
                raise EndOfMediumError(
                    f"{self.name}: write of {n} bytes: {s}", sense=s.raw, residual=s.information
                )
        self._forget_position()
        raise self._error(f"write of {n} bytes", r)

    def _wrote(self, blocks: int, nbytes: int) -> None:
        self._advance(blocks)
        self._stats.bytes_written += nbytes
        self._stats.records_written += blocks

    def write_filemarks(self, count: int = 1, *, immediate: bool = False) -> None:
        r = self._cmd(cdb.write_filemarks6(count, immediate=immediate))
        if not r.good:
            s = r.sense
            if (
                s is not None
                and not s.deferred
                and s.eom
                and s.key
                in (
                    SenseKey.NO_SENSE,
                    SenseKey.RECOVERED_ERROR,
                )
            ):
                self._early_warning = True
            else:
                self._forget_position()
                raise self._error(f"write {count} filemarks", r)
        self._advance(count, count)
        self._stats.filemarks_written += count

    def read_block(self, max_size: int) -> bytes:
        if max_size <= 0:
            raise ValueError("max_size must be positive")
        if self._block_size:
            if max_size < self._block_size:
                raise ValueError(
                    f"buffer {max_size} smaller than the block size {self._block_size}"
                )
            if self.quirks.fixed_read_broken:
                note_fallback(self.name, "fixed-mode READ: using variable-mode READs of one block")
                return self._read_variable(self._block_size)
            return self._read_fixed()
        return self._read_variable(max_size)

    def _read_fixed(self) -> bytes:
        size = self._block_size
        r = self._cmd(cdb.read6(1, fixed=True), data_in=size)
        if r.good:
            return self._got(r.data)
        s = r.sense
        if s is not None and s.filemark:
            self._advance(1, 1)
            self._stats.filemarks_read += 1
            raise FilemarkDetected(0)
        if is_end_of_data(s):
            raise BlankCheckError(f"{self.name}: read: end of data", sense=s.raw if s else None)
        if s is not None and s.ili:
            # SSC: a wrong-length block in fixed mode; INFO counts blocks not transferred.
            self._advance(1)
            raise IncorrectLengthError(
                f"{self.name}: read: {s}", sense=s.raw, residual=s.information
            )
        raise self._error("read", r)

    def _read_variable(self, request: int) -> bytes:
        sili = self.quirks.sili
        r = self._cmd(cdb.read6(request, sili=sili), data_in=request)
        if r.good:
            return self._got(r.data)
        s = r.sense
        if s is None:
            raise self._error("read", r)
        if s.filemark:
            self._advance(1, 1)
            self._stats.filemarks_read += 1
            raise FilemarkDetected(0)
        if is_end_of_data(s):
            raise BlankCheckError(f"{self.name}: read: end of data", sense=s.raw)
        if s.ili and s.information is not None:
            record = request - s.information
            if s.information < 0:
                self._advance(1)
                raise IncorrectLengthError(
                    f"{self.name}: record of {record} bytes longer than {request}",
                    record_length=record,
                    sense=s.raw,
                    residual=s.information,
                )
            if record == 0 and self.quirks.space_counts_filemarks:
                # tgt: READ does not move over a zero-length record
                self._check(self._cmd(cdb.space6(1)), "SPACE 1")
                return self._got(b"")
            if len(r.data) >= record:
                return self._got(r.data[:record])
            if self.quirks.short_read_count_bug:
                # tgt < 1.0.94 sent (request - record) bytes: back up and read it exactly.
                note_fallback(self.name, "short read: re-reading with the exact length (tgt bug)")
                self._check(self._cmd(cdb.space6(-1)), "SPACE -1")
                again = self._cmd(cdb.read6(record), data_in=record)
                self._check(again, "re-read")
                return self._got(again.data)
            return self._got(r.data)
        if s.key in (SenseKey.NO_SENSE, SenseKey.RECOVERED_ERROR):
            if s.key == SenseKey.RECOVERED_ERROR:
                self._stats.recovered_errors += 1
            return self._got(r.data)
        raise self._error("read", r)

    def _got(self, data: bytes) -> bytes:
        self._advance(1)
        self._stats.bytes_read += len(data)
        self._stats.records_read += 1
        return data

    # -- status, capacity, alerts, statistics --------------------------------------------

    def status(self) -> DriveStatus:
        sense = commands.test_unit_ready(self.device)
        if sense is not None and sense.key == SenseKey.UNIT_ATTENTION:
            sense = commands.test_unit_ready(self.device)
        ready = sense is None
        loaded = ready or not (
            sense is not None and sense.key == SenseKey.NOT_READY and sense.asc == 0x3A
        )
        st = DriveStatus(ready=ready, loaded=loaded, detail=str(sense) if sense else "")
        st.volume = self.volume
        st.early_warning = self._early_warning
        if ready:
            md = self._mode_sense()
            st.write_protected = md.write_protected
            st.block_size = md.block_length
            try:
                st.position = self.read_position()
            except RecoverableError:
                st.position = None
            st.early_warning = self._early_warning
        if self.quirks.request_sense and ready:
            rs = self._cmd(cdb.request_sense(), data_in=252)
            if rs.good and len(rs.data) >= 8:
                pending = parse_sense(rs.data)
                if (pending.asc, pending.ascq) != (0, 0):
                    st.detail = str(pending)
        return st

    def _supported_log_pages(self) -> set[int]:
        if not self.quirks.log_sense:
            return set()
        if self._log_pages is None:
            r = self._cmd(cdb.log_sense(logpages.SUPPORTED_PAGES), data_in=0x400)
            if is_unsupported(r.sense):
                note_fallback(
                    self.name, "LOG SENSE not supported: no TapeAlert, capacity, counters"
                )
                self.quirks = self.quirks.with_(log_sense=False)
                self._log_pages = set()
            else:
                self._check(r, "LOG SENSE supported pages")
                try:
                    self._log_pages = logpages.supported_pages(r.data)
                except logpages.LogPageError:
                    self._log_pages = set()
        return self._log_pages

    def _log_page(self, page: int) -> bytes | None:
        if page not in self._supported_log_pages():
            return None
        r = self._cmd(cdb.log_sense(page), data_in=0x4000)
        if is_unsupported(r.sense):
            self._log_pages.discard(page)  # type: ignore[union-attr]
            return None
        self._check(r, f"LOG SENSE {page:#04x}")
        return r.data

    def _read_alerts(self, *, quiet: bool = False) -> frozenset[int]:
        try:
            data = self._log_page(logpages.TAPE_ALERT)
        except TapeError:
            if not quiet:
                raise
            return frozenset()
        if data is None:
            return frozenset()
        flags = logpages.tape_alerts(data)
        self._stats.alerts_seen |= flags
        if flags:
            log.warning("%s: TapeAlert %s", self.name, tapealert.describe(flags))
        return flags

    def alerts(self) -> frozenset[int]:
        flags = self._read_alerts() | self._pending_alerts
        self._pending_alerts.clear()
        return frozenset(flags)

    def needs_cleaning(self) -> bool:
        """The drive asks for a cleaning cartridge (TapeAlert 20/21, or page 0Ch)."""
        flags = self._read_alerts(quiet=True)
        self._pending_alerts |= flags
        if flags & tapealert.CLEANING_FLAGS:
            return True
        data = self._log_page(logpages.SEQUENTIAL_ACCESS)
        return bool(data and logpages.sequential_access(data).get("cleaning_required"))

    def remaining_capacity(self) -> int | None:
        data = self._log_page(logpages.TAPE_CAPACITY)
        if data is not None:
            cap = logpages.tape_capacity(data)
            if cap.remaining is not None:
                return cap.remaining
        data = self._log_page(logpages.SEQUENTIAL_ACCESS)
        if data is not None:
            sa = logpages.sequential_access(data)
            ew = sa.get("native_capacity_bop_to_ew_mb")
            eod = sa.get("native_capacity_bop_to_eod_mb")
            if ew is not None and eod is not None:
                return max(0, ew - eod) * logpages.MB
        return None

    def _log_counters(self) -> dict[str, int]:
        """Cumulative counters whose difference over a mount is the mount's statistics."""
        out: dict[str, int] = {}
        for page, prefix in ((logpages.WRITE_ERRORS, "write_"), (logpages.READ_ERRORS, "read_")):
            try:
                data = self._log_page(page)
            except TapeError:
                data = None
            if data:
                for k, v in logpages.error_counters(data, page).items():
                    out[prefix + k] = v
        for page in (logpages.DATA_COMPRESSION, logpages.LTO_DATA_COMPRESSION):
            try:
                data = self._log_page(page)
            except TapeError:
                data = None
            if data:
                for k, v in logpages.data_compression(data).items():
                    if isinstance(v, int):
                        out["tape_" + k] = v
                break
        else:
            try:
                data = self._log_page(logpages.SEQUENTIAL_ACCESS)
            except TapeError:
                data = None
            if data:
                for k in (
                    "bytes_from_host",
                    "bytes_to_medium",
                    "bytes_from_medium",
                    "bytes_to_host",
                ):
                    v = logpages.sequential_access(data).get(k)
                    if v is not None:
                        out["tape_" + k] = v
        return out

    def statistics(self) -> dict[str, int | float]:
        st = self._stats
        out: dict[str, int | float] = {
            "mount_seconds": round(time.monotonic() - st.started, 3),
            "bytes_written": st.bytes_written,
            "bytes_read": st.bytes_read,
            "records_written": st.records_written,
            "records_read": st.records_read,
            "filemarks_written": st.filemarks_written,
            "filemarks_read": st.filemarks_read,
            "recovered_errors": st.recovered_errors,
            "tapealert_flags": len(st.alerts_seen),
        }
        now = self._log_counters()
        for k, v in now.items():
            out[k] = v - st.log_base.get(k, 0) if v >= st.log_base.get(k, 0) else v
        try:
            vol = self._log_page(logpages.VOLUME_STATISTICS)
        except TapeError:
            vol = None
        if vol:
            # the cartridge's own lifetime counters (mounts, data sets, retries), as they are
            out.update(logpages.volume_statistics(vol))
        host, medium = out.get("tape_bytes_from_host"), out.get("tape_bytes_to_medium")
        if host and medium:
            out["compression_ratio"] = round(host / medium, 3)
        elif "tape_bytes_from_host" not in out and st.bytes_written:
            out["compression_ratio"] = 1.0  # no hardware compression to report on
        return out

    # -- cleaning -----------------------------------------------------------------------

    def clean(self, timeout: float = CLEANING_TIMEOUT) -> CleaningResult:
        """Run the drive's part of a cleaning cycle after the changer inserted a cleaning
        cartridge: wait while it cleans, collect the verdict, and leave the cartridge
        unloaded for the changer to take back. Nothing is ever written to the cartridge."""
        deadline = time.monotonic() + timeout
        if not self.quirks.cleaning:
            note_fallback(
                self.name,
                "no cleaning semantics: the cleaning cartridge is only loaded and unloaded",
            )
            sense = self._wait_ready(deadline)
            if sense is not None and sense.key == SenseKey.NOT_READY and sense.asc == 0x3A:
                raise NotReadyError(f"{self.name}: no cartridge to clean with", sense=sense.raw)
            self._check(self._cmd(cdb.rewind()), "REWIND")
            self.unload()
            return CleaningResult(cleaned=False, detail="device has no cleaning semantics")
        r = self._cmd(cdb.load_unload(cdb.LoadAction.LOAD))
        first = r.sense if r.check_condition else None
        detail = str(first) if first else ""
        delay = self.poll_interval
        while time.monotonic() < deadline:
            sense = commands.test_unit_ready(self.device)
            if sense is None:
                break  # ready: some drives leave the cleaned cartridge loaded
            if sense.key == SenseKey.NOT_READY and sense.asc == 0x3A:
                break  # cleaned and ejected
            if (sense.asc, sense.ascq) == (0x30, 0x07):
                raise DriveError(f"{self.name}: cleaning failure: {sense}", sense=sense.raw)
            detail = str(sense)
            time.sleep(delay)  # the drive cleans for a minute or two; poll it
            delay = min(delay * 2, 5.0)
        else:
            raise DriveError(f"{self.name}: cleaning did not finish in {timeout:.0f}s")
        flags = self._read_alerts(quiet=True)
        expired = 22 in flags or 23 in flags
        if commands.test_unit_ready(self.device) is None:
            self._cmd(cdb.load_unload(cdb.LoadAction.UNLOAD))
        return CleaningResult(cleaned=not expired, alerts=flags, expired=expired, detail=detail)

    def close(self) -> None:
        self.device.close()


__all__ = [
    "BeginningOfMediumError",
    "CheckConditionError",
    "CleaningCartridgeError",
    "CleaningResult",
    "ScsiTapeDrive",
]

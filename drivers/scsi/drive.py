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

The class is put together from one mixin per role; this module holds the construction, the
mode parameters (block size, compression) and loading and unloading:

* `drive_plumbing.DrivePlumbing`: running commands, classifying failures, readiness polls,
  the tracked position and the mount counters (the base of the others);
* `drive_positioning.DrivePositioning`: REWIND, READ POSITION, LOCATE, SPACE, end of data;
* `drive_transfer.DriveTransfer`: writing records and filemarks, reading records;
* `drive_health.DriveHealth`: status, log pages, TapeAlert, capacity, statistics, cleaning.
"""

from __future__ import annotations

import time

from drivers.scsi import cdb, commands, modepages, tapealert
from drivers.scsi.classify import BeginningOfMediumError, CleaningCartridgeError, is_unsupported
from drivers.scsi.device import CheckConditionError, Result, ScsiDevice, Status
from drivers.scsi.drive_health import DriveHealth
from drivers.scsi.drive_plumbing import MountStats, log
from drivers.scsi.drive_positioning import DrivePositioning
from drivers.scsi.drive_transfer import DriveTransfer
from drivers.scsi.identity import Identity, read_identity
from drivers.scsi.quirks import Quirks, note_fallback, quirks_for
from drivers.scsi.sense import SenseKey
from drivers.tape import CleaningResult, DriveError, TapeDrive

READY_TIMEOUT = 300.0  # a real drive threads a cartridge in well under two minutes


class ScsiTapeDrive(DrivePositioning, DriveTransfer, DriveHealth, TapeDrive):
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
        self._stats = MountStats()
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
        self._stats = MountStats(log_base=self._log_counters())

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

    def close(self) -> None:
        self.device.close()


__all__ = [
    "BeginningOfMediumError",
    "CheckConditionError",
    "CleaningCartridgeError",
    "CleaningResult",
    "ScsiTapeDrive",
]

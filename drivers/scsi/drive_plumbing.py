"""The command plumbing under every part of `ScsiTapeDrive`, and the state they share.

`DrivePlumbing` runs a CDB (UNIT ATTENTIONs handled: the command did not run) or one of
PyScsi's commands, turns a failed outcome into the classified `TapeError` (TapeAlert flags
read right after a medium or hardware error, to tell the cartridge's fault from the
drive's), polls TEST UNIT READY while the drive becomes ready, and keeps the tracked
position that READ POSITION cannot be trusted for on tgt. `MountStats` holds what happened
since the cartridge was loaded.

The role mixins (`drive_positioning`, `drive_transfer`, `drive_health`) build on this class;
`drive.ScsiTapeDrive` combines them and sets the state up. Nothing here imports them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from drivers.scsi import cdb, classify, commands
from drivers.scsi.device import CheckConditionError, Result, ScsiDevice, Status, TransportError
from drivers.scsi.sense import Sense, SenseKey
from drivers.tape import DriveError, RecoverableError, TapeError

if TYPE_CHECKING:
    from drivers.scsi.quirks import Quirks

# One logger for the whole drive, under the name it had before the split into mixins:
# log filters and the `%(name)s` in reelfs' log lines keep matching.
log = logging.getLogger("drivers.scsi.drive")
T = TypeVar("T")


@dataclass
class MountStats:
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


class DrivePlumbing:
    """Running commands on a tape drive and classifying their outcome; the base of the
    `ScsiTapeDrive` mixins, whose state `ScsiTapeDrive.__init__` sets up."""

    device: ScsiDevice
    name: str
    quirks: Quirks
    poll_interval: float
    _early_warning: bool
    _block: int | None
    _file: int | None
    _stats: MountStats
    # TapeAlert flags read while classifying an error, until `alerts()` hands them out
    _pending_alerts: set[int]

    if TYPE_CHECKING:
        # provided by DriveHealth
        def _read_alerts(self, *, quiet: bool = False) -> frozenset[int]: ...

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

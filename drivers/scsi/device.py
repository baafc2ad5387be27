"""A SCSI device reached through some transport: one command at a time, full sense data.

`ScsiDevice` is what the tape and changer drivers talk to. Its `transfer()` runs one CDB and
returns status, data and decoded sense without raising on CHECK CONDITION (on tape, CHECK
CONDITION is how a read reports a filemark or a short record, and the data that came with it
matters). Its `execute(cmd)` and `opcodes` make it a device for PyScsi's
`pyscsi.pyscsi.scsi.SCSI` and command classes (INQUIRY, MODE SENSE, the SMC commands).

Transports: `iscsi.IscsiDevice` (libiscsi through ctypes) and `sg.SgDevice` (Linux SG_IO)
subclass it; `transport.open_device(url)` picks one from the URL.
"""

from __future__ import annotations

import abc
import enum
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from pyscsi.pyscsi import scsi_enum_command

from drivers.scsi.cdb import Op
from drivers.scsi.sense import Sense
from drivers.tape import DriveError, ErrorClass, RecoverableError

log = logging.getLogger(__name__)

# PyScsi 2.1 keeps the CDB layout being built in class attributes of SCSICommand
# (SCSICommand._cdb_bits, SCSICommand._cdb), so two threads building commands at once can
# marshal one command with the other's layout. Every PyScsi command is built under this lock.
PYSCSI_LOCK = threading.Lock()


class Status(enum.IntEnum):
    """SCSI status (SAM-5) plus the transport outcomes that are not a SCSI status."""

    GOOD = 0x00
    CHECK_CONDITION = 0x02
    CONDITION_MET = 0x04
    BUSY = 0x08
    RESERVATION_CONFLICT = 0x18
    TASK_SET_FULL = 0x28
    ACA_ACTIVE = 0x30
    TASK_ABORTED = 0x40


class Direction(enum.IntEnum):
    """Which way a command's data goes."""

    NONE = 0
    READ = 1  # data in, from the device
    WRITE = 2  # data out, to the device


@dataclass
class Result:
    """The outcome of one command: SCSI status, the data that came in, sense when any.

    `residual` is the transport's count of requested bytes that did not arrive (or were not
    taken); the SSC residual is in `sense.information`.
    """

    status: Status
    data: bytes = b""
    sense: Sense | None = None
    residual: int = 0

    @property
    def good(self) -> bool:
        return self.status in (Status.GOOD, Status.CONDITION_MET)

    @property
    def check_condition(self) -> bool:
        return self.status == Status.CHECK_CONDITION


class TransportError(DriveError):
    """The path to the device failed (session dropped and not re-established, timeout,
    SG_IO host or driver error). The device may be fine; the command's effect is unknown."""

    def __init__(self, message: str, *, position_lost: bool = False, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.position_lost = position_lost


class CheckConditionError(Exception):
    """Raised by `execute()` (the PyScsi-facing entry) on CHECK CONDITION."""

    def __init__(self, sense: Sense | None, cdb: bytes) -> None:
        super().__init__(f"CHECK CONDITION on {cdb[:1].hex()}: {sense}")
        self.sense = sense
        self.cdb = cdb


# Per-command time limits. Tape positioning can take minutes on a real drive (an LTO
# rewind from the far end, a LOCATE across the tape), a robot move tens of seconds, an
# inventory scan of a large library much longer.
DEFAULT_TIMEOUT = 60.0
TIMEOUTS: dict[int, float] = {
    Op.REWIND: 1800.0,
    Op.READ_6: 900.0,
    Op.WRITE_6: 900.0,
    Op.WRITE_FILEMARKS_6: 1800.0,
    Op.SPACE_6: 3600.0,
    Op.SPACE_16: 3600.0,
    Op.LOCATE_10: 3600.0,
    Op.LOCATE_16: 3600.0,
    Op.LOAD_UNLOAD: 1800.0,
    Op.MOVE_MEDIUM: 900.0,
    0x07: 3600.0,  # INITIALIZE ELEMENT STATUS
    0x37: 3600.0,  # INITIALIZE ELEMENT STATUS WITH RANGE
}

# Commands that can be resent after a dropped session without changing the outcome.
# Anything that moves the tape or the robot, or writes, is not in this set: after a drop
# its effect is unknown and the caller must find out where things are.
IDEMPOTENT_OPS = frozenset(
    {
        0x00,  # TEST UNIT READY
        0x03,  # REQUEST SENSE
        0x05,  # READ BLOCK LIMITS
        0x12,  # INQUIRY
        0x1A,  # MODE SENSE(6)
        0x5A,  # MODE SENSE(10)
        0x1E,  # PREVENT ALLOW MEDIUM REMOVAL
        0x34,  # READ POSITION
        0x4D,  # LOG SENSE (clears TapeAlert flags, but a lost reply cleared them anyway)
        0xA0,  # REPORT LUNS
        0xA3,  # MAINTENANCE IN (REPORT SUPPORTED OPCODES)
        0xB8,  # READ ELEMENT STATUS
        0x07,  # INITIALIZE ELEMENT STATUS
        0x37,  # INITIALIZE ELEMENT STATUS WITH RANGE
    }
)

BUSY_RETRIES = 5


def timeout_for(cdb: bytes | bytearray) -> float:
    return TIMEOUTS.get(cdb[0], DEFAULT_TIMEOUT)


class PyScsiCommand(Protocol):
    """What `ScsiDevice.execute` uses of a PyScsi command object."""

    cdb: bytearray
    dataout: bytearray
    datain: bytearray


class ScsiDevice(abc.ABC):
    """One logical unit. Blocking; one command at a time (a lock enforces it)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._opcodes: Any = scsi_enum_command.spc
        self._devicetype: int | None = None
        #: number of times the transport had to re-establish its path to the device
        self.reconnects = 0
        #: commands run, for statistics and the benchmark
        self.commands = 0

    # -- PyScsi device protocol -------------------------------------------------------

    @property
    def opcodes(self) -> Any:
        return self._opcodes

    @opcodes.setter
    def opcodes(self, value: Any) -> None:
        self._opcodes = value

    @property
    def devicetype(self) -> int | None:
        return self._devicetype

    @devicetype.setter
    def devicetype(self, value: int) -> None:
        self._devicetype = value

    def execute(self, cmd: PyScsiCommand) -> None:
        """Run a PyScsi command object: fill `cmd.datain` in place, raise on CHECK CONDITION.

        The number of bytes that really arrived is left in `cmd.received` (PyScsi itself
        has no notion of it; its parsers read the zero-filled rest of the buffer).
        """
        cdb = bytes(cmd.cdb)
        want = len(cmd.datain) if cmd.datain is not None else 0
        out = bytes(cmd.dataout) if cmd.dataout else None
        result = self.transfer(cdb, data_in=want, data_out=out)
        if want:
            cmd.datain[: len(result.data)] = result.data
        cmd.received = len(result.data)  # type: ignore[attr-defined]
        if result.check_condition:
            cmd.sense = result.sense.raw if result.sense else b""  # type: ignore[attr-defined]
            raise CheckConditionError(result.sense, cdb)
        if not result.good:
            raise DriveError(f"SCSI status {result.status.name} for opcode {cdb[0]:#04x}")

    # -- the driver-facing entry ------------------------------------------------------

    def transfer(
        self,
        cdb: bytes | bytearray,
        *,
        data_in: int = 0,
        data_out: bytes | bytearray | memoryview | None = None,
        timeout: float | None = None,
    ) -> Result:
        """Run one command; BUSY and TASK SET FULL are retried with a short backoff."""
        cdb = bytes(cdb)
        if data_in and data_out is not None:
            raise ValueError("bidirectional commands are not supported")
        limit = timeout if timeout is not None else timeout_for(cdb)
        with self._lock:
            delay = 0.05
            for attempt in range(BUSY_RETRIES + 1):
                result = self._transfer(cdb, data_in, data_out, limit, cdb[0] in IDEMPOTENT_OPS)
                self.commands += 1
                if result.status not in (Status.BUSY, Status.TASK_SET_FULL):
                    break
                if attempt == BUSY_RETRIES:
                    raise RecoverableError(
                        f"device {self.url} stayed {result.status.name} for opcode {cdb[0]:#04x}"
                    )
                time.sleep(delay)  # backoff against a busy device, not test synchronisation
                delay *= 2
        if result.status == Status.RESERVATION_CONFLICT:
            raise DriveError(f"{self.url} is reserved by another initiator")
        if result.status == Status.TASK_ABORTED:
            raise RecoverableError(
                f"command {cdb[0]:#04x} aborted on {self.url}", error_class=ErrorClass.RECOVERABLE
            )
        return result

    @abc.abstractmethod
    def _transfer(
        self,
        cdb: bytes,
        data_in: int,
        data_out: bytes | bytearray | memoryview | None,
        timeout: float,
        idempotent: bool,
    ) -> Result:
        """Run one command on the transport (the caller holds the device lock)."""

    def close(self) -> None:  # noqa: B027 - transports without resources need nothing
        """Release the transport."""

    def __enter__(self) -> ScsiDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

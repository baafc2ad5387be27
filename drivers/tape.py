"""The two small interfaces every library driver implements: `TapeDrive` and `MediaChanger`.

Everything above `drivers/` (movers, library manager, CLI) talks to tape hardware only
through these classes, so an emulated library on local disk and a SCSI library behind
pyscsi are interchangeable. The vocabulary follows SSC (drives) and SMC (changers):

* A *logical object* is a record (block) or a filemark. `Position.block` counts logical
  objects from the beginning of tape, filemarks included, exactly as SSC's READ POSITION
  and LOCATE do. `Position.file` is the number of filemarks before the position.
* A *tape file* is the run of records between two filemarks; tape file N starts after
  the N-th filemark.
* Errors carry an `ErrorClass` so callers react to the class (retry elsewhere, mark the
  volume suspect, mark the drive down) rather than to driver-specific details.

Drivers are blocking and single-threaded per object: a mover owns a drive and calls it
from one worker thread.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field


class ErrorClass(enum.StrEnum):
    """What an error means for scheduling, independent of the driver that raised it."""

    MEDIA = "media"  # the cartridge is at fault: mark the volume suspect, use another copy
    DRIVE = "drive"  # the drive is at fault: mark the drive down, move work to another drive
    NOT_READY = "not_ready"  # no medium, becoming ready, door open: retry later
    END_OF_MEDIUM = "end_of_medium"  # physical end reached, the write did not complete
    BLANK = "blank"  # read or space ran into end of data
    RECOVERABLE = "recoverable"  # the command can simply be retried or the result used
    ILLEGAL_REQUEST = "illegal_request"  # a bug or an unsupported command: never retried
    DATA_PROTECT = "data_protect"  # write-protected medium: the volume is read-only


class TapeError(Exception):
    """A failed tape or changer operation.

    `sense` holds the raw sense bytes where the driver has them, `residual` the SSC
    information field (blocks or bytes not transferred), `alerts` the TapeAlert flag
    numbers (1..64) the device reported with or right after the failure.
    """

    error_class: ErrorClass = ErrorClass.DRIVE

    def __init__(
        self,
        message: str,
        *,
        sense: bytes | None = None,
        residual: int | None = None,
        alerts: Sequence[int] = (),
        error_class: ErrorClass | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.sense = sense
        self.residual = residual
        self.alerts = frozenset(alerts)
        if error_class is not None:
            self.error_class = error_class

    def __str__(self) -> str:
        return f"{self.message} [{self.error_class}]"


class MediaError(TapeError):
    """The cartridge is at fault."""

    error_class = ErrorClass.MEDIA


class DriveError(TapeError):
    """The drive (or the path to it) is at fault."""

    error_class = ErrorClass.DRIVE


class NotReadyError(TapeError):
    """No medium, becoming ready, door open: try again later."""

    error_class = ErrorClass.NOT_READY


class EndOfMediumError(TapeError):
    """Physical end of medium (SSC VOLUME OVERFLOW): the record was not written."""

    error_class = ErrorClass.END_OF_MEDIUM


class BlankCheckError(TapeError):
    """End of data: there is nothing recorded at or after this position."""

    error_class = ErrorClass.BLANK


class IllegalRequestError(TapeError):
    """A command the device refused as invalid or unsupported."""

    error_class = ErrorClass.ILLEGAL_REQUEST


class WriteProtectedError(TapeError):
    """SSC DATA PROTECT: the cartridge's write-protect tab is set (or it is WORM and full)."""

    error_class = ErrorClass.DATA_PROTECT


class RecoverableError(TapeError):
    """The command can be retried, or its result used as it is."""

    error_class = ErrorClass.RECOVERABLE


class BeginningOfMediumError(RecoverableError):
    """A backward space or read reached beginning of tape; `residual` is what was not done."""


class IncorrectLengthError(RecoverableError):
    """A record longer than the read buffer (SSC ILI with a negative residual).

    The drive is positioned after the record; `record_length` is its real length when
    the driver knows it.
    """

    def __init__(self, message: str, *, record_length: int | None = None, **kw) -> None:
        super().__init__(message, **kw)
        self.record_length = record_length


class FilemarkDetected(Exception):
    """A read or a block space crossed a filemark and stopped just after it (before it,
    when spacing backward).

    `residual` is what was not done, as SSC's INFORMATION field: for `space(BLOCKS)` the
    blocks not spaced; for `read_block` the bytes requested in variable mode, the blocks
    not read in fixed mode.
    """

    def __init__(self, residual: int = 0) -> None:
        super().__init__(f"filemark detected (residual {residual})")
        self.residual = residual


class SpaceUnit(enum.StrEnum):
    """What `TapeDrive.space` counts."""

    BLOCKS = "blocks"
    FILEMARKS = "filemarks"
    END_OF_DATA = "eod"


@dataclass(frozen=True)
class Position:
    """A position on the mounted tape: before logical object `block`.

    `file` is the number of filemarks before the position, `None` when the drive cannot
    tell (callers then track it themselves).
    """

    block: int
    file: int | None = None


@dataclass
class DriveStatus:
    """What a drive says of itself and its cartridge."""

    ready: bool
    loaded: bool
    write_protected: bool = False
    block_size: int = 0  # 0: variable-length records
    position: Position | None = None
    early_warning: bool = False
    volume: str | None = None  # the cartridge's barcode, when the drive knows it
    cleaning: bool = False  # a cleaning cartridge is loaded (and cleaning, or expired)
    detail: str = ""


#: TapeAlert flags by which a drive asks for cleaning: clean now, clean periodic
CLEANING_ALERTS = frozenset({20, 21})
#: TapeAlert flags by which a cleaning cartridge refuses: expired, invalid
CLEANING_REFUSED_ALERTS = frozenset({22, 23})


@dataclass
class CleaningResult:
    """The outcome of `TapeDrive.clean()`: whether the drive really cleaned (False on
    devices without cleaning semantics, like tgt), the TapeAlert flags raised, whether the
    cartridge is used up, and what the drive said."""

    cleaned: bool
    alerts: frozenset[int] = frozenset()
    expired: bool = False
    detail: str = ""


class TapeDrive(abc.ABC):
    """One tape drive. Blocking calls; one thread at a time."""

    #: the name the archive knows this drive by (e.g. "drive0")
    name: str
    #: the drive's serial number, used to match it with the changer's drive elements
    serial: str

    @abc.abstractmethod
    def load(self) -> None:
        """Thread the cartridge the changer put into this drive and wait until ready.

        Raises `NotReadyError` when there is no cartridge.
        """

    @abc.abstractmethod
    def unload(self) -> None:
        """Rewind and eject, so that the changer can take the cartridge."""

    @abc.abstractmethod
    def rewind(self) -> None: ...

    @abc.abstractmethod
    def locate(self, block: int) -> None:
        """Position before logical object `block` (0 is beginning of tape)."""

    @abc.abstractmethod
    def read_position(self) -> Position: ...

    @abc.abstractmethod
    def set_block_size(self, size: int) -> None:
        """Fixed-length records of `size` bytes, or variable-length ones with 0."""

    @abc.abstractmethod
    def write_block(self, data: bytes | bytearray | memoryview) -> bool:
        """Write one record at the current position, which becomes the new end of data.

        The driver is done with `data` when this returns (callers reuse the buffer).
        Returns True when the record was written past the early-warning point: the
        volume is nearly full and the caller should finish what it is doing and stop.
        Raises `EndOfMediumError` when the record could not be written at all.
        """

    @abc.abstractmethod
    def write_filemarks(self, count: int = 1, *, immediate: bool = False) -> None:
        """Write `count` filemarks (0 is allowed: a pure flush).

        Unless `immediate`, every record written before is on the medium when this
        returns: this is the drive's sync point.
        """

    @abc.abstractmethod
    def read_block(self, max_size: int) -> bytes:
        """Read the next record.

        Raises `FilemarkDetected` when the next object is a filemark (the position is
        then after it), `BlankCheckError` at end of data, `IncorrectLengthError` when the
        record is longer than `max_size` (the position is then after the record).
        """

    @abc.abstractmethod
    def space(self, count: int, unit: SpaceUnit = SpaceUnit.BLOCKS) -> None:
        """Space forward (count > 0) or backward (count < 0) over blocks or filemarks,
        or to end of data (`count` ignored).

        Spacing over blocks stops after a filemark and raises `FilemarkDetected` with the
        residual; spacing into end of data raises `BlankCheckError`.
        """

    @abc.abstractmethod
    def status(self) -> DriveStatus: ...

    @abc.abstractmethod
    def remaining_capacity(self) -> int | None:
        """Uncompressed bytes that still fit between end of data and early warning,
        or None when the drive cannot tell."""

    @abc.abstractmethod
    def alerts(self) -> frozenset[int]:
        """TapeAlert flags (1..64) currently set; reading them clears them, as on SSC."""

    def statistics(self) -> dict[str, int | float]:
        """Salient counters for the current mount, recorded as an event per mount.

        Keys, where the drive knows them: `bytes_written`, `records_written`,
        `filemarks_written`, `bytes_read`, `records_read`, `filemarks_read`,
        `write_errors` and `read_errors` (uncorrected), `corrected_write_errors`,
        `corrected_read_errors`, `drive_errors`, `compression_ratio`.
        """
        return {}

    def needs_cleaning(self) -> bool:
        """The drive asks for a cleaning cartridge (TapeAlert 20 or 21)."""
        return bool(self.alerts() & CLEANING_ALERTS)

    def clean(self, timeout: float = 900.0) -> CleaningResult:
        """The drive's part of a cleaning cycle, once the changer put a cleaning cartridge
        in: let it clean, collect the verdict, leave the cartridge unloaded. Nothing is
        ever written to a cleaning cartridge."""
        self.load()
        st = self.status()
        flags = self.alerts()
        self.unload()
        expired = bool(flags & CLEANING_REFUSED_ALERTS)
        return CleaningResult(
            cleaned=st.cleaning and not expired, alerts=flags, expired=expired, detail=st.detail
        )

    def close(self) -> None:  # noqa: B027 - optional for drivers that hold no resources
        """Release the device (file descriptors, sessions)."""


class ElementType(enum.StrEnum):
    """The kinds of changer element."""

    TRANSPORT = "transport"
    SLOT = "slot"
    IMPORT_EXPORT = "import_export"
    DRIVE = "drive"


@dataclass(frozen=True)
class Element:
    """One element of a media changer, as READ ELEMENT STATUS reports it."""

    address: int
    type: ElementType
    full: bool
    barcode: str | None = None  # primary volume tag
    source: int | None = None  # where the cartridge came from (its home), when known
    identifier: str | None = None  # a drive element's device identifier (serial number)
    accessible: bool = True
    exception: str | None = None  # the element's abnormal state, if any


@dataclass
class Inventory:
    """The changer's elements and what they hold, as one inventory found them."""

    elements: list[Element] = field(default_factory=list)

    def of_type(self, kind: ElementType) -> list[Element]:
        return [e for e in self.elements if e.type == kind]

    def by_address(self, address: int) -> Element:
        for e in self.elements:
            if e.address == address:
                return e
        raise KeyError(address)

    def find(self, barcode: str) -> Element | None:
        for e in self.elements:
            if e.full and e.barcode == barcode:
                return e
        return None


class MediaChanger(abc.ABC):
    """A media changer (robot): slots, drives, import/export slots, one transport."""

    @abc.abstractmethod
    def inventory(self) -> Inventory:
        """Every element with its volume tag, freshly read from the changer."""

    @abc.abstractmethod
    def move(self, source: int, destination: int) -> None:
        """Move the cartridge at element address `source` to `destination`."""

    def initialize_element_status(self) -> None:  # noqa: B027 - a no-op is a valid default
        """Rescan the library (after the door was open, on start)."""

    def open_import_export(self, address: int) -> bool:
        """Unlock the mail slot at `address` for the operator; False where there is no door."""
        return False

    def close_import_export(self, address: int) -> bool:
        """Lock the mail slot again (the robot may use it); False where there is no door."""
        return False

    def close(self) -> None:  # noqa: B027
        """Release the device."""


class LibraryConfigError(ValueError):
    """The `[library]` table cannot describe a usable library."""


@dataclass
class Library:
    """A changer and its drives, each drive keyed by the changer's element address."""

    changer: MediaChanger
    drives: dict[int, TapeDrive]

    def close(self) -> None:
        for d in self.drives.values():
            d.close()
        self.changer.close()

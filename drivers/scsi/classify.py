"""From sense data (and TapeAlert flags) to the archive's `ErrorClass` and `TapeError`s.

The rules, in order:

1. The sense key gives the first answer (SPC-4 Table 28 read with tape eyes):
   MEDIUM ERROR -> media, HARDWARE ERROR -> drive, NOT READY -> not ready, BLANK CHECK ->
   blank, VOLUME OVERFLOW -> end of medium, ILLEGAL REQUEST -> illegal request,
   RECOVERED ERROR / UNIT ATTENTION / ABORTED COMMAND -> recoverable, DATA PROTECT ->
   data protect (the volume becomes read-only), MISCOMPARE -> media.
2. Some ASC/ASCQ pairs override the key: a NOT READY for "incompatible medium" or "cleaning
   cartridge installed" is about the cartridge; "end-of-data not found" (14/03) under BLANK
   CHECK means a damaged tape, not an empty one; "manual intervention required" (04/03)
   means a drive that needs a human.
3. TapeAlert flags refine MEDIA vs DRIVE: a medium error while the drive raises only
   drive-side flags (hardware A/B, clean now, ...) blames the drive, and a hardware error
   while only media flags are up blames the cartridge. When the flags disagree the sense key
   stands.

Also here: the two SCSI-specific `TapeError` subclasses, and predicates for the CHECK
CONDITION outcomes that are not failures (end of data, beginning of medium) or that mean a
command is unsupported.
"""

from __future__ import annotations

from collections.abc import Iterable

from drivers.scsi import tapealert
from drivers.scsi.sense import Sense, SenseKey
from drivers.tape import (
    BeginningOfMediumError,
    BlankCheckError,
    DriveError,
    EndOfMediumError,
    ErrorClass,
    IllegalRequestError,
    MediaError,
    NotReadyError,
    RecoverableError,
    TapeError,
    WriteProtectedError,
)

__all__ = ["BeginningOfMediumError"]  # re-exported: the SCSI modules import it from here

_BY_KEY: dict[SenseKey, ErrorClass] = {
    SenseKey.NO_SENSE: ErrorClass.RECOVERABLE,
    SenseKey.RECOVERED_ERROR: ErrorClass.RECOVERABLE,
    SenseKey.NOT_READY: ErrorClass.NOT_READY,
    SenseKey.MEDIUM_ERROR: ErrorClass.MEDIA,
    SenseKey.HARDWARE_ERROR: ErrorClass.DRIVE,
    SenseKey.ILLEGAL_REQUEST: ErrorClass.ILLEGAL_REQUEST,
    SenseKey.UNIT_ATTENTION: ErrorClass.RECOVERABLE,
    SenseKey.DATA_PROTECT: ErrorClass.DATA_PROTECT,
    SenseKey.BLANK_CHECK: ErrorClass.BLANK,
    SenseKey.VENDOR_SPECIFIC: ErrorClass.DRIVE,
    SenseKey.COPY_ABORTED: ErrorClass.DRIVE,
    SenseKey.ABORTED_COMMAND: ErrorClass.RECOVERABLE,
    SenseKey.RESERVED_C: ErrorClass.DRIVE,
    SenseKey.VOLUME_OVERFLOW: ErrorClass.END_OF_MEDIUM,
    SenseKey.MISCOMPARE: ErrorClass.MEDIA,
    SenseKey.COMPLETED: ErrorClass.RECOVERABLE,
}

# (asc, ascq or None for any) -> class, checked before the sense key.
_BY_ASC: dict[tuple[int, int | None], ErrorClass] = {
    (0x04, 0x03): ErrorClass.DRIVE,  # manual intervention required
    (0x14, 0x03): ErrorClass.MEDIA,  # end-of-data not found: the tape lost its EOD
    (0x30, None): ErrorClass.MEDIA,  # incompatible / unreadable / cleaning cartridge
    (0x31, None): ErrorClass.MEDIA,  # medium format corrupted
    (0x3B, 0x0D): ErrorClass.ILLEGAL_REQUEST,  # destination element full
    (0x3B, 0x0E): ErrorClass.ILLEGAL_REQUEST,  # source element empty
    (0x3B, 0x11): ErrorClass.NOT_READY,  # magazine not accessible
    (0x3B, 0x12): ErrorClass.NOT_READY,  # magazine removed
    (0x3A, None): ErrorClass.NOT_READY,  # medium not present
    (0x40, None): ErrorClass.DRIVE,  # diagnostic failure
    (0x44, None): ErrorClass.DRIVE,  # internal target failure
    (0x52, 0x00): ErrorClass.MEDIA,  # cartridge fault
    (0x53, 0x00): ErrorClass.DRIVE,  # media load or eject failed
    (0x53, 0x01): ErrorClass.DRIVE,  # unload tape failure
    (0x53, 0x02): ErrorClass.ILLEGAL_REQUEST,  # medium removal prevented
    (0x5D, None): ErrorClass.DRIVE,  # failure prediction threshold exceeded
    (0x82, 0x82): ErrorClass.DRIVE,  # drive requires cleaning (IBM, HP)
}

_CLASS_TO_EXC: dict[ErrorClass, type[TapeError]] = {
    ErrorClass.MEDIA: MediaError,
    ErrorClass.DRIVE: DriveError,
    ErrorClass.NOT_READY: NotReadyError,
    ErrorClass.END_OF_MEDIUM: EndOfMediumError,
    ErrorClass.BLANK: BlankCheckError,
    ErrorClass.ILLEGAL_REQUEST: IllegalRequestError,
    ErrorClass.RECOVERABLE: RecoverableError,
    ErrorClass.DATA_PROTECT: WriteProtectedError,
}


def classify(sense: Sense | None, alerts: Iterable[int] = ()) -> ErrorClass:
    """The `ErrorClass` of a failed command."""
    if sense is None:
        return ErrorClass.DRIVE
    cls = _BY_ASC.get((sense.asc, sense.ascq)) or _BY_ASC.get((sense.asc, None))
    if cls is None:
        cls = _BY_KEY[sense.key]
    if sense.key in (SenseKey.RECOVERED_ERROR, SenseKey.UNIT_ATTENTION):
        # The command completed (recovered) or was not run at all (UA): retrying is the
        # answer whatever the ASC says.
        cls = ErrorClass.RECOVERABLE
    if cls in (ErrorClass.MEDIA, ErrorClass.DRIVE) and sense.key in (
        SenseKey.MEDIUM_ERROR,
        SenseKey.HARDWARE_ERROR,
    ):
        verdict = tapealert.blame(alerts)
        if verdict is tapealert.Blame.MEDIA:
            cls = ErrorClass.MEDIA
        elif verdict is tapealert.Blame.DRIVE:
            cls = ErrorClass.DRIVE
    return cls


def error_for(
    what: str,
    sense: Sense | None,
    *,
    alerts: Iterable[int] = (),
    residual: int | None = None,
) -> TapeError:
    """The `TapeError` (right subclass, sense, residual, alerts) for a failed command."""
    alert_set = frozenset(alerts)
    cls = classify(sense, alert_set)
    detail = str(sense) if sense is not None else "no sense data"
    if alert_set:
        detail += f"; TapeAlert {tapealert.describe(alert_set)}"
    exc_type = _CLASS_TO_EXC[cls]
    return exc_type(
        f"{what}: {detail}",
        sense=sense.raw if sense is not None else None,
        residual=residual if residual is not None else (sense.information if sense else None),
        alerts=alert_set,
    )


def wants_alerts(sense: Sense | None) -> bool:
    """Whether reading TapeAlert could change the verdict (media vs drive)."""
    return sense is not None and sense.key in (SenseKey.MEDIUM_ERROR, SenseKey.HARDWARE_ERROR)


class CleaningCartridgeError(NotReadyError):
    """The cartridge in the drive is a cleaning cartridge, not a data cartridge."""


# -- outcomes that are not failures ----------------------------------------------------


def is_unsupported(sense: Sense | None) -> bool:
    """ILLEGAL REQUEST for an unknown opcode or field: the device lacks the feature."""
    return (
        sense is not None
        and sense.key == SenseKey.ILLEGAL_REQUEST
        and (sense.asc, sense.ascq) in ((0x20, 0x00), (0x24, 0x00), (0x26, 0x00))
    )


def is_end_of_data(sense: Sense | None) -> bool:
    """End of data: BLANK CHECK (real drives: 00/05; tgt: 00/00 with EOM), or a NO SENSE
    00/05 (tgt's SPACE and some drives' space commands)."""
    if sense is None:
        return False
    if sense.key == SenseKey.BLANK_CHECK:
        return (sense.asc, sense.ascq) in ((0x00, 0x05), (0x00, 0x00))
    return sense.key == SenseKey.NO_SENSE and (sense.asc, sense.ascq) == (0x00, 0x05)


def is_beginning_of_medium(sense: Sense | None) -> bool:
    return sense is not None and (sense.asc, sense.ascq) == (0x00, 0x04)

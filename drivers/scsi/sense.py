"""SCSI sense data: decoding fixed (70h/71h) and descriptor (72h/73h) formats (SPC-4 4.5).

Only the facts are decoded here (key, ASC/ASCQ, the SSC FILEMARK/EOM/ILI bits, the signed
INFORMATION field); what an outcome *means* for the archive is decided in `classify.py`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class SenseKey(enum.IntEnum):
    """SPC's sense keys."""

    NO_SENSE = 0x0
    RECOVERED_ERROR = 0x1
    NOT_READY = 0x2
    MEDIUM_ERROR = 0x3
    HARDWARE_ERROR = 0x4
    ILLEGAL_REQUEST = 0x5
    UNIT_ATTENTION = 0x6
    DATA_PROTECT = 0x7
    BLANK_CHECK = 0x8
    VENDOR_SPECIFIC = 0x9
    COPY_ABORTED = 0xA
    ABORTED_COMMAND = 0xB
    RESERVED_C = 0xC
    VOLUME_OVERFLOW = 0xD
    MISCOMPARE = 0xE
    COMPLETED = 0xF


# The ASC/ASCQ pairs a tape drive or changer driver meets (SPC-4 Annex D), for messages.
ASC_TEXT: dict[tuple[int, int], str] = {
    (0x00, 0x00): "no additional sense information",
    (0x00, 0x01): "filemark detected",
    (0x00, 0x02): "end-of-partition/medium detected",
    (0x00, 0x03): "setmark detected",
    (0x00, 0x04): "beginning-of-partition/medium detected",
    (0x00, 0x05): "end-of-data detected",
    (0x00, 0x07): "programmable early warning detected",
    (0x00, 0x16): "operation in progress",
    (0x00, 0x17): "cleaning requested",
    (0x00, 0x19): "locate operation in progress",
    (0x00, 0x1A): "rewind operation in progress",
    (0x03, 0x02): "excessive write errors",
    (0x04, 0x00): "logical unit not ready, cause not reportable",
    (0x04, 0x01): "logical unit is in process of becoming ready",
    (0x04, 0x02): "logical unit not ready, initializing command required",
    (0x04, 0x03): "logical unit not ready, manual intervention required",
    (0x04, 0x07): "logical unit not ready, operation in progress",
    (0x04, 0x12): "logical unit not ready, offline",
    (0x08, 0x00): "logical unit communication failure",
    (0x08, 0x01): "logical unit communication time-out",
    (0x0C, 0x00): "write error",
    (0x11, 0x00): "unrecovered read error",
    (0x11, 0x01): "read retries exhausted",
    (0x14, 0x00): "recorded entity not found",
    (0x14, 0x01): "record not found",
    (0x14, 0x02): "filemark or setmark not found",
    (0x14, 0x03): "end-of-data not found",
    (0x14, 0x04): "block sequence error",
    (0x15, 0x00): "random positioning error",
    (0x15, 0x01): "mechanical positioning error",
    (0x15, 0x02): "positioning error detected by read of medium",
    (0x17, 0x00): "recovered data with no error correction applied",
    (0x17, 0x01): "recovered data with retries",
    (0x18, 0x00): "recovered data with error correction applied",
    (0x1A, 0x00): "parameter list length error",
    (0x20, 0x00): "invalid command operation code",
    (0x21, 0x01): "invalid element address",
    (0x24, 0x00): "invalid field in cdb",
    (0x25, 0x00): "logical unit not supported",
    (0x26, 0x00): "invalid field in parameter list",
    (0x27, 0x00): "write protected",
    (0x28, 0x00): "not ready to ready change, medium may have changed",
    (0x28, 0x01): "import or export element accessed",
    (0x29, 0x00): "power on, reset, or bus device reset occurred",
    (0x2A, 0x01): "mode parameters changed",
    (0x30, 0x00): "incompatible medium installed",
    (0x30, 0x01): "cannot read medium - unknown format",
    (0x30, 0x02): "cannot read medium - incompatible format",
    (0x30, 0x03): "cleaning cartridge installed",
    (0x30, 0x07): "cleaning failure",
    (0x30, 0x0C): "data protect - WORM medium overwrite attempted",
    (0x31, 0x00): "medium format corrupted",
    (0x33, 0x00): "tape length error",
    (0x3A, 0x00): "medium not present",
    (0x3A, 0x01): "medium not present - tray closed",
    (0x3A, 0x02): "medium not present - tray open",
    (0x3B, 0x00): "sequential positioning error",
    (0x3B, 0x01): "tape position error at beginning-of-medium",
    (0x3B, 0x02): "tape position error at end-of-medium",
    (0x3B, 0x08): "reposition error",
    (0x3B, 0x0D): "medium destination element full",
    (0x3B, 0x0E): "medium source element empty",
    (0x3B, 0x11): "medium magazine not accessible",
    (0x3B, 0x12): "medium magazine removed",
    (0x3F, 0x01): "microcode has been changed",
    (0x40, 0x00): "diagnostic failure",
    (0x44, 0x00): "internal target failure",
    (0x47, 0x00): "scsi parity error",
    (0x4B, 0x00): "data phase error",
    (0x50, 0x00): "write append error",
    (0x51, 0x00): "erase failure",
    (0x52, 0x00): "cartridge fault",
    (0x53, 0x00): "media load or eject failed",
    (0x53, 0x01): "unload tape failure",
    (0x53, 0x02): "medium removal prevented",
    (0x5B, 0x01): "threshold condition met",
    (0x5D, 0x00): "failure prediction threshold exceeded",
    (0x82, 0x82): "drive requires cleaning (vendor specific)",
    (0x83, 0x00): "bad microcode detected (vendor specific)",
}


@dataclass(frozen=True)
class Sense:
    """Decoded sense data.

    `information` is the INFORMATION field as a signed 32-bit (fixed) or 64-bit (descriptor)
    number when VALID is set: for SSC READ/WRITE/SPACE it is the residual, requested minus
    actual, negative when a record was longer than asked for. `None` when not valid.
    """

    response_code: int
    key: SenseKey
    asc: int
    ascq: int
    filemark: bool = False
    eom: bool = False
    ili: bool = False
    information: int | None = None
    command_specific: int | None = None
    sense_key_specific: bytes | None = None
    field_pointer: int | None = None  # SKSV + C/D: the failing byte in the CDB/parameters
    raw: bytes = b""

    @property
    def deferred(self) -> bool:
        """The error belongs to an earlier command (buffered write data that failed)."""
        return self.response_code in (0x71, 0x73)

    @property
    def descriptor_format(self) -> bool:
        return self.response_code in (0x72, 0x73)

    @property
    def asc_ascq(self) -> tuple[int, int]:
        return (self.asc, self.ascq)

    def describe(self) -> str:
        text = ASC_TEXT.get((self.asc, self.ascq))
        if text is None:
            text = f"asc/ascq {self.asc:02X}/{self.ascq:02X}"
        bits = [n for n, on in (("FM", self.filemark), ("EOM", self.eom), ("ILI", self.ili)) if on]
        extra = f" [{' '.join(bits)}]" if bits else ""
        info = f" info={self.information}" if self.information is not None else ""
        deferred = " (deferred)" if self.deferred else ""
        return (
            f"{self.key.name.replace('_', ' ')} {self.asc:02X}/{self.ascq:02X} {text}"
            f"{extra}{info}{deferred}"
        )

    def __str__(self) -> str:
        return self.describe()


class SenseFormatError(ValueError):
    """The bytes are not sense data the decoder understands."""


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value & (1 << (bits - 1)) else value


def parse_sense(data: bytes | bytearray | memoryview) -> Sense:
    """Decode fixed or descriptor format sense data."""
    raw = bytes(data)
    if len(raw) < 2:
        raise SenseFormatError(f"sense data too short ({len(raw)} bytes)")
    code = raw[0] & 0x7F
    if code in (0x70, 0x71):
        return _parse_fixed(raw, code)
    if code in (0x72, 0x73):
        return _parse_descriptor(raw, code)
    raise SenseFormatError(f"unknown sense response code {code:#04x}")


def _parse_fixed(raw: bytes, code: int) -> Sense:
    # Pad to the 18 bytes of a full fixed-format record: short replies leave zeros.
    buf = raw + bytes(max(0, 18 - len(raw)))
    valid = bool(buf[0] & 0x80)
    flags = buf[2]
    # ADDITIONAL SENSE LENGTH says how much of bytes 8.. is real; ASC lives at byte 12.
    additional = buf[7]
    has_asc = len(raw) >= 14 and additional >= 6
    information = _signed(int.from_bytes(buf[3:7], "big"), 32) if valid else None
    command_specific = int.from_bytes(buf[8:12], "big") if additional >= 4 else None
    sks = buf[15:18] if additional >= 10 and buf[15] & 0x80 else None
    field_pointer = int.from_bytes(sks[1:3], "big") if sks is not None else None
    return Sense(
        response_code=code,
        key=SenseKey(flags & 0x0F),
        asc=buf[12] if has_asc else 0,
        ascq=buf[13] if has_asc else 0,
        filemark=bool(flags & 0x80),
        eom=bool(flags & 0x40),
        ili=bool(flags & 0x20),
        information=information,
        command_specific=command_specific,
        sense_key_specific=bytes(sks) if sks is not None else None,
        field_pointer=field_pointer,
        raw=raw,
    )


def _parse_descriptor(raw: bytes, code: int) -> Sense:
    buf = raw + bytes(max(0, 8 - len(raw)))
    key = SenseKey(buf[1] & 0x0F)
    asc, ascq = buf[2], buf[3]
    end = min(len(raw), 8 + buf[7])
    information = None
    command_specific = None
    sks: bytes | None = None
    filemark = eom = ili = False
    pos = 8
    while pos + 2 <= end:
        dtype, dlen = raw[pos], raw[pos + 1]
        body = raw[pos + 2 : pos + 2 + dlen]
        if dtype == 0x00 and len(body) >= 10 and body[0] & 0x80:
            # Information descriptor: VALID bit, reserved byte, 8-byte field.
            information = _signed(int.from_bytes(body[2:10], "big"), 64)
        elif dtype == 0x01 and len(body) >= 10:
            command_specific = int.from_bytes(body[2:10], "big")
        elif dtype == 0x02 and len(body) >= 5 and body[2] & 0x80:
            sks = bytes(body[2:5])
        elif dtype == 0x04 and len(body) >= 2:
            # Stream commands descriptor (SSC): FILEMARK, EOM, ILI in byte 3.
            filemark = bool(body[1] & 0x80)
            eom = bool(body[1] & 0x40)
            ili = bool(body[1] & 0x20)
        pos += 2 + dlen
    return Sense(
        response_code=code,
        key=key,
        asc=asc,
        ascq=ascq,
        filemark=filemark,
        eom=eom,
        ili=ili,
        information=information,
        command_specific=command_specific,
        sense_key_specific=sks,
        field_pointer=int.from_bytes(sks[1:3], "big") if sks is not None else None,
        raw=raw,
    )


def build_fixed_sense(
    key: int,
    asc: int = 0,
    ascq: int = 0,
    *,
    filemark: bool = False,
    eom: bool = False,
    ili: bool = False,
    information: int | None = None,
    deferred: bool = False,
) -> bytes:
    """Fixed-format sense bytes, as a device returns them (for tests and fakes)."""
    buf = bytearray(18)
    buf[0] = (0x71 if deferred else 0x70) | (0x80 if information is not None else 0)
    buf[2] = (key & 0x0F) | (0x80 if filemark else 0) | (0x40 if eom else 0) | (0x20 if ili else 0)
    if information is not None:
        buf[3:7] = (information & 0xFFFFFFFF).to_bytes(4, "big")
    buf[7] = 10
    buf[12] = asc
    buf[13] = ascq
    return bytes(buf)

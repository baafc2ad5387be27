"""Command descriptor blocks that PyScsi 2.1 does not build: the SSC (tape) commands and the
SPC ones it lacks or cannot build for tape (MODE SELECT with a block descriptor, LOG SENSE,
REQUEST SENSE). INQUIRY, MODE SENSE, TEST UNIT READY, PREVENT ALLOW and the SMC commands come
from PyScsi's command classes (see `commands.py`).

Small pure functions, one per command, each returning the CDB bytes; the layouts follow
SSC-4 and SPC-4 and the unit tests check them byte by byte.
"""

from __future__ import annotations

import enum

MAX_24BIT = (1 << 24) - 1


class Op(enum.IntEnum):
    """The operation codes the drivers send."""

    TEST_UNIT_READY = 0x00
    REWIND = 0x01
    REQUEST_SENSE = 0x03
    READ_BLOCK_LIMITS = 0x05
    READ_6 = 0x08
    WRITE_6 = 0x0A
    WRITE_FILEMARKS_6 = 0x10
    SPACE_6 = 0x11
    INQUIRY = 0x12
    MODE_SELECT_6 = 0x15
    MODE_SENSE_6 = 0x1A
    LOAD_UNLOAD = 0x1B
    PREVENT_ALLOW_MEDIUM_REMOVAL = 0x1E
    LOCATE_10 = 0x2B
    READ_POSITION = 0x34
    LOG_SENSE = 0x4D
    SPACE_16 = 0x91
    LOCATE_16 = 0x92
    MOVE_MEDIUM = 0xA5
    READ_ELEMENT_STATUS = 0xB8


class SpaceCode(enum.IntEnum):
    """SPACE's code field: what is counted."""

    BLOCKS = 0
    FILEMARKS = 1
    SEQUENTIAL_FILEMARKS = 2
    END_OF_DATA = 3


class ReadPositionForm(enum.IntEnum):
    """READ POSITION's service action: which form of the answer."""

    SHORT = 0x00
    SHORT_VENDOR = 0x01
    LONG = 0x06
    EXTENDED = 0x08


def _u24(value: int, what: str) -> bytes:
    if not 0 <= value <= MAX_24BIT:
        raise ValueError(f"{what} {value} does not fit in 24 bits")
    return value.to_bytes(3, "big")


def _s24(value: int, what: str) -> bytes:
    if not -(1 << 23) <= value < (1 << 23):
        raise ValueError(f"{what} {value} does not fit in a signed 24-bit field")
    return (value & MAX_24BIT).to_bytes(3, "big")


def rewind(*, immediate: bool = False) -> bytes:
    return bytes([Op.REWIND, 0x01 if immediate else 0x00, 0, 0, 0, 0])


def request_sense(allocation: int = 252, *, descriptor: bool = False) -> bytes:
    if not 0 <= allocation <= 0xFF:
        raise ValueError("REQUEST SENSE allocation length is one byte")
    return bytes([Op.REQUEST_SENSE, 0x01 if descriptor else 0x00, 0, 0, allocation, 0])


def read_block_limits() -> bytes:
    return bytes([Op.READ_BLOCK_LIMITS, 0, 0, 0, 0, 0])


def read6(length: int, *, fixed: bool = False, sili: bool = False) -> bytes:
    """READ(6): `length` is bytes in variable mode, blocks in fixed mode."""
    if fixed and sili:
        raise ValueError("SILI with FIXED is invalid (SSC-4 6.6)")
    flags = (0x02 if sili else 0) | (0x01 if fixed else 0)
    return bytes([Op.READ_6, flags]) + _u24(length, "transfer length") + b"\x00"


def write6(length: int, *, fixed: bool = False) -> bytes:
    """WRITE(6): `length` is bytes in variable mode, blocks in fixed mode."""
    return bytes([Op.WRITE_6, 0x01 if fixed else 0x00]) + _u24(length, "transfer length") + b"\x00"


def write_filemarks6(count: int = 1, *, immediate: bool = False, setmarks: bool = False) -> bytes:
    flags = (0x02 if setmarks else 0) | (0x01 if immediate else 0)
    return bytes([Op.WRITE_FILEMARKS_6, flags]) + _u24(count, "filemark count") + b"\x00"


def space6(count: int, code: SpaceCode = SpaceCode.BLOCKS) -> bytes:
    """SPACE(6): a signed 24-bit count, negative spaces toward the beginning of tape."""
    return bytes([Op.SPACE_6, int(code) & 0x0F]) + _s24(count, "space count") + b"\x00"


def space16(count: int, code: SpaceCode = SpaceCode.BLOCKS) -> bytes:
    if not -(1 << 63) <= count < (1 << 63):
        raise ValueError("space count does not fit in 64 bits")
    return (
        bytes([Op.SPACE_16, int(code) & 0x0F, 0, 0])
        + (count & ((1 << 64) - 1)).to_bytes(8, "big")
        + bytes(4)
    )


def locate10(block: int, *, partition: int | None = None, immediate: bool = False) -> bytes:
    """LOCATE(10) to logical object `block`; BT=0 (SCSI logical object identifiers)."""
    if not 0 <= block <= 0xFFFFFFFF:
        raise ValueError("LOCATE(10) takes a 32-bit logical object identifier")
    flags = (0x02 if partition is not None else 0) | (0x01 if immediate else 0)
    return (
        bytes([Op.LOCATE_10, flags, 0]) + block.to_bytes(4, "big") + bytes([0, partition or 0, 0])
    )


def locate16(block: int, *, partition: int | None = None, immediate: bool = False) -> bytes:
    """LOCATE(16), DEST_TYPE 0 (logical object identifier), BAM 0 (block address mode)."""
    if not 0 <= block < (1 << 64):
        raise ValueError("LOCATE(16) takes a 64-bit logical object identifier")
    flags = (0x02 if partition is not None else 0) | (0x01 if immediate else 0)
    return bytes([Op.LOCATE_16, flags, 0, partition or 0]) + block.to_bytes(8, "big") + bytes(4)


def read_position(form: ReadPositionForm = ReadPositionForm.SHORT, allocation: int = 0) -> bytes:
    """READ POSITION. SSC-4 wants the allocation length zero except for the extended form."""
    if form is ReadPositionForm.EXTENDED and allocation == 0:
        allocation = 32
    return bytes([Op.READ_POSITION, int(form) & 0x1F, 0, 0, 0, 0, 0]) + (
        allocation.to_bytes(2, "big") + b"\x00"
    )


def read_position_length(form: ReadPositionForm) -> int:
    """How many bytes each READ POSITION form returns."""
    return 20 if form in (ReadPositionForm.SHORT, ReadPositionForm.SHORT_VENDOR) else 32


class LoadAction(enum.IntFlag):
    """LOAD UNLOAD's byte 4 bits."""

    UNLOAD = 0x00
    LOAD = 0x01
    RETENSION = 0x02
    EOT = 0x04
    HOLD = 0x08


def load_unload(action: LoadAction | int, *, immediate: bool = False) -> bytes:
    """LOAD UNLOAD (SSC-4 7.2): byte 4 carries HOLD, EOT, RETEN and LOAD."""
    return bytes([Op.LOAD_UNLOAD, 0x01 if immediate else 0x00, 0, 0, int(action) & 0x0F, 0])


class PageControl(enum.IntEnum):
    """LOG SENSE's page control: which values of the parameters."""

    CURRENT_THRESHOLD = 0
    CURRENT_CUMULATIVE = 1
    DEFAULT_THRESHOLD = 2
    DEFAULT_CUMULATIVE = 3


def log_sense(
    page: int,
    *,
    subpage: int = 0,
    pc: PageControl = PageControl.CURRENT_CUMULATIVE,
    parameter_pointer: int = 0,
    allocation: int = 0x4000,
    save: bool = False,
) -> bytes:
    if not 0 <= page <= 0x3F:
        raise ValueError("log page codes are six bits")
    return (
        bytes([Op.LOG_SENSE, 0x01 if save else 0x00, ((int(pc) & 3) << 6) | page, subpage & 0xFF])
        + b"\x00"
        + parameter_pointer.to_bytes(2, "big")
        + allocation.to_bytes(2, "big")
        + b"\x00"
    )


def mode_select6(parameter_length: int, *, pf: bool = True, save: bool = False) -> bytes:
    """MODE SELECT(6). PyScsi's ModeSelect6 cannot carry the block descriptor a tape drive
    needs to change its block length, hence this builder."""
    if not 0 <= parameter_length <= 0xFF:
        raise ValueError("MODE SELECT(6) parameter list is at most 255 bytes")
    flags = (0x10 if pf else 0) | (0x01 if save else 0)
    return bytes([Op.MODE_SELECT_6, flags, 0, 0, parameter_length, 0])

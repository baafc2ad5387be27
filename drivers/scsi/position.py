"""READ POSITION data (SSC-4 7.7): short (20 bytes), long (32 bytes) and extended forms."""

from __future__ import annotations

from dataclasses import dataclass


class PositionFormatError(ValueError):
    """A READ POSITION answer that cannot be decoded."""


@dataclass(frozen=True)
class TapePosition:
    """What READ POSITION says. `block` is the logical object number (blocks and filemarks
    from BOP), `file` the logical file identifier (filemarks before the position) when the
    form carries it; `block` is None when the drive says the position is unknown."""

    block: int | None
    file: int | None = None
    partition: int = 0
    bop: bool = False
    eop: bool = False
    bpew: bool = False  # beyond programmable early warning
    blocks_in_buffer: int | None = None
    bytes_in_buffer: int | None = None


def parse_short(data: bytes) -> TapePosition:
    """Short form (service action 00h): first block location, buffer occupancy."""
    if len(data) < 20:
        raise PositionFormatError(f"short form READ POSITION needs 20 bytes, got {len(data)}")
    flags = data[0]
    bop, eop = bool(flags & 0x80), bool(flags & 0x40)
    locu, bycu = bool(flags & 0x20), bool(flags & 0x10)
    lolu = bool(flags & 0x04)
    bpew = bool(flags & 0x01)
    block = None if lolu else int.from_bytes(data[4:8], "big")
    return TapePosition(
        block=block,
        partition=data[1],
        bop=bop,
        eop=eop,
        bpew=bpew,
        blocks_in_buffer=None if locu else int.from_bytes(data[13:16], "big"),
        bytes_in_buffer=None if bycu else int.from_bytes(data[16:20], "big"),
    )


def parse_long(data: bytes) -> TapePosition:
    """Long form (service action 06h): 64-bit object number and file number."""
    if len(data) < 32:
        raise PositionFormatError(f"long form READ POSITION needs 32 bytes, got {len(data)}")
    flags = data[0]
    mpu = bool(flags & 0x08)  # mark position unknown
    lonu = bool(flags & 0x04)  # logical object number unknown
    return TapePosition(
        block=None if lonu else int.from_bytes(data[8:16], "big"),
        file=None if mpu else int.from_bytes(data[16:24], "big"),
        partition=int.from_bytes(data[4:8], "big"),
        bop=bool(flags & 0x80),
        eop=bool(flags & 0x40),
        bpew=bool(flags & 0x01),
    )


def parse_extended(data: bytes) -> TapePosition:
    """Extended form (service action 08h): 64-bit first object, objects/bytes in buffer."""
    if len(data) < 32:
        raise PositionFormatError(f"extended READ POSITION needs 32 bytes, got {len(data)}")
    flags = data[0]
    locu, bycu, lolu = bool(flags & 0x20), bool(flags & 0x10), bool(flags & 0x04)
    return TapePosition(
        block=None if lolu else int.from_bytes(data[8:16], "big"),
        partition=data[1],
        bop=bool(flags & 0x80),
        eop=bool(flags & 0x40),
        bpew=bool(flags & 0x01),
        blocks_in_buffer=None if locu else int.from_bytes(data[5:8], "big"),
        bytes_in_buffer=None if bycu else int.from_bytes(data[24:32], "big"),
    )


def looks_constant(data: bytes) -> bool:
    """tgt's canned replies: short form 14h then zeros, long form 20h then zeros."""
    return len(data) >= 20 and data[0] in (0x14, 0x20) and not any(data[1:])

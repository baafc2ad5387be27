"""MODE SENSE(6)/MODE SELECT(6) parameter data for a tape drive (SPC-4 7.5, SSC-4 8.3).

The header's device-specific byte carries WP (bit 7) and BUFFERED MODE (bits 6-4); the
8-byte block descriptor carries density code and block length (0 = variable); the pages
are 0Fh data compression (DCE, DCC) and 10h device configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DATA_COMPRESSION_PAGE = 0x0F
DEVICE_CONFIGURATION_PAGE = 0x10
ALL_PAGES = 0x3F


class ModeDataError(ValueError):
    """A MODE SENSE answer that cannot be decoded."""


@dataclass
class ModeData:
    """What MODE SENSE says of the medium and the drive's settings."""

    medium_type: int = 0
    write_protected: bool = False
    buffered_mode: int = 0
    speed: int = 0
    density: int = 0
    blocks: int = 0
    block_length: int = 0
    pages: dict[int, bytes] = field(default_factory=dict)  # page code -> page incl. header

    @property
    def compression_enabled(self) -> bool | None:
        """DCE of page 0Fh; None when the drive did not return the page."""
        page = self.pages.get(DATA_COMPRESSION_PAGE)
        if page is None or len(page) < 3:
            return None
        return bool(page[2] & 0x80)

    @property
    def compression_capable(self) -> bool | None:
        page = self.pages.get(DATA_COMPRESSION_PAGE)
        if page is None or len(page) < 3:
            return None
        return bool(page[2] & 0x40)


def parse_mode6(data: bytes) -> ModeData:
    if len(data) < 4:
        raise ModeDataError(f"mode parameter data shorter than the header ({len(data)} bytes)")
    end = min(len(data), data[0] + 1)
    dsp = data[2]
    md = ModeData(
        medium_type=data[1],
        write_protected=bool(dsp & 0x80),
        buffered_mode=(dsp >> 4) & 0x07,
        speed=dsp & 0x0F,
    )
    bdl = data[3]
    pos = 4
    if bdl >= 8 and len(data) >= 12:
        bd = data[4:12]
        md.density = bd[0]
        md.blocks = int.from_bytes(bd[1:4], "big")
        md.block_length = int.from_bytes(bd[5:8], "big")
    pos += bdl
    while pos + 2 <= end:
        code = data[pos] & 0x3F
        if data[pos] & 0x40:  # SPF: sub-page format, 4-byte page header
            if pos + 4 > end:
                break
            length = 4 + int.from_bytes(data[pos + 2 : pos + 4], "big")
            key = code | (data[pos + 1] << 8)
        else:
            length = 2 + data[pos + 1]
            key = code
        md.pages[key] = bytes(data[pos : pos + length])
        pos += length
    return md


def build_select6(
    *,
    density: int,
    block_length: int,
    buffered_mode: int = 1,
    speed: int = 0,
    pages: list[bytes] | None = None,
) -> bytes:
    """MODE SELECT(6) parameter list: header, one block descriptor, then `pages`.

    The mode data length is reserved (zero) in MODE SELECT, and the PS bit of each page
    must be cleared.
    """
    if not 0 <= block_length < (1 << 24):
        raise ValueError("block length does not fit in the block descriptor")
    header = bytes([0, 0, ((buffered_mode & 0x07) << 4) | (speed & 0x0F), 8])
    descriptor = bytes([density & 0xFF, 0, 0, 0, 0]) + block_length.to_bytes(3, "big")
    body = b"".join(bytes([p[0] & 0x7F]) + p[1:] for p in (pages or []))
    return header + descriptor + body


def with_compression(page: bytes, enable: bool) -> bytes:
    """Page 0Fh with DCE set or cleared (DDE, decompression, left as the drive had it)."""
    if len(page) < 4 or page[0] & 0x3F != DATA_COMPRESSION_PAGE:
        raise ModeDataError("not a data compression mode page")
    b = bytearray(page)
    b[2] = (b[2] | 0x80) if enable else (b[2] & 0x7F)
    return bytes(b)

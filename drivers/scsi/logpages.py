"""LOG SENSE pages of a tape drive (SPC-4 7.3, SSC-4 8.2): the generic parameter list and the
pages the archive reads.

* 00h supported pages
* 02h/03h write/read error counters (corrected, uncorrected, bytes processed)
* 0Ch sequential-access device (bytes from/to the host and to/from the medium: the
  compression ratio)
* 17h volume statistics (mounts, data sets, retries: SSC-4)
* 1Bh data compression (SSC-4) and 32h data compression (LTO, same parameters)
* 2Eh TapeAlert (flags 1..64)
* 31h tape capacity (LTO: remaining and maximum capacity in MiB per partition)
"""

from __future__ import annotations

from dataclasses import dataclass

SUPPORTED_PAGES = 0x00
WRITE_ERRORS = 0x02
READ_ERRORS = 0x03
SEQUENTIAL_ACCESS = 0x0C
VOLUME_STATISTICS = 0x17
DATA_COMPRESSION = 0x1B
TAPE_ALERT = 0x2E
TAPE_CAPACITY = 0x31
LTO_DATA_COMPRESSION = 0x32

MIB = 1 << 20
MB = 1_000_000


class LogPageError(ValueError):
    """A LOG SENSE answer that cannot be decoded."""


@dataclass(frozen=True)
class LogParameter:
    """One parameter of a log page: its code, control byte and value."""

    code: int
    control: int
    value: bytes

    @property
    def integer(self) -> int:
        return int.from_bytes(self.value, "big") if self.value else 0


@dataclass(frozen=True)
class LogPage:
    """A decoded log page: its parameters, by code."""

    page: int
    subpage: int
    parameters: tuple[LogParameter, ...]

    def get(self, code: int) -> LogParameter | None:
        for p in self.parameters:
            if p.code == code:
                return p
        return None

    def integers(self) -> dict[int, int]:
        return {p.code: p.integer for p in self.parameters}


def parse_page(data: bytes, expect: int | None = None) -> LogPage:
    """The 4-byte page header, then parameters: code (2), control (1), length (1), value."""
    if len(data) < 4:
        raise LogPageError(f"log page shorter than its header ({len(data)} bytes)")
    page = data[0] & 0x3F
    subpage = data[1] if data[0] & 0x40 else 0
    if expect is not None and page != expect:
        raise LogPageError(f"asked for log page {expect:#04x}, got {page:#04x}")
    end = min(len(data), 4 + int.from_bytes(data[2:4], "big"))
    params = []
    pos = 4
    while pos + 4 <= end:
        code = int.from_bytes(data[pos : pos + 2], "big")
        control = data[pos + 2]
        length = data[pos + 3]
        params.append(LogParameter(code, control, bytes(data[pos + 4 : pos + 4 + length])))
        pos += 4 + length
    return LogPage(page, subpage, tuple(params))


def supported_pages(data: bytes) -> set[int]:
    """Page 00h lists page codes as bytes after the header, not as parameters."""
    if len(data) < 4 or data[0] & 0x3F != SUPPORTED_PAGES:
        raise LogPageError("not a supported-pages log page")
    n = int.from_bytes(data[2:4], "big")
    return {b & 0x3F for b in data[4 : 4 + n]}


def tape_alerts(data: bytes) -> frozenset[int]:
    """Page 2Eh: parameter n (1..64) is flag n, set when bit 0 of its value is one."""
    page = parse_page(data, TAPE_ALERT)
    return frozenset(
        p.code for p in page.parameters if 1 <= p.code <= 64 and p.value and p.value[0] & 0x01
    )


@dataclass(frozen=True)
class TapeCapacity:
    """Page 31h, in bytes (the drive reports MiB)."""

    remaining: int | None
    maximum: int | None
    remaining_alternate: int | None = None
    maximum_alternate: int | None = None


def tape_capacity(data: bytes) -> TapeCapacity:
    page = parse_page(data, TAPE_CAPACITY)

    def mib(code: int) -> int | None:
        p = page.get(code)
        return p.integer * MIB if p is not None else None

    return TapeCapacity(mib(1), mib(3), mib(2), mib(4))


ERROR_COUNTER_NAMES = {
    0x0000: "corrected_without_delay",
    0x0001: "corrected_with_delay",
    0x0002: "total_retries",
    0x0003: "total_corrected",
    0x0004: "correction_algorithm_runs",
    0x0005: "bytes_processed",
    0x0006: "total_uncorrected",
}


def error_counters(data: bytes, expect: int) -> dict[str, int]:
    """Page 02h (write) or 03h (read): the standard counters by name."""
    page = parse_page(data, expect)
    out = {}
    for code, value in page.integers().items():
        name = ERROR_COUNTER_NAMES.get(code)
        if name:
            out[name] = value
    return out


SEQUENTIAL_ACCESS_NAMES = {
    0x0000: "bytes_from_host",  # data bytes received from the application (WRITE)
    0x0001: "bytes_to_medium",  # data bytes written to the medium, after compression
    0x0002: "bytes_from_medium",  # data bytes read from the medium (READ)
    0x0003: "bytes_to_host",  # data bytes transferred to the application
    0x0004: "native_capacity_bop_to_eod_mb",
    0x0005: "native_capacity_bop_to_ew_mb",
    0x0006: "native_capacity_ew_to_eop_mb",
    0x0007: "native_capacity_bop_to_position_mb",
    0x0008: "native_capacity_in_buffer_mb",
    0x0100: "cleaning_required",
}


def sequential_access(data: bytes) -> dict[str, int]:
    page = parse_page(data, SEQUENTIAL_ACCESS)
    return {
        SEQUENTIAL_ACCESS_NAMES[c]: v
        for c, v in page.integers().items()
        if c in SEQUENTIAL_ACCESS_NAMES
    }


def data_compression(data: bytes) -> dict[str, float | int]:
    """Page 1Bh (SSC-4) or 32h (LTO): ratios x100 and MB + byte remainders per direction."""
    page = parse_page(data)
    if page.page not in (DATA_COMPRESSION, LTO_DATA_COMPRESSION):
        raise LogPageError(f"not a data compression page: {page.page:#04x}")
    v = page.integers()
    out: dict[str, float | int] = {}
    if 0 in v:
        out["read_compression_ratio"] = v[0] / 100
    if 1 in v:
        out["write_compression_ratio"] = v[1] / 100

    def total(mb_code: int, byte_code: int) -> int | None:
        if mb_code not in v and byte_code not in v:
            return None
        return v.get(mb_code, 0) * MB + v.get(byte_code, 0)

    for name, mb_code, byte_code in (
        ("bytes_to_host", 2, 3),
        ("bytes_from_medium", 4, 5),
        ("bytes_from_host", 6, 7),
        ("bytes_to_medium", 8, 9),
    ):
        t = total(mb_code, byte_code)
        if t is not None:
            out[name] = t
    return out


VOLUME_STATISTICS_NAMES = {
    0x0001: "volume_mounts",
    0x0002: "volume_datasets_written",
    0x0003: "volume_write_retries",
    0x0004: "volume_unrecovered_write_errors",
    0x0005: "volume_suspended_writes",
    0x0006: "volume_fatal_suspended_writes",
    0x0007: "volume_datasets_read",
    0x0008: "volume_read_retries",
    0x0009: "volume_unrecovered_read_errors",
    0x000C: "volume_last_mount_unrecovered_write_errors",
    0x000D: "volume_last_mount_unrecovered_read_errors",
    0x000E: "volume_last_mount_mb_written",
    0x000F: "volume_last_mount_mb_read",
    0x0010: "volume_lifetime_mb_written",
    0x0011: "volume_lifetime_mb_read",
}


def volume_statistics(data: bytes) -> dict[str, int]:
    """Page 17h: the scalar counters (the per-partition parameters 0200h.. are skipped)."""
    page = parse_page(data, VOLUME_STATISTICS)
    return {
        VOLUME_STATISTICS_NAMES[c]: v
        for c, v in page.integers().items()
        if c in VOLUME_STATISTICS_NAMES
    }


def build_page(page: int, parameters: list[tuple[int, bytes]], *, control: int = 0x02) -> bytes:
    """Encode a log page (tests and fakes): [(code, value bytes), ...]."""
    body = b"".join(
        code.to_bytes(2, "big") + bytes([control, len(v)]) + v for code, v in parameters
    )
    return bytes([page & 0x3F, 0]) + len(body).to_bytes(2, "big") + body

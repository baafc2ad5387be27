"""File checksums: adler32 (zlib's, seeded with 1) and CRC-32C, computed in one pass.

Both are computed once, streaming, as data enters the cache; the mover recomputes them
as it writes to tape and every recall verifies them before the data is served.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import crc32c as _crc32c
from zlib_ng import zlib_ng  # the same adler32 as zlib's, 15x faster (SIMD)

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Sums:
    """The adler32 and CRC-32C of some data."""

    adler32: int
    crc32c: int

    def hex(self) -> tuple[str, str]:
        return f"{self.adler32:08x}", f"{self.crc32c:08x}"


class Checksummer:
    """Running adler32 + CRC-32C over a byte stream."""

    __slots__ = ("adler", "crc", "length")

    def __init__(self) -> None:
        self.adler = 1
        self.crc = 0
        self.length = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self.adler = zlib_ng.adler32(data, self.adler)
        self.crc = _crc32c.crc32c(data, self.crc)
        self.length += len(data)

    @property
    def sums(self) -> Sums:
        return Sums(self.adler, self.crc)


def file_sums(fd: int, size: int | None = None) -> Sums:
    """Checksums of the first `size` bytes (all when None) of an open file descriptor."""
    ck = Checksummer()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    offset = 0
    while size is None or offset < size:
        want = CHUNK if size is None else min(CHUNK, size - offset)
        n = os.preadv(fd, [view[:want]], offset)
        if n == 0:
            break
        ck.update(view[:n])
        offset += n
    return ck.sums

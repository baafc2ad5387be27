"""GNU tar's sparse format 1.0 inside pax archives: a sparse file's data regions only.

A member written so carries pax records `GNU.sparse.major=1`, `GNU.sparse.minor=0`,
`GNU.sparse.name` (the real name) and `GNU.sparse.realsize` (the real size); its ustar name
is `<dir>/GNUSparseFile.0/<base>` and its size that of the data area: the map first (the
number of regions, then each region's offset and length, decimal numbers one a line,
NUL-padded to 512 bytes), then the regions' bytes one after another. GNU tar (1.21 and
later) and Python's tarfile extract such a member as the sparse file it was; a tool that
knows nothing of it extracts the data area under the GNUSparseFile.0 name, nothing lost.

Readers here hand out the file's real content (zeros in the holes), so checksums and
recalls see the file as it was; the cache then skips the zero blocks again.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

from drivers.formats.errors import FormatError

if TYPE_CHECKING:
    from drivers.formats.records import ByteSource, MemberStream

DataCallback = Callable[[memoryview], None]
Extents = list[tuple[int, int]]

SPARSE_MAJOR = "GNU.sparse.major"
SPARSE_MINOR = "GNU.sparse.minor"
SPARSE_NAME = "GNU.sparse.name"
SPARSE_REALSIZE = "GNU.sparse.realsize"
SPARSE_KEYWORDS = frozenset({SPARSE_MAJOR, SPARSE_MINOR, SPARSE_NAME, SPARSE_REALSIZE})

_ZERO_CHUNK = memoryview(bytes(1 << 20))


def map_bytes(extents: Extents, size: int) -> bytes:
    """The data area's map, NUL-padded to whole tar blocks. A file that ends in a hole
    gets a last, empty region at its end, as GNU tar writes (and needs, to give the
    extracted file its full length)."""
    if not extents or sum(extents[-1]) < size:
        extents = [*extents, (size, 0)]
    text = f"{len(extents)}\n" + "".join(f"{off}\n{n}\n" for off, n in extents)
    raw = text.encode("ascii")
    return raw + bytes(-len(raw) % tarfile.BLOCKSIZE)


def block_aligned(extents: Extents, size: int) -> Extents:
    """`extents` widened to whole 512-byte blocks (the zeros around them stored as data)
    and merged where they then touch. GNU tar 1.34 reads each region of a sparse member in
    whole blocks, Python's tarfile reads them back to back: only aligned regions are read
    alike by both (measured: an unaligned region shifted every one after it in GNU tar)."""
    out: Extents = []
    for off, n in extents:
        if n <= 0:
            continue
        start = off - off % 512
        end = min(size, -(-(off + n) // 512) * 512)
        if out and start <= out[-1][0] + out[-1][1]:
            out[-1] = (out[-1][0], max(end, out[-1][0] + out[-1][1]) - out[-1][0])
        else:
            out.append((start, end - start))
    return out


def stored_size(extents: Extents, size: int) -> int:
    """Bytes of the member's data area: its map and its regions."""
    return len(map_bytes(extents, size)) + sum(n for _, n in extents)


def feed_zeros(n: int, dest: BinaryIO | None, on_data: DataCallback | None) -> None:
    """A hole of `n` bytes, as the zeros it reads as."""
    while n > 0:
        chunk = _ZERO_CHUNK[: min(n, len(_ZERO_CHUNK))]
        if on_data is not None:
            on_data(chunk)
        if dest is not None:
            dest.write(chunk)
        n -= len(chunk)


class SparseSource(io.RawIOBase):
    """The data area of a sparse member, read from the file `src` (its map, then its
    regions); `on_data` sees the file's real content, holes as zeros, in order."""

    def __init__(
        self, src: BinaryIO, size: int, extents: Extents, on_data: DataCallback | None
    ) -> None:
        super().__init__()
        self._fd = src.fileno()
        self._size = size
        self._map = memoryview(map_bytes(extents, size))
        self._extents = list(extents)
        self._on_data = on_data
        self._i = 0  # the region being read
        self._at = 0  # bytes of it read
        self._real = 0  # real-file offset reached (on_data has seen up to here)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        k = self._read(memoryview(b).cast("B"))
        if self._last_done():
            self._tail()
        return k

    def _last_done(self) -> bool:
        """The writer reads exactly the data area and stops: the hole after the last
        region must reach `on_data` when its last byte is read, not at a later read."""
        if self._map:
            return False
        if self._i >= len(self._extents):
            return True
        return self._i == len(self._extents) - 1 and self._at == self._extents[-1][1]

    def _tail(self) -> None:
        if self._real < self._size:
            feed_zeros(self._size - self._real, None, self._on_data)
            self._real = self._size

    def _read(self, out: memoryview) -> int:
        if self._map:
            k = min(len(out), len(self._map))
            out[:k] = self._map[:k]
            self._map = self._map[k:]
            return k
        while self._i < len(self._extents):
            off, n = self._extents[self._i]
            if self._at == n:
                self._i, self._at = self._i + 1, 0
                continue
            if self._real < off:
                feed_zeros(off - self._real, None, self._on_data)
                self._real = off
            k = os.preadv(self._fd, [out[: min(len(out), n - self._at)]], off + self._at)
            if k == 0:
                return 0  # the file shrank: the writer reports a short source
            if self._on_data is not None:
                self._on_data(out[:k])
            self._at += k
            self._real += k
            return k
        return 0


def is_sparse(ti: tarfile.TarInfo) -> bool:
    return ti.sparse is not None


def check_map(ti: tarfile.TarInfo) -> Extents:
    """The regions of a sparse member, checked against its real size."""
    extents = [(int(o), int(n)) for o, n in ti.sparse or []]
    pos = 0
    for off, n in extents:
        if off < pos or n < 0 or off + n > ti.size:
            raise FormatError(f"sparse member {ti.name!r}: bad map entry {off}+{n}")
        pos = off + n
    return extents


def copy_expanded(
    source: ByteSource,
    ti: tarfile.TarInfo,
    dest: BinaryIO | None,
    on_data: DataCallback | None,
) -> None:
    """Copy a sparse member's real content from `source` (positioned after its map)."""
    pos = 0
    for off, n in check_map(ti):
        feed_zeros(off - pos, dest, on_data)
        source.copy(n, dest, on_data, f"data of {ti.name!r}")
        pos = off + n
    feed_zeros(ti.size - pos, dest, on_data)


class ExpandedStream(io.RawIOBase):
    """A sparse member's real content over the stream of its stored regions."""

    def __init__(self, stored: MemberStream, ti: tarfile.TarInfo) -> None:
        super().__init__()
        self._stored = stored
        self._extents = check_map(ti)
        self._size = ti.size
        self._pos = 0
        self._name = ti.name

    @property
    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        out = memoryview(b).cast("B")
        while self._extents and self._pos >= self._extents[0][0] + self._extents[0][1]:
            self._extents.pop(0)
        if self._pos >= self._size or not out:
            return 0
        if self._extents and self._pos >= self._extents[0][0]:
            off, n = self._extents[0]
            k = self._stored.readinto(out[: min(len(out), off + n - self._pos)])
            if k == 0:
                raise FormatError(f"truncated sparse data of {self._name!r}")
        else:
            nxt = self._extents[0][0] if self._extents else self._size
            k = min(len(out), nxt - self._pos)
            out[:k] = _ZERO_CHUNK[:k] if k <= len(_ZERO_CHUNK) else bytes(k)
        self._pos += k
        return k

    def copy_to(self, dest: BinaryIO | None, on_data: DataCallback | None = None) -> int:
        """Copy the rest of the content to `dest` (and `on_data`); the bytes copied."""
        start = self._pos
        buf = bytearray(1 << 20)
        mv = memoryview(buf)
        while True:
            k = self.readinto(mv)
            if not k:
                return self._pos - start
            if on_data is not None:
                on_data(mv[:k])
            if dest is not None:
                dest.write(mv[:k])

    def _finish(self) -> None:
        self._stored._finish()
        self.close()

"""Sparse cache files: holes are kept when data is copied or recalled into the cache.

A file made with `truncate -s 1G` holds no data; filling its holes when a new version
takes over an evicted file's data, or when it comes back from tape, would spend disk and
make `du` (which reads `st_blocks`) report the whole size. The data extents are found with
SEEK_DATA/SEEK_HOLE, and all-zero blocks arriving from tape are skipped over rather than
written, so a recall restores the holes.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator

#: the unit of holes a recall leaves: the page size of every file system the cache is on
HOLE_BLOCK = 4096
_ZEROS = bytes(HOLE_BLOCK)
_NONZERO = re.compile(rb"[^\0]")
_STEP = 1 << 16
_ZEROS_STEP = bytes(_STEP)


def data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """(offset, length) of the data regions of the first `size` bytes of `fd`; the whole
    range when the file system cannot tell holes from data. The file position is kept
    (the seeks here move it; a reader of `fd` must not see that)."""
    pos = os.lseek(fd, 0, os.SEEK_CUR)
    try:
        return list(_extents(fd, size))
    finally:
        os.lseek(fd, pos, os.SEEK_SET)


def _extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    off = 0
    while off < size:
        try:
            start = os.lseek(fd, off, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                return  # only a hole is left
            if e.errno == errno.EINVAL:
                yield off, size - off
                return
            raise
        if start >= size:
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end - start
        off = end


def copy_sparse(src: int, dst: int, size: int) -> None:
    """Copy the first `size` bytes of `src` to `dst`, holes as holes."""
    for off, length in data_extents(src, size):
        end = off + length
        while off < end:
            n = os.copy_file_range(src, dst, end - off, off, off)
            if n == 0:
                break
            off += n
    os.ftruncate(dst, size)


def allocated_bytes(fd: int) -> int:
    """What the file takes on disk, from its allocated blocks (as `du` counts)."""
    return os.fstat(fd).st_blocks * 512


class HoleWriter:
    """A write-only file that seeks over all-zero blocks instead of writing them (holes),
    and gives the file its full length at `close`. Writes of any size and alignment are
    gathered into whole blocks of the file first."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pos = 0  # file offset of `pending`'s first byte
        self.pending = bytearray()

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        if self.pending:
            take = min(n, HOLE_BLOCK - len(self.pending))
            self.pending += view[:take]
            view = view[take:]
            if len(self.pending) < HOLE_BLOCK:
                return n
            self._blocks(memoryview(self.pending))
            self.pending = bytearray()
        whole = len(view) - len(view) % HOLE_BLOCK
        self._blocks(view[:whole])
        self.pending += view[whole:]
        return n

    def _blocks(self, view: memoryview) -> None:
        """Write whole blocks, seeking over the all-zero ones. Runs of zeros are found with
        C-speed searches (a per-block loop in Python halved the recall rate)."""
        data = bytes(view)
        size = len(data)
        start = i = 0  # start: the first byte not yet written or skipped
        while True:
            j = data.find(_ZEROS, i)
            if j < 0:
                break
            e = j + HOLE_BLOCK  # the run's end: in big steps by memcmp, then the last bit
            while data[e : e + _STEP] == _ZEROS_STEP:
                e += _STEP
            m = _NONZERO.search(data, e, e + _STEP)
            e = m.start() if m else min(size, e + _STEP)
            first, last = -(-j // HOLE_BLOCK) * HOLE_BLOCK, e // HOLE_BLOCK * HOLE_BLOCK
            if last > first:
                if start < first:
                    self._put(view[start:first], self.pos + start)
                start = last
            i = e
        if start < size:
            self._put(view[start:], self.pos + start)
        self.pos += size

    def _put(self, view: memoryview, off: int) -> None:
        while view:
            k = os.pwrite(self.fd, view, off)
            off += k
            view = view[k:]

    def close(self) -> None:
        if self.pending:
            self._put(memoryview(self.pending), self.pos)
            self.pos += len(self.pending)
            self.pending = bytearray()
        os.ftruncate(self.fd, self.pos)

"""The staging cache: file data on local disk, one cache file per bitfile.

Layout under the cache directory: `data/<2 hex>/<bfid>` for cached data and
`tmp/<bfid>.<n>` for recalls in progress (renamed into place only once verified). The
cache keeps a byte count of what it holds so writers can check for room without a
syscall; eviction to the watermarks is done by `backend.cache.eviction`.
"""

from __future__ import annotations

import os
import threading
import zlib
from pathlib import Path

from backend.config.units import format_size


class Cache:
    """The cache directory: a file per bitfile, temp files of recalls, and its byte count."""

    def __init__(self, root: Path, limit: int, high: float, low: float) -> None:
        self.root = Path(root)
        self.data = self.root / "data"
        self.tmp = self.root / "tmp"
        self.limit = limit
        self.high = high
        self.low = low
        self._lock = threading.Lock()
        self._used = 0
        self._tmp_seq = 0
        self.tmp.mkdir(parents=True, exist_ok=True)
        for i in range(256):  # made once, not on a file create's path
            (self.data / f"{i:02x}").mkdir(parents=True, exist_ok=True)

    # -- paths -----------------------------------------------------------------------------

    def path(self, bfid: str) -> Path:
        return self.data / f"{zlib.crc32(bfid.encode()) & 0xFF:02x}" / bfid

    def temp_path(self, bfid: str) -> Path:
        with self._lock:
            self._tmp_seq += 1
            n = self._tmp_seq
        return self.tmp / f"{bfid}.{os.getpid()}.{n}"

    # -- files -----------------------------------------------------------------------------

    def create(self, bfid: str) -> int:
        p = self.path(bfid)
        try:
            return os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            p.parent.mkdir(parents=True, exist_ok=True)
            return os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)

    def open(self, bfid: str) -> int:
        """Open a cached file read-write; FileNotFoundError when it is not cached."""
        return os.open(self.path(bfid), os.O_RDWR | os.O_CLOEXEC)

    def exists(self, bfid: str) -> bool:
        return self.path(bfid).exists()

    def size_of(self, bfid: str) -> int | None:
        try:
            return self.path(bfid).stat().st_size
        except FileNotFoundError:
            return None

    def remove(self, bfid: str, size: int) -> None:
        try:
            os.unlink(self.path(bfid))
        except FileNotFoundError:
            return
        self.uncharge(size)

    def rename(self, old_bfid: str, new_bfid: str) -> None:
        """A new version takes over the cached data of the old one (no copy)."""
        dst = self.path(new_bfid)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.rename(self.path(old_bfid), dst)

    def adopt(self, temp: Path, bfid: str) -> None:
        """A verified recall becomes the cached copy."""
        dst = self.path(bfid)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.rename(temp, dst)

    def bfids(self) -> set[str]:
        out: set[str] = set()
        for sub in self.data.iterdir():
            if sub.is_dir():
                out.update(e.name for e in os.scandir(sub))
        return out

    def clear_tmp(self) -> int:
        n = 0
        for e in os.scandir(self.tmp):
            os.unlink(e.path)
            n += 1
        return n

    # -- accounting ------------------------------------------------------------------------

    @property
    def used(self) -> int:
        return self._used

    def set_used(self, n: int) -> None:
        with self._lock:
            self._used = n

    def try_charge(self, n: int) -> bool:
        """Reserve `n` more bytes if they fit under the limit."""
        if n <= 0:
            return True
        with self._lock:
            if self._used + n > self.limit:
                return False
            self._used += n
            return True

    def charge(self, n: int) -> None:
        with self._lock:
            self._used += n

    def uncharge(self, n: int) -> None:
        with self._lock:
            self._used = max(0, self._used - n)

    def above_high(self) -> bool:
        return self._used > self.limit * self.high

    def bytes_to_low(self) -> int:
        return max(0, int(self._used - self.limit * self.low))

    def disk_free(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize


def fs_smaller_than(root: Path, size: int) -> str | None:
    """Why a cache of `size` bytes cannot fit the file system holding `root`, or None.

    Writes then meet a real ENOSPC before the cache's own count says full; it is allowed
    (eviction answers it) but the operator is told at init and mount."""
    st = os.statvfs(root)
    total = st.f_blocks * st.f_frsize
    if total >= size:
        return None
    return (
        f"the cache file system at {root} holds {format_size(total)}, less than "
        f"[cache] size {format_size(size)}: writes will meet a full disk first"
    )

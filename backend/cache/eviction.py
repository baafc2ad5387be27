"""Cache eviction: release archived files, least recently used first.

A file may leave the cache only when it is archived (a good tape copy exists), clean (no
modification session open), not pinned, and has no write request: an archived file with
one is having a lost or bad tape copy written again from its cached data (backend.mover),
which must stay until the new copy is on tape. The state change commits before the cache
file is unlinked, so a crash in between leaves an orphan cache file (removed at start),
never a `released` file without a tape copy or an `archived` one without data.
"""

from __future__ import annotations

import logging

from backend.cache.store import Cache
from backend.catalog.db import Catalog
from backend.catalog.files import FileClerk
from backend.catalog.queue import WRITE, RequestQueue

log = logging.getLogger("reelfs.eviction")

BATCH = 256
#: room kept free on a full cache file system beyond the bytes a write or recall needs:
#: its metadata and the blocks a partly written block rounds up to
DISK_MARGIN = 1 << 20


def recopy_pending(cat: Catalog, bitfile_id: int) -> bool:
    """Whether an archived file's cached data still has a tape copy to write."""
    return RequestQueue(cat).has(bitfile_id, WRITE)


def release_bitfile(cat: Catalog, cache: Cache, bitfile_id: int) -> int:
    """Drop one archived file from the cache; returns the bytes freed (0 if not allowed)."""
    released = FileClerk(cat).release(bitfile_id)
    if released is None:
        return 0
    bfid, size = released
    cache.remove(bfid, size)
    return size


def evict(cat: Catalog, cache: Cache, nbytes: int, *, protect: frozenset[int] = frozenset()) -> int:
    """Free at least `nbytes` if archived files allow it; returns what was freed."""
    files = FileClerk(cat)
    freed = 0
    after = (-1, -1)
    while freed < nbytes:
        rows = files.evictable(after, BATCH)
        if not rows:
            break
        for bid, accessed in rows:
            after = (accessed, bid)
            if bid in protect:
                continue
            freed += release_bitfile(cat, cache, bid)
            if freed >= nbytes:
                break
    if freed:
        log.info("evicted %d bytes from the cache", freed)
    return freed


def to_watermark(cat: Catalog, cache: Cache, protect: frozenset[int] = frozenset()) -> int:
    """Above the high watermark, evict down to the low one."""
    if not cache.above_high():
        return 0
    return evict(cat, cache, cache.bytes_to_low(), protect=protect)


def disk_shortfall(cache: Cache, nbytes: int) -> int:
    """Bytes to free on the cache's file system for `nbytes` more after a real ENOSPC."""
    return nbytes + DISK_MARGIN - cache.disk_free()


def for_disk(
    cat: Catalog, cache: Cache, nbytes: int, *, protect: frozenset[int] = frozenset()
) -> int:
    """After a real ENOSPC: evict until `nbytes` fit on the cache's file system, whatever
    the cache's own count says (the file system is smaller than [cache] size, or shared)."""
    need = disk_shortfall(cache, nbytes)
    return evict(cat, cache, need, protect=protect) if need > 0 else 0

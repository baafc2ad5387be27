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
from backend.catalog.files import ARCHIVED, RELEASED

log = logging.getLogger("reelfs.eviction")

BATCH = 256

# no tape copy of the file is waiting to be (re-)written from the cache
NO_WRITE_PENDING = (
    "NOT EXISTS (SELECT 1 FROM requests r WHERE r.bitfile=bitfiles.id AND r.kind='write')"
)


def recopy_pending(cat: Catalog, bitfile_id: int) -> bool:
    """Whether an archived file's cached data still has a tape copy to write."""
    return (
        cat.one("SELECT 1 FROM requests WHERE bitfile=? AND kind='write'", (bitfile_id,))
        is not None
    )


def release_bitfile(cat: Catalog, cache: Cache, bitfile_id: int) -> int:
    """Drop one archived file from the cache; returns the bytes freed (0 if not allowed)."""
    with cat.tx():
        row = cat.one(
            "SELECT bfid, size FROM bitfiles WHERE id=? AND state=? AND pinned=0 AND writers=0",
            (bitfile_id, ARCHIVED),
        )
        if row is None:
            return 0
        cur = cat.execute(
            "UPDATE bitfiles SET state=? WHERE id=? AND state=? AND pinned=0 AND writers=0 "
            "AND EXISTS (SELECT 1 FROM tape_copies WHERE bitfile=bitfiles.id AND state='active') "
            f"AND {NO_WRITE_PENDING}",
            (RELEASED, bitfile_id, ARCHIVED),
        )
        if cur.rowcount == 0:
            return 0
    cache.remove(row[0], row[1])
    return int(row[1])


def evict(cat: Catalog, cache: Cache, nbytes: int, *, protect: frozenset[int] = frozenset()) -> int:
    """Free at least `nbytes` if archived files allow it; returns what was freed."""
    freed = 0
    after = (-1, -1)
    while freed < nbytes:
        rows = cat.all(
            "SELECT id, accessed_ns FROM bitfiles WHERE state=? AND pinned=0 AND writers=0 "
            f"AND {NO_WRITE_PENDING} "
            "AND (accessed_ns, id) > (?, ?) ORDER BY accessed_ns, id LIMIT ?",
            (ARCHIVED, *after, BATCH),
        )
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

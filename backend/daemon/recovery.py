"""Start-up recovery: the catalog and the cache made consistent after a crash.

Runs before the daemon serves anything, so it can assume no other writer of the
archive's data: a crash (kill -9, power loss) leaves at most claimed requests, open
modification sessions, unlinked-but-open inodes and cache files in flux; each is brought
back to a consistent state here and reported as an event.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from backend.cache.checksum import file_sums
from backend.cache.store import Cache
from backend.catalog import events
from backend.catalog.db import Catalog
from backend.catalog.files import ARCHIVED, DIRTY, FileClerk
from backend.catalog.namespace import Namespace
from backend.catalog.queue import RequestQueue

log = logging.getLogger("reelfs.recovery")


@dataclass
class RecoveryReport:
    """What recovery found and repaired (the `recovery` event carries it)."""

    requeued: int = 0
    sessions_closed: int = 0
    orphans_removed: int = 0
    stray_cache_files: int = 0
    lost: list[str] = field(default_factory=list)
    released_without_cache: int = 0

    def __bool__(self) -> bool:
        return any(
            (
                self.requeued,
                self.sessions_closed,
                self.orphans_removed,
                self.stray_cache_files,
                self.lost,
                self.released_without_cache,
            )
        )


def recover(cat: Catalog, cache: Cache, archive_id: str, *, clean: bool = False) -> RecoveryReport:
    """Bring the archive back to a consistent state before it serves anything.

    After a clean stop, the checks that only a crash makes necessary (and that cost a scan
    of the whole cache: a mount of a large archive stays fast) are skipped.
    """
    rep = RecoveryReport()
    files = FileClerk(cat, archive_id)
    rep.requeued = RequestQueue(cat).reset_running()
    cache.clear_tmp()
    close_sessions(cat, cache, files, rep)
    reap_unlinked(cat, cache, files, rep)
    if clean:
        cache.set_used(files.cached_bytes())
        return rep
    requeue_dirty(cat, rep)
    check_cache(cat, cache, files, rep)
    cache.set_used(files.cached_bytes())
    # after an unclean stop, always say so (and what was repaired)
    events.record(
        cat, "recovery", "recovered after an unclean stop", level="warning", **rep.__dict__
    )
    return rep


def close_sessions(cat: Catalog, cache: Cache, files: FileClerk, rep: RecoveryReport) -> None:
    """Modification sessions the crash cut short: the data is what reached the cache."""
    for bid in files.interrupted_sessions():
        bf = files.get(bid)
        assert bf is not None
        rep.sessions_closed += 1
        try:
            fd = cache.open(bf.bfid)
        except FileNotFoundError:
            if bf.size == 0 or bf.state != DIRTY:
                os.close(cache.create(bf.bfid))
                fd = cache.open(bf.bfid)
            else:
                _lost(cat, rep, bf.bfid, "cache file missing after a crash")
                continue
        try:
            size = os.fstat(fd).st_size
            sums = file_sums(fd, size)
        finally:
            os.close(fd)
        files.close_interrupted(bf, size=size, adler32=sums.adler32, crc32c=sums.crc32c)


def reap_unlinked(cat: Catalog, cache: Cache, files: FileClerk, rep: RecoveryReport) -> None:
    """Unlinked inodes whose last handle died with the process."""
    ns = Namespace(cat)
    for ino in ns.unlinked_inodes():
        bitfile = ns.delete_inode(ino)
        if bitfile is not None:
            bf = files.get(bitfile)
            if bf is not None:
                files.supersede(bitfile)
                if bf.state in (DIRTY, ARCHIVED):
                    cache.remove(bf.bfid, 0)
        rep.orphans_removed += 1


def requeue_dirty(cat: Catalog, rep: RecoveryReport) -> None:
    """Every dirty file of the namespace has a write request for each tape copy its family
    keeps that is not on tape yet."""
    queue = RequestQueue(cat)
    with cat.tx():
        for bid, family in FileClerk(cat).dirty_without_requests():
            queue.enqueue_write(bid, family)
            rep.requeued += 1


def check_cache(cat: Catalog, cache: Cache, files: FileClerk, rep: RecoveryReport) -> None:
    """Cache files against the catalog: strays go, archived files without theirs are on
    tape only now, dirty ones without theirs are lost (and said so)."""
    on_disk = cache.bfids()
    wanted, empty = files.cached_versions()  # empty files have no cache file
    for bfid in on_disk - set(wanted) - empty:
        os.unlink(cache.path(bfid))
        rep.stray_cache_files += 1
    for bfid, state in wanted.items():
        if bfid in on_disk or bfid in rep.lost:  # a lost session's file is said lost once
            continue
        if state == ARCHIVED:
            files.mark_released(bfid)
            rep.released_without_cache += 1
        else:
            _lost(cat, rep, bfid, "dirty file without cache data")


def _lost(cat: Catalog, rep: RecoveryReport, bfid: str, why: str) -> None:
    rep.lost.append(bfid)
    FileClerk(cat).set_error_of(bfid, why)
    events.record(cat, "data_lost", why, subject=bfid, level="error")

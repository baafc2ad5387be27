"""Start-up recovery and the catalog integrity check.

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
from backend.catalog.files import ARCHIVED, DIRTY, RELEASED, FileClerk
from backend.catalog.namespace import Namespace
from backend.catalog.queue import RequestQueue

log = logging.getLogger("reelfs.recovery")


@dataclass
class RecoveryReport:
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
    queue = RequestQueue(cat)
    ns = Namespace(cat)
    rep.requeued = queue.reset_running()
    cache.clear_tmp()

    # Modification sessions the crash cut short: the data is what reached the cache.
    for (bid,) in cat.all(
        "SELECT id FROM bitfiles WHERE writers > 0 OR (state=? AND "
        "(adler32 IS NULL OR crc32c IS NULL))",
        (DIRTY,),
    ):
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
        with cat.tx():
            cat.execute(
                "UPDATE bitfiles SET writers=0, size=?, adler32=?, crc32c=?, "
                "generation=generation+1 WHERE id=?",
                (size, sums.adler32, sums.crc32c, bid),
            )
            if bf.inode is not None:
                cat.execute("UPDATE inodes SET size=? WHERE id=?", (size, bf.inode))

    # Unlinked inodes whose last handle died with the process.
    for (ino,) in cat.all("SELECT id FROM inodes WHERE nlink = 0"):
        bitfile = ns.delete_inode(ino)
        if bitfile is not None:
            bf = files.get(bitfile)
            if bf is not None:
                files.supersede(bitfile)
                if bf.state in (DIRTY, ARCHIVED):
                    cache.remove(bf.bfid, 0)
        rep.orphans_removed += 1

    if clean:
        used = cat.value(
            "SELECT COALESCE(SUM(size), 0) FROM bitfiles WHERE state IN (?, ?)",
            (DIRTY, ARCHIVED),
        )
        cache.set_used(int(used or 0))
        return rep

    # Every dirty file of the namespace has a write request for each tape copy its family
    # keeps that is not on tape yet.
    with cat.tx():
        for bid, family in cat.all(
            "SELECT id, family FROM bitfiles b WHERE state=? AND inode IS NOT NULL AND "
            "(SELECT count(*) FROM requests r WHERE r.bitfile=b.id AND r.kind='write') + "
            "(SELECT count(DISTINCT copy) FROM tape_copies c WHERE c.bitfile=b.id "
            "AND c.state='active') < COALESCE((SELECT copies FROM families f "
            "WHERE f.name=COALESCE(b.family, 'default')), 1)",
            (DIRTY,),
        ):
            queue.enqueue_write(bid, family or "default")
            rep.requeued += 1

    # Cache files against the catalog.
    on_disk = cache.bfids()
    wanted = {
        r[0]: r[1]
        for r in cat.all(
            # empty files have no cache file
            "SELECT bfid, state FROM bitfiles WHERE state IN (?, ?) AND size > 0",
            (DIRTY, ARCHIVED),
        )
    }
    empty = {
        r[0]
        for r in cat.all(
            "SELECT bfid FROM bitfiles WHERE state IN (?, ?) AND size = 0", (DIRTY, ARCHIVED)
        )
    }
    for bfid in on_disk - set(wanted) - empty:
        os.unlink(cache.path(bfid))
        rep.stray_cache_files += 1
    for bfid, state in wanted.items():
        if bfid in on_disk:
            continue
        if state == ARCHIVED:
            with cat.tx():
                cat.execute("UPDATE bitfiles SET state=? WHERE bfid=?", (RELEASED, bfid))
            rep.released_without_cache += 1
        else:
            _lost(cat, rep, bfid, "dirty file without cache data")
    used = cat.value(
        "SELECT COALESCE(SUM(size), 0) FROM bitfiles WHERE state IN (?, ?)", (DIRTY, ARCHIVED)
    )
    cache.set_used(int(used or 0))
    # after an unclean stop, always say so (and what was repaired)
    events.record(
        cat, "recovery", "recovered after an unclean stop", level="warning", **rep.__dict__
    )
    return rep


def _lost(cat: Catalog, rep: RecoveryReport, bfid: str, why: str) -> None:
    rep.lost.append(bfid)
    with cat.tx():
        cat.execute("UPDATE bitfiles SET error=? WHERE bfid=?", (why, bfid))
    events.record(cat, "data_lost", why, subject=bfid, level="error")


def integrity_check(cat: Catalog) -> list[str]:
    """Problems found in the catalog (empty when it is consistent)."""
    problems: list[str] = []
    for (msg,) in cat.all("PRAGMA integrity_check"):
        if msg != "ok":
            problems.append(f"sqlite: {msg}")
    for row in cat.all("PRAGMA foreign_key_check"):
        problems.append(f"foreign key: {tuple(row)}")
    checks = [
        (
            "entry pointing to a missing inode",
            "SELECT count(*) FROM entries e LEFT JOIN inodes i ON i.id=e.inode WHERE i.id IS NULL",
        ),
        (
            "inode whose nlink does not match its entries",
            "SELECT count(*) FROM inodes i WHERE (i.mode & 61440) != 16384 AND i.nlink > 0 "
            "AND i.nlink != (SELECT count(*) FROM entries e WHERE e.inode=i.id)",
        ),
        (
            "directory whose nlink is not 2 + subdirectories",
            "SELECT count(*) FROM inodes i WHERE (i.mode & 61440) = 16384 AND i.nlink > 0 "
            "AND i.nlink != 2 + (SELECT count(*) FROM entries e JOIN inodes c "
            "ON c.id=e.inode WHERE e.parent=i.id AND (c.mode & 61440) = 16384)",
        ),
        (
            "regular file without data version",
            "SELECT count(*) FROM inodes WHERE (mode & 61440) = 32768 AND bitfile IS NULL",
        ),
        (
            "file whose data version belongs to another inode",
            "SELECT count(*) FROM inodes i JOIN bitfiles b ON b.id=i.bitfile WHERE b.inode!=i.id",
        ),
        (
            "archived or released file without an active tape copy",
            "SELECT count(*) FROM bitfiles b WHERE state IN ('archived','released') AND NOT "
            "EXISTS (SELECT 1 FROM tape_copies c WHERE c.bitfile=b.id AND c.state='active')",
        ),
        (
            "tape copy on an unknown volume",
            "SELECT count(*) FROM tape_copies c LEFT JOIN volumes v ON v.label=c.volume "
            "WHERE v.label IS NULL",
        ),
        (
            "request for a deleted file",
            "SELECT count(*) FROM requests r JOIN bitfiles b ON b.id=r.bitfile "
            "WHERE b.state='deleted'",
        ),
    ]
    for what, sql in checks:
        n = cat.value(sql)
        if n:
            problems.append(f"{n} {what}")
    return problems

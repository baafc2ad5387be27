"""Administrative operations on sets of files: flush, release, recall, pin.

Each takes inodes (a file, or a directory meaning everything below it) and returns a
summary the CLI prints. They run in the archive daemon when it is up (reached through
the control socket) or directly on the catalog when it is not, with the same code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from backend.cache.eviction import recopy_pending, release_bitfile
from backend.cache.store import Cache
from backend.catalog.db import Catalog
from backend.catalog.files import ARCHIVED, DIRTY, RELEASED
from backend.catalog.namespace import Namespace
from backend.catalog.queue import RequestQueue
from backend.errors import ArchiveError
from backend.library.recall import queue_recall


@dataclass
class Summary:
    files: int = 0
    bytes: int = 0
    done: int = 0  # files acted upon
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    errors: list[str] = field(default_factory=list)

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def as_dict(self) -> dict:
        return asdict(self)


def bitfiles_under(cat: Catalog, inodes: Iterable[int]) -> list[tuple[int, str, int, int]]:
    """(bitfile id, state, size, pinned) of every regular file at or below `inodes`."""
    ns = Namespace(cat)
    seen: set[int] = set()
    out = []
    for ino in inodes:
        for node in ns.subtree(ino):
            if node.bitfile is None or node.bitfile in seen:
                continue
            seen.add(node.bitfile)
            row = cat.one("SELECT state, size, pinned FROM bitfiles WHERE id=?", (node.bitfile,))
            if row is not None:
                out.append((node.bitfile, row[0], row[1], row[2]))
    return out


def flush(cat: Catalog, inodes: Iterable[int]) -> Summary:
    """Make the dirty files below `inodes` due for writing now, and the tape copies of
    archived files being written again (backend.mover re-copies)."""
    s = Summary()
    dirty = []
    for bid, state, size, _ in bitfiles_under(cat, inodes):
        s.files += 1
        if state == DIRTY or (state == ARCHIVED and recopy_pending(cat, bid)):
            dirty.append(bid)
            s.bytes += size
        else:
            s.skip(f"already {state}")
    s.done = RequestQueue(cat).make_urgent(dirty)
    missing = len(dirty) - s.done
    if missing:
        # dirty but not queued (a session still open): queued when it closes
        s.skip("still open for writing")
    return s


def release(cat: Catalog, cache: Cache, inodes: Iterable[int]) -> Summary:
    """Drop cached copies of archived files (tape only afterwards)."""
    s = Summary()
    for bid, state, size, pinned in bitfiles_under(cat, inodes):
        s.files += 1
        if state == RELEASED:
            s.skip("already released")
        elif state != ARCHIVED:
            s.skip(f"{state}: not on tape yet")
        elif pinned:
            s.skip("pinned")
        elif recopy_pending(cat, bid):
            s.skip("a lost tape copy is being re-created from the cache")
        else:
            freed = release_bitfile(cat, cache, bid)
            if freed or size == 0:
                s.done += 1
                s.bytes += size
            else:
                s.skip("open for writing")
    return s


def recall(cat: Catalog, archive_id: str, inodes: Iterable[int]) -> tuple[Summary, list[int]]:
    """Queue recalls of released files; returns the summary and the bitfiles queued."""
    s = Summary()
    queued = []
    for bid, state, size, _ in bitfiles_under(cat, inodes):
        s.files += 1
        if state != RELEASED:
            s.skip(f"already cached ({state})")
            continue
        try:
            if queue_recall(cat, archive_id, bid, urgent=False):
                queued.append(bid)
                s.done += 1
                s.bytes += size
        except ArchiveError as e:
            s.errors.append(str(e))
    return s, queued


def pin(cat: Catalog, inodes: Iterable[int], value: bool) -> Summary:
    s = Summary()
    with cat.tx():
        for bid, _state, size, pinned in bitfiles_under(cat, inodes):
            s.files += 1
            if bool(pinned) == value:
                s.skip("already " + ("pinned" if value else "unpinned"))
                continue
            cat.execute("UPDATE bitfiles SET pinned=? WHERE id=?", (int(value), bid))
            s.done += 1
            s.bytes += size
    return s


def pending_writes(cat: Catalog) -> tuple[int, int]:
    """(files, bytes) not yet on tape."""
    row = cat.one(
        "SELECT count(*), COALESCE(SUM(size),0) FROM bitfiles WHERE state=? AND inode IS NOT NULL",
        (DIRTY,),
    )
    assert row is not None
    return int(row[0]), int(row[1])


def progress(cat: Catalog, bitfiles: Iterable[int], goal: str) -> tuple[int, int, list[str]]:
    """How many of `bitfiles` reached `goal` ('archived' or 'cached'): (done, total, errors)."""
    done = total = 0
    errors: list[str] = []
    for bid in bitfiles:
        row = cat.one("SELECT state, error, bfid FROM bitfiles WHERE id=?", (bid,))
        total += 1
        if row is None or row[0] == "deleted":
            done += 1
            continue
        state, error, bfid = row
        ok = (
            state in (ARCHIVED, RELEASED) and not recopy_pending(cat, bid)
            if goal == "archived"
            else state in (ARCHIVED, DIRTY)
        )
        if ok:
            done += 1
        elif error:
            errors.append(f"{bfid}: {error}")
            done += 1
    return done, total, errors


def check_inodes(cat: Catalog, inodes: Iterable[int]) -> list[int]:
    ns = Namespace(cat)
    out = []
    for i in inodes:
        ns.get(i)
        out.append(i)
    if not out:
        raise ArchiveError("no paths given")
    return out

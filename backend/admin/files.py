"""The operator's commands on sets of files: flush, release, recall, pin, unpin.

Each takes inodes (a file, or a directory meaning everything below it) and returns a
summary the CLI prints. They are handlers (backend.admin.context): the same code runs in
the daemon when the archive is mounted and on the catalog when it is not (flush only in
the daemon: files go to tape through the running archive). The CLI follows `--wait`
with `progress`, reading the catalog itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from backend.admin.context import AdminContext
from backend.cache.eviction import recopy_pending, release_bitfile
from backend.catalog.db import Catalog
from backend.catalog.files import ARCHIVED, DELETED, DIRTY, RELEASED, FileClerk
from backend.catalog.namespace import Namespace
from backend.catalog.queue import RequestQueue
from backend.errors import ArchiveError
from backend.library.recall import queue_recall


@dataclass
class Summary:
    """What a command on a set of files did, and what it left alone and why."""

    files: int = 0
    bytes: int = 0
    done: int = 0  # files acted upon
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    errors: list[str] = field(default_factory=list)

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def bitfiles_under(cat: Catalog, inodes: Iterable[int]) -> list[tuple[int, str, int, int]]:
    """(bitfile id, state, size, pinned) of every regular file at or below `inodes`."""
    ns = Namespace(cat)
    files = FileClerk(cat)
    seen: set[int] = set()
    out = []
    for ino in inodes:
        for node in ns.subtree(ino):
            if node.bitfile is None or node.bitfile in seen:
                continue
            seen.add(node.bitfile)
            row = files.summary(node.bitfile)
            if row is not None:
                out.append((node.bitfile, *row))
    return out


def to_write(cat: Catalog, inodes: Iterable[int]) -> list[int]:
    """The files below `inodes` that a flush waits for: dirty ones, and archived ones
    with a tape copy being written again."""
    return [
        b
        for b, state, _, _ in bitfiles_under(cat, inodes)
        if state == DIRTY or (state == ARCHIVED and recopy_pending(cat, b))
    ]


def flush(ctx: AdminContext, inodes: list[int]) -> dict[str, Any]:
    """Make the dirty files below `inodes` due for writing now, and the tape copies of
    archived files being written again (re-copies)."""
    cat = ctx.cat
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
    if len(dirty) - s.done:
        # dirty but not queued (a session still open): queued when it closes
        s.skip("still open for writing")
    ctx.wake()
    return s.as_dict()


def release(ctx: AdminContext, inodes: list[int]) -> dict[str, Any]:
    """Drop cached copies of archived files (tape only afterwards)."""
    cat = ctx.cat
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
            freed = release_bitfile(cat, ctx.cache, bid)
            if freed or size == 0:
                s.done += 1
                s.bytes += size
            else:
                s.skip("open for writing")
    return s.as_dict()


def recall(ctx: AdminContext, inodes: list[int]) -> dict[str, Any]:
    """Queue recalls of released files; the answer lists the bitfiles queued."""
    cat = ctx.cat
    s = Summary()
    queued = []
    for bid, state, size, _ in bitfiles_under(cat, inodes):
        s.files += 1
        if state != RELEASED:
            s.skip(f"already cached ({state})")
            continue
        try:
            if queue_recall(cat, ctx.config.archive_id, bid, urgent=False):
                queued.append(bid)
                s.done += 1
                s.bytes += size
        except ArchiveError as e:
            s.errors.append(str(e))
    ctx.wake()
    answer = s.as_dict()
    if not ctx.online:
        answer["note"] = "queued; recalls run when the archive is mounted"
    return {**answer, "queued": queued}


def _pin(ctx: AdminContext, inodes: list[int], value: bool) -> dict[str, Any]:
    cat = ctx.cat
    files = FileClerk(cat)
    s = Summary()
    with cat.tx():
        for bid, _state, size, pinned in bitfiles_under(cat, inodes):
            s.files += 1
            if bool(pinned) == value:
                s.skip("already " + ("pinned" if value else "unpinned"))
                continue
            files.set_pinned(bid, value)
            s.done += 1
            s.bytes += size
    return s.as_dict()


def pin(ctx: AdminContext, inodes: list[int]) -> dict[str, Any]:
    """Keep files in the cache."""
    return _pin(ctx, inodes, True)


def unpin(ctx: AdminContext, inodes: list[int]) -> dict[str, Any]:
    """Let files leave the cache again."""
    return _pin(ctx, inodes, False)


# -- what waiting commands read -------------------------------------------------------------


def pending_writes(cat: Catalog) -> tuple[int, int]:
    """(files, bytes) not yet on tape."""
    return FileClerk(cat).pending_writes()


def progress(cat: Catalog, bitfiles: Iterable[int], goal: str) -> tuple[int, int, list[str]]:
    """How many of `bitfiles` reached `goal` ('archived' or 'cached'): (done, total, errors)."""
    files = FileClerk(cat)
    done = total = 0
    errors: list[str] = []
    for bid in bitfiles:
        row = files.outcome(bid)
        total += 1
        if row is None or row[0] == DELETED:
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

"""The recall transfer: a mover reads tape copies back into the cache.

Each recall of the batch locates straight to its member's record, reads it into a
temporary cache file (pax, or a foreign tar/cpio member), verifies size, bfid and
checksums, and only then publishes it as the cached copy. A copy that reads wrong is
marked bad (a media error of that copy) and the recall goes to the file's next copy
(backend.library.recall); it fails, and `open` gets EIO, only when no good copy is
left. A recall that succeeds queues the copies the file lacks (found bad, or never
made) to be written again from the cache (backend.catalog.files.complete_recall).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import BinaryIO, cast

from backend.cache.checksum import Checksummer
from backend.cache.eviction import evict, for_disk
from backend.cache.holes import HoleWriter
from backend.catalog import events
from backend.catalog.files import RELEASED, Bitfile, FileClerk, TapeCopy
from backend.catalog.queue import Request, RequestQueue
from backend.library import recall as policy
from backend.library.work import Work
from backend.mover.context import RETRY_DELAY, MoverContext
from backend.mover.states import Session
from backend.tape import foreign
from drivers.formats.pax import REELFS_BFID, read_member
from drivers.tape import ErrorClass, MediaError, TapeError


class ChecksumMismatch(Exception):
    """A copy read back is not exactly the file's data."""


class CopyReadError(MediaError):
    """A recall's read of one copy failed: the volume is suspect, but the other files of
    the batch are still worth reading from it."""


def recall_batch(ctx: MoverContext, work: Work, pending: list[Request]) -> None:
    ctx.to(Session.TRANSFERRING)
    while pending:
        # taken out first: recall_one settles its own request even when it raises
        recall_one(ctx, pending.pop(0), work.volume)


def recall_one(ctx: MoverContext, req: Request, label: str) -> None:
    files = FileClerk(ctx.cat, ctx.config.archive_id)
    queue = RequestQueue(ctx.cat)
    bf = files.get(req.bitfile)
    if bf is None or bf.state != RELEASED:
        queue.done(req.id)
        ctx.lm.forget_request(req.id)
        ctx.hooks.recall_done(req.bitfile, None if bf and bf.cached else "file deleted")
        return
    failed = ctx.lm.failed_copies(req.id)
    here = [c for c in files.copies(bf.id) if c.volume == label and c.id not in failed]
    copy = next(
        (c for c in here if c.fileno == req.fileno and c.block + c.record == req.block),
        here[0] if here else None,
    )
    if copy is None:
        recall_elsewhere(ctx, req, bf.id, f"no usable copy of {bf.bfid} on {label}")
        return
    cache = ctx.cache
    if not cache.try_charge(bf.size):
        evict(ctx.cat, cache, bf.size - (cache.limit - cache.used))
        if not cache.try_charge(bf.size):
            queue.requeue(req.id, "waiting for room in the cache", delay=RETRY_DELAY)
            events.record(
                ctx.cat,
                "cache_full",
                f"no room to recall {bf.bfid}",
                subject=bf.bfid,
                level="warning",
            )
            return
    temp = cache.temp_path(bf.bfid)
    try:
        _read_copy(ctx, copy, bf, temp)
    except ChecksumMismatch as e:
        # The copy reads, but not as written: a media error of this copy only. It is
        # marked bad so that no recall wastes a mount on it again.
        _drop_temp(ctx, temp, bf.size)
        _copy_failed(ctx, req, bf.bfid, copy, str(e), bad=True)
        recall_elsewhere(ctx, req, bf.id, str(e))
        return
    except TapeError as e:
        _drop_temp(ctx, temp, bf.size)
        if e.error_class == ErrorClass.DRIVE:
            queue.requeue(req.id, f"drive {ctx.name} failed: {e.message}")
            raise
        _copy_failed(ctx, req, bf.bfid, copy, str(e), bad=False)
        recall_elsewhere(ctx, req, bf.id, str(e))
        if e.error_class in (ErrorClass.MEDIA, ErrorClass.BLANK):
            raise CopyReadError(
                e.message, sense=e.sense, alerts=e.alerts, error_class=e.error_class
            ) from e
        return
    except OSError as e:
        _drop_temp(ctx, temp, bf.size)
        if e.errno != errno.ENOSPC:
            queue.requeue(req.id, "interrupted", delay=RETRY_DELAY)
            raise
        # The cache's file system is full though its count had room: evict for it and
        # try again; a drive that read well is no drive fault.
        freed = for_disk(ctx.cat, cache, bf.size)
        why = f"the cache file system is full ({freed} bytes evicted)"
        queue.requeue(req.id, why, delay=0 if freed else RETRY_DELAY)
        events.record(ctx.cat, "cache_full", why, subject=bf.bfid, level="warning")
        return
    except BaseException:
        _drop_temp(ctx, temp, bf.size)
        queue.requeue(req.id, "interrupted", delay=RETRY_DELAY)
        raise
    cache.adopt(temp, bf.bfid)
    files.complete_recall(bf, req.id, copy)
    ctx.lm.forget_request(req.id)
    ctx.hooks.recall_done(bf.id, None)


def _read_copy(ctx: MoverContext, copy: TapeCopy, bf: Bitfile, temp: Path) -> None:
    """Read one tape copy into `temp`, located straight at its member; raises
    ChecksumMismatch unless it is exactly the file's data."""
    fmt = FileClerk(ctx.cat, ctx.config.archive_id).copy_format(copy.id)
    ctx.drive.locate(copy.block + copy.record)
    ck = Checksummer()
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # zero blocks are skipped, not written: a sparse file comes back with its holes
    dest = cast(BinaryIO, HoleWriter(fd))
    try:
        if fmt is None:
            info = read_member(ctx.drive, ctx.block_size, copy.offset, dest, on_data=ck.update)
            size = info.size
            holds = info.records.get(REELFS_BFID)
            if holds is not None and holds != bf.bfid:
                raise ChecksumMismatch(
                    f"{copy.location} holds {holds}, not {bf.bfid}: the catalog and the "
                    "tape disagree"
                )
        else:
            size = foreign.read_member(ctx.drive, fmt, copy.offset, dest, on_data=ck.update)
        dest.close()
    finally:
        os.close(fd)
    if size != bf.size or ck.length != bf.size:
        raise ChecksumMismatch(
            f"{bf.bfid} on {copy.location}: {ck.length} bytes read, {bf.size} expected"
        )
    if bf.adler32 is not None and (ck.adler, ck.crc) != (bf.adler32, bf.crc32c):
        raise ChecksumMismatch(
            f"{bf.bfid} on {copy.location}: checksums {ck.adler:08x}/{ck.crc:08x}, "
            f"expected {bf.adler32:08x}/{bf.crc32c:08x}"
        )


def _drop_temp(ctx: MoverContext, temp: Path, size: int) -> None:
    try:
        os.unlink(temp)
    except FileNotFoundError:
        pass
    ctx.cache.uncharge(size)


def _copy_failed(
    ctx: MoverContext, req: Request, bfid: str, copy: TapeCopy, why: str, bad: bool
) -> None:
    ctx.lm.note_failed_copy(req.id, copy.id)
    FileClerk(ctx.cat, ctx.config.archive_id).mark_copy_bad(copy, bfid, why, bad=bad)


def recall_elsewhere(
    ctx: MoverContext, req: Request, bitfile: int, why: str, bad_volume: str | None = None
) -> None:
    """Point the recall at a good copy not tried yet, or fail it with `why` (and EIO
    for whoever waits): only when no good copy is left."""
    aid = ctx.config.archive_id
    if bad_volume is not None:
        for c in FileClerk(ctx.cat, aid).copies(bitfile):
            if c.volume == bad_volume:
                ctx.lm.note_failed_copy(req.id, c.id)
    c = policy.next_copy(ctx.cat, aid, bitfile, ctx.lm.failed_copies(req.id))
    queue = RequestQueue(ctx.cat)
    if c is not None:
        queue.point_at(req.id, c.volume, c.fileno, c.block + c.record, why, requeue=True)
        return
    msg = policy.failure(ctx.cat, aid, bitfile, why)
    queue.fail(req.id, bitfile, msg)
    ctx.lm.forget_request(req.id)
    ctx.hooks.recall_done(bitfile, msg)

"""The write transfer: a mover appends a batch of files to its volume.

Small files are aggregated (backend.library.aggregation): each tape file is one pax archive
of one or many members (drivers.formats.pax), between ANSI header and trailer labels on
a labelled volume (VOL1 is written at a blank volume's first use). Once the tape file's
last filemark is on tape, and it read back right when the family asks for
read-after-write verification, all its members are recorded in one catalog transaction
(backend.catalog.commit), each copy counting only if its file did not change meanwhile.
A volume at early warning, or too close to it for another file, is closed (`full`).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any, BinaryIO

from backend.cache.checksum import Checksummer, Sums
from backend.cache.holes import data_extents
from backend.catalog import events
from backend.catalog.commit import (
    TapeFileEnd,
    WrittenMember,
    commit_tape_file,
    members_for_tape,
)
from backend.catalog.families import family_of_pool, split_pool
from backend.catalog.files import ARCHIVED, DIRTY, Bitfile
from backend.catalog.namespace import Namespace
from backend.catalog.queue import Request, RequestQueue
from backend.catalog.volumes import FULL, VolumeClerk
from backend.library.aggregation import plan
from backend.library.work import Work
from backend.mover import errors
from backend.mover.context import RETRY_DELAY, MoverContext, VolumeUnavailable
from backend.mover.states import Session
from backend.tape.layout import (
    ANSI,
    VolumeFormat,
    data_start,
    file_identifier,
    objects_of,
    volser_for,
    volume_format,
)
from drivers.formats.ansi import write_header, write_trailer, write_vol1
from drivers.formats.pax import (
    REELFS_BFID,
    MemberExtent,
    MemberInfo,
    ShortSourceError,
    TapeFileWriter,
    iter_members,
    reelfs_records,
)
from drivers.tape import MediaError, TapeError

log = logging.getLogger("reelfs.mover")


class VerifyFailed(MediaError):
    """A tape file just written does not read back as written."""


@dataclass
class _Member:
    """One file of a tape file being written."""

    req: Request
    bf: Bitfile
    path: str
    info: MemberInfo
    extent: MemberExtent | None = None
    sums: Sums | None = None


class _SourceChanged(Exception):
    """A member's cache file changed while it was being written."""

    def __init__(self, member: _Member, cause: ShortSourceError) -> None:
        super().__init__(str(cause))
        self.member = member


def write_batch(ctx: MoverContext, work: Work, pending: list[Request]) -> None:
    """Append the batch at end of data: small files aggregated into tape files of many
    members, large ones in a tape file each."""
    vc = VolumeClerk(ctx.cat)
    fmt = volume_format(ctx.cat, work.volume)
    assert fmt is not None
    if fmt.foreign:
        raise VolumeUnavailable(f"volume {work.volume} is a foreign volume: read-only")
    layout = fmt.layout(ctx.config.library.label_format)
    ctx.to(Session.POSITIONING)
    _position_for_append(ctx, fmt, layout)
    ctx.to(Session.TRANSFERRING)
    agg = ctx.config.aggregation
    verify = family_of_pool(work.family or "") in ctx.config.verify_families
    for group in plan(list(pending), threshold=agg.threshold, max_bytes=agg.size):
        outcome = _write_tape_file(ctx, group, work.volume, layout, pending, verify)
        why = "early warning reached; volume closed"
        if outcome != "full":
            # Not at early warning, but maybe too close to it for any file: a file
            # takes at least two records (headers and data, padding, labels). The
            # drive knows best; some (tgt) cannot tell, the catalog's count then says.
            try:
                left = ctx.drive.remaining_capacity()
            except TapeError:
                left = None
            after = vc.get(work.volume)
            if left is None and after is not None:
                left = after.free
            if left is not None and left < 2 * ctx.block_size:
                outcome = "full"
                why = f"{left} bytes left before early warning: too few for a file"
        if outcome == "full":
            vc.set_state(work.volume, FULL)
            events.record(ctx.cat, "volume_full", why, subject=work.volume)
            break
    errors.requeue(ctx, pending, None)


def _position_for_append(ctx: MoverContext, fmt: VolumeFormat, layout: str) -> None:
    """Go to end of data; a blank volume is first labelled (ANSI) or rewound."""
    if fmt.eod_block:
        ctx.drive.locate(fmt.eod_block)
        return
    volser = volser_for(fmt.label) if layout == ANSI else None
    if volser is not None:
        write_vol1(ctx.drive, volser, owner=ctx.config.archive_id)
    else:
        ctx.drive.rewind()
    VolumeClerk(ctx.cat).set_first_use(
        fmt.label,
        layout=layout,
        volser=volser,
        block_size=ctx.block_size,
        eod_block=1 if volser else 0,
    )
    if volser is not None:
        events.record(
            ctx.cat,
            "volume_labelled",
            f"VOL1 {volser} written at first use (owner {ctx.config.archive_id})",
            subject=fmt.label,
            drive=ctx.name,
        )


def _write_tape_file(
    ctx: MoverContext,
    group: list[Request],
    label: str,
    layout: str,
    pending: list[Request],
    verify: bool,
) -> str:
    """Write `group` as one tape file at end of data and commit its members in one
    transaction; 'ok', or 'full' at early warning. Requests leave `pending` once
    handled (written, skipped or requeued); those not reached stay in it."""
    members = _prepare(ctx, group, pending)
    while members:
        fmt = volume_format(ctx.cat, label)
        assert fmt is not None
        try:
            written, records, full = _write_members(ctx, members, fmt, layout, pending)
        except _SourceChanged as e:
            # The file changed under us (truncated while being written): this tape file
            # is abandoned and written again without it, from the same place.
            RequestQueue(ctx.cat).requeue(
                e.member.req.id, f"source changed: {e}", delay=RETRY_DELAY
            )
            pending.remove(e.member.req)
            members = [m for m in members if m is not e.member]
            ctx.drive.locate(fmt.eod_block)
            continue
        if not written:
            ctx.drive.locate(fmt.eod_block)
            return "full" if full else "ok"
        first = data_start(layout, fmt.eod_block)
        eod = fmt.eod_block + objects_of(layout, records)
        if verify:
            _verify(ctx, label, fmt.next_fileno, first, written)
            ctx.drive.locate(eod)
        _commit(ctx, label, layout, fmt, first, records, eod, written, pending)
        return "full" if full else "ok"
    return "ok"


def _prepare(ctx: MoverContext, group: list[Request], pending: list[Request]) -> list[_Member]:
    """The group's files still to write, with their pax member descriptions."""
    ns = Namespace(ctx.cat)
    queue = RequestQueue(ctx.cat)
    dirs: dict[int, str | None] = {}
    sources = members_for_tape(ctx.cat, [r.bitfile for r in group])
    out: list[_Member] = []
    for req in group:
        src = sources.get(req.bitfile)
        if src is None or src.bitfile.state not in (DIRTY, ARCHIVED) or src.bitfile.writers:
            # deleted, unlinked, replaced by a new version, open for writing again
            # (its session's end queues it anew), or released (a re-copy of an
            # archived file whose data left the cache: the next recall queues it anew)
            ctx.hooks.race_point("write.drop")
            queue.drop_unwritable(req.id)
            pending.remove(req)
            continue
        bf = src.bitfile
        if src.parent not in dirs:
            dirs[src.parent] = ns.path_of(src.parent)
        prefix = dirs[src.parent]
        path = (
            f"{prefix.rstrip('/')}/{src.name.decode('utf-8', 'surrogateescape')}"
            if prefix is not None
            else f"/.orphans/{bf.bfid}"
        )
        info = MemberInfo(
            name=path.lstrip("/") or bf.bfid,
            size=bf.size,
            mtime_ns=src.mtime_ns,
            mode=src.mode & 0o7777,
            uid=src.uid,
            gid=src.gid,
            records=reelfs_records(
                bfid=bf.bfid,
                version=bf.version,
                family=bf.family or "",
                path=path,
                archive=ctx.config.archive_id,
                adler32=bf.adler32,
                crc32c=bf.crc32c if bf.adler32 is not None else None,
                copy=split_pool(req.family or "")[1],
            ),
        )
        out.append(_Member(req, bf, path, info))
    return out


def _write_members(
    ctx: MoverContext,
    members: list[_Member],
    fmt: VolumeFormat,
    layout: str,
    pending: list[Request],
) -> tuple[list[_Member], int, bool]:
    """Header labels, the pax archive, its filemark, trailer labels: (members written,
    data records, early warning reached). Members after early warning are left out."""
    drive = ctx.drive
    fileno = fmt.next_fileno
    volser = volser_for(fmt.label)
    labels: dict[str, Any] = {
        "volser": volser,
        "file_id": file_identifier(ctx.config.archive_id, fileno),
        "file_sequence": fileno + 1,
        "block_size": ctx.block_size,
    }
    if layout == ANSI:
        write_header(drive, **labels)
    writer = TapeFileWriter(drive, ctx.block_size)
    written: list[_Member] = []
    for m in members:
        if writer.early_warning:
            break  # the volume is nearly full: close this tape file with what it has
        try:
            src = (
                io.BytesIO(b"")  # an empty file has no cache file
                if m.bf.size == 0
                else open(ctx.cache.path(m.bf.bfid), "rb", buffering=0)  # noqa: SIM115
            )
        except FileNotFoundError:
            # gone since the batch was made (a new version took over): nothing of it
            # is on tape yet, the next member takes its place
            RequestQueue(ctx.cat).requeue(m.req.id, "cache file missing", delay=RETRY_DELAY)
            pending.remove(m.req)
            continue
        ck = Checksummer()
        with src:
            try:
                m.extent = writer.add(
                    m.info, src, on_data=ck.update, sparse=_holes_map(src, m.bf.size)
                )
            except ShortSourceError as e:
                raise _SourceChanged(m, e) from e
        m.sums = ck.sums
        written.append(m)
    if not written:
        return [], 0, writer.early_warning
    if layout == ANSI:
        # the trailer's synchronous filemark makes the data filemark durable too
        records = writer.finish(filemark=False)
        drive.write_filemarks(1, immediate=True)
        write_trailer(drive, **labels, block_count=records, sync=True)
    else:
        records = writer.finish()
    return written, records, writer.early_warning


def _holes_map(src: BinaryIO, size: int) -> list[tuple[int, int]] | None:
    """The data regions of a cache file with holes (stored so on tape: a truncated
    gigabyte takes a few blocks), or None for a file that is all data."""
    if size == 0:
        return None
    extents = data_extents(src.fileno(), size)
    return extents if sum(n for _, n in extents) < size else None


def _verify(ctx: MoverContext, label: str, fileno: int, first: int, written: list[_Member]) -> None:
    """Read-after-write: the tape file must read back member by member as written
    (names, positions, bfids, sizes, checksums). Raises VerifyFailed otherwise."""
    ctx.to(Session.VERIFYING)
    ctx.drive.locate(first)
    n = 0

    def failed(why: str) -> None:
        events.record(ctx.cat, "verify_failed", why, subject=label, level="error", drive=ctx.name)

    try:
        for info, extent, stream in iter_members(ctx.drive, ctx.block_size):
            if n >= len(written):
                raise VerifyFailed(f"data file {fileno}: an extra member {info.name!r}")
            m = written[n]
            ck = Checksummer()
            stream.copy_to(None, ck.update)
            assert m.extent is not None and m.sums is not None
            if (
                info.records.get(REELFS_BFID) != m.bf.bfid
                or (extent.record, extent.offset) != (m.extent.record, m.extent.offset)
                or ck.length != m.bf.size
                or (ck.adler, ck.crc) != (m.sums.adler32, m.sums.crc32c)
            ):
                raise VerifyFailed(
                    f"data file {fileno}: {m.path} ({m.bf.bfid}) does not read back as "
                    f"written (adler32 {ck.adler:08x}, written {m.sums.adler32:08x})"
                )
            n += 1
    except TapeError as e:
        why = e.message if isinstance(e, VerifyFailed) else f"reading back: {e.message}"
        failed(why)
        if isinstance(e, VerifyFailed):
            raise
        raise VerifyFailed(why, alerts=e.alerts) from e
    if n != len(written):
        why = f"data file {fileno}: {n} of {len(written)} members read back"
        failed(why)
        raise VerifyFailed(why)
    events.record(
        ctx.cat,
        "write_verified",
        f"data file {fileno}: {n} file(s) read back and checked",
        subject=label,
        drive=ctx.name,
    )
    ctx.to(Session.TRANSFERRING)


def _commit(
    ctx: MoverContext,
    label: str,
    layout: str,
    fmt: VolumeFormat,
    first: int,
    records: int,
    eod: int,
    written: list[_Member],
    pending: list[Request],
) -> None:
    """Record the tape file (backend.catalog.commit) and tell the daemon what it
    archived."""
    end = TapeFileEnd(
        volume=label,
        fileno=fmt.next_fileno,
        first_block=first,
        records=records,
        eod_block=eod,
        label_format=layout,
        volser=volser_for(label) if layout == ANSI else None,
        block_size=ctx.block_size,
    )
    members = []
    for m in written:
        assert m.extent is not None and m.sums is not None
        members.append(
            WrittenMember(
                request=m.req.id,
                pool=m.req.family,
                bitfile=m.bf,
                path=m.path,
                record=m.extent.record,
                offset=m.extent.offset,
                adler32=m.sums.adler32,
                crc32c=m.sums.crc32c,
            )
        )
    result = commit_tape_file(ctx.cat, end, members)
    ids = {m.req.id for m in written}
    pending[:] = [r for r in pending if r.id not in ids]
    if result.waiting:
        log.info(
            "mover %s: %d file(s) of data file %d on %s wait for their other copies",
            ctx.name,
            result.waiting,
            fmt.next_fileno,
            label,
        )
    if not result.archived:
        return
    if ctx.hooks.archived_many is not None:
        ctx.hooks.archived_many(result.archived)
    else:
        for b in result.archived:
            ctx.hooks.archived(b)

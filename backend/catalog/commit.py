"""The commit of a tape file: its members become tape copies in one transaction.

A mover writes a tape file (one pax archive of one or many members) and, once its last
filemark is on tape (and it read back right when the family verifies), records all of it
here at once: the tape copies, the files this archives (those with no other copy still
to write), their requests, and the volume's new end of data. A member whose file
changed while it was being written is recorded as a deleted copy and its request goes
back to the queue; a member whose cached data no longer matches its checksums is kept
off tape with an error. A crash before the commit loses nothing but the time spent: the
files are still dirty and queued.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass

from backend.catalog import events
from backend.catalog.db import Catalog
from backend.catalog.families import split_pool
from backend.catalog.files import ARCHIVED, BITFILE_COLUMNS, Bitfile
from backend.catalog.queue import RequestQueue, chunks
from backend.names import text_of, to_db

log = logging.getLogger("reelfs.commit")

_B_COLS = ", ".join(f"b.{c.strip()}" for c in BITFILE_COLUMNS.split(","))
_NCOLS = len(BITFILE_COLUMNS.split(","))


@dataclass
class TapeMemberSource:
    """A file about to be written to tape: its version and its inode's attributes."""

    bitfile: Bitfile
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    parent: int
    name: bytes


@dataclass
class WrittenMember:
    """One member of a tape file on tape now, as the mover wrote it."""

    request: int
    pool: str | None  # the request's pool: which copy this is
    bitfile: Bitfile  # the version as it was read for writing
    path: str
    record: int  # the member's header record, from the tape file's first
    offset: int  # byte offset of the header in that record
    adler32: int
    crc32c: int


@dataclass
class TapeFileEnd:
    """Where a tape file just written sits, and the volume's end after it."""

    volume: str
    fileno: int
    first_block: int  # its first data record
    records: int  # data records
    eod_block: int
    label_format: str
    volser: str | None
    block_size: int


@dataclass
class CommitResult:
    """What a commit did, for the mover to tell the daemon and the log."""

    archived: list[int]  # bitfiles archived by this tape file
    waiting: int  # files whose copy is recorded but which wait for another copy


def members_for_tape(cat: Catalog, bitfile_ids: list[int]) -> dict[int, TapeMemberSource]:
    """What the mover writes of each file: its version and the attributes and first
    name of its inode (one query per few hundred files: a tape file may hold
    thousands)."""
    out: dict[int, TapeMemberSource] = {}
    for ids in chunks(bitfile_ids):
        for row in cat.all(
            f"SELECT {_B_COLS}, i.mode, i.uid, i.gid, i.mtime_ns, e.parent, e.name "
            "FROM bitfiles b JOIN inodes i ON i.id = b.inode "
            "JOIN entries e ON e.id = (SELECT MIN(id) FROM entries WHERE inode = b.inode) "
            f"WHERE b.id IN ({','.join('?' * len(ids))})",
            ids,
        ):
            bf = Bitfile(*row[:_NCOLS])
            mode, uid, gid, mtime_ns, parent, name = row[_NCOLS:]
            out[bf.id] = TapeMemberSource(bf, mode, uid, gid, mtime_ns, parent, bytes(name))
    return out


def commit_tape_file(cat: Catalog, end: TapeFileEnd, written: list[WrittenMember]) -> CommitResult:
    """Record every member of a tape file just written and the volume's new end, in
    one transaction. A member's copy counts only if its file did not change while it
    was written (else it is recorded deleted and its request goes back to the queue);
    a file is archived once no other copy of it waits to be written; a re-copy of an
    archived file joins its other copies and leaves its state alone.

    Each member is recorded under a savepoint of its own: one that cannot be recorded
    (a bug in what the mover passed, a value SQLite refuses) is rolled back alone, its
    request goes back to the queue with the error and an event `commit_failed` says
    why, and the rest of the tape file is committed (a batch must not fail, and drives
    go down, for one file). A fault of the catalog itself (disk full, I/O) still fails
    the whole commit: it is no member's."""
    now = time.time_ns()
    archived: list[int] = []
    waiting = recorded = 0
    with cat.tx():
        fresh: dict[int, tuple] = {}
        for ids in chunks([m.bitfile.id for m in written]):
            for row in cat.all(
                "SELECT id, state, generation, writers, size, adler32, crc32c FROM bitfiles "
                f"WHERE id IN ({','.join('?' * len(ids))})",
                ids,
            ):
                fresh[row[0]] = tuple(row)
        for m in written:
            cat.execute("SAVEPOINT member")
            try:
                outcome = _record_member(cat, end, m, fresh.get(m.bitfile.id), now)
            except sqlite3.OperationalError:
                raise
            except Exception as e:  # one member's fault stays its own
                cat.execute("ROLLBACK TO member")
                _member_failed(cat, end, m, e)
                outcome = None
            cat.execute("RELEASE member")
            if outcome in (_ARCHIVED, _WAITING, _RECOPIED):
                recorded += 1
            if outcome == _ARCHIVED:
                archived.append(m.bitfile.id)
            elif outcome == _WAITING:
                waiting += 1
        cat.execute(
            "UPDATE volumes SET bytes_used = bytes_used + ?, files = files + ?, "
            "next_fileno = ?, eod_block = ?, label_format=?, volser=?, block_size=? "
            "WHERE label=?",
            (
                end.records * end.block_size,
                recorded,
                end.fileno + 1,
                end.eod_block,
                end.label_format,
                end.volser,
                end.block_size,
                end.volume,
            ),
        )
    return CommitResult(archived=archived, waiting=waiting)


_ARCHIVED, _WAITING, _RECOPIED, _AGAIN, _MISMATCH = (
    "archived",
    "waiting",
    "recopied",
    "again",
    "mismatch",
)


def _record_member(
    cat: Catalog, end: TapeFileEnd, m: WrittenMember, now_bf: tuple | None, now: int
) -> str:
    """One member's copy, request and file state (inside its savepoint): what became
    of it."""
    bf = m.bitfile
    # a re-copy of an archived file (bf.state ARCHIVED) stays archived
    good = now_bf is not None and now_bf[1:5] == (bf.state, bf.generation, 0, bf.size)
    mismatch = (
        good
        and now_bf is not None
        and now_bf[5] is not None
        and (now_bf[5], now_bf[6]) != (m.adler32, m.crc32c)
    )
    copy = split_pool(m.pool or "")[1]
    state = "active" if good and not mismatch else "deleted"
    cat.execute(
        "INSERT INTO tape_copies(bitfile, volume, copy, fileno, block, record, "
        "offset, length, state, written_ns) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (bf.id, end.volume, copy, end.fileno, end.first_block, m.record, m.offset, bf.size,
         state, now),
    )  # fmt: skip
    if mismatch:
        assert now_bf is not None
        msg = (
            f"cache data of {bf.bfid} does not match its checksums "
            f"(adler32 {m.adler32:08x}, expected {now_bf[5]:08x})"
        )
        cat.execute("UPDATE bitfiles SET error=? WHERE id=?", (msg, bf.id))
        events.record(cat, "checksum_mismatch", msg, subject=bf.bfid, level="error")
        cat.execute(
            "UPDATE requests SET state='queued', drive=NULL, error=?, not_before_ns=? WHERE id=?",
            (msg, time.time_ns() + int(60e9), m.request),
        )
        return _MISMATCH
    if not good:
        cat.execute("UPDATE requests SET state='queued', drive=NULL WHERE id=?", (m.request,))
        return _AGAIN
    cat.execute("DELETE FROM requests WHERE id=?", (m.request,))
    if bf.state == ARCHIVED:
        # the file was archived already: its state, other copies and announcement stay
        # as they were; only the new copy joins them
        where = f"{end.volume}:{end.fileno}:{end.first_block + m.record}"
        events.record(
            cat,
            "copy_recreated",
            f"copy {copy} of {m.path} written again at {where}",
            subject=bf.bfid,
            path=m.path,
            copy=copy,
            volume=end.volume,
            location=where,
        )
        return _RECOPIED
    # Another mover writing another copy commits in its own transaction, so exactly one
    # of them sees the last request gone.
    if RequestQueue(cat).writes_waiting([bf.id]):
        return _WAITING
    cat.execute(
        "UPDATE bitfiles SET state=?, archived_ns=?, path=?, adler32=?, crc32c=?, "
        "error=NULL WHERE id=?",
        (ARCHIVED, now, to_db(m.path), m.adler32, m.crc32c, bf.id),
    )
    return _ARCHIVED


def _member_failed(cat: Catalog, end: TapeFileEnd, m: WrittenMember, e: Exception) -> None:
    """A member that could not be recorded: its request back to the queue, later, with
    the error, and the event that says so. Its blocks on tape hold nothing the catalog
    knows (as a deleted copy's)."""
    bf = m.bitfile
    msg = text_of(f"data file {end.fileno} on {end.volume}: {bf.bfid} could not be recorded: {e!r}")
    cat.execute(
        "UPDATE requests SET state='queued', drive=NULL, error=?, not_before_ns=? WHERE id=?",
        (msg, time.time_ns() + int(60e9), m.request),
    )
    cat.execute("UPDATE bitfiles SET error=? WHERE id=?", (msg, bf.id))
    log.error("%s", msg)
    events.record(
        cat,
        "commit_failed",
        msg,
        subject=bf.bfid,
        level="error",
        path=m.path,
        volume=end.volume,
        fileno=end.fileno,
    )

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

import time
from dataclasses import dataclass

from backend.catalog import events
from backend.catalog.db import Catalog
from backend.catalog.families import split_pool
from backend.catalog.files import ARCHIVED, BITFILE_COLUMNS, Bitfile
from backend.catalog.queue import RequestQueue, chunks

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
    archived file joins its other copies and leaves its state alone."""
    now = time.time_ns()
    copies: list[tuple] = []
    done: list[WrittenMember] = []
    again: list[tuple[int]] = []
    recopied: list[tuple[WrittenMember, int, str]] = []
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
            bf = m.bitfile
            now_bf = fresh.get(bf.id)
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
            where = (end.volume, copy, end.fileno, end.first_block, m.record, m.offset)
            copies.append((bf.id, *where, bf.size, state, now))
            if good and not mismatch and bf.state == ARCHIVED:
                where = f"{end.volume}:{end.fileno}:{end.first_block + m.record}"
                recopied.append((m, copy, where))
            elif good and not mismatch:
                done.append(m)
            elif mismatch:
                assert now_bf is not None
                msg = (
                    f"cache data of {bf.bfid} does not match its checksums "
                    f"(adler32 {m.adler32:08x}, expected {now_bf[5]:08x})"
                )
                cat.execute("UPDATE bitfiles SET error=? WHERE id=?", (msg, bf.id))
                events.record(cat, "checksum_mismatch", msg, subject=bf.bfid, level="error")
                cat.execute(
                    "UPDATE requests SET state='queued', drive=NULL, error=?, "
                    "not_before_ns=? WHERE id=?",
                    (msg, time.time_ns() + int(60e9), m.request),
                )
            else:
                again.append((m.request,))
        cat.conn.executemany(
            "INSERT INTO tape_copies(bitfile, volume, copy, fileno, block, record, "
            "offset, length, state, written_ns) VALUES (?,?,?,?,?,?,?,?,?,?)",
            copies,
        )
        cat.conn.executemany(
            "DELETE FROM requests WHERE id=?",
            [(m.request,) for m in done] + [(m.request,) for m, _, _ in recopied],
        )
        for m, copy, where in recopied:
            # the file was archived already: its state, other copies and announcement
            # stay as they were; only the new copy joins them
            events.record(
                cat,
                "copy_recreated",
                f"copy {copy} of {m.path} written again at {where}",
                subject=m.bitfile.bfid,
                path=m.path,
                copy=copy,
                volume=end.volume,
                location=where,
            )
        # Another mover writing another copy commits in its own transaction, so
        # exactly one of them sees the last request gone.
        waiting = RequestQueue(cat).writes_waiting([m.bitfile.id for m in done])
        complete = [m for m in done if m.bitfile.id not in waiting]
        cat.conn.executemany(
            "UPDATE bitfiles SET state=?, archived_ns=?, path=?, adler32=?, crc32c=?, "
            "error=NULL WHERE id=?",
            [(ARCHIVED, now, m.path, m.adler32, m.crc32c, m.bitfile.id) for m in complete],
        )
        cat.conn.executemany("UPDATE requests SET state='queued', drive=NULL WHERE id=?", again)
        cat.execute(
            "UPDATE volumes SET bytes_used = bytes_used + ?, files = files + ?, "
            "next_fileno = ?, eod_block = ?, label_format=?, volser=?, block_size=? "
            "WHERE label=?",
            (
                end.records * end.block_size,
                len(done) + len(recopied),
                end.fileno + 1,
                end.eod_block,
                end.label_format,
                end.volser,
                end.block_size,
                end.volume,
            ),
        )
    return CommitResult(
        archived=[m.bitfile.id for m in complete], waiting=len(done) - len(complete)
    )

"""The file clerk: bitfiles (one per version of a file's data) and their tape copies.

A bitfile moves `dirty` (only in the cache) -> `archived` (on tape and cached) ->
`released` (on tape only) and back to `archived` by a recall. Rewriting an archived file
creates a new bitfile: tape is write-once; the old one becomes `deleted` and its tape
copies wait for repack.

The transitions that span tables are one transaction each, here: the end of a
modification session (size, sums and its write requests), the commit of a tape file
(its copies, the files it archives, their requests and the volume's new end), the end of
a recall (archived again, the request gone, the missing copies queued), and release.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from backend.catalog import events
from backend.catalog.db import Catalog
from backend.catalog.families import DEFAULT_FAMILY, pool_name
from backend.catalog.queue import RequestQueue
from backend.names import from_db

DIRTY, ARCHIVED, RELEASED, DELETED = "dirty", "archived", "released", "deleted"
EMPTY_ADLER32, EMPTY_CRC32C = 1, 0  # adler32 and CRC-32C of no bytes

BITFILE_COLUMNS = (
    "id, bfid, inode, version, size, adler32, crc32c, state, family, storage_group, path, "
    "created_ns, modified_ns, archived_ns, accessed_ns, pinned, generation, writers, error"
)


@dataclass
class Bitfile:
    """One version of a file's data (a row of `bitfiles`)."""

    id: int
    bfid: str
    inode: int | None
    version: int
    size: int
    adler32: int | None
    crc32c: int | None
    state: str
    family: str | None
    storage_group: str | None
    path: str | None
    created_ns: int
    modified_ns: int
    archived_ns: int | None
    accessed_ns: int | None
    pinned: int
    generation: int
    writers: int
    error: str | None

    def __post_init__(self) -> None:
        self.path = from_db(self.path)  # bytes when the name is not UTF-8

    @property
    def cached(self) -> bool:
        return self.state in (DIRTY, ARCHIVED)


@dataclass
class TapeCopy:
    """Where one copy of a bitfile is on tape (a row of `tape_copies`)."""

    id: int
    bitfile: int
    volume: str
    copy: int
    fileno: int
    block: int
    record: int
    offset: int
    length: int
    state: str

    @property
    def location(self) -> str:
        return f"{self.volume}:{self.fileno}:{self.block + self.record}"


class FileClerk:
    """The bitfiles and tape copies of one catalog connection (`archive_id`: the prefix
    of the bfids it creates)."""

    def __init__(self, cat: Catalog, archive_id: str = "") -> None:
        self.cat = cat
        self.archive_id = archive_id

    def get(self, bitfile_id: int) -> Bitfile | None:
        row = self.cat.one(f"SELECT {BITFILE_COLUMNS} FROM bitfiles WHERE id=?", (bitfile_id,))
        return None if row is None else Bitfile(*row)

    def by_bfid(self, bfid: str) -> Bitfile | None:
        row = self.cat.one(f"SELECT {BITFILE_COLUMNS} FROM bitfiles WHERE bfid=?", (bfid,))
        return None if row is None else Bitfile(*row)

    def create(
        self,
        inode: int,
        *,
        family: str,
        storage_group: str | None = None,
        version: int = 1,
        size: int = 0,
    ) -> Bitfile:
        assert self.archive_id, "creating bitfiles takes the archive id"
        now = time.time_ns()
        with self.cat.tx():
            next_id = int(self.cat.value("SELECT COALESCE(MAX(id), 0) + 1 FROM bitfiles"))
            bfid = f"{self.archive_id}{next_id:012d}"
            self.cat.execute(
                "INSERT INTO bitfiles(id, bfid, inode, version, size, state, family, "
                "storage_group, created_ns, modified_ns, accessed_ns, adler32, crc32c) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    next_id,
                    bfid,
                    inode,
                    version,
                    size,
                    DIRTY,
                    family,
                    storage_group,
                    now,
                    now,
                    now,
                    # the sums of no data; a session that writes recomputes them
                    EMPTY_ADLER32 if size == 0 else None,
                    EMPTY_CRC32C if size == 0 else None,
                ),
            )
            self.cat.execute("UPDATE inodes SET bitfile=? WHERE id=?", (next_id, inode))
        bf = self.get(next_id)
        assert bf is not None
        return bf

    def copies(self, bitfile_id: int, *, active_only: bool = True) -> list[TapeCopy]:
        sql = (
            "SELECT id, bitfile, volume, copy, fileno, block, record, offset, length, state "
            "FROM tape_copies WHERE bitfile=?"
        )
        if active_only:
            sql += " AND state='active'"
        return [TapeCopy(*r) for r in self.cat.all(sql + " ORDER BY copy, id", (bitfile_id,))]

    def set_state(self, bitfile_id: int, state: str, *, error: str | None = None) -> None:
        with self.cat.tx():
            self.cat.execute(
                "UPDATE bitfiles SET state=?, error=? WHERE id=?", (state, error, bitfile_id)
            )

    def set_error(self, bitfile_id: int, error: str | None) -> None:
        with self.cat.tx():
            self.cat.execute("UPDATE bitfiles SET error=? WHERE id=?", (error, bitfile_id))

    def supersede(self, bitfile_id: int) -> None:
        """This version is no longer any file's data: its tape copies await repack."""
        with self.cat.tx():
            self.cat.execute(
                "UPDATE bitfiles SET state=?, inode=NULL, writers=0 WHERE id=?",
                (DELETED, bitfile_id),
            )
            self.cat.execute(
                "UPDATE tape_copies SET state='deleted' WHERE bitfile=?", (bitfile_id,)
            )
            self.cat.execute("DELETE FROM requests WHERE bitfile=?", (bitfile_id,))

    def set_allocated(self, bitfile_id: int, nbytes: int) -> None:
        """Record what the version's data takes on disk (holes excluded)."""
        with self.cat.tx():
            self.cat.execute("UPDATE bitfiles SET allocated=? WHERE id=?", (nbytes, bitfile_id))

    def allocation(self, bitfile_id: int) -> tuple[str, str, int | None] | None:
        """(state, bfid, recorded allocation or None) of a version, for st_blocks."""
        row = self.cat.one("SELECT state, bfid, allocated FROM bitfiles WHERE id=?", (bitfile_id,))
        return None if row is None else (row[0], row[1], row[2])

    def touch(self, bitfile_id: int) -> None:
        with self.cat.tx():
            self.cat.execute(
                "UPDATE bitfiles SET accessed_ns=? WHERE id=?", (time.time_ns(), bitfile_id)
            )

    # -- asking ----------------------------------------------------------------------------

    def summary(self, bitfile_id: int) -> tuple[str, int, int] | None:
        """(state, size, pinned) of a bitfile."""
        row = self.cat.one("SELECT state, size, pinned FROM bitfiles WHERE id=?", (bitfile_id,))
        return None if row is None else (row[0], int(row[1]), int(row[2]))

    def outcome(self, bitfile_id: int) -> tuple[str, str | None, str] | None:
        """(state, error, bfid) of a bitfile: what a waiting command reports."""
        row = self.cat.one("SELECT state, error, bfid FROM bitfiles WHERE id=?", (bitfile_id,))
        return None if row is None else (row[0], row[1], row[2])

    def size_of(self, bitfile_id: int) -> int:
        return int(self.cat.value("SELECT size FROM bitfiles WHERE id=?", (bitfile_id,)) or 0)

    def storage_group(self, bitfile_id: int) -> str | None:
        return self.cat.value("SELECT storage_group FROM bitfiles WHERE id=?", (bitfile_id,))

    def pending_writes(self) -> tuple[int, int]:
        """(files, bytes) of the namespace not yet on tape."""
        row = self.cat.one(
            "SELECT count(*), COALESCE(SUM(size),0) FROM bitfiles "
            "WHERE state=? AND inode IS NOT NULL",
            (DIRTY,),
        )
        assert row is not None
        return int(row[0]), int(row[1])

    def pending_sizes(self) -> tuple[int, int]:
        """(smallest, largest) size of the files of the namespace not yet on tape."""
        row = self.cat.one(
            "SELECT COALESCE(MIN(size),0), COALESCE(MAX(size),0) FROM bitfiles "
            "WHERE state=? AND inode IS NOT NULL",
            (DIRTY,),
        )
        assert row is not None
        return int(row[0]), int(row[1])

    def pending_larger_than(self, limit: int) -> tuple[int, int]:
        """(files, bytes) not yet on tape that are larger than `limit`."""
        row = self.cat.one(
            "SELECT count(*), COALESCE(SUM(size),0) FROM bitfiles "
            "WHERE state=? AND inode IS NOT NULL AND size > ?",
            (DIRTY, limit),
        )
        assert row is not None
        return int(row[0]), int(row[1])

    def cached_bytes(self) -> int:
        """What the cache holds by the catalog's account: every dirty or archived file."""
        return int(
            self.cat.value(
                "SELECT COALESCE(SUM(size), 0) FROM bitfiles WHERE state IN (?, ?)",
                (DIRTY, ARCHIVED),
            )
            or 0
        )

    def any_session_open(self) -> bool:
        return self.cat.one("SELECT 1 FROM bitfiles WHERE writers > 0") is not None

    def by_state(self) -> dict[str, tuple[int, int]]:
        """state -> (files, bytes) over the files of the namespace."""
        return {
            r[0]: (int(r[1]), int(r[2]))
            for r in self.cat.all(
                "SELECT state, count(*), COALESCE(SUM(size),0) FROM bitfiles "
                "WHERE inode IS NOT NULL GROUP BY state"
            )
        }

    def set_pinned(self, bitfile_id: int, value: bool) -> None:
        with self.cat.tx():
            self.cat.execute("UPDATE bitfiles SET pinned=? WHERE id=?", (int(value), bitfile_id))

    def set_size(self, bitfile_id: int, size: int) -> None:
        with self.cat.tx():
            self.cat.execute("UPDATE bitfiles SET size=? WHERE id=?", (size, bitfile_id))

    # -- tape copies -----------------------------------------------------------------------

    def copy_format(self, copy_id: int) -> str | None:
        """The foreign format a copy's member is in (None: a reelfs pax member)."""
        return self.cat.value("SELECT format FROM tape_copies WHERE id=?", (copy_id,))

    def copies_made(self, bitfile_id: int) -> int:
        """Copies written of this version, good or found bad."""
        return int(
            self.cat.value(
                "SELECT count(*) FROM tape_copies WHERE bitfile=? AND state IN ('active','bad')",
                (bitfile_id,),
            )
            or 0
        )

    def bad_copies(self, bitfile_id: int) -> list[str]:
        """Locations of the copies of this version found bad."""
        return [
            f"{v}:{f}:{b}"
            for v, f, b in self.cat.all(
                "SELECT volume, fileno, block + record FROM tape_copies WHERE bitfile=? "
                "AND state='bad'",
                (bitfile_id,),
            )
        ]

    def readable_copy(
        self, bitfile_id: int, readable_states: tuple[str, ...], *, not_on: str
    ) -> tuple[str, int, int] | None:
        """(volume, fileno, block) of the first active copy on a readable volume other
        than `not_on`."""
        marks = ",".join("?" * len(readable_states))
        row = self.cat.one(
            "SELECT c.volume, c.fileno, c.block + c.record FROM tape_copies c "
            "JOIN volumes v ON v.label = c.volume WHERE c.bitfile=? AND "
            f"c.state='active' AND c.volume != ? AND v.state IN ({marks}) "
            "ORDER BY c.copy, c.id LIMIT 1",
            (bitfile_id, not_on, *readable_states),
        )
        return None if row is None else (row[0], int(row[1]), int(row[2]))

    def mark_copy_bad(self, copy: TapeCopy, bfid: str, why: str, *, bad: bool) -> None:
        """A copy that did not read back right: `bad` when it reads, but not as written
        (no recall wastes a mount on it again), else only the event."""
        with self.cat.tx():
            if bad:
                self.cat.execute(
                    "UPDATE tape_copies SET state='bad', error=? WHERE id=?", (why, copy.id)
                )
            events.record(
                self.cat,
                "copy_bad",
                f"copy {copy.copy} at {copy.location} "
                + ("is bad" if bad else "unreadable")
                + f": {why}",
                subject=bfid,
                level="error",
                volume=copy.volume,
                location=copy.location,
            )

    # -- recalls ---------------------------------------------------------------------------

    def complete_recall(self, bf: Bitfile, request_id: int, source: TapeCopy) -> list[int]:
        """A recall's data is in the cache and verified: the file is archived again and
        its request done, in one transaction that also queues (from the cache) each copy
        the family keeps that has no active copy. Returns the copy numbers queued."""
        with self.cat.tx():
            recalled = self.cat.execute(
                "UPDATE bitfiles SET state=?, error=NULL, accessed_ns=? WHERE id=? AND state=?",
                (ARCHIVED, time.time_ns(), bf.id, RELEASED),
            ).rowcount
            self.cat.execute("DELETE FROM requests WHERE id=?", (request_id,))
            if not recalled:
                return []
            family = bf.family or DEFAULT_FAMILY
            missing = RequestQueue(self.cat).enqueue_recopies(bf.id, family)
            if missing:
                events.record(
                    self.cat,
                    "recopy_queued",
                    f"copy {', '.join(map(str, missing))} of {bf.bfid} to be written again "
                    f"from copy {source.copy} at {source.location}",
                    subject=bf.bfid,
                    copies=missing,
                    pools=[pool_name(family, c) for c in missing],
                    source=source.location,
                )
            return missing

    # -- the cache -------------------------------------------------------------------------

    def evictable(self, after: tuple[int, int], limit: int) -> list[tuple[int, int]]:
        """(id, accessed_ns) of archived files that may leave the cache, least recently
        used first, after the (accessed_ns, id) position `after`."""
        return [
            (r[0], r[1])
            for r in self.cat.all(
                "SELECT id, accessed_ns FROM bitfiles WHERE state=? AND pinned=0 AND writers=0 "
                f"AND {_NO_WRITE_PENDING} "
                "AND (accessed_ns, id) > (?, ?) ORDER BY accessed_ns, id LIMIT ?",
                (ARCHIVED, *after, limit),
            )
        ]

    def release(self, bitfile_id: int) -> tuple[str, int] | None:
        """Mark an archived file released if it may leave the cache: archived, clean, not
        pinned, with an active tape copy and no copy still to write from its data.
        Returns (bfid, size) of its cache file, or None when it may not go."""
        with self.cat.tx():
            row = self.cat.one(
                "SELECT bfid, size FROM bitfiles WHERE id=? AND state=? AND pinned=0 AND writers=0",
                (bitfile_id, ARCHIVED),
            )
            if row is None:
                return None
            cur = self.cat.execute(
                "UPDATE bitfiles SET state=? WHERE id=? AND state=? AND pinned=0 AND writers=0 "
                "AND EXISTS (SELECT 1 FROM tape_copies WHERE bitfile=bitfiles.id "
                f"AND state='active') AND {_NO_WRITE_PENDING}",
                (RELEASED, bitfile_id, ARCHIVED),
            )
            if cur.rowcount == 0:
                return None
        return row[0], int(row[1])

    # -- modification sessions -------------------------------------------------------------

    def begin_session(self, bitfile_id: int) -> bool:
        """Count a modification session on a dirty version; False if it is not dirty.

        A dirty file may have some of its tape copies written already (the family keeps
        several): they hold the data as it was, so they no longer count, and the end of
        the session queues every copy again."""
        with self.cat.tx():
            if not self.cat.execute(
                "UPDATE bitfiles SET writers = writers + 1, generation = generation + 1, "
                "adler32 = NULL, crc32c = NULL, modified_ns=? WHERE id=? AND state=?",
                (time.time_ns(), bitfile_id, DIRTY),
            ).rowcount:
                return False
            self.cat.execute(
                "UPDATE tape_copies SET state='deleted' WHERE bitfile=? AND state='active'",
                (bitfile_id,),
            )
        return True

    def end_session(
        self, bitfile_id: int, *, size: int, adler32: int, crc32c: int, family: str
    ) -> None:
        """The end of a modification session, with its write requests, in one transaction."""
        with self.cat.tx():
            self.cat.execute(
                "UPDATE bitfiles SET size=?, adler32=?, crc32c=?, writers=MAX(writers-1, 0), "
                "generation=generation+1, family=?, modified_ns=? WHERE id=?",
                (size, adler32, crc32c, family, time.time_ns(), bitfile_id),
            )
            RequestQueue(self.cat).enqueue_write(bitfile_id, family)

    # -- recovery after a crash ------------------------------------------------------------

    def interrupted_sessions(self) -> list[int]:
        """Versions a crash left open for writing, or dirty without checksums."""
        return [
            r[0]
            for r in self.cat.all(
                "SELECT id FROM bitfiles WHERE writers > 0 OR (state=? AND "
                "(adler32 IS NULL OR crc32c IS NULL))",
                (DIRTY,),
            )
        ]

    def close_interrupted(self, bf: Bitfile, *, size: int, adler32: int, crc32c: int) -> None:
        """A session cut short keeps what reached the cache, and is queued for tape in
        the same transaction, as every session's end (also at a clean start, which skips
        the crash checks)."""
        with self.cat.tx():
            self.cat.execute(
                "UPDATE bitfiles SET writers=0, size=?, adler32=?, crc32c=?, "
                "generation=generation+1 WHERE id=?",
                (size, adler32, crc32c, bf.id),
            )
            if bf.inode is not None:
                self.cat.execute("UPDATE inodes SET size=? WHERE id=?", (size, bf.inode))
            if bf.state == DIRTY and bf.inode is not None:
                RequestQueue(self.cat).enqueue_write(bf.id, bf.family or DEFAULT_FAMILY)

    def dirty_without_requests(self) -> list[tuple[int, str]]:
        """(id, family) of dirty files of the namespace with fewer write requests and
        active copies together than their family keeps copies."""
        return [
            (r[0], r[1] or DEFAULT_FAMILY)
            for r in self.cat.all(
                "SELECT id, family FROM bitfiles b WHERE state=? AND inode IS NOT NULL AND "
                "(SELECT count(*) FROM requests r WHERE r.bitfile=b.id AND r.kind='write') + "
                "(SELECT count(DISTINCT copy) FROM tape_copies c WHERE c.bitfile=b.id "
                "AND c.state='active') < COALESCE((SELECT copies FROM families f "
                "WHERE f.name=COALESCE(b.family, 'default')), 1)",
                (DIRTY,),
            )
        ]

    def cached_versions(self) -> tuple[dict[str, str], set[str]]:
        """What the cache should hold: bfid -> state of each dirty or archived file with
        data, and the bfids of the empty ones (which have no cache file)."""
        wanted = {
            r[0]: r[1]
            for r in self.cat.all(
                "SELECT bfid, state FROM bitfiles WHERE state IN (?, ?) AND size > 0",
                (DIRTY, ARCHIVED),
            )
        }
        empty = {
            r[0]
            for r in self.cat.all(
                "SELECT bfid FROM bitfiles WHERE state IN (?, ?) AND size = 0", (DIRTY, ARCHIVED)
            )
        }
        return wanted, empty

    def mark_released(self, bfid: str) -> None:
        """An archived file whose cache file is gone: on tape only."""
        with self.cat.tx():
            self.cat.execute("UPDATE bitfiles SET state=? WHERE bfid=?", (RELEASED, bfid))

    def set_error_of(self, bfid: str, error: str) -> None:
        with self.cat.tx():
            self.cat.execute("UPDATE bitfiles SET error=? WHERE bfid=?", (error, bfid))


# no tape copy of the file is waiting to be (re-)written from the cache
_NO_WRITE_PENDING = (
    "NOT EXISTS (SELECT 1 FROM requests r WHERE r.bitfile=bitfiles.id AND r.kind='write')"
)

"""The request queue: writes waiting for a family's volume, recalls waiting for a volume.

A file of a family that keeps several tape copies has one write request per copy, each
for the copy's pool (`requests.family`, see backend.catalog.families).

Rows live in the catalog so that every process (the daemon, the CLI, `reelfs serve`)
sees one queue; the library manager reads it lazily with bounded queries, never replaying
it file by file at start. A request is `queued`, then `running` once a mover claimed it
(`claim`); it leaves the queue when done (`done`), goes back to it (`requeue`), or goes
to another copy (`point_at`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from backend.catalog import events
from backend.catalog.db import Catalog
from backend.catalog.families import copies_wanted, pool_name, split_pool

WRITE, RECALL = "write", "recall"
QUEUED, RUNNING = "queued", "running"

# a file version a mover may write now (as backend.catalog.commit.members_for_tape
# finds it): cached, nobody writing it, still the data of an inode with a name
_WRITABLE = (
    "b.state IN ('dirty','archived') AND b.writers=0 AND b.inode IS NOT NULL "
    "AND EXISTS (SELECT 1 FROM inodes i WHERE i.id=b.inode AND i.bitfile=b.id) "
    "AND EXISTS (SELECT 1 FROM entries e WHERE e.inode=b.inode)"
)

_REQUEST_COLS = "r.id, r.kind, r.bitfile, r.family, r.volume, r.fileno, r.block, b.size, r.tries"


@dataclass
class Request:
    """A queued request as the library manager hands it to a mover."""

    id: int
    kind: str
    bitfile: int
    family: str | None
    volume: str | None
    fileno: int | None
    block: int | None
    size: int
    tries: int


@dataclass
class DueSummary:
    """A pool's queued writes that may go now (not backed off, no writer), in numbers."""

    family: str
    urgent: bool
    small_files: int
    small_oldest_ns: int | None
    small_bytes: int
    large_files: int
    large_oldest_ns: int | None


def chunks(ids: list[int], size: int = 500) -> Iterator[list[int]]:
    """Ids in groups small enough for one `IN (...)` (SQLite allows 32766 variables)."""
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


class RequestQueue:
    """The requests table: queueing, claiming and settling writes and recalls."""

    def __init__(self, cat: Catalog) -> None:
        self.cat = cat

    # -- queueing --------------------------------------------------------------------------

    def enqueue_write(self, bitfile: int, family: str, *, urgent: bool = False) -> list[int]:
        """Queue `bitfile` for tape: one request per tape copy `family` keeps that is
        neither on tape nor queued yet, each for the copy's pool (backend.catalog.families).
        Requests already queued follow the file to `family` (or go, for copies it no longer
        keeps), and become urgent if asked. Returns the ids of the file's write requests."""
        with self.cat.tx():
            wanted = copies_wanted(self.cat, family)
            ids: list[int] = []
            queued: set[int] = set()
            for rid, pool, state in self.cat.all(
                "SELECT id, family, state FROM requests WHERE bitfile=? AND kind=?",
                (bitfile, WRITE),
            ):
                copy = split_pool(pool or family)[1]
                if copy > wanted and state == QUEUED:
                    # the family keeps fewer copies now
                    self.cat.execute("DELETE FROM requests WHERE id=?", (rid,))
                    continue
                queued.add(copy)
                self.cat.execute(
                    "UPDATE requests SET family=?, urgent=MAX(urgent, ?) WHERE id=?",
                    (pool_name(family, copy), int(urgent), rid),
                )
                ids.append(int(rid))
            on_tape = self._active_copies(bitfile)
            now = time.time_ns()
            for copy in range(1, wanted + 1):
                if copy in queued or copy in on_tape:
                    continue
                cur = self.cat.execute(
                    "INSERT INTO requests(kind, bitfile, family, state, urgent, created_ns) "
                    "VALUES (?,?,?,?,?,?)",
                    (WRITE, bitfile, pool_name(family, copy), QUEUED, int(urgent), now),
                )
                ids.append(int(cur.lastrowid or 0))
            return ids

    def _active_copies(self, bitfile: int) -> set[int]:
        return {
            int(r[0])
            for r in self.cat.all(
                "SELECT DISTINCT copy FROM tape_copies WHERE bitfile=? AND state='active'",
                (bitfile,),
            )
        }

    def enqueue_recopies(self, bitfile: int, family: str) -> list[int]:
        """Re-create the tape copies an archived file lacks (bad, or never made because
        the family keeps more copies now): when it has fewer active copies than `family`
        keeps, one write request per copy number the family keeps that has no active copy
        and no request yet, as enqueue_write does. Only while at least one good copy is
        left (the cached data was read from it or is the file's own). Returns the copy
        numbers newly queued; idempotent."""
        with self.cat.tx():
            active = self._active_copies(bitfile)
            wanted = copies_wanted(self.cat, family)
            if not active or len(active) >= wanted:
                return []
            queued = {
                split_pool(r[0] or family)[1]
                for r in self.cat.all(
                    "SELECT family FROM requests WHERE bitfile=? AND kind=?", (bitfile, WRITE)
                )
            }
            missing = [c for c in range(1, wanted + 1) if c not in active and c not in queued]
            if missing:
                self.enqueue_write(bitfile, family)
            return missing

    def enqueue_recall(
        self, bitfile: int, volume: str, fileno: int, block: int, *, urgent: bool = True
    ) -> tuple[int, bool]:
        """Queue a recall unless one is queued already: (request id, newly queued)."""
        with self.cat.tx():
            row = self.cat.one(
                "SELECT id FROM requests WHERE bitfile=? AND kind=?", (bitfile, RECALL)
            )
            if row:
                return int(row[0]), False
            cur = self.cat.execute(
                "INSERT INTO requests(kind, bitfile, volume, fileno, block, state, urgent, "
                "created_ns) VALUES (?,?,?,?,?,?,?,?)",
                (RECALL, bitfile, volume, fileno, block, QUEUED, int(urgent), time.time_ns()),
            )
            return int(cur.lastrowid or 0), True

    # -- asking ----------------------------------------------------------------------------

    def has(self, bitfile: int, kind: str) -> bool:
        return (
            self.cat.one("SELECT 1 FROM requests WHERE bitfile=? AND kind=?", (bitfile, kind))
            is not None
        )

    def write_state(self, bitfile: int) -> str | None:
        """The state of a file's (first) write request, None when it has none."""
        return self.cat.value(
            "SELECT state FROM requests WHERE bitfile=? AND kind=?", (bitfile, WRITE)
        )

    def writes_waiting(self, bitfiles: list[int]) -> set[int]:
        """Which of `bitfiles` still have a write request (another copy to write)."""
        waiting: set[int] = set()
        for ids in chunks(bitfiles):
            waiting.update(
                r[0]
                for r in self.cat.all(
                    "SELECT DISTINCT bitfile FROM requests WHERE kind='write' "
                    f"AND bitfile IN ({','.join('?' * len(ids))})",
                    ids,
                )
            )
        return waiting

    def counts(self) -> dict[tuple[str, str], int]:
        return {
            (r[0], r[1]): r[2]
            for r in self.cat.all("SELECT kind, state, count(*) FROM requests GROUP BY kind, state")
        }

    def recalls_on(self, volume: str) -> list[tuple[int, int]]:
        """(request id, bitfile) of every recall that reads `volume`."""
        return [
            (r[0], r[1])
            for r in self.cat.all(
                "SELECT id, bitfile FROM requests WHERE kind=? AND volume=?", (RECALL, volume)
            )
        ]

    def count_recalls_on(self, volume: str) -> int:
        return int(
            self.cat.value(
                "SELECT count(*) FROM requests WHERE kind=? AND volume=?", (RECALL, volume)
            )
            or 0
        )

    # -- why work waits (backend.library.diagnosis) ---------------------------------------

    def recall_of(self, bitfile: int) -> tuple[int, str, str | None, str | None, int] | None:
        """(request id, state, volume, error, created_ns) of a file's recall, if queued."""
        row = self.cat.one(
            "SELECT id, state, volume, error, created_ns FROM requests WHERE bitfile=? AND kind=?",
            (bitfile, RECALL),
        )
        return None if row is None else (int(row[0]), row[1], row[2], row[3], int(row[4]))

    def recalls_ahead(self, created_ns: int) -> int:
        """How many recalls were queued before `created_ns` and are still waiting or running."""
        return int(
            self.cat.value(
                "SELECT count(*) FROM requests WHERE kind=? AND created_ns < ?",
                (RECALL, created_ns),
            )
            or 0
        )

    def recalls_queued_before(
        self, before_ns: int
    ) -> list[tuple[int, int, str | None, str | None]]:
        """(request id, bitfile, volume, error) of the recalls queued before `before_ns`
        and not started."""
        return [
            (int(r[0]), int(r[1]), r[2], r[3])
            for r in self.cat.all(
                "SELECT id, bitfile, volume, error FROM requests WHERE kind=? AND state=? "
                "AND created_ns < ?",
                (RECALL, QUEUED, before_ns),
            )
        ]

    def write_pools_waiting(self, bitfiles: list[int] | None = None) -> list[tuple[str, int, int]]:
        """(pool, files, smallest size) of the queued writes, of `bitfiles` if given."""
        where, args = "", [WRITE, QUEUED]
        if bitfiles is not None:
            if not bitfiles:
                return []
            ids = bitfiles[:500]  # a diagnosis, not an account: a sample is enough
            where = f" AND r.bitfile IN ({','.join('?' * len(ids))})"
            args += ids
        return [
            (r[0], int(r[1]), int(r[2]))
            for r in self.cat.all(
                "SELECT r.family, count(*), MIN(b.size) FROM requests r "
                "JOIN bitfiles b ON b.id = r.bitfile WHERE r.kind=? AND r.state=?"
                f"{where} GROUP BY r.family",
                args,
            )
        ]

    # -- what the library manager schedules ------------------------------------------------

    def recall_volumes(self, now: int) -> list[str]:
        """Volumes with recalls due, the most urgent and then the oldest first."""
        return [
            r[0]
            for r in self.cat.all(
                "SELECT volume FROM requests WHERE kind=? AND state=? AND not_before_ns<=? "
                "GROUP BY volume ORDER BY MAX(urgent) DESC, MIN(created_ns)",
                (RECALL, QUEUED, now),
            )
        ]

    def recalls_for(self, volume: str, now: int, limit: int) -> list[Request]:
        """The due recalls of `volume` in tape order."""
        rows = self.cat.all(
            f"SELECT {_REQUEST_COLS} FROM requests r JOIN bitfiles b ON b.id = r.bitfile "
            "WHERE r.kind=? AND r.state=? AND r.volume=? AND r.not_before_ns<=? "
            "ORDER BY r.fileno, r.block LIMIT ?",
            (RECALL, QUEUED, volume, now, limit),
        )
        return [Request(*r) for r in rows]

    def due_writes(self, now: int, threshold: int) -> list[DueSummary]:
        """Per pool, its queued writes that may go now, small (below `threshold`; -1 makes
        every file large) and large ones apart; the most urgent and the oldest first.

        A request's age counts from the later of its queueing and the file's last change
        (the end of its last modification session): a file still being appended to is
        not written again and again while it grows."""
        rows = self.cat.all(
            "SELECT r.family, MAX(r.urgent), "
            "SUM(b.size < ?), "
            "MIN(CASE WHEN b.size < ? THEN MAX(r.created_ns, b.modified_ns) END), "
            "COALESCE(SUM(CASE WHEN b.size < ? THEN b.size END), 0), "
            "SUM(b.size >= ?), "
            "MIN(CASE WHEN b.size >= ? THEN MAX(r.created_ns, b.modified_ns) END) "
            "FROM requests r JOIN bitfiles b ON b.id = r.bitfile "
            "WHERE r.kind=? AND r.state=? AND r.not_before_ns<=? AND b.writers=0 "
            "GROUP BY r.family ORDER BY MAX(r.urgent) DESC, MIN(r.created_ns)",
            (threshold,) * 5 + (WRITE, QUEUED, now),
        )
        return [
            DueSummary(fam, bool(urgent), int(ns or 0), so, int(sb), int(nl or 0), lo)
            for fam, urgent, ns, so, sb, nl, lo in rows
        ]

    def write_batch(
        self,
        family: str,
        now: int,
        *,
        small: bool,
        threshold: int,
        limit: int,
        changed_before: int | None = None,
    ) -> list[Request]:
        """A pool's due writes of small (below `threshold`) or large files, in queue order;
        with `changed_before`, only urgent ones and files last changed before it."""
        settled = now if changed_before is None else changed_before
        rows = self.cat.all(
            f"SELECT {_REQUEST_COLS} FROM requests r JOIN bitfiles b ON b.id = r.bitfile "
            "WHERE r.kind=? AND r.state=? AND r.family=? AND r.not_before_ns<=? "
            f"AND b.writers=0 AND b.size {'<' if small else '>='} ? "
            "AND (r.urgent OR b.modified_ns<=?) ORDER BY r.id LIMIT ?",
            (WRITE, QUEUED, family, now, threshold, settled, limit),
        )
        return [Request(*r) for r in rows]

    def claim(self, ids: Iterable[int], drive: str) -> None:
        """A mover takes these requests (one statement: a batch may be thousands)."""
        now = time.time_ns()
        with self.cat.tx():
            self.cat.conn.executemany(
                "UPDATE requests SET state=?, drive=?, started_ns=?, tries=tries+1 WHERE id=?",
                [(RUNNING, drive, now, i) for i in ids],
            )

    # -- settling --------------------------------------------------------------------------

    def make_urgent(self, bitfiles: Iterable[int]) -> int:
        """Make the writes of `bitfiles` (of every copy) urgent; how many files had some."""
        n = 0
        with self.cat.tx():
            for b in bitfiles:
                n += bool(
                    self.cat.execute(
                        "UPDATE requests SET urgent=1 WHERE bitfile=? AND kind=?", (b, WRITE)
                    ).rowcount
                )
        return n

    def make_all_urgent(self) -> int:
        with self.cat.tx():
            return self.cat.execute(
                "UPDATE requests SET urgent=1 WHERE kind=? AND urgent=0", (WRITE,)
            ).rowcount

    def done(self, request_id: int) -> None:
        with self.cat.tx():
            self.cat.execute("DELETE FROM requests WHERE id=?", (request_id,))

    def drop_unwritable(self, request_id: int) -> bool:
        """Drop a claimed write the mover found it cannot write now: its file gone from
        the namespace, replaced by a new version, released (the next recall queues the
        copy anew), or open for writing (its session's end queues it anew).

        The deletion is one statement that deletes only while that is still so: a
        session that ended since the mover looked found this request and queued none,
        so dropping it then would leave the file dirty with no request. Then it goes
        back to the queue instead. True when dropped."""
        with self.cat.tx():
            if self.cat.execute(
                "DELETE FROM requests WHERE id=? AND kind=? AND NOT EXISTS ("
                f"SELECT 1 FROM bitfiles b WHERE b.id=requests.bitfile AND {_WRITABLE})",
                (request_id, WRITE),
            ).rowcount:
                return True
            self.cat.execute(
                "UPDATE requests SET state=?, drive=NULL WHERE id=?", (QUEUED, request_id)
            )
            return False

    def requeue(self, request_id: int, error: str | None = None, *, delay: float = 0.0) -> None:
        with self.cat.tx():
            self.cat.execute(
                "UPDATE requests SET state=?, drive=NULL, error=?, not_before_ns=? WHERE id=?",
                (QUEUED, error, time.time_ns() + int(delay * 1e9), request_id),
            )

    def point_at(
        self, request_id: int, volume: str, fileno: int, block: int, why: str, *, requeue: bool
    ) -> None:
        """A recall reads another copy from now on (`requeue`: and waits in the queue again)."""
        with self.cat.tx():
            if requeue:
                self.cat.execute(
                    "UPDATE requests SET volume=?, fileno=?, block=?, state='queued', "
                    "drive=NULL, error=? WHERE id=?",
                    (volume, fileno, block, why, request_id),
                )
            else:
                self.cat.execute(
                    "UPDATE requests SET volume=?, fileno=?, block=?, error=? WHERE id=?",
                    (volume, fileno, block, why, request_id),
                )

    def fail(self, request_id: int, bitfile: int, why: str, *, event: str | None = None) -> None:
        """Give up a request: the file keeps `why` as its error (an event of kind `event`)."""
        with self.cat.tx():
            self.cat.execute("UPDATE bitfiles SET error=? WHERE id=?", (why, bitfile))
            self.cat.execute("DELETE FROM requests WHERE id=?", (request_id,))
            if event:
                events.record(self.cat, event, why, subject=str(bitfile), level="error")

    def requeue_claimed(self, drive: str, error: str | None, *, delay: float = 0.0) -> int:
        """Put back what `drive`'s mover had claimed (it restarts after a crash or a busy
        catalog): every such request waits in the queue again."""
        with self.cat.tx():
            return self.cat.execute(
                "UPDATE requests SET state=?, drive=NULL, error=coalesce(?, error), "
                "not_before_ns=? WHERE state=? AND drive=?",
                (QUEUED, error, time.time_ns() + int(delay * 1e9), RUNNING, drive),
            ).rowcount

    def reset_running(self) -> int:
        """After a crash nothing is running: put every claimed request back in the queue."""
        with self.cat.tx():
            return self.cat.execute(
                "UPDATE requests SET state=?, drive=NULL WHERE state=?", (QUEUED, RUNNING)
            ).rowcount

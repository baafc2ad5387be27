"""The request queue: writes waiting for a family's volume, recalls waiting for a volume.

A file of a family that keeps several tape copies has one write request per copy, each
for the copy's pool (`requests.family`, see backend.catalog.pools).

Rows live in the catalog so that every process (the daemon, the CLI, `reelfs serve`)
sees one queue; the library manager reads it lazily with bounded queries, never replaying
it file by file at start.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from backend.catalog.db import Catalog
from backend.catalog.families import copies_wanted, pool_name, split_pool

WRITE, RECALL = "write", "recall"
QUEUED, RUNNING = "queued", "running"


class RequestQueue:
    def __init__(self, cat: Catalog) -> None:
        self.cat = cat

    def enqueue_write(self, bitfile: int, family: str, *, urgent: bool = False) -> list[int]:
        """Queue `bitfile` for tape: one request per tape copy `family` keeps that is
        neither on tape nor queued yet, each for the copy's pool (backend.catalog.pools).
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
            on_tape = {
                int(r[0])
                for r in self.cat.all(
                    "SELECT DISTINCT copy FROM tape_copies WHERE bitfile=? AND state='active'",
                    (bitfile,),
                )
            }
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

    def enqueue_recopies(self, bitfile: int, family: str) -> list[int]:
        """Re-create the tape copies an archived file lacks (bad, or never made because
        the family keeps more copies now): when it has fewer active copies than `family`
        keeps, one write request per copy number the family keeps that has no active copy
        and no request yet, as enqueue_write does. Only while at least one good copy is
        left (the cached data was read from it or is the file's own). Returns the copy
        numbers newly queued; idempotent."""
        with self.cat.tx():
            active = {
                int(r[0])
                for r in self.cat.all(
                    "SELECT DISTINCT copy FROM tape_copies WHERE bitfile=? AND state='active'",
                    (bitfile,),
                )
            }
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

    def has(self, bitfile: int, kind: str) -> bool:
        return (
            self.cat.one("SELECT 1 FROM requests WHERE bitfile=? AND kind=?", (bitfile, kind))
            is not None
        )

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

    def claim(self, ids: Iterable[int], drive: str) -> None:
        now = time.time_ns()
        with self.cat.tx():
            for i in ids:
                self.cat.execute(
                    "UPDATE requests SET state=?, drive=?, started_ns=?, tries=tries+1 WHERE id=?",
                    (RUNNING, drive, now, i),
                )

    def done(self, request_id: int) -> None:
        with self.cat.tx():
            self.cat.execute("DELETE FROM requests WHERE id=?", (request_id,))

    def requeue(self, request_id: int, error: str | None = None, *, delay: float = 0.0) -> None:
        with self.cat.tx():
            self.cat.execute(
                "UPDATE requests SET state=?, drive=NULL, error=?, not_before_ns=? WHERE id=?",
                (QUEUED, error, time.time_ns() + int(delay * 1e9), request_id),
            )

    def reset_running(self) -> int:
        """After a crash nothing is running: put every claimed request back in the queue."""
        with self.cat.tx():
            return self.cat.execute(
                "UPDATE requests SET state=?, drive=NULL WHERE state=?", (QUEUED, RUNNING)
            ).rowcount

    def counts(self) -> dict[tuple[str, str], int]:
        return {
            (r[0], r[1]): r[2]
            for r in self.cat.all("SELECT kind, state, count(*) FROM requests GROUP BY kind, state")
        }

"""The durable state of one `reelfs subscribe` configuration: a small SQLite database.

Tables (all in one WAL database, next to the configuration file by default):

* `sub_retry`: messages whose transfer failed, with their attempt count and the time of
  the next attempt (exponential backoff). A message is acknowledged to the broker only
  once it is stored or sits here, so a crash loses nothing.
* `sub_winnow`: per relPath, the key of the last message accepted for it and when
  (duplicate suppression within `winnow_window`).
* `sub_inflight`: partial downloads: which hidden temp file on the mount holds the data
  of which announced content, its ETag, and for parts (`blocks`) the parts already
  verified. A restarted subscriber resumes from there (HTTP Range) instead of starting over.
* `sub_stored`: what this subscription stored at each relPath (content key, size, mtime,
  block manifest): an announcement of what is already here is answered without reading
  the file back (it may be on tape), and unchanged parts of a re-announced file are
  copied locally instead of downloaded.
* `replication_outbox`: reports waiting for the broker (`backend.catalog.outbox`).

One connection shared by the subscriber's threads behind a lock; statements are short.
Commits are `synchronous=NORMAL` (WAL: they survive a killed process, not a power cut),
except the insertion into the retry queue, which is FULL: the message is acknowledged to
the broker right after, so the retry row is then its only copy.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.catalog.outbox import ERROR_MAX, ensure_outbox, pending_count
from backend.catalog.statedb import open_wal, transaction
from backend.names import from_db, to_bytes, to_db

STATE_DDL = """
CREATE TABLE IF NOT EXISTS sub_retry (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    rel_path    TEXT    NOT NULL,
    exchange    TEXT    NOT NULL,   -- where the message was consumed (report routing)
    topic       TEXT    NOT NULL,
    body        TEXT    NOT NULL,   -- the checked message (source set) as JSON
    pub_ns      INTEGER NOT NULL,
    attempts    INTEGER NOT NULL,   -- failed attempts so far
    next_ns     INTEGER NOT NULL,   -- wall clock time of the next attempt
    last_error  TEXT
);
CREATE INDEX IF NOT EXISTS sub_retry_next ON sub_retry(next_ns);
CREATE INDEX IF NOT EXISTS sub_retry_path ON sub_retry(rel_path);
CREATE TABLE IF NOT EXISTS sub_winnow (
    slot     TEXT PRIMARY KEY,      -- relPath (plus the block number for parts)
    key      TEXT NOT NULL,
    seen_ns  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sub_inflight (
    rel_path   TEXT PRIMARY KEY,
    key        TEXT NOT NULL,       -- content key of what is being downloaded
    temp       TEXT NOT NULL,       -- archive path of the hidden temp file
    etag       TEXT,
    manifest   TEXT,                -- parts: the manifest (JSON) being assembled
    done       TEXT,                -- parts: JSON list of verified part numbers
    started_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sub_stored (
    rel_path  TEXT PRIMARY KEY,
    key       TEXT NOT NULL,
    size      INTEGER,
    mtime_ns  INTEGER,
    manifest  TEXT
);
"""


@dataclass
class RetryRow:
    """A message waiting for another attempt."""

    id: int
    rel_path: str
    exchange: str
    topic: str
    message: dict[str, Any]
    attempts: int


@dataclass
class Inflight:
    """A partial download: its temp file (archive path), and for parts the layout and
    the parts verified so far."""

    rel_path: str
    key: str
    temp: str
    etag: str | None
    manifest: dict[int, dict[str, Any]] | None
    done: set[int]


@dataclass
class Stored:
    """What this subscription last stored at a relPath."""

    rel_path: str
    key: str
    size: int | None
    mtime_ns: int | None
    manifest: dict[int, dict[str, Any]] | None


#: rel_path starts with a prefix, compared as bytes: a path is TEXT or a BLOB (names.to_db)
_PREFIX = "substr(CAST(rel_path AS BLOB), 1, ?) = ?"


def _inflight(r: tuple) -> Inflight:
    done = set(json.loads(r[5] or "[]"))
    return Inflight(from_db(r[0]) or "", r[1], from_db(r[2]) or "", r[3], _manifest_in(r[4]), done)


def _manifest_in(text: str | None) -> dict[int, dict[str, Any]] | None:
    if not text:
        return None
    return {int(k): v for k, v in json.loads(text).items()}


class SubscriptionState:
    """The state database; every method is thread-safe."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.conn = open_wal(self.path, "NORMAL")
        self.conn.executescript(STATE_DDL)
        ensure_outbox(self.conn)
        self.lock = threading.RLock()

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; nested calls (same thread) join the outer one."""
        with self.lock, transaction(self.conn) as conn:
            yield conn

    @contextmanager
    def _synchronous_full(self) -> Iterator[None]:
        """Commits made inside survive a power cut too, not only a killed process."""
        with self.lock:
            self.conn.execute("PRAGMA synchronous=FULL")
            try:
                yield
            finally:
                self.conn.execute("PRAGMA synchronous=NORMAL")

    def _all(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    # -- retry queue --------------------------------------------------------------------

    def add_retry(
        self,
        rel_path: str,
        exchange: str,
        topic: str,
        msg: Mapping[str, Any],
        *,
        pub_ns: int,
        attempts: int,
        delay: float,
        error: str,
        retry_id: int | None = None,
    ) -> int:
        """Queue (or re-schedule, with `retry_id`) a message published at `pub_ns` for
        another attempt in `delay` seconds."""
        next_ns = time.time_ns() + int(delay * 1e9)
        # the message is acknowledged to the broker right after: this row is its only copy
        with self._synchronous_full(), self.tx() as c:
            body = json.dumps(msg, sort_keys=True)
            if retry_id is None:
                # the same message again (redelivered after a crash before its ack)
                row = c.execute(
                    "SELECT id, attempts FROM sub_retry WHERE rel_path=? AND body=?",
                    (to_db(rel_path), body),
                ).fetchone()
                if row is not None:
                    retry_id, attempts = row[0], max(attempts, row[1])
            if retry_id is not None:
                c.execute(
                    "UPDATE sub_retry SET attempts=?, next_ns=?, last_error=? WHERE id=?",
                    (attempts, next_ns, error[:ERROR_MAX], retry_id),
                )
                return retry_id
            cur = c.execute(
                "INSERT INTO sub_retry (rel_path, exchange, topic, body, pub_ns, attempts, "
                "next_ns, last_error) VALUES (?,?,?,?,?,?,?,?)",
                (
                    to_db(rel_path),
                    exchange,
                    topic,
                    body,
                    pub_ns,
                    attempts,
                    next_ns,
                    error[:ERROR_MAX],
                ),
            )
            return int(cur.lastrowid or 0)

    def due_retries(self, limit: int, exclude: set[int]) -> list[RetryRow]:
        rows = self._all(
            "SELECT id, rel_path, exchange, topic, body, attempts FROM sub_retry "
            "WHERE next_ns <= ? ORDER BY next_ns, id LIMIT ?",
            (time.time_ns(), limit + len(exclude)),
        )
        out = [
            RetryRow(r[0], from_db(r[1]) or "", r[2], r[3], json.loads(r[4]), r[5])
            for r in rows
            if r[0] not in exclude
        ]
        return out[:limit]

    def next_retry_in(self) -> float | None:
        """Seconds until the next retry is due (None if the queue is empty)."""
        row = self._all("SELECT MIN(next_ns) FROM sub_retry")[0]
        if row[0] is None:
            return None
        return max(0.0, (row[0] - time.time_ns()) / 1e9)

    def retry_count(self) -> int:
        return int(self._all("SELECT count(*) FROM sub_retry")[0][0])

    def delete_retry(self, retry_id: int) -> None:
        with self.lock:
            self.conn.execute("DELETE FROM sub_retry WHERE id=?", (retry_id,))

    def supersede(self, rel_paths: list[str], pub_ns: int, keep: int | None) -> int:
        """Drop queued retries for these paths that are older than a newer message."""
        with self.lock:
            n = 0
            for rel in rel_paths:
                found = self.conn.execute(
                    "SELECT 1 FROM sub_retry WHERE rel_path=? AND pub_ns<? AND id IS NOT ? LIMIT 1",
                    (to_db(rel), pub_ns, keep),
                ).fetchone()
                if found is None:
                    continue  # the usual case: no write transaction at all
                cur = self.conn.execute(
                    "DELETE FROM sub_retry WHERE rel_path=? AND pub_ns<? AND id IS NOT ?",
                    (to_db(rel), pub_ns, keep),
                )
                n += cur.rowcount
            return n

    # -- winnow -------------------------------------------------------------------------

    def is_duplicate(self, slot: str, key: str, window: float) -> bool:
        if window <= 0:
            return False
        rows = self._all("SELECT key, seen_ns FROM sub_winnow WHERE slot=?", (to_db(slot),))
        if not rows:
            return False
        seen_key, seen_ns = rows[0]
        return from_db(seen_key) == key and time.time_ns() - seen_ns <= window * 1e9

    def remember(self, slot: str, key: str) -> None:
        with self.lock:
            self.conn.execute(
                "INSERT INTO sub_winnow (slot, key, seen_ns) VALUES (?,?,?) "
                "ON CONFLICT(slot) DO UPDATE SET key=excluded.key, seen_ns=excluded.seen_ns",
                (to_db(slot), to_db(key), time.time_ns()),
            )

    def expire_winnow(self, window: float) -> int:
        with self.lock:
            cur = self.conn.execute(
                "DELETE FROM sub_winnow WHERE seen_ns < ?", (time.time_ns() - int(window * 1e9),)
            )
            return cur.rowcount

    # -- partial downloads --------------------------------------------------------------

    def inflight(self, rel_path: str) -> Inflight | None:
        rows = self._all(
            "SELECT rel_path, key, temp, etag, manifest, done FROM sub_inflight WHERE rel_path=?",
            (to_db(rel_path),),
        )
        return _inflight(rows[0]) if rows else None

    def all_inflight(self) -> list[Inflight]:
        return [
            _inflight(r)
            for r in self._all("SELECT rel_path, key, temp, etag, manifest, done FROM sub_inflight")
        ]

    def start_inflight(
        self,
        rel_path: str,
        key: str,
        temp: str,
        *,
        manifest: Mapping[int, Any] | None = None,
        done: set[int] | None = None,
        etag: str | None = None,
    ) -> None:
        """Record a temp file before it is created, so a crash never leaves one unknown."""
        with self.lock:
            self.conn.execute(
                "INSERT INTO sub_inflight (rel_path, key, temp, etag, manifest, done, started_ns)"
                " VALUES (?,?,?,?,?,?,?) ON CONFLICT(rel_path) DO UPDATE SET key=excluded.key,"
                " temp=excluded.temp, etag=excluded.etag, manifest=excluded.manifest,"
                " done=excluded.done, started_ns=excluded.started_ns",
                (
                    to_db(rel_path),
                    key,
                    to_db(temp),
                    etag,
                    json.dumps(manifest) if manifest is not None else None,
                    json.dumps(sorted(done or ())),
                    time.time_ns(),
                ),
            )

    def set_etag(self, rel_path: str, etag: str | None) -> None:
        with self.lock:
            self.conn.execute(
                "UPDATE sub_inflight SET etag=? WHERE rel_path=?", (etag, to_db(rel_path))
            )

    def block_done(self, rel_path: str, number: int) -> None:
        with self.tx() as c:
            row = c.execute(
                "SELECT done FROM sub_inflight WHERE rel_path=?", (to_db(rel_path),)
            ).fetchone()
            if row is None:
                return
            done = set(json.loads(row[0] or "[]"))
            done.add(number)
            c.execute(
                "UPDATE sub_inflight SET done=? WHERE rel_path=?",
                (json.dumps(sorted(done)), to_db(rel_path)),
            )

    def end_inflight(self, rel_path: str) -> None:
        with self.lock:
            self.conn.execute("DELETE FROM sub_inflight WHERE rel_path=?", (to_db(rel_path),))

    # -- what is stored here ------------------------------------------------------------

    def stored(self, rel_path: str) -> Stored | None:
        rows = self._all(
            "SELECT rel_path, key, size, mtime_ns, manifest FROM sub_stored WHERE rel_path=?",
            (to_db(rel_path),),
        )
        if not rows:
            return None
        r = rows[0]
        return Stored(from_db(r[0]) or "", r[1], r[2], r[3], _manifest_in(r[4]))

    def set_stored(
        self,
        rel_path: str,
        key: str,
        size: int | None,
        mtime_ns: int | None,
        manifest: Mapping[int, Any] | None = None,
    ) -> None:
        with self.lock:
            self.conn.execute(
                "INSERT INTO sub_stored (rel_path, key, size, mtime_ns, manifest) "
                "VALUES (?,?,?,?,?) ON CONFLICT(rel_path) DO UPDATE SET key=excluded.key, "
                "size=excluded.size, mtime_ns=excluded.mtime_ns, manifest=excluded.manifest",
                (
                    to_db(rel_path),
                    key,
                    size,
                    mtime_ns,
                    json.dumps(manifest) if manifest is not None else None,
                ),
            )

    def forget_stored(self, rel_path: str, *, subtree: bool = False) -> None:
        with self.lock:
            self.conn.execute("DELETE FROM sub_stored WHERE rel_path=?", (to_db(rel_path),))
            if subtree:
                prefix = to_bytes(rel_path + "/")
                self.conn.execute(f"DELETE FROM sub_stored WHERE {_PREFIX}", (len(prefix), prefix))

    def move_stored(self, old: str, new: str) -> None:
        """A rename: records of `old` (and below it, for a directory) follow to `new`."""
        with self.tx() as c:
            c.execute("DELETE FROM sub_stored WHERE rel_path=?", (to_db(new),))
            c.execute("UPDATE sub_stored SET rel_path=? WHERE rel_path=?", (to_db(new), to_db(old)))
            prefix = to_bytes(old + "/")
            rows = c.execute(
                f"SELECT rel_path FROM sub_stored WHERE {_PREFIX}", (len(prefix), prefix)
            ).fetchall()
            for (stored,) in rows:
                rel = from_db(stored) or ""
                c.execute(
                    "UPDATE OR REPLACE sub_stored SET rel_path=? WHERE rel_path=?",
                    (to_db(new + "/" + rel[len(old) + 1 :]), stored),
                )

    # -- reports ------------------------------------------------------------------------

    def reports_pending(self) -> int:
        with self.lock:
            return pending_count(self.conn)

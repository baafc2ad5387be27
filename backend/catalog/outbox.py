"""The durable outbox table: each row one message waiting for the broker's confirm.

`replication_outbox` lives in the archive's catalog (made by migration v2, which carries
its own copy of this DDL) and in the state DBs of `reelfs subscribe` (reports) and
`reelfs watch` (`ensure_outbox`, `open_state_db`). Rows are added inside the caller's
transaction, read oldest first and deleted only once the broker confirmed them; what
publishes them is `backend.replication.outbox`.
"""

from __future__ import annotations

import os
import sqlite3
import time

from backend.catalog.statedb import open_wal, transaction

OUTBOX_TABLE = "replication_outbox"

# AUTOINCREMENT: ids never go back, even after the newest rows were deleted, so id order
# is enqueue order for the lifetime of the database.
OUTBOX_DDL = f"""
CREATE TABLE IF NOT EXISTS {OUTBOX_TABLE} (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    exchange    TEXT    NOT NULL,
    topic       TEXT    NOT NULL,
    body        TEXT    NOT NULL,           -- the JSON body exactly as published
    enqueued_ns INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0, -- publications not confirmed so far
    last_error  TEXT
)
"""

ERROR_MAX = 500  # characters of a failure kept with its row


def ensure_outbox(conn: sqlite3.Connection) -> None:
    """Create the outbox table if missing (a state DB's; the catalog's is made by its
    migration v2). Does not commit a transaction the caller has open."""
    conn.execute(OUTBOX_DDL)


def open_state_db(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A standalone database holding an outbox (WAL, synchronous=FULL), e.g. for watch."""
    conn = open_wal(path, "FULL")
    ensure_outbox(conn)
    return conn


def add(conn: sqlite3.Connection, exchange: str, topic: str, body: str) -> int:
    """Add a row inside the caller's transaction (or as its own, in autocommit mode);
    returns its id."""
    cur = conn.execute(
        f"INSERT INTO {OUTBOX_TABLE} (exchange, topic, body, enqueued_ns) VALUES (?, ?, ?, ?)",
        (exchange, topic, body, time.time_ns()),
    )
    return int(cur.lastrowid or 0)


def pending_count(conn: sqlite3.Connection) -> int:
    """Rows not yet confirmed by the broker."""
    return int(conn.execute(f"SELECT count(*) FROM {OUTBOX_TABLE}").fetchone()[0])


def has_rows(conn: sqlite3.Connection) -> bool:
    return conn.execute(f"SELECT 1 FROM {OUTBOX_TABLE} LIMIT 1").fetchone() is not None


def oldest(conn: sqlite3.Connection, limit: int) -> list[tuple[int, str, str, str]]:
    """Up to `limit` of the oldest rows: (id, exchange, topic, body)."""
    return conn.execute(
        f"SELECT id, exchange, topic, body FROM {OUTBOX_TABLE} ORDER BY id LIMIT ?", (limit,)
    ).fetchall()


def oldest_exchange(conn: sqlite3.Connection) -> str | None:
    """The exchange of the oldest row (None if the outbox is empty)."""
    row = conn.execute(f"SELECT exchange FROM {OUTBOX_TABLE} ORDER BY id LIMIT 1").fetchone()
    return None if row is None else row[0]


def oldest_for(
    conn: sqlite3.Connection, exchange: str, limit: int
) -> list[tuple[int, str, str, int]]:
    """Up to `limit` of the oldest rows for `exchange`: (id, topic, body, attempts)."""
    return conn.execute(
        f"SELECT id, topic, body, attempts FROM {OUTBOX_TABLE} WHERE exchange=? "
        "ORDER BY id LIMIT ?",
        (exchange, limit),
    ).fetchall()


def delete(conn: sqlite3.Connection, ids: list[int]) -> None:
    """Delete confirmed rows, in one transaction."""
    if not ids:
        return
    with transaction(conn):
        conn.executemany(f"DELETE FROM {OUTBOX_TABLE} WHERE id = ?", [(i,) for i in ids])


def delete_exchange(conn: sqlite3.Connection, exchange: str) -> int:
    """Delete every row for `exchange`; returns how many there were."""
    with transaction(conn):
        return conn.execute(f"DELETE FROM {OUTBOX_TABLE} WHERE exchange=?", (exchange,)).rowcount


def note_failure(conn: sqlite3.Connection, row_id: int, error: str) -> None:
    """Count one more unconfirmed publication of a row, and why."""
    with transaction(conn):
        conn.execute(
            f"UPDATE {OUTBOX_TABLE} SET attempts = attempts + 1, last_error = ? WHERE id = ?",
            (error[:ERROR_MAX], row_id),
        )

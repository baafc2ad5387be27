"""Connections to replication's own small SQLite databases, beside the catalog.

`reelfs subscribe` and `reelfs watch` each keep a state DB of their own (its tables:
`subscriptions`, `watching`, and an `outbox`); the outbox publisher also opens the
archive's catalog this way, as a plain connection. All are autocommit connections
(`transaction` starts the explicit ones) usable from any thread, the caller serialising.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BUSY_TIMEOUT = 30.0  # seconds a statement waits for another process's lock


def connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """An autocommit connection to an existing database, for any thread."""
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
    )
    wait_for_locks(conn)
    return conn


def wait_for_locks(conn: sqlite3.Connection) -> None:
    """Statements on `conn` wait up to `BUSY_TIMEOUT` for another process's lock."""
    conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT * 1000)}")


def open_wal(path: str | os.PathLike[str], synchronous: str) -> sqlite3.Connection:
    """`connect`, creating the database (and its directory) if missing, in WAL mode with
    `synchronous` ("NORMAL": commits survive a killed process; "FULL": a power cut too)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if not os.path.exists(path):
        # private whatever the umask: it holds what was announced (names, sums); SQLite
        # gives its -wal and -shm the database file's mode. No connection to a missing
        # file exists, so this open and close drops no lock of ours.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    conn = connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error) on an autocommit connection; inside
    a transaction already open, joins it (the outer one commits)."""
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")

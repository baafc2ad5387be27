"""Connections to the catalog: pragmas, transactions and the WAL sync used by `fsync`."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from backend.catalog import schema

BUSY_TIMEOUT_MS = 30_000


class CatalogError(RuntimeError):
    """The catalog is missing, from a newer reelfs, or inconsistent."""


def is_disk_full(e: BaseException) -> bool:
    """Whether `e` is SQLite's SQLITE_FULL (the catalog's file system is full, or its
    temporary store): a transaction that failed so was rolled back whole."""
    code = getattr(e, "sqlite_errorcode", None)
    if isinstance(e, sqlite3.Error) and code is not None:
        return code & 0xFF == sqlite3.SQLITE_FULL
    return isinstance(e, sqlite3.Error) and "database or disk is full" in str(e)


class Catalog:
    """One connection to the catalog, for one thread.

    `with cat.tx():` runs a write transaction (BEGIN IMMEDIATE, so two writers never
    deadlock on a lock upgrade); nested `tx()` calls join the outer transaction.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn
        self._depth = 0
        self._owner = threading.get_ident()

    def execute(self, sql: str, params: tuple | dict = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def one(self, sql: str, params: tuple | dict = ()) -> sqlite3.Row | None:
        return self.conn.execute(sql, params).fetchone()

    def value(self, sql: str, params: tuple | dict = ()):
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def all(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, params).fetchall()

    @contextlib.contextmanager
    def tx(self) -> Iterator[Catalog]:
        if self._depth:
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        self.conn.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self
        except BaseException:
            self._depth = 0
            self.conn.rollback()
            raise
        else:
            self._depth = 0
            self.conn.commit()

    def sync(self) -> None:
        """Make every committed transaction durable (synchronous=NORMAL defers it).

        One tiny transaction committed with synchronous=FULL fsyncs the WAL, and with it
        every frame committed before, by any connection. Never open and close the
        database files beside SQLite: closing any descriptor of a file drops the whole
        process's POSIX locks on it, and another process would then delete the WAL
        from under us.
        """
        self.conn.execute("PRAGMA synchronous = FULL")
        try:
            with self.tx():
                self.conn.execute("UPDATE meta SET value = value WHERE key = 'schema_version'")
        finally:
            self.conn.execute("PRAGMA synchronous = NORMAL")

    def close(self) -> None:
        self.conn.close()


def _connect(path: Path, *, any_thread: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(
        str(path),
        timeout=BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,  # we issue BEGIN ourselves
        # A connection used from worker threads one at a time (the caller serialises).
        check_same_thread=not any_thread,
        cached_statements=256,
    )
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    # Committed transactions survive a killed process; fsync() on the mount and the
    # mover's tape commits call Catalog.sync() for durability against power loss.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA temp_store = MEMORY")
    return conn


def open_catalog(path: Path, *, create: bool = False, any_thread: bool = False) -> Catalog:
    """Open (or with `create`, create) the catalog at `path` and bring its schema up to date."""
    path = Path(path)
    if not create and not path.exists():
        raise CatalogError(f"no catalog at {path}")
    conn = _connect(path, any_thread=any_thread)
    try:
        schema.migrate(conn)
    except schema.SchemaError as e:
        conn.close()
        raise CatalogError(str(e)) from None
    return Catalog(path, conn)

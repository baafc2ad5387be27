"""What `reelfs watch` has announced: the `watch_files` table of the watcher's state DB.

One row per relPath announced (file, directory or link, with the size, mtime and mode it
had, a link's target, and the identity or block identities posted), so that a restarted
watcher announces only what changed while it was stopped, and removes only what it ever
announced. Rows change in the transaction that puts the announcements in the outbox.
"""

from __future__ import annotations

import sqlite3

from backend.names import from_db, to_bytes, to_db

WATCH_DDL = """
CREATE TABLE IF NOT EXISTS watch_files (
    rel_path  TEXT PRIMARY KEY,     -- relPath as announced
    kind      TEXT NOT NULL,        -- file | dir | link
    size      INTEGER,
    mtime_ns  INTEGER,
    mode      INTEGER,
    target    TEXT,                 -- link target
    identity  TEXT,                 -- JSON identity of the whole file, if posted whole
    blocks    TEXT                  -- JSON {number: [size, identity]} if posted in blocks
)
"""

#: a row: (rel_path, kind, size, mtime_ns, mode, target, identity, blocks)
Announced = tuple


def ensure_watch_files(conn: sqlite3.Connection) -> None:
    conn.execute(WATCH_DDL)


def announced(conn: sqlite3.Connection, rel: str) -> Announced | None:
    """The record of `rel`, or None if it was never announced (or announced removed)."""
    row = conn.execute(
        "SELECT rel_path, kind, size, mtime_ns, mode, target, identity, blocks"
        " FROM watch_files WHERE rel_path = ?",
        (to_db(rel),),
    ).fetchone()
    if row is None:
        return None
    return (from_db(row[0]), *row[1:5], from_db(row[5]), *row[6:])


def announced_under(conn: sqlite3.Connection, rel: str) -> list[str]:
    """relPaths announced below the directory `rel`."""
    prefix = to_bytes(rel + "/")  # compared as bytes: a path is TEXT or a BLOB (names.to_db)
    rows = conn.execute(
        "SELECT rel_path FROM watch_files WHERE substr(CAST(rel_path AS BLOB), 1, ?) = ?",
        (len(prefix), prefix),
    ).fetchall()
    return [from_db(r[0]) or "" for r in rows]


def announced_paths(conn: sqlite3.Connection) -> list[str]:
    return [from_db(r[0]) or "" for r in conn.execute("SELECT rel_path FROM watch_files")]


def remember(conn: sqlite3.Connection, rel: str, values: tuple) -> None:
    """Record `rel` as announced with `values` (the row after rel_path)."""
    conn.execute(
        "INSERT OR REPLACE INTO watch_files (rel_path, kind, size, mtime_ns, mode,"
        " target, identity, blocks) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (to_db(rel), *values[:4], to_db(values[4]), *values[5:]),
    )


def forget(conn: sqlite3.Connection, rel: str) -> None:
    """`rel` was announced removed."""
    conn.execute("DELETE FROM watch_files WHERE rel_path = ?", (to_db(rel),))

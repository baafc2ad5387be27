"""The catalog's tables, created and migrated with sqlite-utils.

`SCHEMA_VERSION` is stored in the `meta` table; `migrate()` brings an older catalog up to
date step by step, and refuses one written by a newer reelfs. Add a migration by appending
a function to `_STEPS`; never edit a released step.
"""

from __future__ import annotations

import sqlite3
import stat
import time
from collections.abc import Callable

import sqlite_utils

ROOT_INODE = 1


class SchemaError(RuntimeError):
    pass


def _v1(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["inodes"].create(
        {
            "id": int,
            "mode": int,
            "uid": int,
            "gid": int,
            "size": int,
            "nlink": int,
            "atime_ns": int,
            "mtime_ns": int,
            "ctime_ns": int,
            "rdev": int,
            "target": bytes,  # symlink target
            "bitfile": int,  # current version of a regular file's data
        },
        pk="id",
        not_null={"mode", "uid", "gid", "size", "nlink", "atime_ns", "mtime_ns", "ctime_ns"},
        defaults={"size": 0, "rdev": 0},
    )
    db["entries"].create(
        {"id": int, "parent": int, "name": bytes, "inode": int},
        pk="id",
        not_null={"parent", "name", "inode"},
        foreign_keys=[("parent", "inodes", "id"), ("inode", "inodes", "id")],
    )
    db["entries"].create_index(["parent", "name"], unique=True)
    db["entries"].create_index(["parent", "id"])
    db["entries"].create_index(["inode"])
    db["xattrs"].create(
        {"inode": int, "name": bytes, "value": bytes},
        pk=("inode", "name"),
        not_null={"value"},
        foreign_keys=[("inode", "inodes", "id")],
    )
    db["bitfiles"].create(
        {
            "id": int,
            "bfid": str,
            "inode": int,
            "version": int,
            "size": int,
            "adler32": int,
            "crc32c": int,
            "state": str,  # dirty | archived | released | deleted
            "family": str,
            "storage_group": str,
            "path": str,  # the namespace path when last written to tape
            "created_ns": int,
            "modified_ns": int,
            "archived_ns": int,
            "accessed_ns": int,
            "pinned": int,
            "generation": int,  # bumped on every change of the data
            "writers": int,  # open modification sessions (reset on start)
            "error": str,  # why the last recall failed
        },
        pk="id",
        not_null={"bfid", "version", "size", "state", "created_ns", "modified_ns"},
        defaults={"pinned": 0, "generation": 0, "writers": 0, "version": 1, "size": 0},
    )
    db["bitfiles"].create_index(["bfid"], unique=True)
    db["bitfiles"].create_index(["inode"])
    db["bitfiles"].create_index(["state", "accessed_ns"])
    db["volumes"].create(
        {
            "label": str,
            "library": str,
            "media_type": str,
            "capacity": int,
            "bytes_used": int,
            "state": str,  # blank | writable | full | readonly | suspect | noaccess | missing
            "family": str,
            "storage_group": str,
            "inserted_ns": int,
            "mount_count": int,
            "last_mount_ns": int,
            "files": int,
            "next_fileno": int,  # the tape file number the next write gets
            "eod_block": int,  # logical block number of end of data
            "home": int,  # element address of its home slot
            "error": str,
            "uses": int,  # cleaning cartridges: times used
        },
        pk="label",
        not_null={"capacity", "state", "inserted_ns"},
        defaults={
            "bytes_used": 0,
            "mount_count": 0,
            "files": 0,
            "next_fileno": 0,
            "eod_block": 0,
            "uses": 0,
            "media_type": "emulated",
            "library": "main",
        },
    )
    db["volumes"].create_index(["state", "family"])
    db["tape_copies"].create(
        {
            "id": int,
            "bitfile": int,
            "volume": str,
            "copy": int,
            "fileno": int,  # tape file number on the volume
            "block": int,  # logical block of the tape file's first record
            "record": int,  # record of the member's header, from the tape file's start
            "offset": int,  # byte offset of the header in that record
            "length": int,  # data bytes
            "state": str,  # active | deleted
            "written_ns": int,
        },
        pk="id",
        not_null={"bitfile", "volume", "fileno", "block", "state"},
        defaults={"copy": 1, "record": 0, "offset": 0},
        foreign_keys=[("bitfile", "bitfiles", "id"), ("volume", "volumes", "label")],
    )
    db["tape_copies"].create_index(["bitfile"])
    db["tape_copies"].create_index(["volume", "fileno"])
    db["families"].create(
        {"name": str, "width": int, "storage_group": str}, pk="name", defaults={"width": 1}
    )
    db["drives"].create(
        {
            "name": str,
            "address": int,
            "serial": str,
            "state": str,  # up | down
            "session": str,  # idle | cleaner | mounting | positioning | transferring | ...
            "volume": str,
            "reason": str,
            "needs_cleaning": int,
            "updated_ns": int,
        },
        pk="name",
        defaults={"state": "up", "session": "idle", "needs_cleaning": 0},
    )
    db["requests"].create(
        {
            "id": int,
            "kind": str,  # write | recall
            "bitfile": int,
            "family": str,
            "volume": str,
            "fileno": int,
            "block": int,
            "state": str,  # queued | running
            "urgent": int,
            "tries": int,
            "created_ns": int,
            "not_before_ns": int,  # retry back-off
            "started_ns": int,
            "drive": str,
            "error": str,
        },
        pk="id",
        not_null={"kind", "bitfile", "state", "created_ns"},
        defaults={"urgent": 0, "tries": 0, "not_before_ns": 0},
        foreign_keys=[("bitfile", "bitfiles", "id")],
    )
    db["requests"].create_index(["kind", "state", "family", "id"])
    db["requests"].create_index(["kind", "state", "volume", "fileno", "block"])
    db["requests"].create_index(["bitfile"])
    db["events"].create(
        {
            "id": int,
            "time_ns": int,
            "level": str,
            "kind": str,
            "subject": str,
            "message": str,
            "details": str,
        },
        pk="id",
        not_null={"time_ns", "level", "kind", "message"},
    )
    now = time.time_ns()
    db["inodes"].insert(
        {
            "id": ROOT_INODE,
            "mode": stat.S_IFDIR | 0o755,
            "uid": 0,
            "gid": 0,
            "size": 0,
            "nlink": 2,
            "atime_ns": now,
            "mtime_ns": now,
            "ctime_ns": now,
        }
    )


def _v2(db: sqlite_utils.Database) -> None:
    """Replication: the change journal of the mount and the durable outbox of messages.

    The SQL as this step ran it: the outbox of the state DBs (backend.catalog.outbox) may
    change, an old archive's migration must not."""
    # changes: kind closed | mkdir | rmdir | unlink | symlink | link | rename; path the
    # archive path ("/raw/run1.dat") of the entry concerned; old_path where a rename took
    # it from; target a symlink's target or a hard link's other path; origin (JSON) the
    # upstream message a subscriber stored it from
    db.execute(
        """CREATE TABLE "changes" (
   "id" INTEGER PRIMARY KEY,
   "kind" TEXT NOT NULL,
   "inode" INTEGER,
   "path" TEXT,
   "old_path" TEXT,
   "target" TEXT,
   "origin" TEXT,
   "time_ns" INTEGER NOT NULL
)"""
    )
    db.execute(
        """
CREATE TABLE IF NOT EXISTS replication_outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    exchange    TEXT    NOT NULL,
    topic       TEXT    NOT NULL,
    body        TEXT    NOT NULL,           -- the JSON body exactly as published
    enqueued_ns INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0, -- publications not confirmed so far
    last_error  TEXT
)
"""
    )


def _v3(db: sqlite_utils.Database) -> None:
    """On-tape layout: labels, foreign volumes, the format of each tape copy, bad copies."""
    volumes = db["volumes"]
    # 'none' or 'ansi', fixed when a volume is first written (a change of [library]
    # label_format applies to blank volumes only); NULL while blank
    volumes.add_column("label_format", str)
    volumes.add_column("volser", str)  # the VOL1 volume identifier (labelled volumes)
    volumes.add_column("origin", str)  # NULL: written by this archive; 'foreign': imported
    copies = db["tape_copies"]
    # NULL: a member of a reelfs pax tape file; else the foreign format (drivers.formats.
    # foreign.Format) the recall must read
    copies.add_column("format", str)
    copies.add_column("error", str)  # why the copy went 'bad' (state active | deleted | bad)


def _v4(db: sqlite_utils.Database) -> None:
    """A volume keeps the record size it was started with (a change of [library]
    block_size applies to blank volumes), so appends and recalls use the tape's own."""
    db["volumes"].add_column("block_size", int)


def _v5(db: sqlite_utils.Database) -> None:
    """Several tape copies per file: how many a family keeps (backend.catalog.families)."""
    db["families"].add_column("copies", int, not_null_default=1)


_STEPS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2, _v3, _v4, _v5]
SCHEMA_VERSION = len(_STEPS)


def current_version(conn: sqlite3.Connection) -> int:
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
    ).fetchone()
    if not has_meta:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: sqlite3.Connection) -> None:
    version = current_version(conn)
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"the catalog has schema version {version}, newer than this reelfs "
            f"understands ({SCHEMA_VERSION}); upgrade reelfs"
        )
    if version == SCHEMA_VERSION:
        return
    db = sqlite_utils.Database(conn)
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = current_version(conn)  # another process may have migrated meanwhile
        for step in _STEPS[version:]:
            step(db)
        conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise

"""The catalog's tables and their migrations.

`SCHEMA_VERSION` is stored in the `meta` table; `migrate()` brings an older catalog up to
date step by step, and refuses one written by a newer reelfs. Each step is the SQL it ran
when it was released, written out here, never a call into today's code: an old archive
must be migrated exactly as it was then. Add a migration by appending a step; never edit
a released one.
"""

from __future__ import annotations

import sqlite3
import stat
import time

ROOT_INODE = 1


class SchemaError(RuntimeError):
    """A catalog this reelfs cannot use (from a newer one)."""

    pass


#: v1: the namespace (inodes, entries, xattrs), bitfiles (one per version of a file's
#: data: state dirty | archived | released | deleted; generation bumped on every change;
#: writers the open modification sessions), volumes, tape copies, families, drives,
#: requests (kind write | recall, state queued | running), events.
_V1 = (
    """CREATE TABLE "meta" (
   "key" TEXT PRIMARY KEY,
   "value" TEXT
)""",
    """CREATE TABLE "inodes" (
   "id" INTEGER PRIMARY KEY,
   "mode" INTEGER NOT NULL,
   "uid" INTEGER NOT NULL,
   "gid" INTEGER NOT NULL,
   "size" INTEGER NOT NULL DEFAULT 0,
   "nlink" INTEGER NOT NULL,
   "atime_ns" INTEGER NOT NULL,
   "mtime_ns" INTEGER NOT NULL,
   "ctime_ns" INTEGER NOT NULL,
   "rdev" INTEGER DEFAULT 0,
   "target" BLOB,
   "bitfile" INTEGER
)""",
    """CREATE TABLE "entries" (
   "id" INTEGER PRIMARY KEY,
   "parent" INTEGER NOT NULL REFERENCES "inodes"("id"),
   "name" BLOB NOT NULL,
   "inode" INTEGER NOT NULL REFERENCES "inodes"("id")
)""",
    """CREATE UNIQUE INDEX "idx_entries_parent_name"
    ON "entries" ("parent", "name")""",
    """CREATE INDEX "idx_entries_parent_id"
    ON "entries" ("parent", "id")""",
    """CREATE INDEX "idx_entries_inode"
    ON "entries" ("inode")""",
    """CREATE TABLE "xattrs" (
   "inode" INTEGER REFERENCES "inodes"("id"),
   "name" BLOB,
   "value" BLOB NOT NULL,
   PRIMARY KEY ("inode", "name")
)""",
    """CREATE TABLE "bitfiles" (
   "id" INTEGER PRIMARY KEY,
   "bfid" TEXT NOT NULL,
   "inode" INTEGER,
   "version" INTEGER NOT NULL DEFAULT 1,
   "size" INTEGER NOT NULL DEFAULT 0,
   "adler32" INTEGER,
   "crc32c" INTEGER,
   "state" TEXT NOT NULL,
   "family" TEXT,
   "storage_group" TEXT,
   "path" TEXT,
   "created_ns" INTEGER NOT NULL,
   "modified_ns" INTEGER NOT NULL,
   "archived_ns" INTEGER,
   "accessed_ns" INTEGER,
   "pinned" INTEGER DEFAULT 0,
   "generation" INTEGER DEFAULT 0,
   "writers" INTEGER DEFAULT 0,
   "error" TEXT
)""",
    """CREATE UNIQUE INDEX "idx_bitfiles_bfid"
    ON "bitfiles" ("bfid")""",
    """CREATE INDEX "idx_bitfiles_inode"
    ON "bitfiles" ("inode")""",
    """CREATE INDEX "idx_bitfiles_state_accessed_ns"
    ON "bitfiles" ("state", "accessed_ns")""",
    """CREATE TABLE "volumes" (
   "label" TEXT PRIMARY KEY,
   "library" TEXT DEFAULT 'main',
   "media_type" TEXT DEFAULT 'emulated',
   "capacity" INTEGER NOT NULL,
   "bytes_used" INTEGER DEFAULT 0,
   "state" TEXT NOT NULL,
   "family" TEXT,
   "storage_group" TEXT,
   "inserted_ns" INTEGER NOT NULL,
   "mount_count" INTEGER DEFAULT 0,
   "last_mount_ns" INTEGER,
   "files" INTEGER DEFAULT 0,
   "next_fileno" INTEGER DEFAULT 0,
   "eod_block" INTEGER DEFAULT 0,
   "home" INTEGER,
   "error" TEXT,
   "uses" INTEGER DEFAULT 0
)""",
    """CREATE INDEX "idx_volumes_state_family"
    ON "volumes" ("state", "family")""",
    """CREATE TABLE "tape_copies" (
   "id" INTEGER PRIMARY KEY,
   "bitfile" INTEGER NOT NULL REFERENCES "bitfiles"("id"),
   "volume" TEXT NOT NULL REFERENCES "volumes"("label"),
   "copy" INTEGER DEFAULT 1,
   "fileno" INTEGER NOT NULL,
   "block" INTEGER NOT NULL,
   "record" INTEGER DEFAULT 0,
   "offset" INTEGER DEFAULT 0,
   "length" INTEGER,
   "state" TEXT NOT NULL,
   "written_ns" INTEGER
)""",
    """CREATE INDEX "idx_tape_copies_bitfile"
    ON "tape_copies" ("bitfile")""",
    """CREATE INDEX "idx_tape_copies_volume_fileno"
    ON "tape_copies" ("volume", "fileno")""",
    """CREATE TABLE "families" (
   "name" TEXT PRIMARY KEY,
   "width" INTEGER DEFAULT 1,
   "storage_group" TEXT
)""",
    """CREATE TABLE "drives" (
   "name" TEXT PRIMARY KEY,
   "address" INTEGER,
   "serial" TEXT,
   "state" TEXT DEFAULT 'up',
   "session" TEXT DEFAULT 'idle',
   "volume" TEXT,
   "reason" TEXT,
   "needs_cleaning" INTEGER DEFAULT 0,
   "updated_ns" INTEGER
)""",
    """CREATE TABLE "requests" (
   "id" INTEGER PRIMARY KEY,
   "kind" TEXT NOT NULL,
   "bitfile" INTEGER NOT NULL REFERENCES "bitfiles"("id"),
   "family" TEXT,
   "volume" TEXT,
   "fileno" INTEGER,
   "block" INTEGER,
   "state" TEXT NOT NULL,
   "urgent" INTEGER DEFAULT 0,
   "tries" INTEGER DEFAULT 0,
   "created_ns" INTEGER NOT NULL,
   "not_before_ns" INTEGER DEFAULT 0,
   "started_ns" INTEGER,
   "drive" TEXT,
   "error" TEXT
)""",
    """CREATE INDEX "idx_requests_kind_state_family_id"
    ON "requests" ("kind", "state", "family", "id")""",
    """CREATE INDEX "idx_requests_kind_state_volume_fileno_block"
    ON "requests" ("kind", "state", "volume", "fileno", "block")""",
    """CREATE INDEX "idx_requests_bitfile"
    ON "requests" ("bitfile")""",
    """CREATE TABLE "events" (
   "id" INTEGER PRIMARY KEY,
   "time_ns" INTEGER NOT NULL,
   "level" TEXT NOT NULL,
   "kind" TEXT NOT NULL,
   "subject" TEXT,
   "message" TEXT NOT NULL,
   "details" TEXT
)""",
)

#: v2, replication: the change journal of the mount (kind closed | mkdir | rmdir | unlink
#: | symlink | link | rename; path the archive path of the entry; old_path where a rename
#: took it from; target a symlink's target or a hard link's other path; origin, JSON, the
#: upstream message a subscriber stored it from) and the durable outbox of messages.
_V2 = (
    """CREATE TABLE "changes" (
   "id" INTEGER PRIMARY KEY,
   "kind" TEXT NOT NULL,
   "inode" INTEGER,
   "path" TEXT,
   "old_path" TEXT,
   "target" TEXT,
   "origin" TEXT,
   "time_ns" INTEGER NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS replication_outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    exchange    TEXT    NOT NULL,
    topic       TEXT    NOT NULL,
    body        TEXT    NOT NULL,           -- the JSON body exactly as published
    enqueued_ns INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0, -- publications not confirmed so far
    last_error  TEXT
)""",
)

#: v3, on-tape layout: a volume's label format ('none' or 'ansi', fixed at its first
#: write; NULL while blank), its VOL1 serial, its origin (NULL: written here; 'foreign':
#: imported); a tape copy's format (NULL: a reelfs pax member; else the foreign format
#: the recall reads) and why it went 'bad'.
_V3 = (
    """ALTER TABLE "volumes" ADD COLUMN "label_format" TEXT""",
    """ALTER TABLE "volumes" ADD COLUMN "volser" TEXT""",
    """ALTER TABLE "volumes" ADD COLUMN "origin" TEXT""",
    """ALTER TABLE "tape_copies" ADD COLUMN "format" TEXT""",
    """ALTER TABLE "tape_copies" ADD COLUMN "error" TEXT""",
)

#: v4: a volume keeps the record size it was started with (a change of [library]
#: block_size applies to blank volumes), so appends and recalls use the tape's own.
_V4 = ("""ALTER TABLE "volumes" ADD COLUMN "block_size" INTEGER""",)

#: v5: several tape copies per file: how many a family keeps (backend.catalog.families).
_V5 = ("""ALTER TABLE "families" ADD COLUMN "copies" INTEGER NOT NULL DEFAULT 1""",)

#: v6: what a version's data takes on disk (its holes take nothing), recorded at the end
#: of its session and at recall, so that st_blocks (du) stays true once it is released.
_V6 = ("""ALTER TABLE "bitfiles" ADD COLUMN "allocated" INTEGER""",)

_STEPS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3, _V4, _V5, _V6)
SCHEMA_VERSION = len(_STEPS)


def _root(conn: sqlite3.Connection) -> None:
    """v1's root directory, made with the catalog."""
    now = time.time_ns()
    conn.execute(
        "INSERT INTO inodes(id, mode, uid, gid, size, nlink, atime_ns, mtime_ns, ctime_ns) "
        "VALUES (?,?,0,0,0,2,?,?,?)",
        (ROOT_INODE, stat.S_IFDIR | 0o755, now, now, now),
    )


def apply(conn: sqlite3.Connection, version: int) -> None:
    """Run step `version` (1-based) in the caller's transaction."""
    for statement in _STEPS[version - 1]:
        conn.execute(statement)
    if version == 1:
        _root(conn)


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
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = current_version(conn)  # another process may have migrated meanwhile
        for step in range(version + 1, SCHEMA_VERSION + 1):
            apply(conn, step)
        conn.execute(
            "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise

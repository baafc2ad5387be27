"""The file clerk: bitfiles (one per version of a file's data) and their tape copies.

A bitfile moves `dirty` (only in the cache) -> `archived` (on tape and cached) ->
`released` (on tape only) and back to `archived` by a recall. Rewriting an archived file
creates a new bitfile: tape is write-once; the old one becomes `deleted` and its tape
copies wait for repack.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from backend.catalog.db import Catalog

DIRTY, ARCHIVED, RELEASED, DELETED = "dirty", "archived", "released", "deleted"
EMPTY_ADLER32, EMPTY_CRC32C = 1, 0  # adler32 and CRC-32C of no bytes

_COLS = (
    "id, bfid, inode, version, size, adler32, crc32c, state, family, storage_group, path, "
    "created_ns, modified_ns, archived_ns, accessed_ns, pinned, generation, writers, error"
)


@dataclass
class Bitfile:
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

    @property
    def cached(self) -> bool:
        return self.state in (DIRTY, ARCHIVED)


@dataclass
class TapeCopy:
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
    def __init__(self, cat: Catalog, archive_id: str) -> None:
        self.cat = cat
        self.archive_id = archive_id

    def get(self, bitfile_id: int) -> Bitfile | None:
        row = self.cat.one(f"SELECT {_COLS} FROM bitfiles WHERE id=?", (bitfile_id,))
        return None if row is None else Bitfile(*row)

    def by_bfid(self, bfid: str) -> Bitfile | None:
        row = self.cat.one(f"SELECT {_COLS} FROM bitfiles WHERE bfid=?", (bfid,))
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

    def touch(self, bitfile_id: int) -> None:
        with self.cat.tx():
            self.cat.execute(
                "UPDATE bitfiles SET accessed_ns=? WHERE id=?", (time.time_ns(), bitfile_id)
            )

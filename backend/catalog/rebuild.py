"""Writing a catalog from what the tapes say (`reelfs rebuild-catalog --from-tapes`,
backend.tape.rebuild).

The rebuild fills a new, empty catalog beside the old one, in one pass: the library's
volumes (backend.library.reconcile), each volume's capacity, every bitfile found on tape
with its tape copies (backend.catalog.tapefiles), what the scan found of each volume; then
the WAL is folded into the database file, which is renamed into place.

Tables written: `bitfiles` and `volumes`. Not the file clerk's business: it numbers new
bitfiles and walks them from dirty to released as files are written, while a rebuilt
bitfile keeps the id and bfid its tape records carry and arrives released (or deleted, an
older version). Not the volume clerk's: it follows a volume write by write, while a
rebuilt volume's state, pool, layout, end of data and usage are known at once, from its
scan.
"""

from __future__ import annotations

from backend.catalog.db import Catalog
from backend.names import to_db


class RebuiltCatalog:
    """The writes of a catalog rebuilt from tapes."""

    def __init__(self, cat: Catalog) -> None:
        self.cat = cat

    def set_capacity(self, label: str, capacity: int) -> None:
        with self.cat.tx():
            self.cat.execute("UPDATE volumes SET capacity=? WHERE label=?", (capacity, label))

    def add_bitfile(
        self,
        bitfile: int,
        bfid: str,
        *,
        inode: int | None,
        version: int,
        size: int,
        adler32: int | None,
        crc32c: int | None,
        state: str,
        family: str,
        path: str,
        mtime_ns: int,
        archived_ns: int,
    ) -> None:
        """A bitfile as its tape records describe it (created and modified at the
        member's mtime, archived and last accessed at `archived_ns`)."""
        with self.cat.tx():
            self.cat.execute(
                "INSERT INTO bitfiles(id, bfid, inode, version, size, adler32, crc32c, state, "
                "family, path, created_ns, modified_ns, archived_ns, accessed_ns) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    bitfile,
                    bfid,
                    inode,
                    version,
                    size,
                    adler32,
                    crc32c,
                    state,
                    family,
                    to_db(path),
                    mtime_ns,
                    mtime_ns,
                    archived_ns,
                    archived_ns,
                ),
            )

    def record_volume(
        self,
        label: str,
        *,
        state: str,
        error: str | None,
        family: str | None,
        label_format: str,
        volser: str | None,
        block_size: int | None,
        eod_block: int,
        next_fileno: int,
        files: int,
        bytes_used: int,
    ) -> None:
        """What the scan of volume `label` found: its state, pool, layout and usage."""
        with self.cat.tx():
            self.cat.execute(
                "UPDATE volumes SET state=?, error=?, family=?, label_format=?, volser=?, "
                "block_size=?, eod_block=?, next_fileno=?, files=?, bytes_used=? WHERE label=?",
                (
                    state,
                    error,
                    family,
                    label_format,
                    volser,
                    block_size,
                    eod_block,
                    next_fileno,
                    files,
                    bytes_used,
                    label,
                ),
            )

    def checkpoint(self) -> None:
        """Fold the WAL into the database file, so that the file alone is the catalog when
        it is renamed into place."""
        self.cat.execute("PRAGMA wal_checkpoint(TRUNCATE)")

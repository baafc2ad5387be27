"""What the catalog records of a foreign volume and of the files adopted from it
(`reelfs import-volume`, backend.tape.foreign).

A foreign volume is a `volumes` row of origin `foreign`: `noaccess` while it is imported
(no mover takes it), `readonly` once adopted, `noaccess` with the reason when the import
failed. Each adopted file has a `released` bitfile with the checksums the scan computed and
one tape copy (backend.catalog.tapefiles), whose `format` tells the recall how to read the
member back.

Tables written: `volumes`, `bitfiles` and `tape_copies` (the copies an adopted file's
bitfile had before a later member of the same name took it over). Not the volume clerk's
business: it keeps the volumes this archive writes (blanks drawn by families, filled,
mounted), while these columns describe a tape someone else wrote, as its scan found it.
Not the file clerk's: it walks a bitfile from dirty to released as the archive writes the
file; an adopted file's data was on tape before the archive knew of it, and its bitfile
starts out released.
"""

from __future__ import annotations

from backend.catalog.db import Catalog
from backend.catalog.files import DELETED, RELEASED
from backend.catalog.volumes import NOACCESS, READONLY
from backend.names import to_db

FOREIGN = "foreign"  # volumes.origin of an imported volume


class ForeignVolumes:
    """The catalog's side of importing foreign volumes."""

    def __init__(self, cat: Catalog) -> None:
        self.cat = cat

    def mark_being_imported(self, label: str, home: int) -> None:
        """Volume `label`, at home in slot `home`, is a foreign one being imported."""
        with self.cat.tx():
            self.cat.execute(
                "UPDATE volumes SET state=?, origin=?, error=?, family=NULL, home=? WHERE label=?",
                (NOACCESS, FOREIGN, "being imported", home, label),
            )

    def mark_import_failed(self, label: str, why: str) -> None:
        """Leave the foreign volume out of service, saying why."""
        with self.cat.tx():
            self.cat.execute(
                "UPDATE volumes SET state=?, error=? WHERE label=? AND origin=?",
                (NOACCESS, f"import failed: {why}", label, FOREIGN),
            )

    def mark_adopted(
        self,
        label: str,
        *,
        label_format: str,
        volser: str | None,
        eod_block: int,
        data_files: int,
        files: int,
        bytes_used: int,
    ) -> None:
        """The volume is a readonly foreign one, laid out as its scan found it."""
        with self.cat.tx():
            self.cat.execute(
                "UPDATE volumes SET state=?, origin=?, error=NULL, label_format=?, volser=?, "
                "eod_block=?, next_fileno=?, files=?, bytes_used=?, block_size=NULL, "
                "family=NULL WHERE label=?",
                (
                    READONLY,
                    FOREIGN,
                    label_format,
                    volser,
                    eod_block,
                    data_files,
                    files,
                    bytes_used,
                    label,
                ),
            )

    def set_member_data(
        self,
        bitfile: int,
        *,
        size: int,
        adler32: int,
        crc32c: int,
        path: str,
        mtime_ns: int,
        archived_ns: int,
    ) -> None:
        """The bitfile's data is now a member of a foreign volume: released, with the
        member's size, checksums, name and mtime. The copies it had are deleted; the
        caller records the member as its one copy."""
        with self.cat.tx():
            self.cat.execute(
                "UPDATE tape_copies SET state=? WHERE bitfile=? AND state='active'",
                (DELETED, bitfile),
            )
            self.cat.execute(
                "UPDATE bitfiles SET state=?, size=?, adler32=?, crc32c=?, path=?, created_ns=?, "
                "modified_ns=?, archived_ns=?, accessed_ns=? WHERE id=?",
                (
                    RELEASED,
                    size,
                    adler32,
                    crc32c,
                    to_db(path),
                    mtime_ns,
                    mtime_ns,
                    archived_ns,
                    archived_ns,
                    bitfile,
                ),
            )

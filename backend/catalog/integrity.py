"""The catalog's integrity check (`reelfs check`): SQLite's own checks, then every
invariant between the tables that can be stated as a query."""

from __future__ import annotations

from backend.catalog.db import Catalog


def integrity_check(cat: Catalog) -> list[str]:
    """Problems found in the catalog (empty when it is consistent)."""
    problems: list[str] = []
    for (msg,) in cat.all("PRAGMA integrity_check"):
        if msg != "ok":
            problems.append(f"sqlite: {msg}")
    for row in cat.all("PRAGMA foreign_key_check"):
        problems.append(f"foreign key: {tuple(row)}")
    checks = [
        (
            "entry pointing to a missing inode",
            "SELECT count(*) FROM entries e LEFT JOIN inodes i ON i.id=e.inode WHERE i.id IS NULL",
        ),
        (
            "inode whose nlink does not match its entries",
            "SELECT count(*) FROM inodes i WHERE (i.mode & 61440) != 16384 AND i.nlink > 0 "
            "AND i.nlink != (SELECT count(*) FROM entries e WHERE e.inode=i.id)",
        ),
        (
            "directory whose nlink is not 2 + subdirectories",
            "SELECT count(*) FROM inodes i WHERE (i.mode & 61440) = 16384 AND i.nlink > 0 "
            "AND i.nlink != 2 + (SELECT count(*) FROM entries e JOIN inodes c "
            "ON c.id=e.inode WHERE e.parent=i.id AND (c.mode & 61440) = 16384)",
        ),
        (
            "regular file without data version",
            "SELECT count(*) FROM inodes WHERE (mode & 61440) = 32768 AND bitfile IS NULL",
        ),
        (
            "file whose data version belongs to another inode",
            "SELECT count(*) FROM inodes i JOIN bitfiles b ON b.id=i.bitfile WHERE b.inode!=i.id",
        ),
        (
            "archived or released file without an active tape copy",
            "SELECT count(*) FROM bitfiles b WHERE state IN ('archived','released') AND NOT "
            "EXISTS (SELECT 1 FROM tape_copies c WHERE c.bitfile=b.id AND c.state='active')",
        ),
        (
            "tape copy on an unknown volume",
            "SELECT count(*) FROM tape_copies c LEFT JOIN volumes v ON v.label=c.volume "
            "WHERE v.label IS NULL",
        ),
        (
            "request for a deleted file",
            "SELECT count(*) FROM requests r JOIN bitfiles b ON b.id=r.bitfile "
            "WHERE b.state='deleted'",
        ),
    ]
    for what, sql in checks:
        n = cat.value(sql)
        if n:
            problems.append(f"{n} {what}")
    return problems

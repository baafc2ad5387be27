"""The catalog's integrity check (`reelfs check`): SQLite's own checks, then every
invariant between the tables that can be stated as a query (`INVARIANTS`), and the
repairs that are safe to make without a human (`repair`).

Each invariant is one query that lists what breaks it, so a check is one snapshot of the
catalog (a read transaction: WAL readers never hold up the daemon), and each holds
whether or not the archive is mounted (an inode unlinked while open, freed at its last
close or the next start, breaks none). A repair runs
the same queries again in the write transaction that fixes what they found, and records
an event per repair.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from backend.catalog import events
from backend.catalog.db import Catalog
from backend.catalog.families import DEFAULT_FAMILY
from backend.catalog.queue import RequestQueue
from backend.catalog.schema import ROOT_INODE

#: how many offending ids a finding lists (the count is always whole)
SAMPLES = 20


@dataclass(frozen=True)
class Invariant:
    """One rule of the catalog: `query` lists the ids of the rows that break it."""

    name: str
    description: str  # what a finding says after its count: "3 <description>"
    query: str
    #: what --repair does about it ("" when only a human can tell)
    repair: str = ""


_DIRTY_WITHOUT_REQUEST = (
    "SELECT b.id FROM bitfiles b WHERE b.state='dirty' AND b.writers=0 AND b.error IS NULL "
    "AND b.inode IS NOT NULL AND EXISTS (SELECT 1 FROM inodes i WHERE i.id=b.inode "
    "AND i.bitfile=b.id) AND "
    "(SELECT count(*) FROM requests r WHERE r.bitfile=b.id AND r.kind='write') + "
    "(SELECT count(DISTINCT copy) FROM tape_copies c WHERE c.bitfile=b.id "
    "AND c.state='active') < COALESCE((SELECT copies FROM families f "
    "WHERE f.name=COALESCE(b.family, 'default')), 1)"
)

INVARIANTS: tuple[Invariant, ...] = (
    Invariant(
        "dirty-has-request",
        "dirty file nobody is writing without a write request for each tape copy "
        "its family keeps that is not on tape yet",
        _DIRTY_WITHOUT_REQUEST,
        repair="queue the missing write requests",
    ),
    Invariant(
        "entry-inode",
        "entry pointing to a missing inode",
        "SELECT e.id FROM entries e LEFT JOIN inodes i ON i.id=e.inode WHERE i.id IS NULL",
    ),
    Invariant(
        "entry-parent",
        "entry in a parent that is missing or not a directory",
        "SELECT e.id FROM entries e LEFT JOIN inodes p ON p.id=e.parent "
        "WHERE p.id IS NULL OR (p.mode & 61440) != 16384",
    ),
    Invariant(
        "nlink-files",
        "inode whose nlink does not match its entries",
        "SELECT i.id FROM inodes i WHERE (i.mode & 61440) != 16384 AND i.nlink > 0 "
        "AND i.nlink != (SELECT count(*) FROM entries e WHERE e.inode=i.id)",
    ),
    Invariant(
        "nlink-dirs",
        "directory whose nlink is not 2 + subdirectories",
        "SELECT i.id FROM inodes i WHERE (i.mode & 61440) = 16384 AND i.nlink > 0 "
        "AND i.nlink != 2 + (SELECT count(*) FROM entries e JOIN inodes c "
        "ON c.id=e.inode WHERE e.parent=i.id AND (c.mode & 61440) = 16384)",
    ),
    Invariant(
        "directory-named",
        "directory other than the root without a name",
        f"SELECT i.id FROM inodes i WHERE i.id != {ROOT_INODE} AND (i.mode & 61440) = 16384 "
        "AND i.nlink > 0 AND NOT EXISTS (SELECT 1 FROM entries e WHERE e.inode=i.id)",
    ),
    Invariant(
        "file-has-data",
        "regular file without data version",
        "SELECT id FROM inodes WHERE (mode & 61440) = 32768 AND bitfile IS NULL",
    ),
    Invariant(
        "data-owner",
        "file whose data version belongs to another inode",
        "SELECT i.id FROM inodes i JOIN bitfiles b ON b.id=i.bitfile WHERE b.inode IS NOT i.id",
    ),
    Invariant(
        "current-version",
        "data version of an inode that is not the inode's current one and not deleted",
        "SELECT b.id FROM bitfiles b JOIN inodes i ON i.id=b.inode "
        "WHERE i.bitfile IS NOT b.id AND b.state != 'deleted'",
    ),
    Invariant(
        "archived-has-copy",
        "archived or released file without an active tape copy",
        "SELECT b.id FROM bitfiles b WHERE state IN ('archived','released') AND NOT "
        "EXISTS (SELECT 1 FROM tape_copies c WHERE c.bitfile=b.id AND c.state='active')",
    ),
    Invariant(
        "copy-volume",
        "tape copy on an unknown volume",
        "SELECT c.id FROM tape_copies c LEFT JOIN volumes v ON v.label=c.volume "
        "WHERE v.label IS NULL",
    ),
    Invariant(
        "copy-before-eod",
        "tape copy at or past its volume's end of data (the next append overwrites it)",
        "SELECT c.id FROM tape_copies c JOIN volumes v ON v.label=c.volume "
        "WHERE c.state='active' AND c.fileno >= v.next_fileno",
    ),
    Invariant(
        "request-live-file",
        "request for a deleted file",
        "SELECT r.id FROM requests r JOIN bitfiles b ON b.id=r.bitfile WHERE b.state='deleted'",
        repair="drop the requests",
    ),
    Invariant(
        "recall-released",
        "recall request for a file that is not on tape only",
        "SELECT r.id FROM requests r JOIN bitfiles b ON b.id=r.bitfile "
        "WHERE r.kind='recall' AND b.state != 'released'",
        repair="drop the requests",
    ),
    Invariant(
        "request-kind",
        "request of an unknown kind or state",
        "SELECT id FROM requests WHERE kind NOT IN ('write','recall') "
        "OR state NOT IN ('queued','running')",
    ),
)

BY_NAME = {inv.name: inv for inv in INVARIANTS}


@dataclass
class Finding:
    """What broke one invariant: how many rows, and the first few ids."""

    invariant: str
    count: int
    message: str
    ids: list[int] = field(default_factory=list)
    repair: str = ""


@dataclass
class CheckReport:
    """A whole check: its findings, and with --repair what was repaired."""

    findings: list[Finding]
    checked: list[str]
    repaired: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.findings


@contextlib.contextmanager
def _snapshot(cat: Catalog) -> Iterator[None]:
    """One read transaction: every query sees the same catalog, and holds no lock."""
    cat.execute("BEGIN DEFERRED")
    try:
        yield
    finally:
        cat.execute("COMMIT")


def _sqlite_findings(cat: Catalog) -> list[Finding]:
    out: list[Finding] = []
    bad = [msg for (msg,) in cat.all("PRAGMA integrity_check") if msg != "ok"]
    for msg in bad:
        out.append(Finding("sqlite", 1, f"sqlite: {msg}"))
    for row in cat.all("PRAGMA foreign_key_check"):
        out.append(Finding("foreign-key", 1, f"foreign key: {tuple(row)}"))
    return out


def _findings(cat: Catalog) -> tuple[list[Finding], list[str]]:
    findings = _sqlite_findings(cat)
    checked = ["sqlite", "foreign-key"]
    for inv in INVARIANTS:
        checked.append(inv.name)
        ids = [int(r[0]) for r in cat.all(inv.query)]
        if ids:
            findings.append(
                Finding(
                    inv.name,
                    len(ids),
                    f"{len(ids)} {inv.description}",
                    ids[:SAMPLES],
                    inv.repair,
                )
            )
    return findings, checked


def check(cat: Catalog) -> CheckReport:
    """Check every invariant on one snapshot of the catalog."""
    with _snapshot(cat):
        findings, checked = _findings(cat)
    return CheckReport(findings, checked)


def integrity_check(cat: Catalog) -> list[str]:
    """Problems found in the catalog (empty when it is consistent), as one line each."""
    return [f.message for f in check(cat).findings]


def repair(cat: Catalog) -> CheckReport:
    """Repair what can be repaired safely, each in the transaction that finds it (so
    nothing a concurrent change fixed is fixed twice), with an event per repair; then
    check again. The report's findings are what is left."""
    repaired: dict[str, int] = {}
    with cat.tx():
        n = _requeue_dirty(cat)
        if n:
            repaired["dirty-has-request"] = n
        for name in ("request-live-file", "recall-released"):
            ids = [int(r[0]) for r in cat.all(BY_NAME[name].query)]
            if not ids:
                continue
            cat.conn.executemany("DELETE FROM requests WHERE id=?", [(i,) for i in ids])
            events.record(
                cat,
                "check_repaired",
                f"dropped {len(ids)} {BY_NAME[name].description}",
                subject=name,
                level="warning",
                requests=ids[:SAMPLES],
            )
            repaired[name] = len(ids)
    report = check(cat)
    report.repaired = repaired
    return report


def _requeue_dirty(cat: Catalog) -> int:
    """The lost requests of dirty files, queued again (one event per file: each is a
    write that would never have happened)."""
    queue = RequestQueue(cat)
    rows = cat.all(
        f"SELECT b.id, b.bfid, b.family FROM bitfiles b WHERE b.id IN ({_DIRTY_WITHOUT_REQUEST})"
    )
    for bid, bfid, family in rows:
        ids = queue.enqueue_write(int(bid), family or DEFAULT_FAMILY)
        events.record(
            cat,
            "check_repaired",
            f"dirty file {bfid} had no write request: queued again",
            subject=bfid,
            level="warning",
            invariant="dirty-has-request",
            requests=ids,
        )
    return len(rows)

"""What the operator's listings read: volumes, the queue with its files, and counts of
the whole archive for `reelfs status` (rows as the CLI and `--json` show them)."""

from __future__ import annotations

from typing import Any

from backend.catalog.db import Catalog


def volumes(cat: Catalog) -> list[tuple[Any, ...]]:
    """(label, state, family, bytes_used, capacity, files, mount_count, home, error,
    media_type, inserted_ns, last_mount_ns, next_fileno, eod_block, uses) by label."""
    return [
        tuple(r)
        for r in cat.all(
            "SELECT label, state, family, bytes_used, capacity, files, mount_count, home, "
            "error, media_type, inserted_ns, last_mount_ns, next_fileno, eod_block, uses "
            "FROM volumes ORDER BY label"
        )
    ]


def copies_by_volume(cat: Catalog) -> dict[str, tuple[int, int, int, int]]:
    """Per volume: (active copies, their bytes, deleted copies, their bytes). A deleted
    copy (its file removed or overwritten) still holds tape until a repack reclaims it."""
    return {
        r[0]: (int(r[1]), int(r[2]), int(r[3]), int(r[4]))
        for r in cat.all(
            "SELECT volume, SUM(state='active'), "
            "COALESCE(SUM(CASE WHEN state='active' THEN length END), 0), "
            "SUM(state='deleted'), "
            "COALESCE(SUM(CASE WHEN state='deleted' THEN length END), 0) "
            "FROM tape_copies GROUP BY volume"
        )
    }


def queue(cat: Catalog, limit: int | None) -> list[tuple[Any, ...]]:
    """(id, kind, state, inode, family, volume, size, created_ns, tries, error, bfid,
    urgent, drive) of the requests in queue order, at most `limit`."""
    sql = (
        "SELECT r.id, r.kind, r.state, b.inode, r.family, r.volume, b.size, r.created_ns, "
        "r.tries, r.error, b.bfid, r.urgent, r.drive FROM requests r JOIN bitfiles b "
        "ON b.id = r.bitfile ORDER BY r.id"
    )
    if limit:
        return [tuple(r) for r in cat.all(sql + " LIMIT ?", (int(limit),))]
    return [tuple(r) for r in cat.all(sql)]


def volume_counts(cat: Catalog) -> tuple[dict[str, int], int, int]:
    """Volumes by state, and the capacity and free space of those that hold or take data."""
    by_state = {r[0]: r[1] for r in cat.all("SELECT state, count(*) FROM volumes GROUP BY state")}
    row = cat.one(
        "SELECT COALESCE(SUM(capacity),0), COALESCE(SUM(CASE WHEN state IN "
        "('blank','writable') THEN MAX(capacity-bytes_used,0) ELSE 0 END),0) FROM volumes "
        "WHERE state!='cleaning'"
    )
    assert row is not None
    return by_state, int(row[0]), int(row[1])


def latest_event(cat: Catalog, kinds: tuple[str, ...], since_ns: int) -> str | None:
    """The message of the newest event of one of `kinds` since `since_ns`."""
    marks = ",".join("?" * len(kinds))
    return cat.value(
        f"SELECT message FROM events WHERE kind IN ({marks}) AND time_ns > ? "
        "ORDER BY id DESC LIMIT 1",
        (*kinds, since_ns),
    )

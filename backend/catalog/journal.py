"""The change journal table `changes`: one row per change on the mount, for the poster.

A row is written inside the transaction of the change it records (nothing is committed
unannounced), read in id order by the poster, and deleted in the transaction that puts
its messages in the outbox. The table is made by migration v2.
"""

from __future__ import annotations

import time
from typing import Any

from backend.catalog.db import Catalog
from backend.names import from_db, to_db


def record(
    cat: Catalog,
    kind: str,
    *,
    inode: int | None,
    path: str,
    old_path: str | None,
    target: str | None,
    origin: str | None,
) -> None:
    """Journal one change, joining the caller's transaction (`origin`: JSON or None)."""
    with cat.tx():
        cat.execute(
            "INSERT INTO changes(kind, inode, path, old_path, target, origin, time_ns) "
            "VALUES (?,?,?,?,?,?,?)",
            (kind, inode, to_db(path), to_db(old_path), to_db(target), origin, time.time_ns()),
        )


def oldest(cat: Catalog, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` of the oldest changes: id, kind, inode, path, old_path, target, origin
    (the paths as `str` holding their bytes, see `backend.names`)."""
    out = []
    for r in cat.all(
        "SELECT id, kind, inode, path, old_path, target, origin FROM changes ORDER BY id LIMIT ?",
        (limit,),
    ):
        row = dict(r)
        for key in ("path", "old_path", "target"):
            row[key] = from_db(row[key])
        out.append(row)
    return out


def delete(cat: Catalog, change_id: int) -> None:
    """Forget a change once announced (inside the caller's transaction)."""
    cat.execute("DELETE FROM changes WHERE id=?", (change_id,))

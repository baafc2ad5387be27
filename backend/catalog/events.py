"""The event log: every decision the archive takes about drives, volumes and files.

Events are rows in the catalog (so `reelfs status` and tests can read them from any
process) and lines in the daemon's log.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from backend.catalog.db import Catalog
from backend.names import text_of

log = logging.getLogger("reelfs.events")

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def record(
    cat: Catalog,
    kind: str,
    message: str,
    *,
    subject: str = "",
    level: str = "info",
    **details: Any,
) -> None:
    """Append an event (in the caller's transaction if there is one).

    A path in `message` or `subject` that is not UTF-8 is written there with `\\xNN`;
    a path in `details` is kept exact (JSON escapes it as `\\udcNN`)."""
    message, subject = text_of(message), text_of(subject)
    log.log(_LEVELS.get(level, logging.INFO), "%s %s: %s", kind, subject, message)
    with cat.tx():
        cat.execute(
            "INSERT INTO events(time_ns, level, kind, subject, message, details) "
            "VALUES (?,?,?,?,?,?)",
            (
                time.time_ns(),
                level,
                kind,
                subject,
                message,
                json.dumps(details, default=str) if details else None,
            ),
        )


def recent(
    cat: Catalog, *, kind: str | None = None, subject: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    sql = "SELECT id, time_ns, level, kind, subject, message, details FROM events"
    where, params = [], []
    if kind:
        where.append("kind = ?")
        params.append(kind)
    if subject:
        where.append("subject = ?")
        params.append(subject)
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    params.append(limit)
    out = []
    for r in cat.all(sql, tuple(params)):
        d = dict(r)
        d["details"] = json.loads(d["details"]) if d["details"] else {}
        out.append(d)
    return out

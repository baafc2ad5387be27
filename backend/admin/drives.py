"""`reelfs drive up|down DRIVE`: an operator takes a drive out of service or puts it back.

The catalog records the drive's new state and an event says who wanted it; while the
archive is mounted the drive's mover finishes its current work, puts its tape home and
stops (down), or a new mover starts serving the drive (up). A handler for
backend.admin.context.
"""

from __future__ import annotations

from typing import Any

from backend.admin.context import AdminContext
from backend.catalog import events
from backend.catalog.drives import DriveTable
from backend.errors import ArchiveError

UP, DOWN = "up", "down"


def set_state(ctx: AdminContext, name: str, state: str, reason: str = "") -> dict[str, Any]:
    drives = DriveTable(ctx.cat)
    known = drives.names()
    if name not in known:
        raise ArchiveError(f"no drive named {name!r} (known: {', '.join(sorted(known))})")
    if state == DOWN:
        why = reason or "set down by the operator"
        drives.mark_down(name, why)
        events.record(ctx.cat, "drive_down", why, subject=name, level="warning")
        ctx.stop_mover(name)
    elif state == UP:
        if ctx.mover_running(name):
            return {"drive": name, "state": UP}
        drives.set_up(name)
        events.record(ctx.cat, "drive_up", reason or "put back in service", subject=name)
        ctx.start_mover(name)
    else:
        raise ArchiveError(f"a drive is 'up' or 'down', not {state!r}")
    return {"drive": name, "state": state}

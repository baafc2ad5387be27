"""`reelfs check`: the catalog's invariants checked (backend.catalog.integrity), and with
`repair` what can be restored without a human restored, in the daemon when the archive is
mounted (it then wakes the movers for the requests it queued) or on the archive alone."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from backend.admin.context import AdminContext
from backend.catalog import integrity


def check(ctx: AdminContext, repair: bool = False) -> dict[str, Any]:
    """Check every invariant (`repair`: first restore what is safe to restore)."""
    if repair:
        report = integrity.repair(ctx.cat)
        if report.repaired:
            ctx.wake()
    else:
        report = integrity.check(ctx.cat)
    return {
        "consistent": report.ok,
        "problems": [f.message for f in report.findings],
        "findings": [asdict(f) for f in report.findings],
        "checked": report.checked,
        "repaired": report.repaired,
    }

"""Drive cleaning policy: when a drive is cleaned, with which cartridge, and when a
cleaning cartridge is worn out.

A drive says it needs cleaning through TapeAlert (20 clean now, 21 clean periodic), read
when a mover dismounts, or an operator asks (`reelfs library clean DRIVE`). The mover
then runs a cleaning session before its next work (backend.mover.cleaning) with the
least used cleaning cartridge (barcode `CLN...`); each use is counted, and at its limit
(or when the drive says it expired) the cartridge is retired. A drive that needs
cleaning when no usable cartridge is left is an error event, repeated at most hourly.
"""

from __future__ import annotations

import logging
import time

from backend.catalog import events
from backend.catalog.db import Catalog
from backend.catalog.drives import DriveTable
from backend.catalog.volumes import VolumeClerk
from drivers.tape import CleaningResult

log = logging.getLogger("reelfs.cleaning")

#: how often "no cleaning cartridge" is repeated as an event for one drive
COMPLAINT_INTERVAL = 3600.0
_complained: dict[str, float] = {}


def mark_needed(cat: Catalog, drive: str, why: str) -> None:
    if DriveTable(cat).ask_cleaning(drive):
        events.record(cat, "cleaning_needed", why, subject=drive, level="warning")


def mark_done(cat: Catalog, drive: str) -> None:
    """Stop asking (a failed attempt is an event; the drive will ask again if it must)."""
    DriveTable(cat).cleaning_done(drive)


def needed(cat: Catalog, drive: str) -> bool:
    return DriveTable(cat).needs_cleaning(drive)


def cartridges(cat: Catalog) -> list[tuple[str, int]]:
    """(label, uses) of the cleaning cartridges to try, the least used first."""
    return VolumeClerk(cat).cleaning_cartridges()


def record_use(
    cat: Catalog, drive: str, label: str, uses: int, limit: int, result: CleaningResult
) -> bool:
    """Count one use of a cleaning cartridge (retiring it at its limit or when expired);
    True when the drive is done with cleaning (cleaned, or the cartridge was not the
    problem), False when the next cartridge should be tried."""
    uses += 1
    retire = result.expired or uses >= limit
    finished = result.cleaned or not result.expired
    with cat.tx():
        VolumeClerk(cat).cleaning_used(label, uses, retire=retire)
        if finished:
            DriveTable(cat).cleaning_done(drive)
    events.record(
        cat,
        "cleaned" if result.cleaned else "cleaning_attempt",
        f"{label} (use {uses} of {limit}): {result.detail or 'done'}",
        subject=drive,
        cartridge=label,
        uses=uses,
        alerts=sorted(result.alerts),
    )
    if retire:
        events.record(
            cat,
            "cleaning_cartridge_retired",
            f"used {uses} times" + (" and expired" if result.expired else ""),
            subject=label,
            level="warning",
        )
    return finished


def no_cartridge(cat: Catalog, drive: str) -> None:
    """The drive needs cleaning and no cartridge could do it: stop asking until the drive
    asks again, and say so (at most once an hour per drive)."""
    mark_done(cat, drive)
    last = _complained.get(drive)  # None: never said (monotonic starts at boot)
    if last is None or time.monotonic() - last > COMPLAINT_INTERVAL:
        _complained[drive] = time.monotonic()
        events.record(
            cat,
            "cleaning_impossible",
            "the drive needs cleaning but no usable cleaning cartridge is in the library",
            subject=drive,
            level="error",
        )

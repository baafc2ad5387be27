"""Drive cleaning between sessions: a drive that asks for it gets a cleaning cartridge.

A drive says it needs cleaning through TapeAlert (20 clean now, 21 clean periodic), read
when a mover dismounts, or an operator asks (`reelfs library clean DRIVE`). The mover
then runs a cleaning session before its next work: the least used cleaning cartridge
(barcode `CLN...`) goes into the drive, the drive cleans, the cartridge goes home and its
use is counted; at its limit (or when the drive says it expired) it is retired.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from backend.catalog import events
from backend.catalog.db import Catalog
from drivers.tape import TapeError

if TYPE_CHECKING:
    from backend.mover.session import Mover

log = logging.getLogger("reelfs.cleaning")

CLEANING, RETIRED = "cleaning", "retired"
#: how often "no cleaning cartridge" is repeated as an event for one drive
COMPLAINT_INTERVAL = 3600.0
_complained: dict[str, float] = {}


def is_cleaning_label(label: str | None) -> bool:
    return bool(label) and label.upper().startswith("CLN")  # type: ignore[union-attr]


def mark_needed(cat: Catalog, drive: str, why: str) -> None:
    with cat.tx():
        changed = cat.execute(
            "UPDATE drives SET needs_cleaning=1 WHERE name=? AND needs_cleaning=0", (drive,)
        ).rowcount
    if changed:
        events.record(cat, "cleaning_needed", why, subject=drive, level="warning")


def mark_done(cat: Catalog, drive: str) -> None:
    """Stop asking (a failed attempt is an event; the drive will ask again if it must)."""
    with cat.tx():
        cat.execute("UPDATE drives SET needs_cleaning=0 WHERE name=?", (drive,))


def needed(cat: Catalog, drive: str) -> bool:
    return bool(cat.value("SELECT needs_cleaning FROM drives WHERE name=?", (drive,)))


def check_drive(mover: Mover) -> None:
    """Ask the drive whether it wants cleaning (reading TapeAlert); remember the answer."""
    assert mover.cat is not None
    try:
        if mover.drive.needs_cleaning():
            mark_needed(mover.cat, mover.drive_name, "the drive asks for cleaning (TapeAlert)")
    except TapeError as e:
        log.debug("%s: could not read TapeAlert: %s", mover.drive_name, e)


def _cartridges(cat: Catalog) -> list[tuple[str, int]]:
    return [
        (r[0], r[1])
        for r in cat.all(
            "SELECT label, uses FROM volumes WHERE state=? ORDER BY uses, label", (CLEANING,)
        )
    ]


def clean_session(mover: Mover, limit: int) -> bool:
    """Clean the (empty) drive of `mover`; True when it was cleaned."""
    cat = mover.cat
    assert cat is not None and mover.mounted is None
    for label, uses in _cartridges(cat):
        with mover.changer_lock:
            inv = mover.changer.inventory()
            el = inv.find(label)
            if el is None:
                continue  # not in the library right now
            home = el.address
            mover._session("cleaning")
            mover.changer.move(home, mover.address)
        result = None
        try:
            result = mover.drive.clean()
        finally:
            with mover.changer_lock:
                mover.changer.move(mover.address, home)
            mover._session("idle")
        uses += 1
        retire = result.expired or uses >= limit
        with cat.tx():
            cat.execute(
                "UPDATE volumes SET uses=?, state=?, last_mount_ns=?, "
                "mount_count=mount_count+1, error=? WHERE label=?",
                (
                    uses,
                    RETIRED if retire else CLEANING,
                    time.time_ns(),
                    "expired" if retire else None,
                    label,
                ),
            )
            if result.cleaned or not result.expired:
                cat.execute("UPDATE drives SET needs_cleaning=0 WHERE name=?", (mover.drive_name,))
        events.record(
            cat,
            "cleaned" if result.cleaned else "cleaning_attempt",
            f"{label} (use {uses} of {limit}): {result.detail or 'done'}",
            subject=mover.drive_name,
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
        if result.cleaned or not result.expired:
            return result.cleaned
    mark_done(cat, mover.drive_name)  # asked again at the next dismount if still needed
    last = _complained.get(mover.drive_name)  # None: never said (monotonic starts at boot)
    if last is None or time.monotonic() - last > COMPLAINT_INTERVAL:
        _complained[mover.drive_name] = time.monotonic()
        events.record(
            cat,
            "cleaning_impossible",
            "the drive needs cleaning but no usable cleaning cartridge is in the library",
            subject=mover.drive_name,
            level="error",
        )
    return False

"""Reconciling the catalog's volumes with what the media changer holds: at every start,
after an import through the mail slots, and when a catalog is rebuilt."""

from __future__ import annotations

from backend.catalog import events
from backend.catalog.db import Catalog
from backend.catalog.volumes import (
    BLANK,
    CLEANING,
    EXPORTED,
    FULL,
    MISSING,
    STUCK,
    VolumeClerk,
    is_cleaning_label,
)
from drivers.tape import ElementType, MediaChanger


def reconcile_library(
    cat: Catalog, changer: MediaChanger, *, media_type: str, default_capacity: int
) -> dict[str, list[str]]:
    """Make the catalog's volumes agree with what the changer holds.

    New barcodes become blank volumes of the common pool; volumes the catalog expects but
    the library lacks are flagged `missing` (their recalls are then bounced with a clear
    error); volumes that reappear get their previous state back. A `stuck` volume (the
    changer failed moving it) found in a slot gets its state back; one still in a drive
    stays stuck until that drive's mover puts it home (its cleaner session).
    """
    inv = changer.inventory()
    present: dict[str, int] = {}
    in_drive: set[str] = set()
    for el in inv.elements:
        if el.full and el.barcode:
            home = el.address
            if el.type == ElementType.DRIVE:
                in_drive.add(el.barcode)
                if el.source is not None:
                    home = el.source
            present[el.barcode] = home
    report: dict[str, list[str]] = {
        "added": [],
        "missing": [],
        "returned": [],
        "unstuck": [],
        "stuck": [],
    }
    vc = VolumeClerk(cat)
    with cat.tx():
        known = vc.states()
        for label, home in present.items():
            if is_cleaning_label(label):
                if label not in known:
                    vc.add_cartridge(
                        label, state=CLEANING, capacity=0, media_type=media_type, home=home
                    )
                    report["added"].append(label)
                continue
            if label not in known:
                vc.add_cartridge(
                    label, state=BLANK, capacity=default_capacity, media_type=media_type, home=home
                )
                report["added"].append(label)
            else:
                state, error = known[label]
                if state in (MISSING, EXPORTED):
                    previous = (error or "").rpartition("; was ")[2] or FULL
                    vc.returned(label, previous, home)
                    report["returned"].append(label)
                elif state == STUCK and label not in in_drive:
                    # the changer failed, but the cartridge is in a slot after all
                    vc.unstick(label, home)
                    report["unstuck"].append(label)
                elif state == STUCK:
                    # still in a drive: that drive's cleaner session puts it home
                    report["stuck"].append(label)
                else:
                    vc.set_home(label, home)
        for label, (state, _error) in known.items():
            if label not in present and state not in (MISSING, EXPORTED):
                vc.set_state(label, MISSING, f"missing; was {state}")
                report["missing"].append(label)
    for what, labels in report.items():
        if labels:
            events.record(
                cat,
                f"volumes_{what}",
                f"{len(labels)} volume(s) {what}: " + ", ".join(labels[:20]),
                level="warning" if what in ("missing", "stuck") else "info",
            )
    return report

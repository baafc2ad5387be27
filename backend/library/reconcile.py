"""Reconciling the catalog's volumes with what the media changer holds: at every start,
after an import through the mail slots, and when a catalog is rebuilt."""

from __future__ import annotations

import time

from backend.catalog import events
from backend.catalog.db import Catalog
from drivers.tape import ElementType, MediaChanger


def reconcile_library(
    cat: Catalog, changer: MediaChanger, *, media_type: str, default_capacity: int
) -> dict[str, list[str]]:
    """Make the catalog's volumes agree with what the changer holds.

    New barcodes become blank volumes of the common pool; volumes the catalog expects but
    the library lacks are flagged `missing` (their recalls are then bounced with a clear
    error); volumes that reappear get their previous state back.
    """
    inv = changer.inventory()
    present: dict[str, int] = {}
    for el in inv.elements:
        if el.full and el.barcode:
            home = el.address
            if el.type == ElementType.DRIVE and el.source is not None:
                home = el.source
            present[el.barcode] = home
    report: dict[str, list[str]] = {"added": [], "missing": [], "returned": []}
    with cat.tx():
        known = {r[0]: (r[1], r[2]) for r in cat.all("SELECT label, state, error FROM volumes")}
        for label, home in present.items():
            if label.startswith("CLN"):
                if label not in known:
                    cat.execute(
                        "INSERT INTO volumes(label, media_type, capacity, state, inserted_ns, "
                        "home) VALUES (?,?,0,'cleaning',?,?)",
                        (label, media_type, time.time_ns(), home),
                    )
                    report["added"].append(label)
                continue
            if label not in known:
                cat.execute(
                    "INSERT INTO volumes(label, media_type, capacity, state, inserted_ns, home) "
                    "VALUES (?,?,?,'blank',?,?)",
                    (label, media_type, default_capacity, time.time_ns(), home),
                )
                report["added"].append(label)
            else:
                state, error = known[label]
                if state in ("missing", "exported"):
                    previous = (error or "").rpartition("; was ")[2] or "full"
                    cat.execute(
                        "UPDATE volumes SET state=?, error=NULL, home=? WHERE label=?",
                        (previous, home, label),
                    )
                    report["returned"].append(label)
                else:
                    cat.execute("UPDATE volumes SET home=? WHERE label=?", (home, label))
        for label, (state, _error) in known.items():
            if label not in present and state not in ("missing", "exported"):
                cat.execute(
                    "UPDATE volumes SET state='missing', error=? WHERE label=?",
                    (f"missing; was {state}", label),
                )
                report["missing"].append(label)
    for what, labels in report.items():
        if labels:
            events.record(
                cat,
                f"volumes_{what}",
                f"{len(labels)} volume(s) {what}: " + ", ".join(labels[:20]),
                level="warning" if what == "missing" else "info",
            )
    return report

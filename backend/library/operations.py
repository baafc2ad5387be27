"""The operator's library commands: inventory, import and export through the mail slots.

Called by the `reelfs library` commands (backend.admin.library) with the changer to use:
the daemon's under its changer lock (so a mover's move never interleaves), or the
library's own when the archive is not mounted. The catalog follows every move: imported
cartridges become blank volumes of the common pool (or get their previous state back),
exported volumes stay known with state `exported`, so recalls of their files fail at
once with a clear reason.
"""

from __future__ import annotations

from typing import Any

from backend.catalog import events
from backend.catalog.db import Catalog
from backend.catalog.queue import RequestQueue
from backend.catalog.volumes import EXPORTED, VolumeClerk
from backend.errors import ArchiveError
from backend.library.reconcile import reconcile_library
from drivers.tape import ElementType, MediaChanger


def inventory(cat: Catalog, changer: MediaChanger) -> list[dict[str, Any]]:
    vc = VolumeClerk(cat)
    rows = []
    for e in changer.inventory().elements:
        if e.type == ElementType.TRANSPORT:
            continue
        vol = vc.get(e.barcode) if e.full and e.barcode else None
        rows.append(
            {
                "address": e.address,
                "type": e.type.value,
                "full": e.full,
                "barcode": e.barcode if e.full else None,
                "source": e.source,
                "identifier": e.identifier,
                "volume_state": vol.state if vol else None,
                "family": vol.family if vol else None,
                "exception": e.exception,
            }
        )
    return rows


def import_cartridges(
    cat: Catalog, changer: MediaChanger, *, media_type: str, default_capacity: int
) -> dict[str, Any]:
    """Move every cartridge in a mail slot to a free storage slot, then reconcile."""
    inv = changer.inventory()
    free = [e.address for e in inv.of_type(ElementType.SLOT) if not e.full]
    moved = []
    for e in inv.of_type(ElementType.IMPORT_EXPORT):
        if not e.full:
            continue
        if not free:
            raise ArchiveError(
                f"no free storage slot for {e.barcode or 'the cartridge'} in mail slot "
                f"{e.address}; export something first"
            )
        if not e.barcode:
            raise ArchiveError(f"the cartridge in mail slot {e.address} has no readable barcode")
        changer.close_import_export(e.address)
        dest = free.pop(0)
        changer.move(e.address, dest)
        moved.append({"barcode": e.barcode, "from": e.address, "to": dest})
    report = reconcile_library(
        cat, changer, media_type=media_type, default_capacity=default_capacity
    )
    if moved:
        events.record(
            cat,
            "import",
            f"{len(moved)} cartridge(s) imported: " + ", ".join(m["barcode"] for m in moved),
        )
    return {"moved": moved, **report}


def mark_exporting(cat: Catalog, label: str) -> str:
    """Take the volume out of service first, so no mover mounts it meanwhile."""
    vc = VolumeClerk(cat)
    vol = vc.get(label)
    if vol is None:
        raise ArchiveError(f"unknown volume {label!r} (see reelfs volumes)")
    if vol.state == EXPORTED:
        raise ArchiveError(f"volume {label} is already exported")
    if vol.state == "missing":
        raise ArchiveError(f"volume {label} is not in the library")
    vc.set_state(label, EXPORTED, f"exported; was {vol.state}")
    return vol.state


def undo_exporting(cat: Catalog, label: str, previous: str) -> None:
    VolumeClerk(cat).set_state(label, previous, None)


def export_volume(cat: Catalog, changer: MediaChanger, label: str) -> dict[str, Any]:
    """Move an (unmounted) volume to a free mail slot and open it for the operator."""
    inv = changer.inventory()
    el = inv.find(label)
    if el is None:
        raise ArchiveError(f"volume {label} is not in the library")
    if el.type == ElementType.DRIVE:
        raise ArchiveError(f"volume {label} is still in a drive (element {el.address})")
    if el.type == ElementType.IMPORT_EXPORT:
        return {"volume": label, "mail_slot": el.address}
    free = [e.address for e in inv.of_type(ElementType.IMPORT_EXPORT) if not e.full]
    if not free:
        raise ArchiveError("no free mail slot: empty one first")
    changer.move(el.address, free[0])
    changer.open_import_export(free[0])
    refused = RequestQueue(cat).count_recalls_on(label)
    events.record(cat, "export", f"exported to mail slot {free[0]}", subject=label)
    return {"volume": label, "mail_slot": free[0], "recalls_refused": refused}

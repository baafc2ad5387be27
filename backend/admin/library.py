"""`reelfs library ...`: the operator's commands for the tape library.

inventory, reconcile (the catalog with the changer), import (mail slots -> storage
slots), export VOLUME (to a mail slot) and
clean DRIVE; the library-level work is backend.library.operations and
backend.library.cleaning. Handlers for backend.admin.context: the same code in the
daemon and on an unmounted archive.
"""

from __future__ import annotations

from typing import Any

from backend.admin.context import AdminContext
from backend.catalog.drives import DriveTable
from backend.catalog.volumes import VolumeClerk
from backend.errors import ArchiveError
from backend.library import cleaning, operations
from backend.library.reconcile import reconcile_library


def inventory(ctx: AdminContext) -> dict[str, Any]:
    """Every element of the library, with what the catalog knows of its cartridge."""
    with ctx.changer() as changer:
        return {"elements": operations.inventory(ctx.cat, changer)}


def import_cartridges(ctx: AdminContext) -> dict[str, Any]:
    """Take in what the operator put in the mail slots."""
    cfg = ctx.config
    capacity = VolumeClerk(ctx.cat).default_capacity(cfg.library.default_capacity)
    with ctx.changer() as changer:
        answer = operations.import_cartridges(
            ctx.cat, changer, media_type=cfg.library.type, default_capacity=capacity
        )
    ctx.wake()
    return answer


def reconcile(ctx: AdminContext) -> dict[str, Any]:
    """Make the catalog agree with the changer now: new cartridges, missing ones, and
    `stuck` ones (a failed move) found back in a slot get their state back."""
    cfg = ctx.config
    capacity = VolumeClerk(ctx.cat).default_capacity(cfg.library.default_capacity)
    with ctx.changer() as changer:
        report = reconcile_library(
            ctx.cat, changer, media_type=cfg.library.type, default_capacity=capacity
        )
    ctx.wake()  # work that waited for a stuck volume may go now
    return report


def export(ctx: AdminContext, volume: str) -> dict[str, Any]:
    """Hand a volume out through a mail slot; its recalls are refused from now on."""
    previous = operations.mark_exporting(ctx.cat, volume)
    try:
        ctx.release_volume(volume)
        with ctx.changer() as changer:
            return operations.export_volume(ctx.cat, changer, volume)
    except BaseException:
        operations.undo_exporting(ctx.cat, volume, previous)
        raise


def clean(ctx: AdminContext, drive: str) -> dict[str, Any]:
    """Have a drive cleaned between sessions."""
    known = DriveTable(ctx.cat).names()
    if drive not in known:
        raise ArchiveError(f"no drive named {drive!r} (see reelfs drives)")
    cleaning.mark_needed(ctx.cat, drive, "requested by the operator")
    ctx.wake()
    answer: dict[str, Any] = {"drive": drive, "queued": True}
    if not ctx.online:
        answer["note"] = "the drive is cleaned when the archive is next mounted"
    return answer

"""A mover's cleaning session: a cleaning cartridge into the (empty) drive, the drive's
cleaning cycle, the cartridge home; which cartridge and what its use counts for is the
library's cleaning policy (backend.library.cleaning)."""

from __future__ import annotations

import logging

from backend.library import cleaning
from backend.mover.context import MoverContext
from backend.mover.states import Session
from drivers.tape import TapeError

log = logging.getLogger("reelfs.cleaning")


def check_drive(ctx: MoverContext) -> None:
    """Ask the drive whether it wants cleaning (reading TapeAlert); remember the answer."""
    try:
        if ctx.drive.needs_cleaning():
            cleaning.mark_needed(ctx.cat, ctx.name, "the drive asks for cleaning (TapeAlert)")
    except TapeError as e:
        log.debug("%s: could not read TapeAlert: %s", ctx.name, e)


def clean_session(ctx: MoverContext, limit: int) -> bool:
    """Clean the (empty) drive; True when it was cleaned."""
    assert ctx.mounted is None
    for label, uses in cleaning.cartridges(ctx.cat):
        with ctx.changer_lock:
            el = ctx.changer.inventory().find(label)
            if el is None:
                continue  # not in the library right now
            home = el.address
            ctx.to(Session.CLEANING)
            ctx.changer.move(home, ctx.address)
        try:
            result = ctx.drive.clean()
        finally:
            with ctx.changer_lock:
                ctx.changer.move(ctx.address, home)
            ctx.to(Session.IDLE)
        if cleaning.record_use(ctx.cat, ctx.name, label, uses, limit, result):
            return result.cleaned
    cleaning.no_cartridge(ctx.cat, ctx.name)
    return False

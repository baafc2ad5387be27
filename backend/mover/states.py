"""The session states of a mover, CTA tape-daemon style, and the moves between them.

A mover is always in exactly one state, recorded in the catalog's `drives.session` so
that `reelfs drives` shows it. The moves it may make are a fixed table: anything else is
a bug (`IllegalTransition`), not something to carry on from silently.

    idle -> cleaner -> unmounting -> idle       a cartridge a crash left in the drive
    idle -> cleaning -> idle                    a cleaning cartridge's cycle
    idle -> mounting -> positioning -> transferring <-> verifying      a write
    idle -> mounting -> transferring                                   a recall, a job
    transferring | verifying | positioning | mounting -> mounted       work done
    mounted -> positioning | transferring                              more work
    mounting | positioning | transferring | verifying | mounted
            -> unloading -> unmounting -> idle                         a dismount
    any but cleaning/idle/down -> unmounting    the changer empties a failed drive
    any -> down                                 the drive is out of service
    any but down -> idle                        the session ended without a tape

`down` is final for the session: putting a drive back up starts a new one, in `idle`.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum


class Session(StrEnum):
    """The states of a mover's session (the values of `drives.session`)."""

    IDLE = "idle"
    CLEANER = "cleaner"  # putting home a cartridge a previous session left in the drive
    MOUNTING = "mounting"
    POSITIONING = "positioning"
    TRANSFERRING = "transferring"
    VERIFYING = "verifying"  # reading back what was just written
    MOUNTED = "mounted"  # CTA's "mounted, idle": the tape stays a while in case more comes
    UNLOADING = "unloading"
    UNMOUNTING = "unmounting"  # the changer puts the cartridge home
    CLEANING = "cleaning"
    DOWN = "down"


S = Session
#: with a volume in the drive, any of these may end in a dismount
_LOADED = frozenset({S.MOUNTING, S.POSITIONING, S.TRANSFERRING, S.VERIFYING, S.MOUNTED})

TRANSITIONS: dict[Session, frozenset[Session]] = {
    S.IDLE: frozenset({S.CLEANER, S.CLEANING, S.MOUNTING}),
    S.CLEANER: frozenset({S.UNMOUNTING}),
    S.CLEANING: frozenset(),
    S.MOUNTING: frozenset({S.POSITIONING, S.TRANSFERRING, S.MOUNTED, S.UNLOADING}),
    S.POSITIONING: frozenset({S.TRANSFERRING, S.MOUNTED, S.UNLOADING}),
    S.TRANSFERRING: frozenset({S.VERIFYING, S.MOUNTED, S.UNLOADING}),
    S.VERIFYING: frozenset({S.TRANSFERRING, S.MOUNTED, S.UNLOADING}),
    S.MOUNTED: frozenset({S.POSITIONING, S.TRANSFERRING, S.UNLOADING}),
    S.UNLOADING: frozenset({S.UNMOUNTING}),
    S.UNMOUNTING: frozenset(),
    S.DOWN: frozenset(),
}


def allowed(old: Session, new: Session) -> bool:
    """Whether a mover in `old` may go to `new`."""
    if old == S.DOWN:
        return False
    if new == old or new in (S.DOWN, S.IDLE):
        return True
    if new == S.UNMOUNTING:
        # the changer takes the cartridge out of a failed drive from wherever it was
        return old in _LOADED or old in (S.CLEANER, S.UNLOADING)
    return new in TRANSITIONS[old]


class IllegalTransition(RuntimeError):
    """A mover tried a move its state table does not have: a bug."""


class SessionState:
    """A mover's current state; every move is checked, then reported to `on_change`."""

    def __init__(self, on_change: Callable[[Session, Session], None]) -> None:
        self.state = S.IDLE
        self._on_change = on_change

    def to(self, new: Session) -> None:
        old = self.state
        if not allowed(old, new):
            raise IllegalTransition(f"a mover cannot go from {old} to {new}")
        self.state = new
        self._on_change(old, new)

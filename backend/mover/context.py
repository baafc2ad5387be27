"""What the parts of one mover share: its drive, the changer, its catalog connection,
the library manager, the daemon's hooks, and the state of its session.

A mover is one thread per drive (backend.mover.session). Mounting, writing, recalling,
operator jobs, cleaning and the error policy are modules of their own that act on this
context; only the mover's own thread touches it (the daemon reads a few fields for
`status`, and sets `down` and `dismount_requested` to steer it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backend.cache.store import Cache
from backend.catalog import events
from backend.catalog.db import Catalog
from backend.catalog.drives import DriveTable
from backend.config import Config
from backend.library.manager import LibraryManager
from backend.mover.states import Session, SessionState
from backend.supervision import Health
from drivers.tape import MediaChanger, TapeDrive

RETRY_DELAY = 5.0


@dataclass
class MoverHooks:
    """How a mover tells the rest of the daemon what happened (called from its thread)."""

    recall_done: Callable[[int, str | None], None] = lambda bitfile, error: None
    archived: Callable[[int], None] = lambda bitfile: None
    # Once per tape file with every file it archived, instead of `archived` per file: a
    # tape file of small files archives thousands at once, and a hook that waits for the
    # daemon's event loop costs a round trip each time.
    archived_many: Callable[[list[int]], None] | None = None
    # tests arm failures through the daemon's control socket ("inject_fault mover")
    fault: Callable[[str], bool] = lambda name: False
    # Tests make a competing change here, at a named point between what the mover read
    # and the statement acting on it, to show that statement is safe against it.
    race_point: Callable[[str], None] = lambda where: None


class VolumeUnavailable(Exception):
    """The volume cannot be used for this work now (not in the library, in another
    drive, refused at its label check, foreign for a write)."""


class MoverContext:
    """The shared state of one mover; see the module docstring."""

    def __init__(
        self,
        *,
        name: str,
        address: int,
        drive: TapeDrive,
        changer: MediaChanger,
        changer_lock: threading.Lock,
        lm: LibraryManager,
        config: Config,
        cache: Cache,
        hooks: MoverHooks,
    ) -> None:
        self.name = name
        self.address = address
        self.drive = drive
        self.changer = changer
        self.changer_lock = changer_lock
        self.lm = lm
        self.config = config
        self.cache = cache
        self.hooks = hooks
        self.block_size = config.library.block_size
        self.record_mode = self.block_size  # the mounted volume's: 0 for variable records
        self.mounted: str | None = None
        self.mount_started = 0.0
        self.last_activity = time.monotonic()
        self.state = SessionState(self._recorded)
        self.down = False
        self.dismount_requested = False  # the operator wants the mounted volume out
        # liveness, restarts and last error, kept by the mover's supervisor for `status`
        self.health = Health(name, "mover")
        self._cat: Catalog | None = None

    @property
    def cat(self) -> Catalog:
        """The mover thread's own catalog connection."""
        assert self._cat is not None, "the mover's catalog is opened in its thread"
        return self._cat

    @cat.setter
    def cat(self, value: Catalog | None) -> None:
        self._cat = value

    @property
    def session(self) -> str:
        return str(self.state.state)

    def to(self, session: Session) -> None:
        """Move the session to its next state (checked against backend.mover.states)."""
        self.state.to(session)

    def _recorded(self, old: Session, new: Session) -> None:
        if new == Session.DOWN:
            return  # the drive's down record carries its reason (mover.errors.drive_down)
        DriveTable(self.cat).set_session(self.name, str(new), self.mounted)

    def event(self, kind: str, message: str, *, level: str = "info", **details: Any) -> None:
        """An event about this drive."""
        events.record(self.cat, kind, message, subject=self.name, level=level, **details)

    def idle_for(self) -> float:
        return time.monotonic() - self.last_activity

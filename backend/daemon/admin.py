"""Operator commands inside the daemon: the `AdminContext` of a mounted archive.

Each command arriving on the control socket runs in a worker thread of its own with a
catalog connection of its own (a tape job may take hours; it must not hold up a flush).
A volume it needs is mounted by a free mover as a `TapeJob` (ahead of queued work, the
volume taken from another mover once that mover is done with it); the changer is shared
with the movers under their lock; queued work wakes the library manager; putting a drive
down or up stops or starts its mover.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Protocol, TypeVar

from backend.admin.context import CatalogOfItsOwn, VolumeAction
from backend.cache.store import Cache
from backend.catalog.volumes import VolumeClerk
from backend.config import Config
from backend.errors import ArchiveError
from backend.library.manager import LibraryManager
from backend.library.work import TapeJob
from backend.mover.session import Mover
from drivers.tape import Library, MediaChanger, TapeDrive

log = logging.getLogger("reelfs.daemon")

T = TypeVar("T")
#: how often a command waiting for its tape job looks whether the daemon is stopping
JOB_POLL = 0.5
#: how long a mover gets to finish its work and put its tape home when its drive is set down
DRIVE_STOP_TIMEOUT = 300.0
#: how long an export waits for the mover holding the volume to put it home
RELEASE_TIMEOUT = 120.0


class Daemon(Protocol):
    """What a command needs of the daemon (backend.daemon.archive.ArchiveDaemon)."""

    config: Config
    cache: Cache
    library: Library | None
    changer_lock: threading.Lock
    lm: LibraryManager

    def mover(self, name: str) -> Mover: ...

    def start_mover(self, name: str, address: int, drive: TapeDrive) -> Mover: ...

    def dismount_volume(self, label: str, timeout: float) -> None: ...


class DaemonContext(CatalogOfItsOwn):
    """The daemon's side of backend.admin.context.AdminContext, for one command."""

    online = True

    def __init__(self, daemon: Daemon, stopping: threading.Event) -> None:
        self.daemon = daemon
        self.stopping = stopping
        self.config: Config = daemon.config

    def close(self) -> None:
        self.close_catalog()

    @property
    def cache(self) -> Cache:
        return self.daemon.cache

    @contextlib.contextmanager
    def changer(self) -> Iterator[MediaChanger]:
        assert self.daemon.library is not None
        with self.daemon.changer_lock:
            yield self.daemon.library.changer

    def with_volume(
        self, label: str, action: VolumeAction[T], *, what: str, check_label: bool = False
    ) -> T:
        if VolumeClerk(self.cat).get(label) is None:
            raise ArchiveError(f"volume {label!r} is not in the catalog (see reelfs volumes)")
        lm = self.daemon.lm
        with lm.cond:
            in_service = [m.name for m in lm.movers.values() if not m.down]
        if not in_service:
            raise ArchiveError("no drive in service (see reelfs drives): nothing can read the tape")
        job = TapeJob(volume=label, action=action, what=what, check_label=check_label)
        lm.submit(job)
        while not job.done.wait(JOB_POLL):
            if lm.stopping or self.stopping.is_set():
                job.cancelled = True
                raise ArchiveError(f"{what}: the archive is being unmounted")
        if job.error is not None:
            raise ArchiveError(job.error)
        return job.result

    def release_volume(self, label: str) -> None:
        self.daemon.dismount_volume(label, RELEASE_TIMEOUT)

    def wake(self) -> None:
        self.daemon.lm.wake()

    def mover_running(self, drive: str) -> bool:
        mover = self.daemon.mover(drive)
        return mover.is_alive() and not mover.ctx.down

    def stop_mover(self, drive: str) -> None:
        mover = self.daemon.mover(drive)
        mover.ctx.down = True
        self.daemon.lm.set_down(drive)
        mover.join(DRIVE_STOP_TIMEOUT)

    def start_mover(self, drive: str) -> None:
        mover = self.daemon.mover(drive)
        mover.join(DRIVE_STOP_TIMEOUT)
        with self.daemon.lm.cond:
            self.daemon.lm.movers[drive].down = False
        self.daemon.start_mover(drive, mover.ctx.address, mover.ctx.drive)

    def progress(self, text: str) -> None:
        log.info("%s", text)

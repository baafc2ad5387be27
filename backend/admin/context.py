"""Where an operator command runs: the one interface its single implementation sees.

Every operator command (backend.admin.files, .library, .drives, .tapes) is a function
`handler(ctx, **args) -> dict` written against `AdminContext`. Two contexts implement it:

* the daemon's (backend.daemon.admin), when the archive is mounted: the command runs in
  a worker thread of the daemon; a volume it needs is mounted by a free mover (a
  `TapeJob`), the changer is shared with the movers under their lock, and queued work
  wakes the library manager;
* `LocalContext` here, when no daemon runs: the command takes the archive lock, opens
  the library itself, and puts a cartridge in a free drive for as long as it needs it
  (backend.library.offline).

Handlers never ask which one they have, except to word a note (`online`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

from backend.admin.lock import lock_archive
from backend.cache.store import Cache
from backend.catalog.db import Catalog, open_catalog
from backend.config import Config
from backend.library.offline import volume_in_drive
from backend.permissions import PRIVATE_UMASK
from drivers.library import open_library
from drivers.tape import Library, MediaChanger, TapeDrive

T = TypeVar("T")
#: what runs with a volume in a drive: `action(drive, cat)`
VolumeAction = Callable[[TapeDrive, Catalog], T]


class AdminContext(Protocol):
    """What an operator command may use, wherever it runs."""

    config: Config
    #: True in the daemon (the archive is mounted), False for a command run on its own
    online: bool

    @property
    def cat(self) -> Catalog:
        """A catalog connection of the command's own thread."""
        ...

    @property
    def cache(self) -> Cache:
        """The archive's cache (the daemon's own while it runs: its byte count is live)."""
        ...

    def changer(self) -> contextlib.AbstractContextManager[MediaChanger]:
        """The media changer, for the command alone while the block runs."""
        ...

    def with_volume(
        self, label: str, action: VolumeAction[T], *, what: str, check_label: bool = False
    ) -> T:
        """Run `action(drive, cat)` with `label` loaded in a drive and return its result;
        `cat` is a connection of the thread the action runs in."""
        ...

    def release_volume(self, label: str) -> None:
        """Make sure no drive holds `label` (a mover holding it puts it home)."""
        ...

    def wake(self) -> None:
        """Work was queued in the catalog: have it looked at now."""
        ...

    def mover_running(self, drive: str) -> bool:
        """Whether a mover serves `drive` now."""
        ...

    def stop_mover(self, drive: str) -> None:
        """The drive was set down: its mover finishes its work, puts its tape home, stops."""
        ...

    def start_mover(self, drive: str) -> None:
        """The drive was set up: a new mover serves it."""
        ...

    def progress(self, text: str) -> None:
        """Tell the operator how a long command is going."""
        ...


class CatalogOfItsOwn:
    """A context's catalog connection: opened when first used, in the command's thread."""

    config: Config
    _cat: Catalog | None = None

    @property
    def cat(self) -> Catalog:
        if self._cat is None:
            self._cat = open_catalog(self.config.catalog_path)
        return self._cat

    def close_catalog(self) -> None:
        if self._cat is not None:
            self._cat.close()
            self._cat = None


class LocalContext(CatalogOfItsOwn):
    """The archive without its daemon, for one command: holds the archive lock from
    `__enter__` to `__exit__`; the catalog and the library are opened when first used
    (rebuilding a catalog must not open the old catalog, cleaning a drive later needs no
    library)."""

    online = False

    def __init__(self, config: Config, *, progress: Callable[[str], None] | None = None) -> None:
        self.config = config
        self._progress = progress
        self._lock: int | None = None
        self._umask = PRIVATE_UMASK
        self._cache: Cache | None = None
        self._library: Library | None = None

    def __enter__(self) -> LocalContext:
        # what the command creates under the archive is private (backend.permissions)
        self._umask = os.umask(PRIVATE_UMASK)
        try:
            self._lock = lock_archive(self.config)
        except BaseException:
            os.umask(self._umask)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._library is not None:
                self._library.close()
            self.close_catalog()
        finally:
            if self._lock is not None:
                os.close(self._lock)
                self._lock = None
            os.umask(self._umask)

    @property
    def cache(self) -> Cache:
        if self._cache is None:
            c = self.config.cache
            self._cache = Cache(c.path, c.size, c.high_watermark, c.low_watermark)
        return self._cache

    @property
    def library(self) -> Library:
        if self._library is None:
            self._library = open_library(self.config.library.spec, self.config.archive)
        return self._library

    @contextlib.contextmanager
    def changer(self) -> Iterator[MediaChanger]:
        yield self.library.changer

    def with_volume(
        self, label: str, action: VolumeAction[T], *, what: str, check_label: bool = False
    ) -> T:
        with volume_in_drive(self.library, label, self.cat) as drive:
            return action(drive, self.cat)

    def release_volume(self, label: str) -> None:
        pass  # no mover runs: a cartridge in a drive stays there, and export says so

    def wake(self) -> None:
        pass  # queued work is looked at when the archive is next mounted

    def mover_running(self, drive: str) -> bool:
        return False

    def stop_mover(self, drive: str) -> None:
        pass

    def start_mover(self, drive: str) -> None:
        pass

    def progress(self, text: str) -> None:
        if self._progress is not None:
            self._progress(text)


Handler = Callable[..., dict[str, Any]]

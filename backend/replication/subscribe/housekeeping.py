"""Housekeeping of the state DB: at the start, partial downloads whose temp file is gone
are forgotten (they cannot resume); every `INTERVAL` seconds, winnow entries older than
`winnow_window` expire."""

from __future__ import annotations

import os

from backend.catalog.subscriptions import SubscriptionState
from backend.replication.subscribe.config import SubscribeConfig

from .store import ArchiveStore

INTERVAL = 60.0  # seconds between periodic rounds


class Housekeeping:
    """Keeps the state DB to what can still be of use."""

    def __init__(self, cfg: SubscribeConfig, state: SubscriptionState, store: ArchiveStore):
        self.cfg = cfg
        self.state = state
        self.store = store
        self._next = 0.0

    def at_start(self) -> None:
        """Partial downloads whose temp file vanished cannot be resumed: forget them."""
        mnt = self.store.mountpoint()
        for inf in self.state.all_inflight():
            if not os.path.lexists(mnt + inf.temp):
                self.state.end_inflight(inf.rel_path)

    def tick(self, now: float) -> None:
        """A periodic round, if one is due at `now` (monotonic)."""
        if now < self._next:
            return
        self._next = now + INTERVAL
        if self.cfg.winnow_window > 0:
            self.state.expire_winnow(self.cfg.winnow_window)

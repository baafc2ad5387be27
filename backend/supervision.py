"""Supervision of the daemon's long-running workers (movers, poster, eviction loop).

Nothing dies unseen. Each worker carries a `Health` record (alive, state, restarts, last
error) that `reelfs status` and `reelfs drives` show; `Supervisor.run` runs a worker's
body and decides what an exception means:

* the catalog busy or locked by another process (SQLite's "database is locked" after its
  own busy timeout) is not the worker's fault: it pauses, retries with back-off until the
  catalog is free, and resumes; the wait is one `catalog_busy` event, recorded once the
  catalog takes writes again (an event is itself a catalog write);
* any other exception is a crash: an event, then a restart by the worker's own restart
  hook (a mover first puts its tape home: a cleaner session), as long as the
  `RestartPolicy` allows (CTA and Enstore style: N restarts in M minutes); beyond it the
  worker gives up with the reason ("failed 4 times in 10 min: ...").
"""

from __future__ import annotations

import collections
import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backend.catalog import events
from backend.catalog.db import Catalog

log = logging.getLogger("reelfs.supervision")

#: first and longest pause between two tries of a busy catalog
BUSY_BACKOFF_FIRST = 0.5
BUSY_BACKOFF_MAX = 8.0


def catalog_busy(e: BaseException) -> bool:
    """Whether `e` is SQLite refusing because another connection holds the lock."""
    if not isinstance(e, sqlite3.OperationalError):
        return False
    msg = str(e).lower()
    return "locked" in msg or "busy" in msg


class RestartPolicy:
    """At most `max_restarts` restarts within `window` seconds; the next crash gives up."""

    def __init__(self, max_restarts: int = 3, window: float = 600.0) -> None:
        self.max_restarts = max_restarts
        self.window = window
        self._crashes: collections.deque[float] = collections.deque()

    def crashed(self, now: float) -> bool:
        """Count a crash at `now` (monotonic); True if a restart is still allowed."""
        self._crashes.append(now)
        while self._crashes and now - self._crashes[0] > self.window:
            self._crashes.popleft()
        return len(self._crashes) <= self.max_restarts

    @property
    def recent(self) -> int:
        return len(self._crashes)

    def describe(self) -> str:
        minutes = self.window / 60
        span = f"{minutes:g} min" if minutes >= 1 else f"{self.window:g} s"
        return f"failed {self.recent} times in {span}"


@dataclass
class Health:
    """What a worker's supervisor knows of it, for `status` (read from other threads)."""

    name: str
    kind: str
    alive: bool = False
    state: str = "starting"  # running | paused: catalog busy | restarting | gave up | stopped
    restarts: int = 0
    last_error: str | None = None
    last_error_ns: int | None = None
    busy_waits: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set(self, **kw: Any) -> None:
        with self._lock:
            for k, v in kw.items():
                setattr(self, k, v)

    def error(self, message: str) -> None:
        self.set(last_error=message, last_error_ns=time.time_ns())

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "worker": self.name,
                "kind": self.kind,
                "alive": self.alive,
                "state": self.state,
                "restarts": self.restarts,
                "last_error": self.last_error,
                "last_error_ns": self.last_error_ns,
                "busy_waits": self.busy_waits,
            }


class Supervisor:
    """Runs one worker's body under the policy of the module docstring.

    `body()` returns when the worker is done (stopping). `restart(error)` prepares a
    new run after a crash (a mover's cleaner session); `resume()` after a busy catalog
    (a mover puts back the requests it held); `give_up(reason)` is the end (a mover
    takes its drive down). `stopping()` ends every wait early.
    """

    def __init__(
        self,
        health: Health,
        *,
        cat: Callable[[], Catalog],
        stopping: Callable[[], bool],
        policy: RestartPolicy | None = None,
        subject: str | None = None,
        crash_event: str = "worker_crashed",
    ) -> None:
        self.health = health
        self.crash_event = crash_event
        self.policy = policy or RestartPolicy()
        self._cat = cat
        self._stopping = stopping
        self.subject = subject or health.name
        self._pause = threading.Event()  # set only to cut a wait short (stop)

    def wake(self) -> None:
        self._pause.set()

    def run(
        self,
        body: Callable[[], None],
        *,
        restart: Callable[[str], None] = lambda error: None,
        resume: Callable[[], None] = lambda: None,
        give_up: Callable[[str], None] = lambda reason: None,
    ) -> None:
        h = self.health
        h.set(alive=True, state="running")
        step: Callable[[], None] = body
        try:
            while not self._stopping():
                try:
                    step()
                    return
                except Exception as e:
                    if catalog_busy(e):
                        self.wait_catalog(str(e))
                        if step is body:  # else a restart was under way: it is run again
                            step = self._after(resume, body)
                        continue
                    why = f"{type(e).__name__}: {e}"
                    log.exception("worker %s crashed", h.name)
                    h.error(why)
                    allowed = self.policy.crashed(time.monotonic())
                    if not allowed:
                        reason = f"{self.policy.describe()}: {why}"
                        h.set(state="gave up")
                        self._record(
                            "worker_gave_up", f"{h.kind} {h.name} gave up: {reason}", "error"
                        )
                        self._guarded(functools.partial(give_up, reason))
                        return
                    h.set(restarts=h.restarts + 1, state="restarting")
                    self._record(
                        self.crash_event,
                        f"{h.kind} {h.name} crashed ({why}); restart "
                        f"{self.policy.recent} of {self.policy.max_restarts}",
                        "error",
                    )
                    step = self._after(functools.partial(restart, why), body)
        finally:
            h.set(alive=False, state="gave up" if h.state == "gave up" else "stopped")

    def _after(self, first: Callable[[], None], then: Callable[[], None]) -> Callable[[], None]:
        def step() -> None:
            first()
            self.health.set(state="running")  # restarted (or resumed): at work again
            then()

        return step

    def wait_catalog(self, why: str) -> float:
        """Pause until the catalog takes writes again (back-off between tries); one
        `catalog_busy` event for the whole wait. Returns the seconds waited."""
        h = self.health
        started = time.monotonic()
        h.set(state="paused: catalog busy", busy_waits=h.busy_waits + 1)
        h.error(f"catalog busy: {why}")
        log.warning("worker %s: catalog busy (%s); pausing", h.name, why)
        delay = BUSY_BACKOFF_FIRST
        while not self._stopping():
            if self._try_write():
                break
            self._pause.wait(delay)
            delay = min(BUSY_BACKOFF_MAX, delay * 2)
        waited = time.monotonic() - started
        h.set(state="running")
        self._record(
            "catalog_busy",
            f"{h.kind} {h.name} paused {waited:.0f} s: the catalog was busy ({why}); resumed",
            "warning",
            waited=round(waited, 3),
        )
        return waited

    def _try_write(self) -> bool:
        try:
            with self._cat().tx():
                pass
            return True
        except sqlite3.OperationalError as e:
            if catalog_busy(e):
                return False
            raise

    def _record(self, kind: str, message: str, level: str, **details: Any) -> None:
        """An event if the catalog takes it; a worker's trouble is never hidden by it."""
        try:
            events.record(self._cat(), kind, message, subject=self.subject, level=level, **details)
        except Exception as e:
            log.error("could not record %s event (%s): %s", kind, e, message)

    def _guarded(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.exception("worker %s: giving up failed", self.health.name)

"""Ordering and the worker pool: messages about the same path (or a path and what is below
it) are applied in arrival order; others run side by side on `parallel` threads.

Work is `pending` (waiting for a thread or for an earlier message on its paths),
`running`, or `held` (the archive was not mounted: kept, unacknowledged, until it is
back). Finished work comes back through a queue, to the flow's thread.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from .work import Outcome, Work

log = logging.getLogger("reelfs.subscribe")


def conflict(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Two sets of relPaths touch: a path in both, or one above the other."""
    for p in a:
        for q in b:
            if p == q or p.startswith(q + "/") or q.startswith(p + "/"):
                return True
    return False


class Dispatcher:
    """Starts work in order on a pool of threads running `work`."""

    def __init__(self, parallel: int, work: Callable[[Work], Outcome]) -> None:
        self.parallel = parallel
        self.work = work
        self.pool = ThreadPoolExecutor(parallel, thread_name_prefix="subscribe")
        self.done: queue.Queue[tuple[Work, Outcome]] = queue.Queue()
        self.pending: list[Work] = []
        self.running: dict[int, Work] = {}
        self.held: list[Work] = []

    def add(self, w: Work) -> None:
        self.pending.append(w)

    @property
    def busy(self) -> bool:
        return bool(self.running or self.pending)

    def in_hand(self) -> int:
        """Messages taken and not finished (pending, running or held)."""
        return len(self.pending) + len(self.running) + len(self.held)

    def retry_ids(self) -> set[int]:
        """The retry-queue rows of the work in hand."""
        return {
            w.retry_id
            for w in [*self.pending, *self.running.values(), *self.held]
            if w.retry_id is not None
        }

    def start(self) -> None:
        """Start pending work in order; a message waits for earlier ones on its paths."""
        if not self.pending or len(self.running) >= self.parallel:
            return
        blocked = [w.paths for w in self.running.values()]
        started: set[int] = set()
        for w in self.pending:
            if len(self.running) >= self.parallel:
                break
            if any(conflict(w.paths, b) for b in blocked):
                blocked.append(w.paths)
                continue
            blocked.append(w.paths)
            started.add(w.seq)
            self.running[w.seq] = w
            fut = self.pool.submit(self.work, w)
            fut.add_done_callback(lambda f, w=w: self.done.put((w, _result(f))))
        if started:
            self.pending = [w for w in self.pending if w.seq not in started]

    def wait(self, timeout: float) -> tuple[Work, Outcome] | None:
        """The next work to finish, waiting up to `timeout` seconds for one."""
        try:
            item = self.done.get(timeout=timeout)
        except queue.Empty:
            return None
        return self._ended(item)

    def finished(self) -> list[tuple[Work, Outcome]]:
        """Work finished since the last call, without waiting."""
        out = []
        while True:
            try:
                item = self.done.get_nowait()
            except queue.Empty:
                return out
            out.append(self._ended(item))

    def _ended(self, item: tuple[Work, Outcome]) -> tuple[Work, Outcome]:
        self.running.pop(item[0].seq, None)
        return item

    def hold(self, w: Work) -> None:
        self.held.append(w)

    def resume(self) -> int:
        """Held work goes back in line, in arrival order; returns how much there was."""
        n = len(self.held)
        self.pending = sorted(self.held + self.pending, key=lambda w: w.seq)
        self.held = []
        return n

    def shutdown(self) -> None:
        """Start nothing more; work not started is dropped (its delivery comes back)."""
        self.pool.shutdown(wait=False, cancel_futures=True)


def _result(fut: Future[Outcome]) -> Outcome:
    exc = fut.exception()
    if exc is not None:
        # the worker catches everything; this is a bug: keep the message for a later try
        log.error("worker failed: %r", exc)
        return Outcome(False, text=f"internal error: {exc}")
    return fut.result()

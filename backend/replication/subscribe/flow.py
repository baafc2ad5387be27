"""The flow loop of `reelfs subscribe`: gather -> filter -> work -> report, and the stop.

One thread runs the loop: it takes deliveries (`gather`) while fewer than `prefetch`
messages are in hand, passes them through the `filter`, puts what passes in line for the
worker threads (`dispatch`, which runs `worker`), brings due messages back from the retry
queue (`retry`), acknowledges what is done and holds what could not be stored because the
archive is not mounted, checking every `MOUNT_CHECK` seconds whether it is back.
Reports are published from the state DB's outbox by their own thread (`reports`).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from backend.catalog.subscriptions import SubscriptionState
from backend.replication.credentials import Credentials
from backend.replication.subscribe.config import SubscribeConfig

from .blocks import BlockReceiver
from .dispatch import Dispatcher
from .fetch import Fetcher, RateLimiter
from .fileops import FileOps
from .files import FileReceiver
from .filter import Filter
from .gather import Gatherer
from .housekeeping import Housekeeping
from .reports import Reporter, ReportPublisher
from .retry import Retries
from .store import ArchiveStore
from .streams import Streams
from .work import Outcome, Stats, Work
from .worker import Worker

log = logging.getLogger("reelfs.subscribe")

MOUNT_CHECK = 2.0  # seconds between checks while the archive is not mounted
RETRY_CHECK = 0.25  # seconds between looks at the retry queue


class Subscriber:
    """A running subscription: consumer, dispatcher, workers, report publisher."""

    def __init__(
        self,
        cfg: SubscribeConfig,
        credentials: Credentials,
        socket_path: Path,
        *,
        archive_posts: bool = True,
    ) -> None:
        self.cfg = cfg
        self.credentials = credentials
        self.state = SubscriptionState(cfg.state_db)
        self.store = ArchiveStore(socket_path, cfg.directory, fsync=cfg.fsync, posts=archive_posts)
        fetcher = Fetcher(
            credentials,
            file_roots=cfg.file_url_roots,
            timeout=cfg.timeout,
            limiter=RateLimiter(cfg.bytes_per_second),
        )
        self.publisher = ReportPublisher(
            cfg.state_db,
            cfg.broker,
            credentials=credentials,
            logger=logging.getLogger("reelfs.subscribe.reports"),
            max_backoff=10.0,
        )
        self.reporter = Reporter(cfg, self.state, self.publisher)
        self.stats = Stats()
        self.gather = Gatherer(cfg, credentials)
        self.filter = Filter(cfg, self.reporter, self.stats)
        self.streams = Streams(fetcher, cfg.parallel)
        files = FileReceiver(cfg, self.state, self.store, self.streams, self.reporter)
        self.blocks = BlockReceiver(self.state, self.store, self.streams, files, cfg.parallel)
        self.retries = Retries(cfg, self.state, self.reporter, self.stats)
        worker = Worker(
            cfg,
            self.state,
            self.store,
            files,
            self.blocks,
            FileOps(self.state, self.store, files),
            self.retries,
            self.reporter,
            self.stats,
        )
        self.dispatcher = Dispatcher(cfg.parallel, worker.run)
        self.housekeeping = Housekeeping(cfg, self.state, self.store)
        self._next_mount_check = 0.0

    def run(
        self, stop: threading.Event, *, once: bool = False, timeout: float | None = None
    ) -> int:
        """Consume until `stop` is set (or, with `once`, until nothing is left to do).
        Returns the exit code: 0, or 1 if `timeout` passed with work left."""
        self.store.mountpoint()  # MountUnavailable: refuse to start
        self.housekeeping.at_start()
        deadline = time.monotonic() + timeout if timeout else None
        # declare the queue and its bindings before anything else: from then on nothing
        # announced for us is lost, even while we work through a backlog
        if not self.gather.connect(stop, deadline):
            self.shutdown(grace=0)
            return 1 if deadline is not None and once else 0
        self.publisher.start()
        next_retries = 0.0
        idle_since: float | None = None
        consumer = self.gather.consumer
        log.info(
            "subscribed to %s (%s) as %s, queue %s, storing into %s%s",
            ", ".join(self.cfg.exchanges),
            ", ".join(self.cfg.subtopics),
            consumer.url,
            consumer.queue,
            self.cfg.archive,
            self.cfg.directory,
        )
        dispatcher = self.dispatcher
        code = 0
        try:
            while not stop.is_set():
                now = time.monotonic()
                self._collect()
                if now >= next_retries:
                    self._schedule_retries()
                    next_retries = now + RETRY_CHECK
                self.housekeeping.tick(now)
                if dispatcher.held and now >= self._next_mount_check:
                    self._check_mount()
                dispatcher.start()
                busy = dispatcher.busy
                room = dispatcher.in_hand() < self.cfg.prefetch
                got = None
                if self.gather.waiting_to_reconnect(now):
                    room = False  # broker down: reconnect at the backoff's pace, not ours
                if room and not dispatcher.held:
                    got = self.gather.get(0.02 if busy else 0.25, stop)
                    if got is not None:
                        w = self.filter.check(got)
                        if w is None:
                            self.gather.drop(got)
                        else:
                            dispatcher.add(w)
                        idle_since = None
                        continue
                else:
                    self._wait_done(0.05)
                    self.gather.tick()
                if once:
                    if busy or dispatcher.held or got is not None:
                        idle_since = None
                    elif idle_since is None:
                        idle_since = now
                    elif now - idle_since >= 1.0 and self._finished():
                        break
                if deadline is not None and time.monotonic() > deadline:
                    if once:
                        log.warning("--once: timed out with work left")
                        code = 1
                    break
        finally:
            self.shutdown()
        return code

    def _finished(self) -> bool:
        """--once: the queue is empty, nothing to retry, every report published."""
        if self.state.retry_count() or self.state.reports_pending():
            return False
        return self.gather.queue_empty()

    def shutdown(self, grace: float = 15.0) -> None:
        """Stop taking messages; let running work finish for `grace` seconds, abandon the
        rest (unacknowledged: the broker gives it back; temp files resume)."""
        deadline = time.monotonic() + grace
        while self.dispatcher.running and time.monotonic() < deadline:
            self._wait_done(0.1)
            self._collect()
        self.streams.stopping.set()
        while self.dispatcher.running and time.monotonic() < deadline + 5:
            self._wait_done(0.1)
            self._collect()
        self.dispatcher.shutdown()
        self.blocks.pool.shutdown(wait=False, cancel_futures=True)
        self.gather.close()
        # reports of what was done: give the publisher a moment to send them
        end = time.monotonic() + 5
        while self.publisher.started and self.state.reports_pending() and time.monotonic() < end:
            self.publisher.wake()
            time.sleep(0.05)
        self.publisher.stop()
        self.reporter.close()
        log.info("stopped: %s", dict(self.stats.counts))

    def close(self) -> None:
        self.state.close()

    # -- finished work -----------------------------------------------------------------

    def _wait_done(self, timeout: float) -> None:
        item = self.dispatcher.wait(timeout)
        if item is not None:
            self._complete(*item)

    def _collect(self) -> None:
        for item in self.dispatcher.finished():
            self._complete(*item)

    def _complete(self, w: Work, outcome: Outcome) -> None:
        if self.gather.settle(w, outcome):
            return
        if not self.dispatcher.held:
            log.warning("archive unavailable (%s): holding messages until it is back", outcome.text)
        self.dispatcher.hold(w)
        self._next_mount_check = time.monotonic() + MOUNT_CHECK

    def _check_mount(self) -> None:
        self._next_mount_check = time.monotonic() + MOUNT_CHECK
        if self.store.alive():
            log.info(
                "archive mounted again: resuming %d held message(s)", len(self.dispatcher.held)
            )
            self.dispatcher.resume()

    def _schedule_retries(self) -> None:
        room = self.cfg.prefetch - self.dispatcher.in_hand()
        due = self.retries.due(room, self.dispatcher.retry_ids(), self.filter.work_for)
        for w in due:
            self.dispatcher.add(w)

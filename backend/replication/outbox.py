"""Durable outbox: a message is a SQLite row first, published with confirms, then deleted.

The row is written in the same transaction as the change it announces (`enqueue` takes the
caller's connection and does not commit), so a change is never committed without its
announcement, whatever crashes afterwards. A `Publisher` drains the table in id order, in
batches, publishing each batch with publisher confirms and deleting only the rows the
broker confirmed. Broker stops, restarts and process kills lose nothing: delivery is at
least once (a row whose confirm was lost is sent again), and the order of rows is kept (a
batch is retried from its first unconfirmed row, so per topic the last message seen is the
last one enqueued).

Works on any `sqlite3.Connection` in WAL mode holding the table (its SQL is
`backend.catalog.outbox`): the archive catalog, and the state DBs of `reelfs watch` and
`reelfs subscribe`.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from backend.catalog import events
from backend.catalog import outbox as rows
from backend.catalog.db import open_catalog
from backend.catalog.statedb import connect, wait_for_locks
from backend.supervision import Health, RestartPolicy

from .broker import Broker, BrokerUnavailable, BrokerURL
from .credentials import Credentials
from .message import DEFAULT_TOPIC_PREFIX, encode, topic_for, truncate_topic

log = logging.getLogger(__name__)


def enqueue(conn: sqlite3.Connection, exchange: str, topic: str, message: Mapping[str, Any]) -> int:
    """Add a message to the outbox inside the caller's transaction; returns its row id.

    The message is validated and serialised now, so a bad message fails here, where the
    caller can still roll back. The caller commits (in autocommit mode the insert is its
    own transaction). Call `Publisher.wake()` after committing to publish at once.
    """
    body = encode(message).decode("utf-8")
    return rows.add(conn, exchange, truncate_topic(topic), body)


def enqueue_message(
    conn: sqlite3.Connection,
    exchange: str,
    message: Mapping[str, Any],
    topic_prefix: str = DEFAULT_TOPIC_PREFIX,
) -> int:
    """`enqueue` with the topic derived from relPath the sr3 way."""
    return enqueue(conn, exchange, topic_for(message["relPath"], topic_prefix), message)


class Publisher:
    """Drains an outbox table to a broker; run it as a thread (`start`/`stop`) or call `run`.

    `db` is a database path or a function returning a new connection (used from the
    publishing thread only). `broker` is a URL (password from `credentials`) or a `Broker`.
    """

    def __init__(
        self,
        db: str | os.PathLike[str] | Callable[[], sqlite3.Connection],
        broker: str | BrokerURL | Broker,
        *,
        credentials: Credentials | None = None,
        batch_size: int = 500,
        poll_interval: float = 0.5,
        confirm_timeout: float = 30.0,
        max_backoff: float = 30.0,
        logger: logging.Logger = log,
    ) -> None:
        self._db = db
        self.broker = (
            broker
            if isinstance(broker, Broker)
            else Broker(
                broker,
                credentials=credentials,
                logger=logger,
                client_name="reelfs-outbox",
                max_backoff=max_backoff,
            )
        )
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.confirm_timeout = confirm_timeout
        self.logger = logger
        self.published = 0
        self._conn: sqlite3.Connection | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.health_record = Health("publisher", "publisher")

    # -- database --------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            if callable(self._db):
                self._conn = self._db()
                wait_for_locks(self._conn)
            else:
                self._conn = connect(self._db)
            rows.ensure_outbox(self._conn)
        return self._conn

    def pending(self) -> int:
        return rows.pending_count(self._connection())

    def _delete(self, ids: list[int]) -> None:
        rows.delete(self._connection(), ids)

    def _note_failure(self, row_id: int, error: str) -> None:
        rows.note_failure(self._connection(), row_id, error)

    # -- publishing ------------------------------------------------------------------

    def drain_once(self) -> int:
        """Publish one batch of the oldest rows; returns how many were confirmed and deleted.

        Raises `BrokerUnavailable` after deleting the rows confirmed before the failure.
        """
        batch = rows.oldest(self._connection(), self.batch_size)
        if not batch:
            return 0
        items = [(ex, topic, body.encode("utf-8")) for _, ex, topic, body in batch]
        try:
            confirmed = self.broker.publish_batch(items, confirm_timeout=self.confirm_timeout)
        except BrokerUnavailable as exc:
            self._delete([r[0] for r in batch[: exc.confirmed]])
            self.published += exc.confirmed
            if exc.confirmed < len(batch):
                self._note_failure(batch[exc.confirmed][0], str(exc))
            raise
        self._delete([r[0] for r in batch[:confirmed]])
        self.published += confirmed
        if confirmed < len(batch):
            self._note_failure(batch[confirmed][0], "nacked by broker")
        return confirmed

    def wake(self) -> None:
        """Publish now rather than at the next poll (call after committing an enqueue)."""
        self._wake.set()

    def run(self, stop: threading.Event | None = None) -> None:
        """Publish until `stop` is set: batches back to back while rows remain, otherwise
        wait for `wake()` or `poll_interval` (rows enqueued by other processes)."""
        stop = stop or self._stop
        broker = self.broker
        while not stop.is_set():
            if not broker.connected and not broker.connect_with_backoff(stop):
                break
            self._wake.clear()
            try:
                n = self.drain_once()
            except BrokerUnavailable as exc:
                # The link state already logged the failure; wait before reconnecting.
                self.health_record.error(f"broker unavailable: {exc}")
                stop.wait(broker.backoff.next_delay())
                continue
            except sqlite3.OperationalError as exc:
                self.logger.warning("outbox: database busy or unreadable (%s); retrying", exc)
                self.health_record.error(f"catalog busy or unreadable: {exc}")
                stop.wait(1.0)
                continue
            if n >= self.batch_size:
                continue
            if n == 0 or not self._has_rows():
                self._wake.wait(self.poll_interval)
                broker.tick()
        broker.close()

    def _has_rows(self) -> bool:
        return rows.has_rows(self._connection())

    def run_until_empty(self, timeout: float) -> bool:
        """Publish until the outbox is empty or `timeout` passes; True if empty."""
        deadline = time.monotonic() + timeout
        stop = threading.Event()
        broker = self.broker
        while self._has_rows():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if not broker.connected and not broker.connect_with_backoff(
                stop, time.monotonic() + remaining
            ):
                return False
            try:
                self.drain_once()
            except BrokerUnavailable:
                time.sleep(min(broker.backoff.next_delay(), max(0.0, remaining)))
        return True

    def start(self) -> threading.Thread:
        """Run in a daemon thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._supervised, name="reelfs-outbox", daemon=True)
        self._thread.start()
        return self._thread

    def _supervised(self) -> None:
        """`run`, restarted after an unexpected error (a few times in `RestartPolicy`'s
        window, then it gives up); each crash is logged, kept in `health` and, for an
        outbox in a catalog, an event."""
        h = self.health_record
        policy = RestartPolicy()
        h.set(alive=True, state="running")
        try:
            while not self._stop.is_set():
                try:
                    self.run()
                    return
                except Exception as e:
                    why = f"{type(e).__name__}: {e}"
                    self.logger.exception("outbox publisher crashed")
                    h.error(why)
                    self._conn = None  # a fresh connection for the next run
                    if not policy.crashed(time.monotonic()):
                        h.set(state="gave up")
                        self._event(
                            "worker_gave_up", f"publisher gave up: {policy.describe()}: {why}"
                        )
                        return
                    h.set(restarts=h.restarts + 1)
                    self._event("worker_crashed", f"publisher crashed ({why}); restarted")
                    self._stop.wait(1.0)
        finally:
            h.set(alive=False, state="gave up" if h.state == "gave up" else "stopped")

    def _event(self, kind: str, message: str) -> None:
        if callable(self._db):
            return
        try:
            cat = open_catalog(Path(self._db))
            try:
                events.record(cat, kind, message, subject="publisher", level="error")
            finally:
                cat.close()
        except Exception as e:
            self.logger.error("could not record %s (%s): %s", kind, e, message)

    def health(self) -> dict[str, Any]:
        """Liveness and last error, for `status`."""
        return {
            **self.health_record.to_json(),
            "alive": self._thread is not None and self._thread.is_alive(),
        }

    @property
    def started(self) -> bool:
        """The thread of `start` runs (until `stop`)."""
        return self._thread is not None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread started by `start` (rows left stay for the next run)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.close()

    def close(self) -> None:
        self.broker.close()
        if self._conn is not None:
            self._conn.close()
        self._conn = None

"""The gather step: a durable queue bound to `exchange` with `topic_prefix.subtopic` (each
exchange with each subtopic), read one delivery at a time at the pace the flow asks for.

A delivery is acknowledged only once nothing more can come of it: dropped by the filter,
or its work stored, reported or queued in the durable retry queue (`settle`). A kill -9
therefore leaves it unacknowledged and the broker gives it back; while the archive is not
mounted it is held, unacknowledged, until the archive is back.
"""

from __future__ import annotations

import logging
import threading
import time

from backend.replication.broker import Consumer, Delivery, persistent_queue_name
from backend.replication.credentials import Credentials
from backend.replication.message import binding_key
from backend.replication.subscribe.config import SubscribeConfig

from .work import Outcome, Work

log = logging.getLogger("reelfs.subscribe")


class Gatherer:
    """The subscription's consumer, reconnecting at its backoff's pace."""

    def __init__(self, cfg: SubscribeConfig, credentials: Credentials) -> None:
        queue_name = cfg.queue or persistent_queue_name(
            cfg.state_db.with_suffix(".queue"), cfg.broker_user, "subscribe", cfg.name
        )
        bindings = [
            (ex, binding_key(sub, cfg.topic_prefix))
            for ex in cfg.exchanges
            for sub in cfg.subtopics
        ]
        self.consumer = Consumer(
            cfg.broker,
            queue_name,
            bindings,
            prefetch=cfg.prefetch,
            credentials=credentials,
            logger=log,
            client_name="reelfs-subscribe",
            max_backoff=10.0,
        )
        self._next_connect = 0.0

    def connect(self, stop: threading.Event, deadline: float | None) -> bool:
        """Declare the queue and its bindings (retrying until `deadline`)."""
        return self.consumer.connect_with_backoff(stop, deadline)

    def waiting_to_reconnect(self, now: float) -> bool:
        """The broker is down and the backoff says not to try again yet."""
        return not self.consumer.connected and now < self._next_connect

    def get(self, timeout: float, stop: threading.Event) -> Delivery | None:
        got = self.consumer.get(timeout, stop)
        if not self.consumer.connected:
            self._next_connect = time.monotonic() + self.consumer.backoff.current
        return got

    def tick(self) -> None:
        self.consumer.tick()

    def queue_empty(self) -> bool:
        """Connected, and the broker has nothing ready in the queue."""
        try:
            if not self.consumer.connected:
                return False
            _, ready, _ = self.consumer.channel.queue_declare(self.consumer.queue, passive=True)
        except Exception:
            return False
        return ready == 0

    def close(self) -> None:
        self.consumer.close()

    @staticmethod
    def drop(d: Delivery) -> None:
        """A delivery the filter dropped: nothing more comes of it."""
        d.ack()

    @staticmethod
    def settle(w: Work, outcome: Outcome) -> bool:
        """Acknowledge `w`'s delivery (if any) now that its work ended; False when the
        outcome says to hold it instead."""
        if not outcome.ack:
            return False
        if w.delivery is not None:
            w.delivery.ack()
        return True

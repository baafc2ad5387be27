"""The durable retry queue: failed transfers wait in the state DB with exponential backoff
(or the server's Retry-After) and come back into the flow when due; after
`retry.attempts` the message is given up, reported and logged as an archive event.

A message is acknowledged to the broker once it sits in the queue, so the insertion is
the one commit made with synchronous=FULL (`SubscriptionState.add_retry`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backend.catalog.subscriptions import SubscriptionState
from backend.replication.message import parse_time
from backend.replication.subscribe.config import SubscribeConfig

from .reports import Reporter
from .work import Outcome, Stats, Work

log = logging.getLogger("reelfs.subscribe")


@dataclass
class Retries:
    """Schedules failed work for another attempt, or gives it up."""

    cfg: SubscribeConfig
    state: SubscriptionState
    reporter: Reporter
    stats: Stats

    def failed(
        self, w: Work, code: int, text: str, *, retry: bool, after: float | None = None
    ) -> Outcome:
        """`w` failed with report `code`: queue it again if `retry` may help and attempts
        are left (not before `after` seconds), else report it as given up."""
        attempts = w.attempts + 1
        policy = self.cfg.retry
        if retry and attempts < policy.attempts:
            delay = max(policy.delay(attempts), after or 0.0)
            w.retry_id = self.state.add_retry(
                w.rel,
                w.exchange,
                w.topic,
                w.msg,
                pub_ns=parse_time(w.msg["pubTime"]),
                attempts=attempts,
                delay=delay,
                error=text,
                retry_id=w.retry_id,
            )
            log.warning(
                "%s: %s; attempt %d of %d in %.1fs", w.rel, text, attempts, policy.attempts, delay
            )
            self.stats.add("retry")
            return Outcome(True, 0, text)
        if w.retry_id is not None:
            self.state.delete_retry(w.retry_id)
        final = f"{text} (given up after {attempts} attempt(s))" if retry else text
        self.reporter.report(w.msg, code, final)
        self.reporter.event(
            "subscribe_failed", final, subject=w.rel, code=code, exchange=w.exchange
        )
        self.stats.add(str(code))
        return Outcome(True, code, final)

    def due(
        self,
        room: int,
        busy: set[int],
        work_for: Callable[[dict[str, Any], str, str], Work | None],
    ) -> list[Work]:
        """Up to `room` queued messages due now, except the `busy` ones (in the flow
        already); one the patterns reject now (`work_for` gives None) leaves the queue."""
        if room <= 0:
            return []
        out = []
        for row in self.state.due_retries(room, busy):
            w = work_for(row.message, row.exchange, row.topic)
            if w is None:
                self.state.delete_retry(row.id)
                continue
            w.retry_id, w.attempts = row.id, row.attempts
            out.append(w)
        return out

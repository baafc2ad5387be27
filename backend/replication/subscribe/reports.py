"""Reports of `reelfs subscribe`, routed back to the source of each message only.

A report is the upstream message plus `report: {code, timeCompleted, message}` (sr3's
`Message.setReport` form; inlined `content` removed) and `report.cluster`, the site that
reports. It is published to the configured report exchanges of that message's source,
`xr_<source>` by default, never to a shared exchange unless configured: a source reads
its own reports and nobody else's (the broker's permissions give each source read access
to its `xr_<user>` only). The routing key is `<report_topic_prefix>.<dirs of relPath>`
(sr3 uses `v03` too, not `v03.report`).

`xreport`, the pump-wide report exchange of Sarracenia, is not written by default: it
would give every report to whoever may read it. A pump administrator who wants one log of
all reports adds it: `report_exchange = ["xr_{source}", "xreport"]`.

Codes (sr3's `known_report_codes`): 201 stored/applied, 202 nothing to do (the directory
or link was there), 205 stored with a recomputed checksum (`cod`), 304 not modified
(duplicate suppressed, or identical data already here), 403 refused (forged source,
`file:` URL outside the allowed roots), 404/410 the data is gone upstream, 417 invalid
message or data not matching its announcement, 422 no usable path, 499 transfer failed
after all retries.

Reports are durable: rows in the subscription's state DB outbox, published with confirms
by `ReportPublisher`. The subscriber's broker user needs write permission on the report
exchanges (a pump's feeder user has it; a source does not write others' `xr_`). An
exchange the broker refuses (permission, or missing and not declarable) has its reports
dropped with a warning instead of blocking the others.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import amqp.exceptions

from backend.catalog import events, outbox
from backend.catalog.db import CatalogError, open_catalog
from backend.catalog.subscriptions import SubscriptionState
from backend.replication.broker import BrokerUnavailable
from backend.replication.message import (
    MessageError,
    check_rel_path,
    make_report,
    now_time,
    parse_time,
    topic_for,
    validate,
)
from backend.replication.outbox import Publisher, enqueue
from backend.replication.subscribe.config import SubscribeConfig

log = logging.getLogger("reelfs.subscribe")

_XS = re.compile(r"^xs_([^_]+)")

# refusals of one exchange before its reports are dropped
MAX_REFUSALS = 3


def exchange_owner(exchange: str) -> str | None:
    """The user a source exchange `xs_<user>[_suffix]` belongs to (sr3's rule)."""
    m = _XS.match(exchange)
    return m.group(1) if m else None


def _refused(exc: BaseException) -> bool:
    """A broker answer that retrying will not change (permission, no such exchange)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, amqp.exceptions.AccessRefused | amqp.exceptions.NotFound):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class ReportPublisher(Publisher):
    """The outbox publisher, one exchange per batch, dropping refused exchanges' rows."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.undeclarable: set[str] = set()
        self.dropped = 0

    def drain_once(self) -> int:
        conn = self._connection()
        exchange = outbox.oldest_exchange(conn)
        if exchange is None:
            return 0
        rows = outbox.oldest_for(conn, exchange, self.batch_size)
        items = [(exchange, topic, body.encode("utf-8")) for _, topic, body, _ in rows]
        declare = exchange not in self.undeclarable
        try:
            if declare:
                try:
                    self.broker.declare_exchange(exchange)
                except BrokerUnavailable as exc:
                    if not _refused(exc):
                        raise
                    # may publish there without configuring it: try without declaring
                    self.undeclarable.add(exchange)
                    self.broker.connect()
            confirmed = self.broker.publish_batch(
                items, confirm_timeout=self.confirm_timeout, declare=False
            )
        except BrokerUnavailable as exc:
            done = [r[0] for r in rows[: exc.confirmed]]
            self._delete(done)
            self.published += exc.confirmed
            rest = rows[exc.confirmed :]
            if rest and _refused(exc):
                attempts = rest[0][3] + 1
                if attempts >= MAX_REFUSALS:
                    self._drop(exchange, str(exc))
                else:
                    self._note_failure(rest[0][0], str(exc))
            elif rest:
                self._note_failure(rest[0][0], str(exc))
            raise
        self._delete([r[0] for r in rows[:confirmed]])
        self.published += confirmed
        return confirmed

    def _drop(self, exchange: str, why: str) -> None:
        n = outbox.delete_exchange(self._connection(), exchange)
        self.dropped += n
        self.logger.warning(
            "reports: %d report(s) to exchange %s dropped: the broker refuses them (%s)",
            n,
            exchange,
            why,
        )


class Reporter:
    """Builds reports and queues them for the publisher thread; logs archive events."""

    def __init__(self, cfg: SubscribeConfig, state: SubscriptionState, publisher: Publisher | None):
        self.cfg = cfg
        self.state = state
        self.publisher = publisher
        self.sent = 0
        self._events = ArchiveEvents(cfg.archive / "catalog.db")

    def report(
        self,
        msg: Mapping[str, Any],
        code: int,
        text: str,
        *,
        owner: str | None = None,
    ) -> None:
        """Queue a report about `msg` for its source (or `owner`, the exchange's user,
        when the message's own source cannot be trusted or is unknown)."""
        source = owner or msg.get("source")
        if not source or not self.cfg.report_exchanges:
            log.debug("no report for %s (%d %s): no source", msg.get("relPath"), code, text)
            return
        try:
            rep = make_report(msg, code, text)
        except MessageError:
            rep = make_report(_skeleton(msg), code, text)
        rep["report"]["cluster"] = self.cfg.cluster
        topic = topic_for(rep["relPath"], self.cfg.report_topic_prefix)
        for exchange in self.cfg.report_exchanges_for(str(source)):
            with self.state.tx() as conn:
                enqueue(conn, exchange, topic, rep)
        self.sent += 1
        if self.publisher is not None:
            self.publisher.wake()

    def event(
        self, kind: str, message: str, *, subject: str = "", level: str = "warning", **details: Any
    ) -> None:
        """A line in our log and an event in the archive's event log (`reelfs events`)."""
        self._events.record(kind, message, subject=subject, level=level, **details)

    def close(self) -> None:
        self._events.close()


def _skeleton(raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """A valid message carrying what can be salvaged from an invalid one (for a report)."""
    raw = raw if isinstance(raw, Mapping) else {}
    out: dict[str, Any] = {"pubTime": now_time(), "baseUrl": "invalid:", "relPath": "invalid"}
    try:
        parse_time(raw.get("pubTime"))
        out["pubTime"] = raw["pubTime"]
    except MessageError:
        pass
    base = raw.get("baseUrl")
    if isinstance(base, str) and re.match(r"^[a-z][a-z0-9+.-]*:\S*$", base):
        out["baseUrl"] = base
    try:
        out["relPath"] = check_rel_path(raw.get("relPath"))
    except MessageError:
        if isinstance(raw.get("relPath"), str):
            out["rejected_relPath"] = raw["relPath"][:1000]
    for key in ("source", "from_cluster", "to_clusters"):
        if isinstance(raw.get(key), str):
            out[key] = raw[key]
    return validate(out)


def skeleton_of_body(body: bytes) -> dict[str, Any]:
    """Salvage fields of an undecodable body for its report."""
    import json

    try:
        parsed = json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        parsed = None
    return _skeleton(parsed if isinstance(parsed, dict) else None)


class ArchiveEvents:
    """Events in the archive's catalog (opened lazily; the daemon writes it too, WAL)."""

    def __init__(self, catalog_path: Path) -> None:
        self.path = catalog_path
        self.cat = None
        self.lock = threading.Lock()

    def record(self, kind: str, message: str, *, subject: str, level: str, **details: Any) -> None:
        with self.lock:
            try:
                if self.cat is None:
                    self.cat = open_catalog(self.path, any_thread=True)
                events.record(self.cat, kind, message, subject=subject, level=level, **details)
            except (CatalogError, sqlite3.Error, OSError) as exc:
                log.warning(
                    "%s %s: %s (not in the archive's event log: %s)", kind, subject, message, exc
                )

    def close(self) -> None:
        with self.lock:
            if self.cat is not None:
                self.cat.conn.close()
                self.cat = None

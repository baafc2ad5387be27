"""The filter step, in the consuming thread, per message:

* undecodable or invalid (bad JSON, missing fields, unknown identity method, relPath
  absolute or with `..`, malformed blocks or `reelfs_hops`) -> report 417, archive event;
* this site is `from_cluster` or in `reelfs_hops` -> dropped (a loop);
* consumed from `xs_<user>`: `source` must be `<user>` (set when absent); a forged source
  -> report 403 to `<user>`, archive event;
* accept/reject patterns on relPath (a rename also on its old name: renamed to a rejected
  name, the old name is removed here).

What passes becomes the `Work` the rest of the flow applies; the rest is dropped (and
acknowledged by the flow).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from backend.replication.broker import Delivery
from backend.replication.message import MessageError, check_rel_path, rename_old_relpath
from backend.replication.subscribe.config import SubscribeConfig

from .reports import Reporter, exchange_owner, skeleton_of_body
from .store import normalise
from .work import Stats, Work

log = logging.getLogger("reelfs.subscribe")


class Filter:
    """Decides which deliveries become work; numbers work in arrival order."""

    def __init__(self, cfg: SubscribeConfig, reporter: Reporter, stats: Stats) -> None:
        self.cfg = cfg
        self.reporter = reporter
        self.stats = stats
        self.seq = itertools.count()

    def check(self, d: Delivery) -> Work | None:
        """The work `d` asks for, or None if it is dropped (reported where due)."""
        try:
            msg = d.message()
            hops = msg.get("reelfs_hops", [])
            if not isinstance(hops, list) or not all(isinstance(h, str) for h in hops):
                raise MessageError("reelfs_hops: expected a list of cluster names")
        except MessageError as exc:
            self._malformed(d, exc)
            return None
        cluster = self.cfg.cluster
        if cluster in hops or msg.get("from_cluster") == cluster:
            log.info("loop: %s has passed through %s already; dropped", msg["relPath"], cluster)
            self.stats.add("loop")
            return None
        owner = exchange_owner(d.exchange) if self.cfg.source_from_exchange else None
        if owner is not None:
            claimed = msg.get("source")
            if claimed and claimed != owner:
                text = f"source {claimed!r} forged: messages on {d.exchange} come from {owner}"
                self.reporter.report(msg, 403, text, owner=owner)
                self.reporter.event(
                    "subscribe_rejected", text, subject=msg["relPath"], exchange=d.exchange
                )
                self.stats.add("forged")
                return None
            msg["source"] = owner
        w = self.work_for(msg, d.exchange, d.routing_key)
        if w is None:
            self.stats.add("rejected by pattern")
            return None
        w.delivery = d
        return w

    def _malformed(self, d: Delivery, exc: MessageError) -> None:
        skeleton = skeleton_of_body(d.body)
        text = f"invalid message: {exc}"
        self.reporter.report(skeleton, 417, text, owner=exchange_owner(d.exchange))
        subject = skeleton.get("rejected_relPath") or skeleton["relPath"]
        self.reporter.event("subscribe_rejected", text, subject=subject, exchange=d.exchange)
        self.stats.add("invalid")

    def work_for(self, msg: dict[str, Any], exchange: str, topic: str) -> Work | None:
        """The work a checked message asks for, or None if the patterns reject it."""
        rel = normalise(msg["relPath"])
        op = msg.get("fileOp") or {}
        w = Work(next(self.seq), msg, rel, exchange, topic)
        if "rename" in op:
            old = mapped_path(msg, op["rename"])
            if old and old != rel and self.cfg.accepts(old):
                w.old_rel = old
        if "hlink" in op:
            other = mapped_path(msg, op["hlink"])
            if other and self.cfg.accepts(other):
                w.link_rel = other
        if not self.cfg.accepts(rel):
            if w.old_rel:
                # renamed to a name we do not take: for us, the old name went away
                w.rel, w.old_rel, w.remove_old = w.old_rel, None, True
                return w
            return None
        return w


def mapped_path(msg: Mapping[str, Any], value: str) -> str | None:
    """The local relPath of a `fileOp.rename`/`hlink` path (sr3's convention: the path of
    baseUrl joined with the relPath), or None.

    `message.rename_old_relpath` refuses a baseUrl whose path is `/`; sr3 maps it (every
    path starts with `/`), and an archive served at its root (`[serve] url_prefix = "/"`,
    the default) announces `/<old relPath>`, so the subscriber applies sr3's rule then.
    """
    old = rename_old_relpath({**msg, "fileOp": {"rename": value}})
    if old is None and urlsplit(msg["baseUrl"]).path in ("", "/") and value.startswith("/"):
        try:
            old = check_rel_path(value.lstrip("/"), "fileOp")
        except MessageError:
            return None
    return normalise(old) if old else None

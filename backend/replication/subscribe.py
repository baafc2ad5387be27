"""`reelfs subscribe --config FILE`: one hop of replication into an archive.

sr3's flow in small steps: *gather* (a durable queue bound to `exchange` with
`topic_prefix.subtopic`), *filter* (decode and validate, loop prevention, source check,
accept/reject), *work* (winnow, download, verify, store through the mount) and *report*.
The archive itself re-posts what is stored (its poster, with the upstream routing this
subscriber hands over through `expect_origin`); the subscriber publishes only reports.

Filter, in the consuming thread, per message:

* undecodable or invalid (bad JSON, missing fields, unknown identity method, relPath
  absolute or with `..`, malformed blocks) -> report 417, archive event, ack;
* this site is `from_cluster` or in `reelfs_hops` -> dropped (a loop), ack;
* consumed from `xs_<user>`: `source` must be `<user>` (set when absent); a forged
  source -> report 403 to `<user>`, archive event, ack;
* accept/reject patterns on relPath (a rename also on its old name).

Work, in `parallel` worker threads. Messages about the same path (or a path and what is
below it) are applied in arrival order; others run side by side. Per message: winnow
(same content announced for the same path within `winnow_window` -> 304); then

* file: download `baseUrl/relPath` (or `retrievePath`; `content` if inlined) into a
  hidden temp file on the mount, resuming a partial one after a crash (Range, If-Range),
  verify size and identity (`sha512`/`md5`; `cod` computed here; `arbitrary` accepted),
  set mode and times, rename into place (`subscribe_store`); run `on_file`;
* `blocks` (a file announced in parts): the first part's message brings the whole
  manifest, so every part not yet here is fetched in parallel streams into one temp
  file, each verified and recorded durably; parts unchanged since the stored version are
  copied locally; once complete the file is stored and `on_file` runs, once; the other
  parts' messages find it done (304);
* fileOp: rename (then fetch if the renamed file is not the announced content), remove,
  link, hlink, directory.

A message is acknowledged only once stored or queued in the durable retry queue (state
DB); a kill -9 leaves the message unacknowledged and the temp file recorded, so the
restart resumes it and nothing partial is ever visible under a final name. Failed
transfers are retried with exponential backoff; after `retry.attempts` the message is
given up and reported. When the archive is unmounted, messages are held (not acked)
until it is back.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from backend import config as archive_config
from backend.errors import ArchiveError

from .broker import Consumer, Delivery, persistent_queue_name
from .credentials import Credentials, CredentialsError
from .identity import encode_digest, new_hasher
from .message import (
    DIGEST_SIZES,
    MessageError,
    binding_key,
    check_rel_path,
    parse_time,
    rename_old_relpath,
)
from .subscribe_config import ConfigError, SubscribeConfig, load_config
from .subscribe_fetch import Fetcher, FetchError, RateLimiter, build_url
from .subscribe_reports import Reporter, ReportPublisher, exchange_owner, skeleton_of_body
from .subscribe_state import SubscribeState, content_key, winnow_key
from .subscribe_store import (
    ArchiveStore,
    MountUnavailable,
    is_mount_gone,
    normalise,
    origin_of,
)

log = logging.getLogger("reelfs.subscribe")

MOUNT_CHECK = 2.0  # seconds between checks while the archive is not mounted
HOUSEKEEPING = 60.0


class Mismatch(Exception):
    """Downloaded data does not match its announcement (size or identity)."""


class Stopping(Exception):
    """The subscriber is stopping: abandon the transfer (it resumes at the next start)."""


@dataclass
class Work:
    """One message to apply, from a delivery or from the retry queue."""

    seq: int
    msg: dict[str, Any]
    rel: str
    exchange: str
    topic: str
    old_rel: str | None = None  # rename: the old name, mapped to a local relPath
    link_rel: str | None = None  # hlink: the other name, mapped
    remove_old: bool = False  # a rename to a rejected name: the old name goes away
    delivery: Delivery | None = None
    retry_id: int | None = None
    attempts: int = 0
    report_msg: dict[str, Any] | None = None  # the message as reported (cod: real sum)
    # state updates applied with the report, in one transaction, once the work is done
    finish: list[Callable[[], None]] = field(default_factory=list)
    stored_file: Path | None = None  # for on_file

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(p for p in (self.rel, self.old_rel, self.link_rel) if p)


@dataclass
class Outcome:
    ack: bool  # False: hold the delivery (the archive is not mounted)
    code: int = 0
    text: str = ""


@dataclass
class Stats:
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, what: str) -> None:
        self.counts[what] += 1


def _conflict(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    for p in a:
        for q in b:
            if p == q or p.startswith(q + "/") or q.startswith(p + "/"):
                return True
    return False


def _mode(msg: Mapping[str, Any]) -> int | None:
    return int(msg["mode"], 8) & 0o7777 if "mode" in msg else None


def _time(msg: Mapping[str, Any], key: str) -> int | None:
    return parse_time(msg[key], key) if key in msg else None


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
        self.state = SubscribeState(cfg.state_db)
        self.store = ArchiveStore(socket_path, cfg.directory, fsync=cfg.fsync, posts=archive_posts)
        self.fetcher = Fetcher(
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
        self.workers = ThreadPoolExecutor(cfg.parallel, thread_name_prefix="subscribe")
        self.parts = ThreadPoolExecutor(cfg.parallel, thread_name_prefix="subscribe-part")
        self.streams = threading.BoundedSemaphore(cfg.parallel)
        self.done: queue.Queue[tuple[Work, Outcome]] = queue.Queue()
        self.pending: list[Work] = []
        self.running: dict[int, Work] = {}
        self.held: list[Work] = []
        self.seq = itertools.count()
        self.stats = Stats()
        self.stopping = threading.Event()
        self._next_mount_check = 0.0
        self._next_connect = 0.0

    # -- the loop ----------------------------------------------------------------------

    def run(
        self, stop: threading.Event, *, once: bool = False, timeout: float | None = None
    ) -> int:
        """Consume until `stop` is set (or, with `once`, until nothing is left to do).
        Returns the exit code: 0, or 1 if `timeout` passed with work left."""
        self.store.mountpoint()  # MountUnavailable: refuse to start
        self._forget_lost_temps()
        deadline = time.monotonic() + timeout if timeout else None
        # declare the queue and its bindings before anything else: from then on nothing
        # announced for us is lost, even while we work through a backlog
        if not self.consumer.connect_with_backoff(stop, deadline):
            self.shutdown(grace=0)
            return 1 if deadline is not None and once else 0
        self.publisher.start()
        next_retries = next_housekeeping = 0.0
        idle_since: float | None = None
        log.info(
            "subscribed to %s (%s) as %s, queue %s, storing into %s%s",
            ", ".join(self.cfg.exchanges),
            ", ".join(self.cfg.subtopics),
            self.consumer.url,
            self.consumer.queue,
            self.cfg.archive,
            self.cfg.directory,
        )
        code = 0
        try:
            while not stop.is_set():
                now = time.monotonic()
                self._collect()
                if now >= next_retries:
                    self._schedule_retries()
                    next_retries = now + 0.25
                if now >= next_housekeeping:
                    self._housekeeping()
                    next_housekeeping = now + HOUSEKEEPING
                if self.held and now >= self._next_mount_check:
                    self._check_mount()
                self._dispatch()
                busy = bool(self.running or self.pending)
                room = len(self.pending) + len(self.running) + len(self.held) < self.cfg.prefetch
                got = None
                if not self.consumer.connected and now < self._next_connect:
                    room = False  # broker down: reconnect at the backoff's pace, not ours
                if room and not self.held:
                    got = self.consumer.get(0.02 if busy else 0.25, stop)
                    if not self.consumer.connected:
                        self._next_connect = time.monotonic() + self.consumer.backoff.current
                    if got is not None:
                        self._accept(got)
                        idle_since = None
                        continue
                else:
                    self._wait_done(0.05)
                    self.consumer.tick()
                if once:
                    if busy or self.held or got is not None:
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
        try:
            if not self.consumer.connected:
                return False
            _, ready, _ = self.consumer.channel.queue_declare(self.consumer.queue, passive=True)
        except Exception:
            return False
        return ready == 0

    def shutdown(self, grace: float = 15.0) -> None:
        """Stop taking messages; let running work finish for `grace` seconds, abandon the
        rest (unacknowledged: the broker gives it back; temp files resume)."""
        deadline = time.monotonic() + grace
        while self.running and time.monotonic() < deadline:
            self._wait_done(0.1)
            self._collect()
        self.stopping.set()
        while self.running and time.monotonic() < deadline + 5:
            self._wait_done(0.1)
            self._collect()
        self.workers.shutdown(wait=False, cancel_futures=True)
        self.parts.shutdown(wait=False, cancel_futures=True)
        self.consumer.close()
        # reports of what was done: give the publisher a moment to send them
        end = time.monotonic() + 5
        while (
            self.publisher._thread is not None
            and self.state.reports_pending()
            and time.monotonic() < end
        ):
            self.publisher.wake()
            time.sleep(0.05)
        self.publisher.stop()
        self.reporter.close()
        log.info("stopped: %s", dict(self.stats.counts))

    def close(self) -> None:
        self.state.close()

    def _wait_done(self, timeout: float) -> None:
        try:
            item = self.done.get(timeout=timeout)
        except queue.Empty:
            return
        self._complete(*item)

    def _collect(self) -> None:
        while True:
            try:
                item = self.done.get_nowait()
            except queue.Empty:
                return
            self._complete(*item)

    def _complete(self, w: Work, outcome: Outcome) -> None:
        self.running.pop(w.seq, None)
        if not outcome.ack:
            if not self.held:
                log.warning(
                    "archive unavailable (%s): holding messages until it is back", outcome.text
                )
            self.held.append(w)
            self._next_mount_check = time.monotonic() + MOUNT_CHECK
            return
        if w.delivery is not None:
            w.delivery.ack()

    def _check_mount(self) -> None:
        self._next_mount_check = time.monotonic() + MOUNT_CHECK
        if self.store.alive():
            log.info("archive mounted again: resuming %d held message(s)", len(self.held))
            self.pending = sorted(self.held + self.pending, key=lambda w: w.seq)
            self.held = []

    def _dispatch(self) -> None:
        """Start pending work in order; a message waits for earlier ones on its paths."""
        if not self.pending or len(self.running) >= self.cfg.parallel:
            return
        blocked = [w.paths for w in self.running.values()]
        started: set[int] = set()
        for w in self.pending:
            if len(self.running) >= self.cfg.parallel:
                break
            if any(_conflict(w.paths, b) for b in blocked):
                blocked.append(w.paths)
                continue
            blocked.append(w.paths)
            started.add(w.seq)
            self.running[w.seq] = w
            fut = self.workers.submit(self._work, w)
            fut.add_done_callback(lambda f, w=w: self.done.put((w, _result(f))))
        if started:
            self.pending = [w for w in self.pending if w.seq not in started]

    def _schedule_retries(self) -> None:
        room = self.cfg.prefetch - len(self.pending) - len(self.running) - len(self.held)
        if room <= 0:
            return
        busy = {
            w.retry_id
            for w in [*self.pending, *self.running.values(), *self.held]
            if w.retry_id is not None
        }
        for row in self.state.due_retries(room, busy):
            w = self._make_work(row.message, row.exchange, row.topic)
            if w is None:
                self.state.delete_retry(row.id)
                continue
            w.retry_id, w.attempts = row.id, row.attempts
            self.pending.append(w)

    def _housekeeping(self) -> None:
        if self.cfg.winnow_window > 0:
            self.state.expire_winnow(self.cfg.winnow_window)

    def _forget_lost_temps(self) -> None:
        """Partial downloads whose temp file vanished cannot be resumed: forget them."""
        mnt = self.store.mountpoint()
        for inf in self.state.all_inflight():
            if not os.path.lexists(mnt + inf.temp):
                self.state.end_inflight(inf.rel_path)

    # -- filter ------------------------------------------------------------------------

    def _accept(self, d: Delivery) -> None:
        try:
            msg = d.message()
            hops = msg.get("reelfs_hops", [])
            if not isinstance(hops, list) or not all(isinstance(h, str) for h in hops):
                raise MessageError("reelfs_hops: expected a list of cluster names")
        except MessageError as exc:
            self._malformed(d, exc)
            return
        cluster = self.cfg.cluster
        if cluster in hops or msg.get("from_cluster") == cluster:
            log.info("loop: %s has passed through %s already; dropped", msg["relPath"], cluster)
            self.stats.add("loop")
            d.ack()
            return
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
                d.ack()
                return
            msg["source"] = owner
        w = self._make_work(msg, d.exchange, d.routing_key)
        if w is None:
            self.stats.add("rejected by pattern")
            d.ack()
            return
        w.delivery = d
        self.pending.append(w)

    def _malformed(self, d: Delivery, exc: MessageError) -> None:
        skeleton = skeleton_of_body(d.body)
        text = f"invalid message: {exc}"
        self.reporter.report(skeleton, 417, text, owner=exchange_owner(d.exchange))
        subject = skeleton.get("rejected_relPath") or skeleton["relPath"]
        self.reporter.event("subscribe_rejected", text, subject=subject, exchange=d.exchange)
        self.stats.add("invalid")
        d.ack()

    def _make_work(self, msg: dict[str, Any], exchange: str, topic: str) -> Work | None:
        """The work a checked message asks for, or None if the patterns reject it."""
        rel = normalise(msg["relPath"])
        op = msg.get("fileOp") or {}
        w = Work(next(self.seq), msg, rel, exchange, topic)
        if "rename" in op:
            old = _mapped_path(msg, op["rename"])
            if old and old != rel and self.cfg.accepts(old):
                w.old_rel = old
        if "hlink" in op:
            other = _mapped_path(msg, op["hlink"])
            if other and self.cfg.accepts(other):
                w.link_rel = other
        if not self.cfg.accepts(rel):
            if w.old_rel:
                # renamed to a name we do not take: for us, the old name went away
                w.rel, w.old_rel, w.remove_old = w.old_rel, None, True
                return w
            return None
        return w

    # -- work --------------------------------------------------------------------------

    def _work(self, w: Work) -> Outcome:
        try:
            code, text = self._process(w)
        except MountUnavailable as exc:
            return Outcome(False, text=str(exc))
        except Stopping:
            return Outcome(False, text="stopping")
        except FetchError as exc:
            return self._failed(w, exc.code, str(exc), retry=exc.retry, after=exc.retry_after)
        except Mismatch as exc:
            return self._failed(w, 417, str(exc), retry=True)
        except MessageError as exc:
            return self._failed(w, 422, str(exc), retry=False)
        except OSError as exc:
            if is_mount_gone(exc) or not self.store.alive():
                return Outcome(False, text=str(exc))
            return self._failed(w, 499, f"{w.rel}: {exc.strerror or exc}", retry=True)
        except Exception as exc:
            log.exception("unexpected failure on %s", w.rel)
            return self._failed(w, 499, f"{type(exc).__name__}: {exc}", retry=True)
        if w.stored_file is not None:
            self._on_file(w.stored_file)  # before the report: "done" includes the trigger
        with self.state.tx():
            for update in w.finish:
                update()
            if w.retry_id is not None:
                self.state.delete_retry(w.retry_id)
            self.reporter.report(w.report_msg or w.msg, code, text)
        self.stats.add(str(code))
        log.info("%d %s: %s", code, w.rel, text)
        return Outcome(True, code, text)

    def _failed(
        self, w: Work, code: int, text: str, *, retry: bool, after: float | None = None
    ) -> Outcome:
        attempts = w.attempts + 1
        policy = self.cfg.retry
        if retry and attempts < policy.attempts:
            delay = max(policy.delay(attempts), after or 0.0)
            w.retry_id = self.state.add_retry(
                w.rel,
                w.exchange,
                w.topic,
                w.msg,
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

    def _check_stop(self) -> None:
        if self.stopping.is_set():
            raise Stopping()

    def _process(self, w: Work) -> tuple[int, str]:
        msg, rel = w.msg, w.rel
        op = msg.get("fileOp") or {}
        dropped = self.state.supersede(list(w.paths), parse_time(msg["pubTime"]), w.retry_id)
        if dropped:
            log.info("%s: %d older message(s) waiting for a retry superseded", rel, dropped)
        key = winnow_key(msg)
        if self.state.is_duplicate(rel, key, self.cfg.winnow_window):
            return 304, "duplicate suppressed (winnow)"
        origin = origin_of(msg, self.cfg.cluster, self.cfg.post_exchange, self.cfg.post_base_url)
        store = self.store
        if w.remove_old:
            changed = store.remove(store.local(rel), origin, directory="directory" in op)
            self.state.forget_stored(rel, subtree=True)
            result = (201, "removed (renamed to a rejected name)") if changed else (202, "absent")
        elif "remove" in op:
            changed = store.remove(store.local(rel), origin, directory="directory" in op)
            self.state.forget_stored(rel, subtree=True)
            result = (201, "removed") if changed else (202, "nothing to remove")
        elif w.old_rel:
            result = self._rename(w, origin)
        elif "link" in op:
            changed = store.symlink(store.local(rel), op["link"], origin)
            self.state.forget_stored(rel)
            result = (201, "linked") if changed else (202, "link already there")
        elif "directory" in op:
            changed = store.mkdir(store.local(rel), origin, _mode(msg))
            result = (201, "made directory") if changed else (202, "directory already there")
        elif w.link_rel and self._hardlink(w, origin):
            result = (201, "hard linked")
        elif "blocks" in msg:
            result = self._blocks(w, origin)
        else:
            result = self._file(w, origin)
        w.finish.append(lambda: self.state.remember(rel, key))
        return result

    def _rename(self, w: Work, origin: dict[str, Any]) -> tuple[int, str]:
        msg, op = w.msg, w.msg.get("fileOp") or {}
        assert w.old_rel is not None
        old = self.store.local(w.old_rel)
        new = self.store.local(w.rel)
        moved = self.store.rename(old, new, origin)
        if moved:
            self.state.move_stored(w.old_rel, w.rel)
        if "directory" in op:
            if moved:
                return 201, "renamed"
            self.store.mkdir(new, origin, _mode(msg))
            return 201, "made directory (nothing to rename)"
        if "link" in op:
            if moved and os.path.islink(new) and os.readlink(new) == op["link"]:
                return 201, "renamed"
            self.store.symlink(new, op["link"], origin)
            return 201, "linked"
        if moved and self._is_announced_content(w, new):
            return 201, "renamed"
        code, text = self._file(w, origin)
        return code, ("renamed, then " + text) if moved else text

    def _is_announced_content(self, w: Work, local: Path) -> bool:
        """The file now at `local` is what the message announces (known, or checked)."""
        msg = w.msg
        stored = self.state.stored(w.rel)
        key = content_key(msg)
        if stored is not None and stored.key == key and not key.startswith("weak:"):
            return self.store.matches(local, stored.size, stored.mtime_ns)
        ident = msg.get("identity") or {}
        if ident.get("method") not in DIGEST_SIZES or "blocks" in msg:
            return False
        hasher = new_hasher(ident["method"])
        size = 0
        with open(local, "rb") as f:
            while data := f.read(1 << 20):
                hasher.update(data)
                size += len(data)
        if encode_digest(hasher.digest()) != ident["value"]:
            return False
        st = os.lstat(local)
        self.state.set_stored(w.rel, key, st.st_size, st.st_mtime_ns)
        return True

    def _hardlink(self, w: Work, origin: dict[str, Any]) -> bool:
        assert w.link_rel is not None
        existing = self.store.local(w.link_rel, follow_final=True)
        if not os.path.isfile(existing):
            return False  # not here: fetch the data as a file of its own
        self.store.hardlink(self.store.local(w.rel), existing, origin)
        other = self.state.stored(w.link_rel)
        if other is not None:
            self.state.set_stored(w.rel, other.key, other.size, other.mtime_ns, other.manifest)
        return True

    # -- whole files -------------------------------------------------------------------

    def _file(self, w: Work, origin: dict[str, Any]) -> tuple[int, str]:
        msg, rel, store = w.msg, w.rel, self.store
        final = store.local(rel)
        key = content_key(msg)
        size = msg.get("size")
        ident = msg.get("identity") or {}
        method = ident.get("method")
        stored = self.state.stored(rel)
        if (
            stored is not None
            and stored.key == key
            and not key.startswith("weak:")
            and store.matches(final, stored.size, stored.mtime_ns)
        ):
            return 304, "same checksum: already stored here"
        algo = method if method in DIGEST_SIZES else ident.get("value") if method == "cod" else None
        store.ensure_dirs(final.parent, origin)
        mnt = store.mountpoint()

        temp: Path | None = None
        offset, etag = 0, None
        inflight = self.state.inflight(rel)
        if inflight is not None:
            old_temp = Path(mnt + inflight.temp)
            if inflight.key == key and inflight.manifest is None and old_temp.is_file():
                temp, offset, etag = old_temp, old_temp.stat().st_size, inflight.etag
            else:
                store.discard(old_temp)
                self.state.end_inflight(rel)
        hasher = new_hasher(algo) if algo else None
        if temp is not None and offset:
            if hasher is not None:
                with open(temp, "rb") as f:
                    while data := f.read(1 << 20):
                        hasher.update(data)
            log.info("%s: resuming a partial download at byte %d", rel, offset)

        def open_fd(new_etag: str | None) -> int:
            """The temp file to write: the partial one, or a new one recorded first."""
            nonlocal temp
            if temp is not None:
                if new_etag != etag:
                    self.state.set_etag(rel, new_etag)
                return store.open_temp(temp, resume=True)
            temp = store.new_temp(final)
            self.state.start_inflight(rel, key, store.archive_path(temp), etag=new_etag)
            return store.open_temp(temp, resume=False, mode=_mode(msg))

        if "content" in msg:
            data = _inline(msg["content"])
            fd = open_fd(None)
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
            except BaseException:
                os.close(fd)
                raise
            pos = len(data)
            hasher = new_hasher(algo) if algo else None
            if hasher is not None:
                hasher.update(data)
        else:
            url = build_url(msg["baseUrl"], msg["relPath"], msg.get("retrievePath"))
            fd, pos, hasher = self._download(url, open_fd, offset, etag, hasher, algo)
        store.finish_temp(fd)
        assert temp is not None

        if size is not None and pos != size:
            self._drop_temp(rel, temp)
            raise Mismatch(f"received {pos} bytes, {size} announced")
        code, text = 201, "stored"
        stored_key = key
        if hasher is not None:
            value = encode_digest(hasher.digest())
            if method in DIGEST_SIZES and value != ident.get("value"):
                self._drop_temp(rel, temp)
                raise Mismatch(f"{method} of the data differs from the announced identity")
            if method == "cod":
                computed = {"method": algo, "value": value}
                w.report_msg = {**msg, "identity": computed}
                stored_key = f"{algo}:{value}"
                code, text = 205, f"stored, {algo} computed on receipt"
        store.put(
            temp,
            final,
            origin,
            mode=_mode(msg),
            mtime_ns=_time(msg, "mtime"),
            atime_ns=_time(msg, "atime"),
        )
        mtime_ns = _time(msg, "mtime")
        if mtime_ns is None:
            mtime_ns = os.lstat(final).st_mtime_ns
        w.finish.append(lambda: self.state.end_inflight(rel))
        w.finish.append(lambda: self.state.set_stored(rel, stored_key, pos, mtime_ns))
        w.stored_file = final
        return code, text

    def _download(
        self,
        url: str,
        open_fd: Callable[[str | None], int],
        offset: int,
        etag: str | None,
        hasher: Any,
        algo: str | None,
    ) -> tuple[int, int, Any]:
        """Fetch `url` from `offset` into the temp file `open_fd` gives once the server
        answered; returns (descriptor, bytes in the file, hasher)."""
        with self.streams:
            self._check_stop()
            body = self.fetcher.open(url, offset, if_range=etag if offset else None)
            try:
                fd = open_fd(body.etag)
                try:
                    if body.start != offset:
                        # the whole file again (it changed since, or Range is not supported)
                        os.ftruncate(fd, 0)
                        offset = 0
                        hasher = new_hasher(algo) if algo else None
                    pos = offset
                    for chunk in body.chunks():
                        os.pwrite(fd, chunk, pos)
                        pos += len(chunk)
                        if hasher is not None:
                            hasher.update(chunk)
                        self._check_stop()
                except BaseException:
                    os.close(fd)
                    raise
            finally:
                body.close()
        return fd, pos, hasher

    def _drop_temp(self, rel: str, temp: Path) -> None:
        self.store.discard(temp)
        self.state.end_inflight(rel)

    def _on_file(self, final: Path) -> None:
        cmd = self.cfg.on_file
        if not cmd:
            return
        try:
            proc = subprocess.run(
                [*cmd, str(final)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=self.cfg.on_file_timeout or None,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.reporter.event("subscribe_on_file", f"on_file failed: {exc}", subject=str(final))
            return
        if proc.returncode != 0:
            tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            self.reporter.event(
                "subscribe_on_file",
                f"on_file exited {proc.returncode}: {tail[0][:200]}",
                subject=str(final),
            )

    # -- files in parts ----------------------------------------------------------------

    def _blocks(self, w: Work, origin: dict[str, Any]) -> tuple[int, str]:
        msg, rel, store = w.msg, w.rel, self.store
        blocks = msg["blocks"]
        manifest: dict[int, dict[str, Any]] = blocks["manifest"]
        block_size: int = blocks["size"]
        numbers = sorted(manifest)
        if numbers != list(range(len(numbers))):
            raise MessageError("blocks.manifest: the parts are not numbered 0..n-1")
        for n in numbers[:-1]:
            if manifest[n]["size"] != block_size:
                raise MessageError(f"blocks.manifest[{n}]: a part before the last is short")
        method = (msg.get("identity") or {}).get("method")
        if method not in DIGEST_SIZES:
            raise MessageError("blocks: parts need sha512 or md5 identities")
        total = sum(manifest[n]["size"] for n in numbers)
        key = content_key(msg)
        final = store.local(rel)
        stored = self.state.stored(rel)
        have_stored = stored is not None and store.matches(final, stored.size, stored.mtime_ns)
        if have_stored and stored is not None and stored.key == key:
            return 304, "same parts: already stored here"
        store.ensure_dirs(final.parent, origin)
        mnt = store.mountpoint()

        temp: Path | None = None
        done: set[int] = set()
        inflight = self.state.inflight(rel)
        if inflight is not None:
            old_temp = Path(mnt + inflight.temp)
            if inflight.manifest is not None and old_temp.is_file():
                temp = old_temp
                # parts already verified keep their place if the layout still has them
                done = {n for n in inflight.done if inflight.manifest.get(n) == manifest.get(n)}
                if inflight.key != key:
                    self.state.start_inflight(rel, key, inflight.temp, manifest=manifest, done=done)
            else:
                store.discard(old_temp)
                self.state.end_inflight(rel)
        if temp is None:
            temp = store.new_temp(final)
            self.state.start_inflight(rel, key, store.archive_path(temp), manifest=manifest)
            os.close(store.open_temp(temp, resume=False))
        elif done:
            log.info("%s: resuming, %d of %d parts already here", rel, len(done), len(numbers))
        local = {}
        if have_stored and stored is not None and stored.manifest:
            local = {n for n in numbers if stored.manifest.get(n) == manifest[n]}
        todo = [n for n in numbers if n not in done]
        url = build_url(msg["baseUrl"], msg["relPath"], msg.get("retrievePath"))
        fd = store.open_temp(temp, resume=True)
        try:
            if os.fstat(fd).st_size != total:
                os.ftruncate(fd, total)
            futures = [
                self.parts.submit(
                    self._part,
                    rel,
                    fd,
                    url,
                    n,
                    n * block_size,
                    manifest[n],
                    method,
                    final if n in local else None,
                )
                for n in todo
            ]
            wait(futures)
            errors = [f.exception() for f in futures if f.exception() is not None]
        except BaseException:
            os.close(fd)
            raise
        if errors:
            os.close(fd)
            # a final error (gone, refused) decides; else the first retryable one
            final_errors = [e for e in errors if isinstance(e, FetchError) and not e.retry]
            raise (final_errors or errors)[0]
        store.finish_temp(fd)
        if os.stat(temp).st_size != total:
            self._drop_temp(rel, temp)
            raise Mismatch(f"assembled {os.stat(temp).st_size} bytes, {total} announced")
        store.put(
            temp,
            final,
            origin,
            mode=_mode(msg),
            mtime_ns=_time(msg, "mtime"),
            atime_ns=_time(msg, "atime"),
        )
        st = os.lstat(final)
        w.finish.append(lambda: self.state.end_inflight(rel))
        w.finish.append(
            lambda: self.state.set_stored(rel, key, st.st_size, st.st_mtime_ns, manifest)
        )
        w.stored_file = final
        copied = len([n for n in todo if n in local])
        fetched = len(todo) - copied
        return 201, (
            f"stored: {len(numbers)} parts, {fetched} fetched, {copied} copied locally, "
            f"{len(numbers) - len(todo)} resumed"
        )

    def _part(
        self,
        rel: str,
        fd: int,
        url: str,
        number: int,
        offset: int,
        entry: Mapping[str, Any],
        method: str,
        local: Path | None,
    ) -> None:
        size, expected = int(entry["size"]), entry["identity"]
        if local is not None and self._copy_part(fd, local, offset, size, method, expected):
            self.state.block_done(rel, number)
            return
        with self.streams:
            self._check_stop()
            body = self.fetcher.open(url, offset, size)
            hasher = new_hasher(method)
            pos = offset
            try:
                for chunk in body.chunks():
                    os.pwrite(fd, chunk, pos)
                    pos += len(chunk)
                    hasher.update(chunk)
                    self._check_stop()
            finally:
                body.close()
        if pos - offset != size:
            raise FetchError(499, f"part {number}: got {pos - offset} of {size} bytes", retry=True)
        if encode_digest(hasher.digest()) != expected:
            raise Mismatch(f"part {number}: {method} differs from the manifest")
        self.state.block_done(rel, number)

    def _copy_part(
        self, fd: int, local: Path, offset: int, size: int, method: str, expected: str
    ) -> bool:
        """Copy an unchanged part from the stored version (verified); False if it is not."""
        hasher = new_hasher(method)
        chunks = []
        try:
            with open(local, "rb") as f:
                f.seek(offset)
                left = size
                while left > 0:
                    data = f.read(min(1 << 20, left))
                    if not data:
                        return False
                    hasher.update(data)
                    chunks.append(data)
                    left -= len(data)
        except OSError:
            return False
        if encode_digest(hasher.digest()) != expected:
            return False
        pos = offset
        for data in chunks:
            os.pwrite(fd, data, pos)
            pos += len(data)
        return True


def _mapped_path(msg: Mapping[str, Any], value: str) -> str | None:
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


def _result(fut: Any) -> Outcome:
    exc = fut.exception()
    if exc is not None:
        # _work catches everything; this is a bug: keep the message for a later try
        log.error("worker failed: %r", exc)
        return Outcome(False, text=f"internal error: {exc}")
    return fut.result()


def _inline(content: Mapping[str, str]) -> bytes:
    value, encoding = content["value"], content["encoding"]
    if encoding == "base64":
        return base64.b64decode(value)
    if encoding == "iso-8859-1":
        return value.encode("iso-8859-1")
    return value.encode("utf-8")


# -- command line ----------------------------------------------------------------------


def subscribe_main(argv: list[str]) -> int:
    """`reelfs subscribe --config FILE [--once] [--timeout S]`; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="reelfs subscribe",
        description="Replicate what a broker announces into a mounted archive.",
    )
    parser.add_argument("--config", "-c", required=True, help="TOML configuration file")
    parser.add_argument("--state-db", help="state DB (default: next to the config file)")
    parser.add_argument(
        "--once",
        action="store_true",
        help="process what is queued (and due for retry), then exit",
    )
    parser.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--verbose", "-v", action="count", default=0)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.state_db)
        creds = Credentials.load(cfg.credentials)
        creds.require(cfg.broker)
        archive = archive_config.load(cfg.archive)
    except (ConfigError, CredentialsError, archive_config.ConfigError, ArchiveError) as exc:
        print(f"reelfs subscribe: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    sub = Subscriber(cfg, creds, archive.socket_path, archive_posts="post" in archive.raw)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    try:
        return sub.run(stop, once=args.once, timeout=args.timeout)
    except MountUnavailable as exc:
        print(
            f"reelfs subscribe: archive {cfg.archive} is not mounted ({exc}); "
            f"mount it first: reelfs mount {cfg.archive} MOUNTPOINT",
            file=sys.stderr,
        )
        return 1
    finally:
        sub.close()


if __name__ == "__main__":
    sys.exit(subscribe_main(sys.argv[1:]))

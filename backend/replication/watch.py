"""`reelfs watch DIR --config FILE`: announce changes of an ordinary directory over v03.

inotify (watchdog) events become v03 messages the way `sr3 watch` makes them:

* a file is posted once it has *settled* (size, mtime and mode unchanged for `settle`
  seconds); a file renamed from a temporary name (`.tmp`, `~`, `.part`, dotfiles) is
  complete by convention and posted at once;
* mkdir, rmdir, unlink, symlink and rename become `fileOp` messages; a rename carries the
  absolute old path in `fileOp.rename` (sr3's observed form) with the new name's metadata;
* a file that keeps changing for longer than `repost_interval` (a log or a capture written
  for hours, Sarracenia plan item 107) is re-posted at that interval in blocks
  (`blocks`, sr3's `inplace` layout): only blocks whose identity changed since the last
  post are announced, each with the whole manifest, so receivers fetch only those;
* only what was announced is ever announced as removed.

Every announcement is written to the durable outbox of a small SQLite state DB in the same
transaction as the record of what has been announced (`backend.catalog.watching`), then
published with confirms by an `outbox.Publisher` thread. At start the tree is compared
with that record, so changes made while the watcher was stopped are announced too.

This module is the engine (`Watcher`: events and ticks in, outbox rows out);
`watch_service` runs it (inotify, the publisher, the HTTP data service) for `reelfs watch`.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import time
from dataclasses import dataclass, field
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
)

from backend.catalog import watching
from backend.catalog.statedb import transaction
from backend.replication.watch_config import WatchConfig

from .filemessages import (
    PostSettings,
    block_messages,
    directory_message,
    file_message,
    link_message,
    remove_message,
)
from .message import MessageError, topic_for
from .outbox import enqueue

log = logging.getLogger("reelfs.watch")


@dataclass
class _Pending:
    """A file seen changing and not yet posted."""

    first_seen: float
    last_change: float
    sig: tuple[int, int, int] | None = None
    last_repost: float | None = None
    blocks: dict[int, tuple[int, str]] = field(default_factory=dict)


def _sig(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode))


class Watcher:
    """The watch engine: turns events and ticks into outbox rows (no threads of its own).

    `conn` is the state DB connection (autocommit mode). `on_enqueued` is called after
    each commit that added messages (the CLI passes `Publisher.wake`).
    """

    def __init__(
        self,
        config: WatchConfig,
        conn: sqlite3.Connection,
        on_enqueued: Any = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.cfg = config
        self.conn = conn
        watching.ensure_watch_files(self.conn)
        self.on_enqueued = on_enqueued or (lambda: None)
        self.clock = clock
        self.pending: dict[str, _Pending] = {}
        self.settings = PostSettings(
            base_url=config.post_base_url,
            base_dir=str(config.post_base_dir),
            identity_method=config.identity_method,
            arbitrary_value=config.identity_arbitrary_value,
            source=config.source,
            from_cluster=config.cluster,
            to_clusters=config.to_clusters,
        )
        self.posted = 0

    # -- names --------------------------------------------------------------------------

    def _rel(self, path: str | bytes) -> str | None:
        """relPath of a path under the watched dir, or None if outside/unusable."""
        path = os.fsdecode(path)
        try:
            rel = self.settings.rel_path(path)
        except MessageError:
            return None
        wrel = os.path.relpath(path, self.cfg.watch_dir)
        if wrel == "." or wrel.startswith(".."):
            return None
        return rel

    def _url(self, rel: str) -> str:
        return self.cfg.post_base_url.rstrip("/") + "/" + rel

    def wanted(self, rel: str | None) -> bool:
        """Not a temporary/hidden name, and accepted by the filters."""
        if rel is None:
            return False
        wrel = os.path.relpath(self.settings.abs_path(rel), self.cfg.watch_dir)
        return not self.cfg.ignored_name(wrel) and self.cfg.accepts(self._url(rel))

    # -- the record of what was announced ----------------------------------------------

    def announced(self, rel: str) -> watching.Announced | None:
        return watching.announced(self.conn, rel)

    def _announced_under(self, rel: str) -> list[str]:
        return watching.announced_under(self.conn, rel)

    def _commit(self, messages: list[dict[str, Any]], record: list[tuple[str, tuple | None]]):
        """Enqueue messages and update the record in one transaction.

        `record` items are (rel_path, row values) to upsert, or (rel_path, None) to delete.
        """
        if not messages and not record:
            return
        with transaction(self.conn) as c:
            for msg in messages:
                enqueue(c, self.cfg.exchange, topic_for(msg["relPath"], self.cfg.topic_prefix), msg)
            for rel, values in record:
                if values is None:
                    watching.forget(c, rel)
                else:
                    watching.remember(c, rel, values)
        self.posted += len(messages)
        for msg in messages:
            op = msg.get("fileOp")
            what = ",".join(f"{k}" for k in op) if op else "file"
            if "blocks" in msg:
                what = f"block {msg['blocks']['number']}"
            log.info("posted %s %s (%s)", what, msg["relPath"], msg.get("size", "-"))
        if messages:
            self.on_enqueued()

    # -- posting ------------------------------------------------------------------------

    def _post_file(self, rel: str, *, rename_from: str | None = None) -> None:
        path = self.settings.abs_path(rel)
        pend = self.pending.pop(rel, None)
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                return
            if pend is not None and pend.blocks:
                msgs, blocks = block_messages(
                    self.settings, path, self.cfg.block_size, st=st, known=pend.blocks
                )
                if rename_from:
                    for m in msgs:
                        m["fileOp"] = {"rename": rename_from}
                blocks_json = json.dumps({b.number: [b.size, b.identity] for b in blocks})
                values = (
                    "file",
                    st.st_size,
                    st.st_mtime_ns,
                    stat.S_IMODE(st.st_mode),
                    None,
                    None,
                    blocks_json,
                )
            else:
                msg = file_message(self.settings, path, rename_from=rename_from, st=st)
                msgs = [msg]
                values = (
                    "file",
                    st.st_size,
                    st.st_mtime_ns,
                    stat.S_IMODE(st.st_mode),
                    None,
                    json.dumps(msg.get("identity")),
                    None,
                )
        except FileNotFoundError:
            return  # gone before it could be posted: its delete event follows
        self._commit(msgs, [(rel, values)])

    def _post_dir(self, rel: str, *, rename_from: str | None = None) -> None:
        path = self.settings.abs_path(rel)
        try:
            msg = directory_message(self.settings, path, rename_from=rename_from)
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            return
        self._commit([msg], [(rel, ("dir", None, None, mode, None, None, None))])

    def _post_link(self, rel: str, *, rename_from: str | None = None) -> None:
        path = self.settings.abs_path(rel)
        try:
            msg = link_message(self.settings, path, rename_from=rename_from)
        except (FileNotFoundError, OSError):
            return
        self._commit([msg], [(rel, ("link", None, None, None, msg["fileOp"]["link"], None, None))])

    def _post_remove(self, rel: str) -> None:
        """Announce the removal of rel and of anything announced under it (deepest first)."""
        row = self.announced(rel)
        under = sorted(self._announced_under(rel), key=lambda r: r.count("/"), reverse=True)
        msgs, record = [], []
        for child in under:
            child_row = self.announced(child)
            msgs.append(
                remove_message(
                    self.settings, self.settings.abs_path(child), directory=child_row[1] == "dir"
                )
            )
            record.append((child, None))
        if row is not None:
            msgs.append(
                remove_message(
                    self.settings, self.settings.abs_path(rel), directory=row[1] == "dir"
                )
            )
            record.append((rel, None))
        for p in [p for p in self.pending if p == rel or p.startswith(rel + "/")]:
            del self.pending[p]
        self._commit(msgs, record)

    # -- events -------------------------------------------------------------------------

    def touch(self, rel: str, now: float | None = None, *, settled: bool = False) -> None:
        """Note that a file changed (or exists unposted); it is posted once settled."""
        now = self.clock() if now is None else now
        pend = self.pending.get(rel)
        if pend is None:
            start = now - self.cfg.settle if settled else now
            self.pending[rel] = _Pending(first_seen=now, last_change=start)
        elif not settled:
            pend.last_change = now

    def handle(self, event: FileSystemEvent) -> None:
        """Process one watchdog event."""
        if isinstance(event, DirMovedEvent | FileMovedEvent):
            if not event.is_synthetic:
                self._moved(event)
            return
        rel = self._rel(event.src_path)
        if rel is None:
            return
        path = self.settings.abs_path(rel)
        if isinstance(event, DirCreatedEvent):
            if self.wanted(rel) and self.announced(rel) is None:
                self._post_dir(rel)
            # Files created before inotify watched the new directory have no events.
            self.scan(path)
        elif isinstance(event, FileCreatedEvent | FileModifiedEvent | FileClosedEvent):
            if not self.wanted(rel):
                return
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                return
            if stat.S_ISLNK(st.st_mode):
                row = self.announced(rel)
                if row is None or row[5] != os.readlink(path):
                    self._post_link(rel)
            elif stat.S_ISREG(st.st_mode):
                self.touch(rel)
        elif isinstance(event, FileDeletedEvent | DirDeletedEvent):
            self._post_remove(rel)
        elif (
            event.event_type == "attrib"
            and not event.is_directory
            and self.wanted(rel)
            and (rel in self.pending or self.announced(rel) is not None)
        ):
            self.touch(rel)

    def _moved(self, event: FileSystemEvent) -> None:
        src_rel = self._rel(event.src_path)
        dst_rel = self._rel(event.dest_path)
        src_row = self.announced(src_rel) if src_rel else None
        dst_ok = self.wanted(dst_rel)
        if dst_rel is None or not dst_ok:
            # Moved out of the tree, or to a name that is not posted: gone for receivers.
            if src_rel is not None:
                self._post_remove(src_rel)
            return
        dst_path = self.settings.abs_path(dst_rel)
        try:
            st = os.lstat(dst_path)
        except FileNotFoundError:
            return
        src_pending = self.pending.pop(src_rel, None) if src_rel else None
        if src_row is None or not self.wanted(src_rel):
            # Receivers never had the old name: the new one is simply new. A rename from a
            # temporary name is the writer saying "complete": no need to wait.
            if src_rel is not None and src_row is not None:
                self._post_remove(src_rel)
            if stat.S_ISDIR(st.st_mode):
                self._post_dir(dst_rel)
                self.scan(dst_path)
            elif stat.S_ISLNK(st.st_mode):
                self._post_link(dst_rel)
            else:
                temp = src_rel is not None and self.cfg.ignored_name(
                    os.path.relpath(self.settings.abs_path(src_rel), self.cfg.watch_dir)
                )
                if temp:
                    self._post_file(dst_rel)
                else:
                    self.touch(dst_rel)
            return
        old_abs = self.settings.abs_path(src_rel)
        if stat.S_ISDIR(st.st_mode):
            # One message moves the whole subtree at the receiver (sr3 renames the dir).
            msg = directory_message(self.settings, dst_path, rename_from=old_abs)
            record: list[tuple[str, tuple | None]] = []
            for child in [src_rel, *self._announced_under(src_rel)]:
                row = self.announced(child)
                new = dst_rel + child[len(src_rel) :]
                record.append((child, None))
                record.append((new, tuple(row[1:])))
            for p in [p for p in self.pending if p.startswith(src_rel + "/")]:
                self.pending[dst_rel + p[len(src_rel) :]] = self.pending.pop(p)
            self._commit([msg], record)
        elif stat.S_ISLNK(st.st_mode):
            self._commit([], [(src_rel, None)])
            self._post_link(dst_rel, rename_from=old_abs)
        else:
            self._commit([], [(src_rel, None)])
            if src_pending is not None:
                self.pending[dst_rel] = src_pending
            self._post_file(dst_rel, rename_from=old_abs)

    # -- time ---------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        """Post settled files; re-post in blocks files that keep growing."""
        now = self.clock() if now is None else now
        for rel in list(self.pending):
            pend = self.pending.get(rel)
            if pend is None:
                continue
            path = self.settings.abs_path(rel)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                self.pending.pop(rel, None)
                continue
            if not stat.S_ISREG(st.st_mode):
                self.pending.pop(rel, None)
                continue
            sig = _sig(st)
            if sig != pend.sig:
                if pend.sig is not None:
                    pend.last_change = now
                pend.sig = sig
            if now - pend.last_change >= self.cfg.settle:
                row = self.announced(rel)
                if row is not None and row[1] == "file" and tuple(row[2:5]) == sig:
                    self.pending.pop(rel, None)  # nothing changed since it was announced
                    continue
                self._post_file(rel)
            elif self.cfg.repost_interval > 0 and st.st_size > 0:
                since = pend.last_repost if pend.last_repost is not None else pend.first_seen
                if now - since >= self.cfg.repost_interval:
                    self._repost_growing(rel, pend, st, now)

    def _repost_growing(self, rel: str, pend: _Pending, st: os.stat_result, now: float) -> None:
        path = self.settings.abs_path(rel)
        try:
            msgs, blocks = block_messages(
                self.settings, path, self.cfg.block_size, st=st, known=pend.blocks
            )
        except OSError as exc:
            log.debug("re-post of growing %s deferred: %s", rel, exc)
            return
        pend.last_repost = now
        pend.blocks = {b.number: (b.size, b.identity) for b in blocks}
        blocks_json = json.dumps({b.number: [b.size, b.identity] for b in blocks})
        values = (
            "file",
            st.st_size,
            st.st_mtime_ns,
            stat.S_IMODE(st.st_mode),
            None,
            None,
            blocks_json,
        )
        self._commit(msgs, [(rel, values)])

    def next_deadline(self) -> float | None:
        """When the next pending file could settle (for sleeping until then)."""
        if not self.pending:
            return None
        return min(p.last_change for p in self.pending.values()) + self.cfg.settle

    # -- scanning -----------------------------------------------------------------------

    def scan(self, top: str | None = None) -> None:
        """Compare a subtree with what was announced: new/changed entries are posted (files
        once settled), announced entries that disappeared are removed."""
        top = top or str(self.cfg.watch_dir)
        wall = time.time()
        seen: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(top):
            rel_dir = self._rel(dirpath)
            if rel_dir is not None:
                seen.add(rel_dir)
                if self.wanted(rel_dir) and self.announced(rel_dir) is None:
                    self._post_dir(rel_dir)
            # Do not descend into ignored (hidden) directories.
            dirnames[:] = [d for d in dirnames if not (self.cfg.ignore_dotfiles and d[0] == ".")]
            for name in filenames + [
                d for d in dirnames if os.path.islink(os.path.join(dirpath, d))
            ]:
                path = os.path.join(dirpath, name)
                rel = self._rel(path)
                if rel is None or not self.wanted(rel):
                    continue
                seen.add(rel)
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue
                row = self.announced(rel)
                if stat.S_ISLNK(st.st_mode):
                    if row is None or row[5] != os.readlink(path):
                        self._post_link(rel)
                elif stat.S_ISREG(st.st_mode) and (
                    row is None or row[1] != "file" or tuple(row[2:5]) != _sig(st)
                ):
                    old = wall - st.st_mtime_ns / 1e9 >= self.cfg.settle
                    self.touch(rel, settled=old)
        top_rel = self._rel(top)
        if top_rel is None:
            candidates = watching.announced_paths(self.conn)
        else:
            candidates = [top_rel, *self._announced_under(top_rel)]
        wrel_ok = [r for r in candidates if r not in seen and self._rel(self.settings.abs_path(r))]
        for rel in sorted(wrel_ok, key=lambda r: r.count("/"), reverse=True):
            if not os.path.lexists(self.settings.abs_path(rel)) and self.announced(rel):
                self._post_remove(rel)

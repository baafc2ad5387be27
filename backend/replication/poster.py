"""The archive's poster: the change journal becomes v03 messages in the durable outbox.

One thread, in journal order, so that a file's announcement never overtakes its rename
or removal. Identities are computed here from the cached data (never on the FUSE loop);
a file that already left the cache is announced with `cod` ("calculate on download").
Files larger than `[post] blocksize` are announced in parts (v03 `blocks`, sr3's
`inplace` layout with the whole manifest in every part). Each row becomes its messages
and leaves the journal in one transaction; the outbox `Publisher` does the rest.
"""

from __future__ import annotations

import json
import logging
import posixpath
import stat
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from backend.cache.store import Cache
from backend.catalog import events, journal
from backend.catalog.db import Catalog, open_catalog
from backend.catalog.files import ARCHIVED, DIRTY, FileClerk
from backend.catalog.namespace import Inode, Namespace
from backend.config import Config
from backend.errors import FsError
from backend.replication.identity import (
    block_identities,
    identity_of_chunks,
    identity_of_file,
)
from backend.replication.journal import (
    CLOSED,
    INCOMING_PREFIX,
    LINK,
    MKDIR,
    RENAME,
    RMDIR,
    SYMLINK,
    UNLINK,
)
from backend.replication.message import build_message, topic_for
from backend.replication.outbox import enqueue
from backend.replication.post_config import PostConfig
from backend.supervision import Health, Supervisor, catalog_busy

log = logging.getLogger("reelfs.poster")

BATCH = 200
Message = tuple[str, str, dict[str, Any]]  # exchange, topic, body


def _incoming(path: str | None) -> bool:
    return bool(path) and posixpath.basename(path).startswith(INCOMING_PREFIX)  # type: ignore[arg-type]


class ArchivePoster(threading.Thread):
    """The poster thread: journal rows, oldest first, become outbox rows."""

    def __init__(
        self, config: Config, post: PostConfig, cache: Cache, published: Callable[[], None]
    ) -> None:
        super().__init__(name="poster", daemon=True)
        self.config = config
        self.post = post
        self.cache = cache
        self.published = published  # wakes the outbox publisher
        self._wake = threading.Event()
        self._stopping = False
        self.posted = 0
        self.health = Health("poster", "poster")

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping = True
        self._wake.set()
        self.join(timeout)

    def run(self) -> None:
        cat = open_catalog(self.config.catalog_path)
        # A busy catalog pauses the poster until it is free (one `catalog_busy` event);
        # any other error restarts it (the journal row it was on is still there: its
        # transaction rolled back), a few times, then it gives up, visibly in `status`.
        supervisor = Supervisor(
            self.health, cat=lambda: cat, stopping=lambda: self._stopping, subject="poster"
        )
        try:
            supervisor.run(lambda: self._loop(cat))
        finally:
            cat.close()

    def _loop(self, cat: Catalog) -> None:
        while True:
            rows = journal.oldest(cat, BATCH)
            if not rows:
                if self._stopping:
                    return
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            for row in rows:
                self._post_row(cat, row)
            self.published()

    def _post_row(self, cat: Catalog, row: Any) -> None:
        try:
            messages = self.messages(cat, dict(row))
        except Exception as e:
            if catalog_busy(e):
                raise  # not this change's fault: the supervisor waits, then it is retried
            # one change that cannot be announced must not stop the others
            log.exception("cannot announce change %s", dict(row))
            events.record(cat, "post_failed", f"{row['kind']} {row['path']}: {e}", level="error")
            messages = []
        with cat.tx():
            for exchange, topic, body in messages:
                enqueue(cat.conn, exchange, topic, body)
            journal.delete(cat, row["id"])
        self.posted += len(messages)

    # -- building messages ---------------------------------------------------------------

    def messages(self, cat: Catalog, row: dict[str, Any]) -> list[Message]:
        origin = json.loads(row["origin"]) if row["origin"] else None
        if origin and origin.get("final"):
            return []  # this site is the destination: nothing goes further
        kind, path, old = row["kind"], row["path"], row["old_path"]
        if kind == RENAME:
            if _incoming(old) and not _incoming(path):
                kind, old = CLOSED, None  # a subscriber's download, now in place
            elif _incoming(path):
                kind, path = UNLINK, old
        if _incoming(path):
            return []
        m = _Builder(self, cat, origin)
        if kind in (UNLINK, RMDIR):
            return [
                m.msg(path, file_op={"remove": "", **({"directory": ""} if kind == RMDIR else {})})
            ]
        ns = Namespace(cat)
        try:
            node = ns.resolve(path)
        except FsError:
            return []  # gone since: its removal is in the journal too
        if kind == SYMLINK or stat.S_ISLNK(node.mode):
            op = {"link": row["target"] or ns.readlink(node.id).decode("utf-8", "surrogateescape")}
            if kind == RENAME and old:
                op["rename"] = m.abs(old)
            return [m.msg(path, file_op=op, content_type="text/link")]
        if kind == MKDIR or node.is_dir:
            op = {"directory": ""}
            if kind == RENAME and old:
                op["rename"] = m.abs(old)
            return [m.msg(path, mode=node.mode, file_op=op, content_type="text/directory")]
        if not node.is_reg:
            return []  # fifos, devices: nothing to fetch
        file_op = None
        if kind == RENAME and old:
            file_op = {"rename": m.abs(old)}
        elif kind == LINK and row["target"]:
            file_op = {"hlink": m.abs(row["target"])}
        return m.file(path, node, file_op)


class _Builder:
    """Messages for one change: the archive's [post] settings, or the origin's."""

    def __init__(self, poster: ArchivePoster, cat: Catalog, origin: dict[str, Any] | None):
        self.p = poster
        self.post = poster.post
        self.cat = cat
        post = self.post
        self.exchange = post.exchange
        self.base_url = post.base_url
        self.fields: dict[str, Any] = {
            "source": post.source,
            "from_cluster": post.cluster,
            "to_clusters": post.to_clusters,
        }
        hops = [post.cluster] if post.cluster else []
        self.pub_time = None
        if origin:
            self.exchange = origin.get("post_exchange") or self.exchange
            self.base_url = origin.get("post_base_url") or self.base_url
            for key in ("source", "from_cluster", "to_clusters"):
                if origin.get(key):
                    self.fields[key] = origin[key]
            self.pub_time = origin.get("pubTime")
            hops = [*origin.get("reelfs_hops", []), *hops]
        self.extra = {"reelfs_hops": hops} if hops else None

    def abs(self, path: str) -> str:
        """sr3's fileOp path convention: the base URL's path joined with the relPath."""
        base = urlsplit(self.base_url).path.rstrip("/")
        return f"{base}/{path.lstrip('/')}"

    def msg(self, path: str, **kw: Any) -> Message:
        rel = path.lstrip("/")
        body = build_message(
            base_url=self.base_url,
            rel_path=rel,
            pub_time=self.pub_time,
            extra=self.extra,
            **self.fields,
            **kw,
        )
        return self.exchange, topic_for(rel, self.post.topic_prefix), body

    def file(self, path: str, node: Inode, file_op: dict[str, str] | None) -> list[Message]:
        post = self.post
        files = FileClerk(self.cat, self.p.config.archive_id)
        bf = files.get(node.bitfile) if node.bitfile is not None else None
        cached = bf is not None and bf.state in (DIRTY, ARCHIVED)
        source = self.p.cache.path(bf.bfid) if cached and bf is not None else None
        method, _, cod_algorithm = post.identity.partition(",")
        common = dict(
            mtime_ns=node.mtime_ns, atime_ns=node.atime_ns, mode=node.mode, file_op=file_op
        )
        if source is not None and post.blocksize and node.size > post.blocksize:
            digest = method if method in ("sha512", "md5") else "sha512"
            try:
                blocks = block_identities(source, post.blocksize, digest, file_size=node.size)
            except FileNotFoundError:
                blocks = None
            if blocks is not None:
                manifest = {b.number: {"size": b.size, "identity": b.identity} for b in blocks}
                return [
                    self.msg(
                        path,
                        identity={"method": digest, "value": b.identity},
                        size=b.size,
                        blocks={
                            "method": "inplace",
                            "size": post.blocksize,
                            "number": b.number,
                            "manifest": manifest,
                        },
                        **common,
                    )
                    for b in blocks
                ]
        identity: dict[str, str]
        if cached and node.size == 0:
            identity = (
                identity_of_chunks([b""], method)
                if method in ("sha512", "md5")
                else {"method": "cod", "value": cod_algorithm or "sha512"}
            )
        elif method in ("cod", "arbitrary"):
            identity = identity_of_file(
                source or "/dev/null",
                method,
                arbitrary_value=post.arbitrary_value,
                cod_algorithm=cod_algorithm or "sha512",
            )
        elif source is None:
            identity = {"method": "cod", "value": method}  # on tape only: computed remotely
        else:
            try:
                identity = identity_of_file(source, method)
            except FileNotFoundError:  # evicted meanwhile
                identity = {"method": "cod", "value": method}
        return [self.msg(path, identity=identity, size=node.size, **common)]

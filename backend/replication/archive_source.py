"""The archive as the HTTP data service's `DataSource`: what `baseUrl` points at.

Paths resolve in the catalog's namespace (never on a disk path, so `..` tricks and
symlinks cannot lead out: a symlink is simply not served). Cached data is read straight
from the cache file; a released file gets a recall queued in the catalog, the daemon is
woken through its control socket, and the request waits for it.
"""

from __future__ import annotations

import errno
import io
import threading
import time
from typing import BinaryIO

from backend.admin.control import DaemonNotRunning, call
from backend.cache.store import Cache
from backend.catalog.db import Catalog, open_catalog
from backend.catalog.files import ARCHIVED, DIRTY, RELEASED, FileClerk
from backend.catalog.namespace import Namespace
from backend.catalog.queue import RECALL, RequestQueue
from backend.config import Config
from backend.errors import ArchiveError, FsError
from backend.library.recall import queue_recall
from backend.replication.http_service import FileStat, NotCached

POLL = 0.1
RETRY_AFTER = 60.0


class ArchiveSource:
    """The archive's namespace under `root`, served read-only (a catalog per thread)."""

    def __init__(self, config: Config, root: str = "/") -> None:
        self.config = config
        self.root = "/" + root.strip("/")
        self.cache = Cache(
            config.cache.path,
            config.cache.size,
            config.cache.high_watermark,
            config.cache.low_watermark,
        )
        self._local = threading.local()

    def _cat(self) -> Catalog:
        cat = getattr(self._local, "cat", None)
        if cat is None:
            cat = self._local.cat = open_catalog(self.config.catalog_path)
        return cat

    def _path(self, relpath: str) -> str:
        return self.root.rstrip("/") + "/" + relpath if relpath else self.root

    def _node(self, relpath: str):
        try:
            return Namespace(self._cat()).resolve(self._path(relpath))
        except FsError:
            return None

    def stat(self, relpath: str) -> FileStat | None:
        node = self._node(relpath)
        if node is None or not (node.is_reg or node.is_dir):
            return None
        etag = ""
        if node.is_reg and node.bitfile is not None:
            bf = FileClerk(self._cat(), self.config.archive_id).get(node.bitfile)
            etag = f"{bf.bfid}-{bf.generation}" if bf else ""
        return FileStat(node.size, node.mtime_ns, node.is_dir, etag)

    def open(self, relpath: str) -> BinaryIO:
        node = self._node(relpath)
        if node is None or not node.is_reg:
            raise FileNotFoundError(errno.ENOENT, "not a file in the archive", relpath)
        cat = self._cat()
        bf = FileClerk(cat, self.config.archive_id).get(node.bitfile) if node.bitfile else None
        if bf is None:
            raise FileNotFoundError(errno.ENOENT, "no data", relpath)
        if bf.state in (DIRTY, ARCHIVED):
            if bf.size == 0:
                return io.BytesIO(b"")  # an empty file has no cache file
            try:
                return open(self.cache.path(bf.bfid), "rb")
            except FileNotFoundError:
                pass  # evicted a moment ago
        try:
            queued = queue_recall(cat, self.config.archive_id, bf.id)
        except ArchiveError as e:
            raise OSError(errno.EIO, str(e)) from None
        if queued:
            try:
                call(self.config.socket_path, "wake", timeout=5)
            except (DaemonNotRunning, OSError):
                pass  # recalls run when the archive is next mounted
        raise NotCached(RETRY_AFTER)

    def wait_cached(self, relpath: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        files = FileClerk(self._cat(), self.config.archive_id)
        while True:
            node = self._node(relpath)
            if node is None or node.bitfile is None:
                return True  # gone: open() will say 404
            bf = files.get(node.bitfile)
            if bf is None or bf.state != RELEASED:
                return True
            if bf.error and not RequestQueue(self._cat()).has(bf.id, RECALL):
                return True  # failed: open() queues again and reports it
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL)

    def close(self) -> None:
        cat = getattr(self._local, "cat", None)
        if cat is not None:
            cat.close()

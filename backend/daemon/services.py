"""The daemon's replication services: the poster and the outbox publisher (`[post]`), and
the HTTP data service (`[serve]`).

The mount journals every change in the catalog; the poster turns journal rows into v03
messages in the outbox; the publisher sends them to the broker and deletes them once
confirmed (backend.replication). The data service gives the messages' `baseUrl` its
files, recalling those that are on tape only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from backend.cache.store import Cache
from backend.catalog.db import Catalog
from backend.config import Config
from backend.errors import ArchiveError
from backend.replication.archive_source import ArchiveSource
from backend.replication.credentials import Credentials, CredentialsError
from backend.replication.http_service import serve
from backend.replication.journal import ChangeJournal
from backend.replication.outbox import Publisher
from backend.replication.post_config import load_post, load_serve
from backend.replication.poster import ArchivePoster

log = logging.getLogger("reelfs.daemon")


class ReplicationServices:
    """What `[post]` and `[serve]` ask for; nothing runs for an archive without them."""

    def __init__(self, config: Config) -> None:
        self.config = config
        # read at start: a bad [post] or [serve] stops the start, not a thread later
        self.post = load_post(config.raw)
        self.serve_cfg = load_serve(config.raw)
        self.journal: ChangeJournal | None = None
        self._publisher: Publisher | None = None
        self._poster: ArchivePoster | None = None
        self._http: Any = None
        self._source: ArchiveSource | None = None

    def start(self, cat: Catalog, cache: Cache, take_origin: Callable[[str | None], Any]) -> None:
        if self.post is not None:
            creds = _credentials(missing_ok=True)
            self._publisher = Publisher(
                str(self.config.catalog_path), self.post.broker, credentials=creds
            )
            self._publisher.start()
            self._poster = ArchivePoster(self.config, self.post, cache, self._publisher.wake)
            self._poster.start()
            self.journal = ChangeJournal(cat, take_origin, self._poster.wake)
        if self.serve_cfg is not None:
            auth = None
            if self.serve_cfg.auth:
                host, _, port = self.serve_cfg.listen.rpartition(":")
                auth = _credentials(missing_ok=False).http_users(host, int(port))
            self._source = ArchiveSource(self.config)
            self._http = serve(
                self._source,
                self.serve_cfg.listen,
                auth=auth,
                recall_wait=self.serve_cfg.recall_wait,
                url_prefix=self.serve_cfg.url_prefix,
            )
            log.info("serving the archive on %s", self._http.url)

    def health(self) -> list[dict[str, Any]]:
        """The poster's and the publisher's liveness and last error, for `status`."""
        out = []
        if self._poster is not None:
            out.append({**self._poster.health.to_json(), "alive": self._poster.is_alive()})
        if self._publisher is not None:
            out.append(self._publisher.health())
        return out

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
        if self._poster is not None:
            self._poster.stop()
        if self._publisher is not None:
            self._publisher.stop()


def _credentials(*, missing_ok: bool) -> Credentials:
    try:
        return Credentials.load(missing_ok=missing_ok)
    except CredentialsError as e:
        raise ArchiveError(str(e)) from None

"""`reelfs watch DIR --config FILE`: the watcher as a running service.

`WatchService` feeds the `watch.Watcher` engine from inotify (watchdog) on one thread of
its own, publishes its outbox with an `outbox.Publisher` thread and, with `http_listen`,
serves `post_base_dir` over HTTP (`http_service`). `run_watcher` is what the command line
calls: until stopped, or with `once` a single pass (scan, let files settle, publish all).
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from backend.catalog import outbox
from backend.catalog.outbox import open_state_db
from backend.catalog.statedb import connect
from backend.replication.watch_config import ConfigError, WatchConfig, load_config

from .credentials import Credentials, CredentialsError
from .http_service import DataServer, DirectorySource, parse_listen, serve
from .message import MessageError
from .outbox import Publisher
from .running import RunError, log_to_stderr, stop_on_signals
from .watch import Watcher

log = logging.getLogger("reelfs.watch")


class _Queueing(FileSystemEventHandler):
    """Hands every watchdog event to the engine's thread."""

    def __init__(self, q: queue.Queue[FileSystemEvent]) -> None:
        self.q = q

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.q.put(event)


class WatchService:
    """A running watch: observer thread, engine loop thread, publisher, optional HTTP."""

    def __init__(self, config: WatchConfig, credentials: Credentials | None = None) -> None:
        self.cfg = config
        self.credentials = credentials
        self.conn = open_state_db(config.state_db)
        self.publisher = Publisher(
            config.state_db, config.broker, credentials=credentials, logger=log
        )
        self.watcher = Watcher(config, self.conn, on_enqueued=self.publisher.wake)
        self.events: queue.Queue[FileSystemEvent] = queue.Queue()
        self.observer = Observer()
        self.stop_event = threading.Event()
        self.http: DataServer | None = None
        self._loop: threading.Thread | None = None

    def start(self, *, publish: bool = True) -> None:
        if self.cfg.http_listen:
            auth = None
            if self.cfg.http_auth:
                host, port, _ = parse_listen(self.cfg.http_listen)
                creds = self.credentials or Credentials.load(self.cfg.credentials)
                auth = creds.http_users(host, port)
                if not auth:
                    raise ConfigError(
                        f"http_auth: no http://user:password@{self.cfg.http_listen}/ entry in "
                        f"{creds.path}"
                    )
            self.http = serve(
                DirectorySource(self.cfg.post_base_dir),
                self.cfg.http_listen,
                auth=auth,
                url_prefix=str(self.cfg.post_base_dir),
                logger=logging.getLogger("reelfs.watch.http"),
            )
        # Watch first, then scan: a change during the scan is seen by one or the other.
        self.observer.schedule(_Queueing(self.events), str(self.cfg.watch_dir), recursive=True)
        self.observer.start()
        self.watcher.scan()
        if publish:
            self.publisher.start()
        self._loop = threading.Thread(target=self._run, name="reelfs-watch", daemon=True)
        self._loop.start()
        log.info(
            "watching %s -> %s on %s (exchange %s)",
            self.cfg.watch_dir,
            self.cfg.post_base_url,
            self.publisher.broker.url,
            self.cfg.exchange,
        )

    def _run(self) -> None:
        tick = max(0.05, min(0.5, self.cfg.settle / 4 if self.cfg.settle else 0.05))
        while not self.stop_event.is_set():
            try:
                ev = self.events.get(timeout=tick)
                self._handle(ev)
                while True:
                    self._handle(self.events.get_nowait())
            except queue.Empty:
                pass
            try:
                self.watcher.tick()
            except (OSError, sqlite3.Error) as exc:
                log.warning("watch: %s", exc)

    def _handle(self, ev: FileSystemEvent) -> None:
        try:
            self.watcher.handle(ev)
        except (OSError, MessageError, sqlite3.Error) as exc:
            log.warning("watch: event %s %s not posted: %s", ev.event_type, ev.src_path, exc)

    def idle(self) -> bool:
        """No event queued, no file waiting to settle, nothing left in the outbox."""
        if not self.events.empty() or self.watcher.pending:
            return False
        # A connection of its own: the engine's belongs to the loop thread.
        conn = connect(self.cfg.state_db)
        try:
            return not outbox.has_rows(conn)
        finally:
            conn.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.observer.stop()
        self.observer.join(10)
        if self._loop is not None:
            self._loop.join(10)
        self.publisher.stop()
        if self.http is not None:
            self.http.shutdown()
        self.conn.close()


def run_watcher(
    directory: str | os.PathLike[str],
    config_path: str | os.PathLike[str],
    *,
    state_db: str | None = None,
    once: bool = False,
    timeout: float = 300.0,
    verbosity: int = 0,
) -> int:
    """Announce the changes of `directory` until SIGTERM/SIGINT; with `once`, what differs
    from the last run, waiting until it is published (`timeout` seconds at most).
    Returns 0; raises `RunError` (code 2: configuration, credentials; 1: timed out)."""
    log_to_stderr(verbosity)
    try:
        cfg = load_config(config_path, directory, state_db)
        creds = Credentials.load(cfg.credentials)
        creds.require(cfg.broker)
    except (ConfigError, CredentialsError) as exc:
        raise RunError(str(exc), 2) from None

    if once:
        return _run_once(cfg, creds, timeout)

    service = WatchService(cfg, creds)
    stop = stop_on_signals()
    service.start()
    try:
        stop.wait()
    finally:
        log.info("stopping")
        service.stop()
    return 0


def _run_once(cfg: WatchConfig, creds: Credentials, timeout: float) -> int:
    conn = open_state_db(cfg.state_db)
    watcher = Watcher(cfg, conn)
    watcher.scan()
    deadline = time.monotonic() + timeout
    while watcher.pending and time.monotonic() < deadline:
        watcher.tick()
        nxt = watcher.next_deadline()
        time.sleep(max(0.05, min(1.0, (nxt or 0) - time.monotonic())))
    publisher = Publisher(cfg.state_db, cfg.broker, credentials=creds, logger=log)
    try:
        ok = publisher.run_until_empty(max(1.0, deadline - time.monotonic()))
    finally:
        publisher.close()
        conn.close()
    if not ok or watcher.pending:
        raise RunError("timed out before everything was published", 1)
    log.info("posted %d messages", watcher.posted)
    return 0

"""`run_subscriber`: a subscription run in the foreground, as `reelfs subscribe` starts it
(configuration, credentials and the archive checked first; the exit code returned)."""

from __future__ import annotations

import os

from backend import config as archive_config
from backend.errors import ArchiveError
from backend.replication.credentials import Credentials, CredentialsError
from backend.replication.running import RunError, log_to_stderr, stop_on_signals
from backend.replication.subscribe.config import ConfigError, load_config

from .flow import Subscriber
from .store import MountUnavailable


def run_subscriber(
    config_path: str | os.PathLike[str],
    *,
    state_db: str | None = None,
    once: bool = False,
    timeout: float | None = None,
    verbosity: int = 0,
) -> int:
    """Replicate until SIGTERM/SIGINT (with `once`, until nothing is left to do; with
    `timeout`, that many seconds at most). Returns 0, or 1 if `once` timed out with work
    left; raises `RunError` (code 2: configuration, credentials; 1: not mounted)."""
    try:
        cfg = load_config(config_path, state_db)
        creds = Credentials.load(cfg.credentials)
        creds.require(cfg.broker)
        archive = archive_config.load(cfg.archive)
    except (ConfigError, CredentialsError, archive_config.ConfigError, ArchiveError) as exc:
        raise RunError(str(exc), 2) from None
    log_to_stderr(verbosity)
    sub = Subscriber(cfg, creds, archive.socket_path, archive_posts="post" in archive.raw)
    stop = stop_on_signals()
    try:
        return sub.run(stop, once=once, timeout=timeout)
    except MountUnavailable as exc:
        raise RunError(
            f"archive {cfg.archive} is not mounted ({exc}); "
            f"mount it first: reelfs mount {cfg.archive} MOUNTPOINT",
            1,
        ) from None
    finally:
        sub.close()

"""Configuration of `reelfs watch`: a TOML file whose keys follow sr3 option names.

Keys (sr3 spellings accepted as aliases, see reelfs-subscribe(5)):

    broker          = "amqp://alice@127.0.0.1:5672/"   # password from the credentials file
    exchange        = "xs_alice"        # post_exchange; default xs_<broker user>
    topic_prefix    = "v03"             # post_topicPrefix
    post_base_url   = "http://host:8080/srv/data"  # default: the http_listen URL, else file:
    post_base_dir   = "/srv/data"       # relPath is relative to it; default: the watched DIR
    accept          = ['.*\\.nc$']      # regexes matched (anchored at the start, like
    reject          = ['.*/scratch/.*'] #   re.match) against post_base_url/relPath
    accept_unmatched = true             # acceptUnmatched
    identity        = "sha512"          # sha512 | md5 | arbitrary | cod,sha512 | cod,md5
    identity_arbitrary_value = "..."
    settle          = 5.0               # seconds without change before a file is posted
    ignore_suffixes = [".tmp", "~", ".part"]
    ignore_dotfiles = true
    block_size      = 52428800          # blockSize for files posted in blocks
    repost_interval = 3600              # a file still growing is re-posted in blocks this often
    cluster         = "pumpA"           # from_cluster
    to_clusters     = "pumpB"           # to
    source          = "alice"           # default: the broker user
    state_db        = "watch.state.db"  # default: next to the config file
    http_listen     = "127.0.0.1:8080"  # also serve post_base_dir over HTTP
    http_auth       = false             # require basic auth: the credentials file's
                                        #   http://user:pw@<http_listen>/ entries
    credentials     = "~/.config/reelfs/credentials.conf"

Filters are tried in file order, first match wins: top-level `accept`/`reject` keys in the
order they appear, then `[[filter]]` tables (`accept = '...'` or `reject = '...'`), which
allow any interleaving.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common_config import (
    ConfigError,
    Filter,
    broker_url,
    first_match,
    read_document,
    split_filters,
)
from .message import IDENTITY_METHODS

ALIASES = {
    "post_broker": "broker",
    "post_exchange": "exchange",
    "post_topicPrefix": "topic_prefix",
    "topicPrefix": "topic_prefix",
    "post_topic_prefix": "topic_prefix",
    "post_baseUrl": "post_base_url",
    "post_baseDir": "post_base_dir",
    "acceptUnmatched": "accept_unmatched",
    "fileAgeMin": "settle",
    "inflight": "settle",
    "blockSize": "block_size",
    "to": "to_clusters",
    "identity_method": "identity",
}

KNOWN_KEYS = {
    "broker",
    "exchange",
    "topic_prefix",
    "post_base_url",
    "post_base_dir",
    "accept",
    "reject",
    "filter",
    "accept_unmatched",
    "identity",
    "identity_arbitrary_value",
    "settle",
    "ignore_suffixes",
    "ignore_dotfiles",
    "block_size",
    "repost_interval",
    "cluster",
    "to_clusters",
    "source",
    "state_db",
    "http_listen",
    "http_auth",
    "credentials",
}


@dataclass
class WatchConfig:
    watch_dir: Path
    broker: str
    exchange: str
    post_base_url: str
    post_base_dir: Path
    state_db: Path
    topic_prefix: str = "v03"
    filters: list[Filter] = field(default_factory=list)
    accept_unmatched: bool = True
    identity_method: str = "sha512"
    identity_arbitrary_value: str | None = None
    settle: float = 5.0
    ignore_suffixes: tuple[str, ...] = (".tmp", "~", ".part")
    ignore_dotfiles: bool = True
    block_size: int = 50 * 1024 * 1024
    repost_interval: float = 3600.0
    cluster: str | None = None
    to_clusters: str | None = None
    source: str | None = None
    http_listen: str | None = None
    http_auth: bool = False
    credentials: Path | None = None

    def accepts(self, url: str) -> bool:
        """sr3 accept/reject: first matching pattern decides, else `accept_unmatched`."""
        return first_match(self.filters, url, self.accept_unmatched)

    def ignored_name(self, rel_path: str) -> bool:
        """Temporary or hidden names that are never posted (any component for dotfiles)."""
        parts = rel_path.split("/")
        if self.ignore_dotfiles and any(p.startswith(".") for p in parts):
            return True
        return any(parts[-1].endswith(s) for s in self.ignore_suffixes)


def _number(raw: dict[str, Any], key: str, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"{key}: expected a non-negative number, got {value!r}")
    return float(value)


def load_config(
    path: str | os.PathLike[str], watch_dir: str | os.PathLike[str], state_db: str | None = None
) -> WatchConfig:
    """Read and check a watch configuration for watching `watch_dir`."""
    cfg_path = Path(path)
    raw, filters = split_filters(cfg_path, read_document(cfg_path), ALIASES, KNOWN_KEYS)

    wdir = Path(watch_dir).resolve()
    if not wdir.is_dir():
        raise ConfigError(f"{watch_dir} is not a directory")
    burl = broker_url(cfg_path, raw)
    broker: str = raw["broker"]
    base_dir = Path(os.path.expanduser(raw.get("post_base_dir", str(wdir)))).resolve()
    if wdir != base_dir and base_dir not in wdir.parents:
        raise ConfigError(f"post_base_dir {base_dir} must contain the watched directory {wdir}")
    http_listen = raw.get("http_listen")
    base_url = raw.get("post_base_url")
    if base_url is None:
        base_url = f"http://{http_listen}{base_dir}" if http_listen else f"file:{base_dir}"
    identity = str(raw.get("identity", "sha512"))
    method = identity.split(",", 1)[0]
    if method not in IDENTITY_METHODS or method == "random":
        raise ConfigError(f"identity: unknown method {identity!r}")
    if method == "arbitrary" and not raw.get("identity_arbitrary_value"):
        raise ConfigError("identity arbitrary needs identity_arbitrary_value")
    if method == "cod" and identity.split(",", 1)[-1] not in ("sha512", "md5"):
        raise ConfigError("identity cod needs an algorithm: cod,sha512 or cod,md5")
    block_size = raw.get("block_size", 50 * 1024 * 1024)
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ConfigError("block_size: expected a positive integer (bytes)")
    default_state = cfg_path.resolve().with_suffix(".state.db")
    state = Path(os.path.expanduser(state_db or raw.get("state_db") or default_state))
    if not state.is_absolute():
        state = cfg_path.resolve().parent / state
    suffixes = raw.get("ignore_suffixes", [".tmp", "~", ".part"])
    if not isinstance(suffixes, list) or not all(isinstance(s, str) for s in suffixes):
        raise ConfigError("ignore_suffixes: expected a list of strings")
    creds = raw.get("credentials")
    return WatchConfig(
        watch_dir=wdir,
        broker=broker,
        exchange=str(raw.get("exchange") or f"xs_{burl.user}"),
        post_base_url=str(base_url),
        post_base_dir=base_dir,
        state_db=state,
        topic_prefix=str(raw.get("topic_prefix", "v03")),
        filters=filters,
        accept_unmatched=bool(raw.get("accept_unmatched", True)),
        identity_method=identity,
        identity_arbitrary_value=raw.get("identity_arbitrary_value"),
        settle=_number(raw, "settle", 5.0),
        ignore_suffixes=tuple(suffixes),
        ignore_dotfiles=bool(raw.get("ignore_dotfiles", True)),
        block_size=block_size,
        repost_interval=_number(raw, "repost_interval", 3600.0),
        cluster=raw.get("cluster"),
        to_clusters=raw.get("to_clusters"),
        source=raw.get("source") or burl.user,
        http_listen=http_listen,
        http_auth=bool(raw.get("http_auth", False)),
        credentials=Path(os.path.expanduser(creds)) if creds else None,
    )

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

`WatchFile` is the document as written; `load_config` resolves it against the watched
directory into `WatchConfig`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, PlainValidator, model_validator

from backend.config.values import Bool, Model, integer, number
from backend.replication.broker import BrokerURL
from backend.replication.message import IDENTITY_METHODS
from backend.replication.sr3_config import (
    Broker,
    ConfigError,
    Filter,
    first_match,
    read_document,
    resolve_path,
    split_filters,
    validate,
)

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

Seconds = number(0)
Bytes = integer(1, expected="a positive integer (bytes)")


def _identity(value: Any) -> str:
    identity = str(value)
    method, _, algorithm = identity.partition(",")
    if method not in IDENTITY_METHODS or method == "random":
        raise ValueError(f"unknown method {identity!r}")
    if method == "cod" and algorithm not in ("sha512", "md5"):
        raise ValueError("cod needs an algorithm: cod,sha512 or cod,md5")
    return identity


class WatchFile(Model):
    """The document as written (sr3 aliases resolved, filters taken apart)."""

    broker: Broker = Field(description="amqp://user@host:port/")
    exchange: str = ""  # "": xs_<broker user>
    topic_prefix: str = "v03"
    post_base_url: str | None = None
    post_base_dir: str | None = None
    accept_unmatched: Bool = True
    identity: Annotated[str, PlainValidator(_identity)] = "sha512"
    identity_arbitrary_value: str | None = None
    settle: Seconds = 5.0
    ignore_suffixes: list[str] = Field([".tmp", "~", ".part"])
    ignore_dotfiles: Bool = True
    block_size: Bytes = 50 * 1024 * 1024
    repost_interval: Seconds = 3600.0
    cluster: str | None = None
    to_clusters: str | None = None
    source: str | None = None
    state_db: str | None = None
    http_listen: str | None = None
    http_auth: Bool = False
    credentials: str | None = None

    @model_validator(mode="after")
    def _arbitrary_has_value(self) -> WatchFile:
        if self.identity == "arbitrary" and not self.identity_arbitrary_value:
            raise ValueError("identity arbitrary needs identity_arbitrary_value")
        return self


KNOWN_KEYS = frozenset(WatchFile.model_fields) | {"accept", "reject", "filter"}


@dataclass
class WatchConfig:
    """A watcher's configuration, checked: what `reelfs watch` runs with."""

    watch_dir: Path
    broker: str
    exchange: str
    post_base_url: str
    post_base_dir: Path
    state_db: Path
    topic_prefix: str
    filters: list[Filter]
    accept_unmatched: bool
    identity_method: str
    identity_arbitrary_value: str | None
    settle: float
    ignore_suffixes: tuple[str, ...]
    ignore_dotfiles: bool
    block_size: int
    repost_interval: float
    cluster: str | None
    to_clusters: str | None
    source: str | None
    http_listen: str | None
    http_auth: bool
    credentials: Path | None

    def accepts(self, url: str) -> bool:
        """sr3 accept/reject: first matching pattern decides, else `accept_unmatched`."""
        return first_match(self.filters, url, self.accept_unmatched)

    def ignored_name(self, rel_path: str) -> bool:
        """Temporary or hidden names that are never posted (any component for dotfiles)."""
        parts = rel_path.split("/")
        if self.ignore_dotfiles and any(p.startswith(".") for p in parts):
            return True
        return any(parts[-1].endswith(s) for s in self.ignore_suffixes)


def load_config(
    path: str | os.PathLike[str], watch_dir: str | os.PathLike[str], state_db: str | None = None
) -> WatchConfig:
    """Read and check a watch configuration for watching `watch_dir`."""
    cfg_path = Path(path)
    raw, filters = split_filters(cfg_path, read_document(cfg_path), ALIASES, KNOWN_KEYS)
    wdir = Path(watch_dir).resolve()
    if not wdir.is_dir():
        raise ConfigError(f"{watch_dir} is not a directory")
    f = validate(WatchFile, cfg_path, raw)
    user = BrokerURL.parse(f.broker).user
    base_dir = Path(os.path.expanduser(f.post_base_dir or str(wdir))).resolve()
    if wdir != base_dir and base_dir not in wdir.parents:
        raise ConfigError(f"post_base_dir {base_dir} must contain the watched directory {wdir}")
    base_url = f.post_base_url
    if base_url is None:
        base_url = f"http://{f.http_listen}{base_dir}" if f.http_listen else f"file:{base_dir}"
    default_state = str(cfg_path.resolve().with_suffix(".state.db"))
    state = resolve_path(state_db or f.state_db or default_state, cfg_path.resolve().parent)
    return WatchConfig(
        watch_dir=wdir,
        broker=f.broker,
        exchange=f.exchange or f"xs_{user}",
        post_base_url=base_url,
        post_base_dir=base_dir,
        state_db=state,
        topic_prefix=f.topic_prefix,
        filters=filters,
        accept_unmatched=f.accept_unmatched,
        identity_method=f.identity,
        identity_arbitrary_value=f.identity_arbitrary_value,
        settle=f.settle,
        ignore_suffixes=tuple(f.ignore_suffixes),
        ignore_dotfiles=f.ignore_dotfiles,
        block_size=f.block_size,
        repost_interval=f.repost_interval,
        cluster=f.cluster,
        to_clusters=f.to_clusters,
        source=f.source or user,
        http_listen=f.http_listen,
        http_auth=f.http_auth,
        credentials=Path(os.path.expanduser(f.credentials)) if f.credentials else None,
    )

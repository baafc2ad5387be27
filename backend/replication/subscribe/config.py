"""Configuration of `reelfs subscribe`: a TOML file whose keys follow sr3 option names.

Keys (sr3 spellings accepted as aliases; see reelfs-subscribe(5)):

    broker          = "amqp://feeder@127.0.0.1:5672/"  # password from the credentials file
    exchange        = "xs_alice"          # or a list; default xs_<broker user>
    topic_prefix    = "v03"               # topicPrefix
    subtopic        = ["raw.#", "obs.*"]  # one binding each; default "#"
    accept          = ['.*\\.nc$']         # regexes matched (re.match) against relPath,
    reject          = ['scratch/.*']      #   first match wins ([[filter]] tables too)
    accept_unmatched = true               # acceptUnmatched
    archive         = "/srv/archiveB"     # the archive to store into (it must be mounted)
    directory       = "/replica"          # archive path the relPaths are stored under
    cluster         = "siteB"             # this site; default: [post] cluster of the archive
    post_exchange   = "xpublic"           # where the archive re-posts what is stored here
    post_base_url   = "http://b:8080/"    # post_baseUrl: the baseUrl of those re-posts
    queue           = "q_feeder.subscribe.b.1"   # default: q_<user>.subscribe.<config>.<random>
    parallel        = 4                   # instances: download streams
    bytes_per_second = "20MiB"            # byte-rate limit of the whole subscription; 0 = none
    on_file         = "/usr/local/bin/ingest --site b"  # run with the stored file's path appended
    on_file_timeout = 300
    winnow_window   = 300                 # nodupe_ttl: seconds; 0 = no duplicate suppression
    report_exchange = "xr_{source}"       # or a list, or "" for no reports
    source_from_exchange = true           # sourceFromExchange
    file_url_roots  = ["/srv/data"]       # local trees a file: baseUrl may be read from
    timeout         = 120                 # seconds without progress before a transfer fails
    fsync           = true                # a stored file is on stable storage before its ack
    state_db        = "b.state.db"        # default: next to the config file
    credentials     = "~/.config/reelfs/credentials.conf"

    [retry]                               # failed transfers: durable queue, exponential backoff
    initial  = 2        # seconds before the first retry
    maximum  = 300      # cap of the backoff
    attempts = 10       # then the message is given up and reported (499)

`SubscribeFile` is the document as written; `load_config` resolves it against the file's
place and the archive into `SubscribeConfig`. Every problem raises `ConfigError` naming
the key (the CLI exits 2).
"""

from __future__ import annotations

import os
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, PlainValidator, model_validator

from backend.config.units import Size
from backend.config.values import Bool, Model, integer, number
from backend.replication.message import DEFAULT_TOPIC_PREFIX
from backend.replication.sr3_config import (
    Broker,
    ConfigError,
    Filter,
    broker_user,
    check_exchange,
    first_match,
    read_document,
    resolve_path,
    split_filters,
    validate,
)

ALIASES = {
    "topicPrefix": "topic_prefix",
    "acceptUnmatched": "accept_unmatched",
    "post_baseUrl": "post_base_url",
    "instances": "parallel",
    "nodupe_ttl": "winnow_window",
    "sourceFromExchange": "source_from_exchange",
    "queueName": "queue",
    "queue_name": "queue",
}


def _names(value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise ValueError("expected a string or a non-empty list of strings")
    return list(items)


def _exchanges(value: Any) -> list[str]:
    return [check_exchange(e, template=True) for e in _names(value)]


def _report_exchanges(value: Any) -> list[str]:
    return [] if value in ("", False, []) else _exchanges(value)


def _subtopics(value: Any) -> list[str]:
    subtopics = _names(value)
    for s in subtopics:
        if not s or any(c.isspace() for c in s):
            raise ValueError(f"bad pattern {s!r}")
    return subtopics


def _prefix(value: Any) -> str:
    if isinstance(value, str) and value:
        return value
    raise ValueError("expected a string such as v03")


def _exchange(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected an exchange name")
    return check_exchange(value)


def _url(value: Any) -> str:
    if isinstance(value, str) and re.match(r"^[a-z][a-z0-9+.-]*:", value):
        return value
    raise ValueError("expected a URL (http://host:port/path, file:/dir)")


def _queue(value: Any) -> str:
    if isinstance(value, str) and value:
        return value
    raise ValueError("expected a queue name")


def _command(value: Any) -> list[str]:
    words: list[str] = []
    if isinstance(value, str):
        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
    elif isinstance(value, list) and all(isinstance(w, str) for w in value):
        words = list(value)
    if not words:
        raise ValueError("expected a command (string or list of words)")
    return words


def _roots(value: Any) -> list[Path]:
    roots = [value] if isinstance(value, str) else value
    if not isinstance(roots, list) or not all(
        isinstance(r, str) and os.path.isabs(os.path.expanduser(r)) for r in roots
    ):
        raise ValueError("expected a list of absolute directories")
    return [Path(os.path.expanduser(r)).resolve() for r in roots]


def _archive_path(value: Any) -> str:
    """An archive path, normalised: "/", "/a/b" (no trailing slash)."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"expected an archive path starting with /, got {value!r}")
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts) or "\x00" in value:
        raise ValueError(f"{value!r} must not contain '..' or NUL")
    if any(p.startswith(".reelfs-in.") for p in parts):
        raise ValueError(f"{value!r} is a hidden download name")
    return "/" + "/".join(parts)


def _text(value: Any) -> str:
    if isinstance(value, str) and value:
        return value
    raise ValueError(f"expected a non-empty string, got {value!r}")


Count = integer(1)
Seconds = number(0)
Timeout = number(1)  # a transfer stalled this long has failed: not less than a second
Backoff = number(0.01)


class RetryPolicy(Model):
    """Failed transfers wait in a durable queue, with exponential backoff."""

    initial: Backoff = 2.0
    maximum: Backoff = 300.0
    attempts: Count = 10

    @model_validator(mode="after")
    def _ordered(self) -> RetryPolicy:
        if self.maximum < self.initial:
            raise ValueError("retry.maximum: must not be below retry.initial")
        return self

    def delay(self, attempts_so_far: int) -> float:
        """Seconds to wait after the `attempts_so_far`-th failure (1, 2, ...)."""
        return min(self.maximum, self.initial * (2 ** max(0, attempts_so_far - 1)))


class SubscribeFile(Model):
    """The document as written (sr3 aliases resolved, filters taken apart)."""

    broker: Broker = Field(description="amqp://user@host:port/")
    exchange: Annotated[list[str], PlainValidator(_exchanges)] | None = None
    topic_prefix: Annotated[str, PlainValidator(_prefix)] = DEFAULT_TOPIC_PREFIX
    subtopic: Annotated[list[str], PlainValidator(_subtopics)] = Field("#")
    accept_unmatched: Bool = True
    archive: Annotated[str, PlainValidator(_text)] = Field(
        description="the archive directory to store into"
    )
    directory: Annotated[str, PlainValidator(_archive_path)] = "/"
    cluster: str | None = None
    post_exchange: Annotated[str, PlainValidator(_exchange)] | None = None
    post_base_url: Annotated[str, PlainValidator(_url)] | None = None
    queue: Annotated[str, PlainValidator(_queue)] | None = None
    parallel: Count = 4
    prefetch: Count | None = None
    bytes_per_second: Size = 0
    on_file: Annotated[list[str], PlainValidator(_command)] | None = None
    on_file_timeout: Seconds = 300.0
    winnow_window: Seconds = 300.0
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    report_exchange: Annotated[list[str], PlainValidator(_report_exchanges)] = Field("xr_{source}")
    report_topic_prefix: Annotated[str, PlainValidator(_prefix)] | None = None
    source_from_exchange: Bool = True
    file_url_roots: Annotated[list[Path], PlainValidator(_roots)] = Field(default_factory=list)
    timeout: Timeout = 120.0
    fsync: Bool = True
    state_db: str | None = None
    credentials: str | None = None


KNOWN_KEYS = frozenset(SubscribeFile.model_fields) | {"accept", "reject", "filter"}
RETRY_KEYS = frozenset(RetryPolicy.model_fields)


@dataclass
class SubscribeConfig:
    """A subscriber's configuration, checked: what `reelfs subscribe` runs with."""

    config_path: Path
    broker: str
    broker_user: str
    exchanges: list[str]
    archive: Path
    directory: str  # archive path, "/" or "/a/b" (no trailing slash)
    cluster: str
    state_db: Path
    topic_prefix: str
    subtopics: list[str]
    filters: list[Filter]
    accept_unmatched: bool
    post_exchange: str | None
    post_base_url: str | None
    queue: str | None
    parallel: int
    prefetch: int
    bytes_per_second: int
    on_file: list[str] | None
    on_file_timeout: float
    winnow_window: float
    retry: RetryPolicy
    report_exchanges: list[str]
    report_topic_prefix: str
    source_from_exchange: bool
    file_url_roots: list[Path]
    timeout: float
    fsync: bool
    credentials: Path | None

    @property
    def name(self) -> str:
        """The configuration's name (file stem), used in the queue name as sr3 does."""
        return self.config_path.stem

    def accepts(self, rel_path: str) -> bool:
        """First matching pattern decides, else `accept_unmatched`."""
        return first_match(self.filters, rel_path, self.accept_unmatched)

    def archive_path(self, rel_path: str) -> str:
        """The archive path (`/replica/raw/x`) a relPath is stored at."""
        return self.directory.rstrip("/") + "/" + rel_path.strip("/")

    def report_exchanges_for(self, source: str) -> list[str]:
        return [t.replace("{source}", source) for t in self.report_exchanges]


def _archive_cluster(archive: Path) -> str | None:
    """The archive's own `[post] cluster`, the default of `cluster`."""
    try:
        with open(archive / "reelfs.toml", "rb") as f:
            raw = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return None
    post = raw.get("post")
    cluster = post.get("cluster") if isinstance(post, dict) else None
    return cluster if isinstance(cluster, str) and cluster else None


def load_config(path: str | os.PathLike[str], state_db: str | None = None) -> SubscribeConfig:
    """Read and check a subscribe configuration."""
    cfg_path = Path(path).absolute()
    raw, filters = split_filters(cfg_path, read_document(cfg_path), ALIASES, KNOWN_KEYS)
    f = validate(SubscribeFile, cfg_path, raw)
    user = broker_user(f.broker)

    archive = resolve_path(f.archive, cfg_path.parent).resolve()
    if not (archive / "reelfs.toml").is_file():
        raise ConfigError(f"archive: {archive} is not a reelfs archive (no reelfs.toml)")
    cluster = f.cluster if f.cluster is not None else _archive_cluster(archive)
    if cluster is None or not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", cluster):
        raise ConfigError(
            "cluster: required (this site's name, letters, digits, _.:-), or [post] cluster "
            "in the archive's reelfs.toml"
        )
    state = state_db or f.state_db or str(cfg_path.with_suffix(".state.db"))
    return SubscribeConfig(
        config_path=cfg_path,
        broker=f.broker,
        broker_user=user,
        exchanges=f.exchange or ["xpublic" if user == "anonymous" else f"xs_{user}"],
        archive=archive,
        directory=f.directory,
        cluster=cluster,
        state_db=resolve_path(state, cfg_path.parent),
        topic_prefix=f.topic_prefix,
        subtopics=f.subtopic,
        filters=filters,
        accept_unmatched=f.accept_unmatched,
        post_exchange=f.post_exchange,
        post_base_url=f.post_base_url,
        queue=f.queue,
        parallel=f.parallel,
        prefetch=f.prefetch or max(16, 4 * f.parallel),
        bytes_per_second=f.bytes_per_second,
        on_file=f.on_file,
        on_file_timeout=f.on_file_timeout,
        winnow_window=f.winnow_window,
        retry=f.retry,
        report_exchanges=f.report_exchange,
        report_topic_prefix=f.report_topic_prefix or f.topic_prefix,
        source_from_exchange=f.source_from_exchange,
        file_url_roots=f.file_url_roots,
        timeout=f.timeout,
        fsync=f.fsync,
        credentials=Path(os.path.expanduser(f.credentials)) if f.credentials else None,
    )

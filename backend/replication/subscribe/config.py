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

Every problem raises `ConfigError` naming the key (the CLI exits 2).
"""

from __future__ import annotations

import os
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.config import ConfigError as ArchiveConfigError
from backend.config import parse_size
from backend.replication.common_config import (
    ConfigError,
    Filter,
    broker_url,
    first_match,
    read_document,
    split_filters,
)
from backend.replication.message import DEFAULT_TOPIC_PREFIX

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

KNOWN_KEYS = {
    "broker",
    "exchange",
    "topic_prefix",
    "subtopic",
    "accept",
    "reject",
    "filter",
    "accept_unmatched",
    "archive",
    "directory",
    "cluster",
    "post_exchange",
    "post_base_url",
    "queue",
    "parallel",
    "prefetch",
    "bytes_per_second",
    "on_file",
    "on_file_timeout",
    "winnow_window",
    "retry",
    "report_exchange",
    "report_topic_prefix",
    "source_from_exchange",
    "file_url_roots",
    "timeout",
    "fsync",
    "state_db",
    "credentials",
}

RETRY_KEYS = {"initial", "maximum", "attempts"}

_EXCHANGE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,255}")


@dataclass(frozen=True)
class RetryPolicy:
    initial: float = 2.0
    maximum: float = 300.0
    attempts: int = 10

    def delay(self, attempts_so_far: int) -> float:
        """Seconds to wait after the `attempts_so_far`-th failure (1, 2, ...)."""
        return min(self.maximum, self.initial * (2 ** max(0, attempts_so_far - 1)))


@dataclass
class SubscribeConfig:
    config_path: Path
    broker: str
    broker_user: str
    exchanges: list[str]
    archive: Path
    directory: str  # archive path, "/" or "/a/b" (no trailing slash)
    cluster: str
    state_db: Path
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    subtopics: list[str] = field(default_factory=lambda: ["#"])
    filters: list[Filter] = field(default_factory=list)
    accept_unmatched: bool = True
    post_exchange: str | None = None
    post_base_url: str | None = None
    queue: str | None = None
    parallel: int = 4
    prefetch: int = 16
    bytes_per_second: int = 0
    on_file: list[str] | None = None
    on_file_timeout: float = 300.0
    winnow_window: float = 300.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    report_exchanges: list[str] = field(default_factory=lambda: ["xr_{source}"])
    report_topic_prefix: str = DEFAULT_TOPIC_PREFIX
    source_from_exchange: bool = True
    file_url_roots: list[Path] = field(default_factory=list)
    timeout: float = 120.0
    fsync: bool = True
    credentials: Path | None = None

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


def _number(value: Any, key: str, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ConfigError(f"{key}: expected a number >= {minimum:g}, got {value!r}")
    return float(value)


def _integer(value: Any, key: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}: expected an integer >= {minimum}, got {value!r}")
    return value


def _names(value: Any, key: str) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise ConfigError(f"{key}: expected a string or a non-empty list of strings")
    return list(items)


def _exchange(name: str, key: str) -> str:
    if not _EXCHANGE_RE.fullmatch(name.replace("{source}", "x")):
        raise ConfigError(f"{key}: bad exchange name {name!r}")
    return name


def _archive_path(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError(f"{key}: expected an archive path starting with /, got {value!r}")
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts) or "\x00" in value:
        raise ConfigError(f"{key}: {value!r} must not contain '..' or NUL")
    if any(p.startswith(".reelfs-in.") for p in parts):
        raise ConfigError(f"{key}: {value!r} is a hidden download name")
    return "/" + "/".join(parts)


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

    burl = broker_url(cfg_path, raw)
    broker: str = raw["broker"]
    user = burl.user or "anonymous"

    archive_raw = raw.get("archive")
    if not isinstance(archive_raw, str) or not archive_raw:
        raise ConfigError("archive: required (the archive directory to store into)")
    archive = Path(os.path.expanduser(archive_raw))
    if not archive.is_absolute():
        archive = cfg_path.parent / archive
    archive = archive.resolve()
    if not (archive / "reelfs.toml").is_file():
        raise ConfigError(f"archive: {archive} is not a reelfs archive (no reelfs.toml)")

    cluster = raw.get("cluster", _archive_cluster(archive))
    if not isinstance(cluster, str) or not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", cluster):
        raise ConfigError(
            "cluster: required (this site's name, letters, digits, _.:-), or [post] cluster "
            "in the archive's reelfs.toml"
        )

    exchanges = [
        _exchange(e, "exchange")
        for e in _names(
            raw.get("exchange", "xpublic" if user == "anonymous" else f"xs_{user}"), "exchange"
        )
    ]
    subtopics = _names(raw.get("subtopic", "#"), "subtopic")
    for s in subtopics:
        if any(c.isspace() for c in s) or not s:
            raise ConfigError(f"subtopic: bad pattern {s!r}")
    topic_prefix = raw.get("topic_prefix", DEFAULT_TOPIC_PREFIX)
    if not isinstance(topic_prefix, str) or not topic_prefix:
        raise ConfigError("topic_prefix: expected a string such as v03")

    post_exchange = raw.get("post_exchange")
    if post_exchange is not None:
        if not isinstance(post_exchange, str):
            raise ConfigError("post_exchange: expected an exchange name")
        _exchange(post_exchange, "post_exchange")
    post_base_url = raw.get("post_base_url")
    if post_base_url is not None and (
        not isinstance(post_base_url, str) or not re.match(r"^[a-z][a-z0-9+.-]*:", post_base_url)
    ):
        raise ConfigError("post_base_url: expected a URL (http://host:port/path, file:/dir)")

    queue = raw.get("queue")
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise ConfigError("queue: expected a queue name")

    parallel = _integer(raw.get("parallel", 4), "parallel", minimum=1)
    prefetch = _integer(raw.get("prefetch", max(16, 4 * parallel)), "prefetch", minimum=1)

    rate = raw.get("bytes_per_second", 0)
    if isinstance(rate, str):
        try:
            rate = parse_size(rate, "bytes_per_second")
        except ArchiveConfigError as exc:
            raise ConfigError(str(exc)) from None
    rate = _integer(rate, "bytes_per_second")

    on_file = raw.get("on_file")
    command: list[str] | None = None
    if on_file is not None:
        if isinstance(on_file, str):
            try:
                command = shlex.split(on_file)
            except ValueError as exc:
                raise ConfigError(f"on_file: {exc}") from None
        elif isinstance(on_file, list) and all(isinstance(w, str) for w in on_file):
            command = list(on_file)
        if not command:
            raise ConfigError("on_file: expected a command (string or list of words)")

    retry_raw = raw.get("retry", {})
    if not isinstance(retry_raw, dict):
        raise ConfigError("retry: expected a table [retry] with initial, maximum, attempts")
    for k in retry_raw:
        if k not in RETRY_KEYS:
            raise ConfigError(f"retry: unknown key {k!r} (known: {', '.join(sorted(RETRY_KEYS))})")
    retry = RetryPolicy(
        initial=_number(retry_raw.get("initial", 2.0), "retry.initial", minimum=0.01),
        maximum=_number(retry_raw.get("maximum", 300.0), "retry.maximum", minimum=0.01),
        attempts=_integer(retry_raw.get("attempts", 10), "retry.attempts", minimum=1),
    )
    if retry.maximum < retry.initial:
        raise ConfigError("retry.maximum: must not be below retry.initial")

    reports_raw = raw.get("report_exchange", "xr_{source}")
    if reports_raw in ("", False, []):
        report_exchanges: list[str] = []
    else:
        report_exchanges = [
            _exchange(e, "report_exchange") for e in _names(reports_raw, "report_exchange")
        ]
    report_prefix = raw.get("report_topic_prefix", topic_prefix)
    if not isinstance(report_prefix, str) or not report_prefix:
        raise ConfigError("report_topic_prefix: expected a string such as v03")

    roots_raw = raw.get("file_url_roots", [])
    if isinstance(roots_raw, str):
        roots_raw = [roots_raw]
    if not isinstance(roots_raw, list) or not all(
        isinstance(r, str) and os.path.isabs(os.path.expanduser(r)) for r in roots_raw
    ):
        raise ConfigError("file_url_roots: expected a list of absolute directories")

    directory = _archive_path(raw.get("directory", "/"), "directory")
    creds = raw.get("credentials")
    if creds is not None and not isinstance(creds, str):
        raise ConfigError("credentials: expected a path")
    default_state = cfg_path.with_suffix(".state.db")
    state = Path(os.path.expanduser(state_db or raw.get("state_db") or default_state))
    if not state.is_absolute():
        state = cfg_path.parent / state
    for key in ("accept_unmatched", "source_from_exchange", "fsync"):
        if key in raw and not isinstance(raw[key], bool):
            raise ConfigError(f"{key}: expected true or false")

    return SubscribeConfig(
        config_path=cfg_path,
        broker=broker,
        broker_user=user,
        exchanges=exchanges,
        archive=archive,
        directory=directory,
        cluster=cluster,
        state_db=state,
        topic_prefix=topic_prefix,
        subtopics=subtopics,
        filters=filters,
        accept_unmatched=raw.get("accept_unmatched", True),
        post_exchange=post_exchange,
        post_base_url=post_base_url,
        queue=queue,
        parallel=parallel,
        prefetch=prefetch,
        bytes_per_second=rate,
        on_file=command,
        on_file_timeout=_number(raw.get("on_file_timeout", 300.0), "on_file_timeout"),
        winnow_window=_number(raw.get("winnow_window", 300.0), "winnow_window"),
        retry=retry,
        report_exchanges=report_exchanges,
        report_topic_prefix=report_prefix,
        source_from_exchange=raw.get("source_from_exchange", True),
        file_url_roots=[Path(os.path.expanduser(r)).resolve() for r in roots_raw],
        timeout=_number(raw.get("timeout", 120.0), "timeout", minimum=1.0),
        fsync=raw.get("fsync", True),
        credentials=Path(os.path.expanduser(creds)) if creds else None,
    )

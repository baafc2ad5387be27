"""The `[post]` and `[serve]` sections of an archive's reelfs.toml.

`[post]` makes the archive announce every change on its mount as a v03 message;
`[serve]` makes the mount daemon run the HTTP data service those messages point at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from backend.config import ConfigError, parse_duration, parse_size
from backend.replication.broker import BrokerURL

IDENTITY_METHODS = ("sha512", "md5", "arbitrary", "cod", "cod,sha512", "cod,md5")
POST_KEYS = {
    "broker",
    "exchange",
    "topic_prefix",
    "base_url",
    "cluster",
    "to_clusters",
    "identity",
    "identity_arbitrary_value",
    "blocksize",
}
SERVE_KEYS = {"listen", "recall_wait", "auth", "url_prefix"}


@dataclass(frozen=True)
class PostConfig:
    broker: str
    exchange: str
    topic_prefix: str
    base_url: str
    cluster: str | None
    to_clusters: str | None
    identity: str
    arbitrary_value: str | None
    blocksize: int  # files larger than this are announced in parts; 0: never
    source: str  # the broker user: a source posts as itself

    @property
    def base_path(self) -> str:
        """The URL path of base_url: sr3 maps `fileOp.rename` values by this prefix."""
        return urlsplit(self.base_url).path.rstrip("/")


@dataclass(frozen=True)
class ServeConfig:
    listen: str
    recall_wait: float
    auth: bool
    url_prefix: str


def _check_keys(section: str, table: Any, known: set[str]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"reelfs.toml: [{section}] must be a table")
    for k in table:
        if k not in known:
            raise ConfigError(
                f"reelfs.toml: unknown key '{k}' in [{section}] (known: {', '.join(sorted(known))})"
            )
    return table


def load_post(raw: dict[str, Any]) -> PostConfig | None:
    table = raw.get("post")
    if table is None:
        return None
    t = _check_keys("post", table, POST_KEYS)
    where = "reelfs.toml: [post]"
    for key in ("broker", "base_url"):
        if not isinstance(t.get(key), str) or not t[key]:
            raise ConfigError(f"{where} {key}: required (a URL)")
    try:
        broker = BrokerURL.parse(t["broker"])
    except ValueError as e:
        raise ConfigError(f"{where} broker: {e}") from None
    if broker.password:
        raise ConfigError(
            f"{where} broker: no password in reelfs.toml; put it in the "
            "credentials file (see reelfs-post(7))"
        )
    scheme = urlsplit(t["base_url"]).scheme
    if scheme not in ("http", "https", "file", "sftp", "ftp"):
        raise ConfigError(f"{where} base_url: an http(s)://, file:, sftp:// or ftp:// URL")
    identity = t.get("identity", "sha512")
    if identity not in IDENTITY_METHODS:
        raise ConfigError(f"{where} identity: one of {', '.join(IDENTITY_METHODS)}")
    if identity == "arbitrary" and not t.get("identity_arbitrary_value"):
        raise ConfigError(f'{where} identity = "arbitrary" needs identity_arbitrary_value')
    user = broker.user or "anonymous"
    exchange = t.get("exchange") or ("xpublic" if user == "anonymous" else f"xs_{user}")
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,255}", exchange):
        raise ConfigError(f"{where} exchange: bad name {exchange!r}")
    return PostConfig(
        broker=t["broker"],
        exchange=exchange,
        topic_prefix=str(t.get("topic_prefix", "v03")),
        base_url=t["base_url"],
        cluster=t.get("cluster"),
        to_clusters=t.get("to_clusters"),
        identity=identity,
        arbitrary_value=t.get("identity_arbitrary_value"),
        blocksize=parse_size(t.get("blocksize", 0), f"{where} blocksize"),
        source=user,
    )


def load_serve(raw: dict[str, Any]) -> ServeConfig | None:
    table = raw.get("serve")
    if table is None:
        return None
    t = _check_keys("serve", table, SERVE_KEYS)
    where = "reelfs.toml: [serve]"
    listen = t.get("listen")
    if not isinstance(listen, str) or not re.fullmatch(r"[^:\s]+:\d{1,5}", listen):
        raise ConfigError(f"{where} listen: HOST:PORT, got {listen!r}")
    auth = t.get("auth", False)
    if not isinstance(auth, bool):
        raise ConfigError(f"{where} auth: true or false")
    return ServeConfig(
        listen=listen,
        recall_wait=parse_duration(t.get("recall_wait", "20s"), f"{where} recall_wait"),
        auth=auth,
        url_prefix=str(t.get("url_prefix", "/")),
    )

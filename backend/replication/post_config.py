"""The `[post]` and `[serve]` sections of an archive's reelfs.toml.

`[post]` makes the archive announce every change on its mount as a v03 message;
`[serve]` makes the mount daemon run the HTTP data service those messages point at.
Both are checked when the archive is mounted (`reelfs mount`, the daemon's start), not
by `reelfs init`, which may write a [post] the user completes later.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Annotated, Any, Literal, TypeVar, get_args
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, PlainValidator, ValidationError, model_validator

from backend.config.errors import ConfigError, explain
from backend.config.load import FILE
from backend.config.units import Duration, Size
from backend.config.values import Bool, Model
from backend.replication.sr3_config import Broker, broker_user, check_exchange

Identity = Literal["sha512", "md5", "arbitrary", "cod", "cod,sha512", "cod,md5"]
IDENTITY_METHODS: tuple[str, ...] = get_args(Identity)


def _base_url(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"required (a URL), got {value!r}")
    if urlsplit(value).scheme not in ("http", "https", "file", "sftp", "ftp"):
        raise ValueError(f"expected an http(s)://, file:, sftp:// or ftp:// URL, got {value!r}")
    return value


def _listen(value: Any) -> str:
    if isinstance(value, str) and re.fullmatch(r"[^:\s]+:\d{1,5}", value):
        return value
    raise ValueError(f"expected HOST:PORT, got {value!r}")


class PostConfig(Model):
    # not frozen: the exchange's default is the broker user's, set once the broker is valid
    """`[post]`: where and how the archive announces its changes."""

    model_config = ConfigDict(frozen=False)

    broker: Broker = Field(description="a URL")
    exchange: str = ""  # "": xs_<broker user>, or xpublic for an anonymous one
    topic_prefix: str = "v03"
    base_url: Annotated[str, PlainValidator(_base_url)] = Field(description="a URL")
    cluster: str | None = None
    to_clusters: str | None = None
    identity: Identity = "sha512"
    identity_arbitrary_value: str | None = None
    blocksize: Size = 0  # files larger than this are announced in parts; 0: never

    @model_validator(mode="after")
    def _derived(self) -> PostConfig:
        if self.identity == "arbitrary" and not self.identity_arbitrary_value:
            raise ValueError('identity = "arbitrary" needs identity_arbitrary_value')
        if not self.exchange:
            user = self.source
            self.exchange = "xpublic" if user == "anonymous" else f"xs_{user}"
        try:
            check_exchange(self.exchange)
        except ValueError as e:
            raise ValueError(f"exchange: {e}") from None
        return self

    @cached_property
    def source(self) -> str:
        """The broker user: a source posts as itself."""
        return broker_user(self.broker)

    @property
    def arbitrary_value(self) -> str | None:
        return self.identity_arbitrary_value

    @property
    def base_path(self) -> str:
        """The URL path of base_url: sr3 maps `fileOp.rename` values by this prefix."""
        return urlsplit(self.base_url).path.rstrip("/")


class ServeConfig(Model):
    """`[serve]`: the HTTP data service the messages' baseUrl points at."""

    listen: Annotated[str, PlainValidator(_listen)] = Field(description="HOST:PORT")
    recall_wait: Duration = Field("20s")
    auth: Bool = False
    url_prefix: str = "/"


S = TypeVar("S", PostConfig, ServeConfig)


def _section(model: type[S], raw: dict[str, Any], name: str) -> S | None:
    table = raw.get(name)
    if table is None:
        return None
    try:
        return model.model_validate(table)
    except ValidationError as e:
        raise ConfigError(explain(e, model, FILE, within=(name,))) from None


def load_post(raw: dict[str, Any]) -> PostConfig | None:
    return _section(PostConfig, raw, "post")


def load_serve(raw: dict[str, Any]) -> ServeConfig | None:
    return _section(ServeConfig, raw, "serve")

"""What the replication configurations share: the sr3-style TOML document of `reelfs watch`
and `reelfs subscribe` (its key aliases, sr3's accept/reject filters), their error, and the
broker URL that every replication configuration names (password only in the credentials
file).

sr3 decides with the first `accept`/`reject` pattern that matches, top to bottom, and
falls back to `accept_unmatched`; TOML cannot repeat a key, so an ordered mix of both
is written as `[[filter]]` tables of one `accept` or `reject` each.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, PlainValidator, ValidationError

from backend.config.errors import FlatKeys, explain
from backend.replication.broker import BrokerURL


class ConfigError(Exception):
    """A watch or subscribe configuration is unusable; the message names the key."""


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], cfg_path: str | os.PathLike[str], raw: dict[str, Any]) -> M:
    """`raw` (the document's keys, aliases resolved) as `model`, or one ConfigError."""
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(explain(e, model, FlatKeys(str(cfg_path)))) from None


def _broker(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a URL such as amqp://user@host:port/, got {value!r}")
    url = BrokerURL.parse(value)  # its ValueError says what is wrong
    if url.password is not None:
        raise ValueError("no password here: put it in the credentials file (see reelfs-post(7))")
    return value


#: an AMQP broker URL without its password
Broker = Annotated[str, PlainValidator(_broker)]


_EXCHANGE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,255}")


def check_exchange(name: str, *, template: bool = False) -> str:
    """An AMQP exchange name; a `template` may hold ``{source}`` (the message's source)."""
    if not _EXCHANGE_RE.fullmatch(name.replace("{source}", "x") if template else name):
        raise ValueError(f"bad exchange name {name!r}")
    return name


def broker_user(broker: str) -> str:
    """The broker URL's user: whom messages are posted as, and the default exchange's owner."""
    return BrokerURL.parse(broker).user or "anonymous"


def resolve_path(value: str, base: Path) -> Path:
    """A path the configuration names: ``~`` expanded, relative to `base` (its directory)."""
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else base / path


@dataclass
class Filter:
    """One accept or reject pattern, in the order the file gives them."""

    accept: bool
    pattern: re.Pattern[str]

    def __repr__(self) -> str:
        return f"{'accept' if self.accept else 'reject'} {self.pattern.pattern}"


def first_match(filters: list[Filter], text: str, accept_unmatched: bool) -> bool:
    """sr3 accept/reject: the first matching pattern decides, else `accept_unmatched`."""
    for f in filters:
        if f.pattern.match(text):
            return f.accept
    return accept_unmatched


def compile_filters(kind: str, value: Any) -> list[Filter]:
    patterns = [value] if isinstance(value, str) else value
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise ConfigError(f"{kind}: expected a regex or a list of regexes")
    out = []
    for p in patterns:
        try:
            out.append(Filter(kind == "accept", re.compile(p)))
        except re.error as exc:
            raise ConfigError(f"{kind}: bad regex {p!r}: {exc}") from None
    return out


def read_document(cfg_path: Path) -> dict[str, Any]:
    try:
        with open(cfg_path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {cfg_path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"configuration file {cfg_path} is a directory") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{cfg_path}: {exc}") from None


def split_filters(
    cfg_path: str | os.PathLike[str],
    doc: dict[str, Any],
    aliases: dict[str, str],
    known: set[str] | frozenset[str],
) -> tuple[dict[str, Any], list[Filter]]:
    """The document's keys (aliases resolved, unknown ones refused) and, apart, its
    filters in the order written."""
    raw: dict[str, Any] = {}
    filters: list[Filter] = []
    for key, value in doc.items():
        key = aliases.get(key, key)
        if key not in known:
            raise ConfigError(f"{cfg_path}: unknown key {key!r}")
        if key in raw:
            raise ConfigError(f"{key}: given twice (under two spellings)")
        if key in ("accept", "reject"):
            filters.extend(compile_filters(key, value))
        elif key == "filter":
            filters.extend(_filter_tables(value))
        else:
            raw[key] = value
    return raw, filters


def _filter_tables(value: Any) -> list[Filter]:
    if not isinstance(value, list):
        raise ConfigError("filter: expected [[filter]] tables")
    out: list[Filter] = []
    for table in value:
        if (
            not isinstance(table, dict)
            or len(table) != 1
            or not ({"accept", "reject"} & set(table))
        ):
            raise ConfigError("[[filter]]: each needs exactly one accept or reject")
        ((kind, pattern),) = table.items()
        out.extend(compile_filters(kind, pattern))
    return out

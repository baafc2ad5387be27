"""What the configurations of `reelfs watch` and `reelfs subscribe` share: the TOML
document, its key aliases, the broker URL (password only in the credentials file), and
sr3's accept/reject filters.

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
from typing import Any

from .broker import BrokerURL


class ConfigError(Exception):
    """A watch or subscribe configuration is unusable; the message names the key."""


@dataclass
class Filter:
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
    known: set[str],
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


def broker_url(cfg_path: Path, raw: dict[str, Any]) -> BrokerURL:
    """The `broker` key: required, a valid URL, and without a password."""
    broker = raw.get("broker")
    if not isinstance(broker, str):
        raise ConfigError(f"{cfg_path}: broker is required (amqp://user@host:port/)")
    try:
        burl = BrokerURL.parse(broker)
    except ValueError as exc:
        raise ConfigError(f"broker: {exc}") from None
    if burl.password is not None:
        raise ConfigError("broker: put the password in the credentials file, not the config")
    return burl

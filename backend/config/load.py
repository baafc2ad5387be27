"""Reading an archive's configuration: the file, its defaults, the ``-o SECTION.KEY=VALUE``
overrides of `reelfs init` and `reelfs mount`, and the validation into `Config`.

Every value is checked when the file is read, so a bad file fails at start with the
section, the key and what was expected, never later in a mover thread.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticUndefined

from .errors import ConfigError, Sections, explain, model_in
from .model import Config, ConfigFile

CONFIG_NAME = "reelfs.toml"
FILE = Sections(CONFIG_NAME)


def _defaults() -> dict[str, Any]:
    """Each section's defaults as the file would write them (the models hold them)."""
    out: dict[str, Any] = {}
    for name, field in ConfigFile.model_fields.items():
        section = model_in(field.annotation)
        if section is not None:
            out[name] = {
                key: f.default
                for key, f in section.model_fields.items()
                if f.default not in (None, PydanticUndefined)
            }
        elif isinstance(field.default, dict):
            out[name] = dict(field.default)
    return out


DEFAULTS: dict[str, Any] = _defaults()


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """`cache.size=2GiB` -> (['cache', 'size'], '2GiB'); TOML syntax for the value if it parses.

    The key is a TOML dotted key, so that a family whose name has a dot can be named:
    ``families."a.b".width=2``."""
    key, eq, value = text.partition("=")
    try:
        node: Any = tomllib.loads(f"{key} = 0") if eq else None
    except tomllib.TOMLDecodeError:
        node = None
    parts: list[str] = []
    while isinstance(node, dict) and len(node) == 1:
        ((part, node),) = node.items()
        parts.append(part)
    if len(parts) < 2:
        raise ConfigError(f"override {text!r}: expected SECTION.KEY=VALUE")
    try:
        parsed: Any = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return parts, parsed


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: {p} is not a section")
        node[parts[-1]] = value
    return out


def read_raw(archive: Path) -> dict[str, Any]:
    path = archive / CONFIG_NAME
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        from backend.errors import ArchiveError

        raise ArchiveError(f"{archive} is not a reelfs archive (no {CONFIG_NAME})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def load(archive: Path, overrides: Iterable[str] = ()) -> Config:
    archive = Path(archive).resolve()
    raw = apply_overrides(read_raw(archive), overrides)
    return build(archive, raw)


def build(archive: Path, raw: dict[str, Any]) -> Config:
    """Validate `raw` (the file's tables) as the configuration of the archive at `archive`."""
    merged = _merge(DEFAULTS, raw)
    try:
        file = ConfigFile.model_validate(merged, context={"archive": archive})
    except ValidationError as e:
        raise ConfigError(explain(e, ConfigFile, FILE)) from None
    return file.config(archive, merged)


def check_archive_id(config: Config, recorded: str | None) -> None:
    """Refuse a reelfs.toml whose [archive] id is not the catalog's: the id begins every
    file id (bfid), so new files would get ids of another archive, and the tapes say
    which archive they belong to."""
    if recorded and recorded != config.archive_id:
        raise ConfigError(
            f"{config.archive / CONFIG_NAME}: [archive] id is {config.archive_id!r}, but the "
            f"catalog belongs to archive {recorded!r}; the id cannot change: "
            f'set id = "{recorded}" again'
        )

"""Configuration errors, and pydantic's validation errors told as one line a user can act on.

Every configuration model is validated by pydantic; what reaches the user is never
pydantic's report but one sentence naming the file, the section or key, and what was
expected. Two ways of naming a value exist: reelfs.toml's sections (``reelfs.toml:
[cache] size``) and the flat sr3-style files of watch and subscribe (``retry.initial``).
"""

from __future__ import annotations

import re
import types
from collections.abc import Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo


class ConfigError(ValueError):
    """A configuration value or file that cannot be used; the message names where and why."""


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def table_name(parts: Sequence[str]) -> str:
    """A table's name as TOML writes it: ``families.raw``, ``families."a.b"``."""
    return ".".join(
        p if _BARE_KEY.fullmatch(p) else '"' + p.replace('"', '\\"') + '"' for p in parts
    )


class Sections:
    """Values named by section and key: ``reelfs.toml: [cache] size``."""

    def __init__(self, file: str) -> None:
        self.file = file

    def key(self, loc: tuple[str, ...]) -> str:
        return f"{self.file}: [{table_name(loc[:-1])}] {loc[-1]}"

    def unknown(self, loc: tuple[str, ...], known: list[str]) -> str:
        if len(loc) == 1:
            return f"{self.file}: unknown section [{loc[0]}]"
        return (
            f"{self.file}: unknown key '{loc[-1]}' in [{table_name(loc[:-1])}] "
            f"(known: {', '.join(known)})"
        )

    def not_table(self, loc: tuple[str, ...], known: list[str]) -> str:
        return f"{self.file}: [{table_name(loc)}] must be a table"

    def missing(self, loc: tuple[str, ...], description: str | None) -> str:
        return f"{self.key(loc)}: required" + (f" ({description})" if description else "")

    def whole(self, loc: tuple[str, ...], text: str) -> str:
        """A check across the keys of one table (the text names them)."""
        return f"{self.file}: [{table_name(loc)}] {text}" if loc else f"{self.file}: {text}"


class FlatKeys(Sections):
    """Values named by key alone, sub-tables by a dotted key: ``retry.initial``."""

    def key(self, loc: tuple[str, ...]) -> str:
        return ".".join(loc)

    def unknown(self, loc: tuple[str, ...], known: list[str]) -> str:
        if len(loc) == 1:
            return f"{self.file}: unknown key {loc[0]!r}"
        return f"{self.key(loc[:-1])}: unknown key {loc[-1]!r} (known: {', '.join(known)})"

    def not_table(self, loc: tuple[str, ...], known: list[str]) -> str:
        key = self.key(loc)
        return f"{key}: expected a table [{key}] with {', '.join(known)}"

    def missing(self, loc: tuple[str, ...], description: str | None) -> str:
        return f"{self.file}: {self.key(loc)} is required" + (
            f" ({description})" if description else ""
        )

    def whole(self, loc: tuple[str, ...], text: str) -> str:
        return text


def explain(
    exc: ValidationError,
    model: type[BaseModel],
    style: Sections,
    within: tuple[str, ...] = (),
) -> str:
    """The first problem of `exc` (from validating `model`) as one line.

    `within` is where the model sits in its file (``("post",)`` for the [post] section).
    An unknown key is told first: a misspelt key is the likeliest cause of the rest."""
    errors = sorted(exc.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
    err = errors[0]
    # list positions are left out: the key names the list, the text the bad item
    loc = tuple(str(p) for p in err["loc"] if not isinstance(p, int))
    where = within + loc
    kind = err["type"]
    if loc and loc[-1] == "[key]":  # a table's name, such as a family's, is the problem
        return f"{style.file}: {_text(err)}"
    if kind == "extra_forbidden":
        return style.unknown(where, _known(model, loc[:-1]))
    annotation, field = _walk(model, loc)
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return style.not_table(where, _known(model, loc))
    if kind == "missing":
        return style.missing(where, field.description if field else None)
    if model_in(annotation) is not None:  # raised by a check of the whole table
        return style.whole(where, _text(err))
    return f"{style.key(where)}: {_text(err)}"


def _text(err: Any) -> str:
    """What was expected, and what was given."""
    kind = err["type"]
    if kind in ("value_error", "assertion_error"):
        return str(err["ctx"]["error"])
    if kind == "literal_error":
        return f"expected {err['ctx']['expected']}, got {err['input']!r}"
    if kind == "bool_type":
        return f"expected true or false, got {err['input']!r}"
    msg = str(err["msg"]).split(",")[0]  # the rest is pydantic's detail
    m = re.fullmatch(r"Input should be (?:(an?) )?(?:valid )?(.*)", msg)
    if not m:
        return f"{msg[:1].lower()}{msg[1:]}, got {err['input']!r}"
    what = m.group(2)
    if m.group(1):  # "a valid integer" -> "an integer"
        what = ("an " if what[:1] in "aeiou" else "a ") + what
    return f"expected {what}, got {err['input']!r}"


def _known(model: type[BaseModel], loc: tuple[str, ...]) -> list[str]:
    inner = model_in(_walk(model, loc)[0])
    return sorted(inner.model_fields) if inner else []


def _walk(model: type[BaseModel], loc: tuple[str, ...]) -> tuple[Any, FieldInfo | None]:
    """The annotation and field at `loc` in `model` (through sub-models and dicts of them)."""
    annotation: Any = model
    field: FieldInfo | None = None
    for part in loc:
        inner = model_in(annotation)
        if inner is not None and part in inner.model_fields:
            field = inner.model_fields[part]
            annotation = field.annotation
        elif get_origin(annotation) is dict:  # a table of tables: `part` is a name
            annotation, field = get_args(annotation)[1], None
        else:
            return None, None
    return annotation, field


def model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds, through ``X | None`` and ``Annotated``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType, Annotated):
        for arg in get_args(annotation):
            inner = model_in(arg)
            if inner is not None:
                return inner
    return None

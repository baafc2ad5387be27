"""Sizes and durations as configurations write them: ``"2GiB"``, ``"30s"``, or plain numbers
(bytes, seconds), as functions for the CLI's options and as annotated types for the models.

KiB/MiB/GiB/TiB are powers of 1024, KB/MB/GB/TB (and K/M/G/T) powers of 1000.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import PlainValidator

from .errors import ConfigError

_UNITS = {
    "": 1,
    "B": 1,
    "K": 1000,
    "KB": 1000,
    "KIB": 1024,
    "M": 1000**2,
    "MB": 1000**2,
    "MIB": 1024**2,
    "G": 1000**3,
    "GB": 1000**3,
    "GIB": 1024**3,
    "T": 1000**4,
    "TB": 1000**4,
    "TIB": 1024**4,
}
_DURATIONS = {"": 1.0, "MS": 0.001, "S": 1.0, "M": 60.0, "MIN": 60.0, "H": 3600.0, "D": 86400.0}
_NUMBER_UNIT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")


def size_value(value: Any) -> int:
    """Bytes of a size; ValueError saying what was expected (the caller names where)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like '2GiB', got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative ({value})")
        return value
    if isinstance(value, str):
        m = _NUMBER_UNIT.fullmatch(value)
        if m and m.group(2).upper() in _UNITS:
            return int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    raise ValueError(f"expected a size like '2GiB' or '512MiB', got {value!r}")


def duration_value(value: Any) -> float:
    """Seconds of a duration; ValueError saying what was expected."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like '30s', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"a duration cannot be negative ({value})")
        return float(value)
    if isinstance(value, str):
        m = _NUMBER_UNIT.fullmatch(value)
        if m and m.group(2).upper() in _DURATIONS:
            return float(m.group(1)) * _DURATIONS[m.group(2).upper()]
    raise ValueError(f"expected a duration like '30s' or '5m', got {value!r}")


def parse_size(value: Any, where: str = "size") -> int:
    try:
        return size_value(value)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def parse_duration(value: Any, where: str = "duration") -> float:
    try:
        return duration_value(value)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def format_size(n: int | float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


#: bytes, written as a size
Size = Annotated[int, PlainValidator(size_value)]
#: seconds, written as a duration
Duration = Annotated[float, PlainValidator(duration_value)]

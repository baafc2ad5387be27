"""An archive's configuration: `reelfs.toml` in the archive directory, overridable per command.

Every value is validated when the file is read, so a bad file fails at start with the
section, the key and what was expected, never later in a mover thread. Sizes are written
like ``"2GiB"`` and durations like ``"30s"``; plain numbers are bytes and seconds.
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.catalog.families import MAX_COPIES

CONFIG_NAME = "reelfs.toml"

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


class ConfigError(ValueError):
    """A configuration value or file that cannot be used; the message names where and why."""


def parse_size(value: Any, where: str = "size") -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a size like '2GiB', got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{where}: a size cannot be negative ({value})")
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value)
        if m and m.group(2).upper() in _UNITS:
            return int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    raise ConfigError(f"{where}: expected a size like '2GiB' or '512MiB', got {value!r}")


def parse_duration(value: Any, where: str = "duration") -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a duration like '30s', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ConfigError(f"{where}: a duration cannot be negative ({value})")
        return float(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value)
        if m and m.group(2).upper() in _DURATIONS:
            return float(m.group(1)) * _DURATIONS[m.group(2).upper()]
    raise ConfigError(f"{where}: expected a duration like '30s' or '5m', got {value!r}")


def format_size(n: int | float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


@dataclass
class CacheConfig:
    path: Path
    size: int
    high_watermark: float
    low_watermark: float
    full_timeout: float


@dataclass
class LibraryConfig:
    type: str
    spec: dict[str, Any]  # the whole [library] table, handed to drivers.open_library
    block_size: int
    label_format: str
    cleaning_uses: int = 50
    default_capacity: int = 0  # of a cartridge the catalog learns of; 0: the largest known


@dataclass
class MoverConfig:
    idle_dismount: float
    flush_delay: float
    batch_files: int
    batch_bytes: int
    retries: int


@dataclass
class AggregationConfig:
    """Small files go to tape together, one pax archive with many members per tape file."""

    threshold: int  # files smaller than this are aggregated (0: every file its own tape file)
    size: int  # a family's small files are due once they add up to this; caps a tape file
    age: float  # ...or once the oldest of them waited this long
    files: int = 10_000  # the most files in one tape file of small files


@dataclass
class MountConfig:
    allow_other: bool
    cache_timeout: float
    max_file_size: int | None
    readahead: int = 1024 * 1024


@dataclass
class Config:
    archive: Path
    archive_id: str
    name: str
    cache: CacheConfig
    library: LibraryConfig
    mover: MoverConfig
    recall_on_open: str
    mount: MountConfig
    families: dict[str, int] = field(default_factory=dict)  # family -> width
    raw: dict[str, Any] = field(default_factory=dict)
    aggregation: AggregationConfig = field(
        default_factory=lambda: AggregationConfig(256 * 1024**2, 4 * 1024**3, 30.0)
    )
    verify_families: frozenset[str] = frozenset()  # read-after-write verify ([families.X])
    # tape copies of each file, for the families whose table sets `copies`
    family_copies: dict[str, int] = field(default_factory=dict)

    @property
    def catalog_path(self) -> Path:
        return self.archive / "catalog.db"

    @property
    def run_dir(self) -> Path:
        return self.archive / "run"

    @property
    def log_dir(self) -> Path:
        return self.archive / "log"

    @property
    def socket_path(self) -> Path:
        return self.run_dir / "reelfsd.sock"


DEFAULTS: dict[str, Any] = {
    "archive": {"name": "reelfs"},
    "cache": {
        "path": "cache",
        "size": "4GiB",
        "high_watermark": 0.9,
        "low_watermark": 0.75,
        "full_timeout": "60s",
    },
    "library": {
        "type": "emulated",
        "path": "library",
        "block_size": "256KiB",
        "label_format": "none",
    },
    "mover": {
        "idle_dismount": "60s",
        "flush_delay": "30s",
        "batch_files": 1000,
        "batch_bytes": "16GiB",
        "retries": 3,
    },
    "aggregation": {"threshold": "256MiB", "size": "4GiB", "files": 10_000},  # age: flush_delay
    "recall": {"on_open": "block"},
    "mount": {"allow_other": False, "cache_timeout": "300s", "readahead": "1MiB"},
    "families": {},
}

_KNOWN = {
    "archive": {"id", "name"},
    "cache": set(DEFAULTS["cache"]),
    "library": {
        "type",
        "path",
        "block_size",
        "label_format",
        "changer",
        "drives",
        "drive_elements",
        "default_capacity",
        "cleaning_uses",
    },
    "mover": set(DEFAULTS["mover"]),
    "aggregation": {"threshold", "size", "age", "files"},
    "recall": {"on_open"},
    "mount": {"allow_other", "cache_timeout", "max_file_size", "readahead"},
    "families": None,  # free-form: one table per family
    "post": None,  # replication, validated by backend.replication
    "serve": None,
}


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """`cache.size=2GiB` -> (['cache', 'size'], '2GiB'); TOML syntax for the value if it parses."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected SECTION.KEY=VALUE")
    key, _, value = text.partition("=")
    parts = [p.strip() for p in key.strip().split(".")]
    if len(parts) < 2 or not all(parts):
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
    for section, value in raw.items():
        if section not in _KNOWN:
            raise ConfigError(f"{CONFIG_NAME}: unknown section [{section}]")
        keys = _KNOWN[section]
        if keys is None:
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{CONFIG_NAME}: {section} must be a table")
        for k in value:
            if k not in keys:
                raise ConfigError(
                    f"{CONFIG_NAME}: unknown key '{k}' in [{section}] "
                    f"(known: {', '.join(sorted(keys))})"
                )
    c = _merge(DEFAULTS, raw)

    def where(section: str, key: str) -> str:
        return f"{CONFIG_NAME}: [{section}] {key}"

    archive_id = c["archive"].get("id")
    if not isinstance(archive_id, str) or not re.fullmatch(r"[0-9A-F]{8}", archive_id):
        raise ConfigError(f"{where('archive', 'id')}: expected 8 hex digits, got {archive_id!r}")

    cc = c["cache"]
    high = _fraction(cc["high_watermark"], where("cache", "high_watermark"))
    low = _fraction(cc["low_watermark"], where("cache", "low_watermark"))
    if low >= high:
        raise ConfigError(
            f"{CONFIG_NAME}: [cache] low_watermark ({low}) must be below high_watermark ({high})"
        )
    cache = CacheConfig(
        path=_path(archive, cc["path"], where("cache", "path")),
        size=parse_size(cc["size"], where("cache", "size")),
        high_watermark=high,
        low_watermark=low,
        full_timeout=parse_duration(cc["full_timeout"], where("cache", "full_timeout")),
    )
    if cache.size < 1024 * 1024:
        raise ConfigError(f"{where('cache', 'size')}: at least 1MiB, got {cache.size}")

    lc = c["library"]
    if lc["type"] not in ("emulated", "scsi"):
        raise ConfigError(f"{where('library', 'type')}: 'emulated' or 'scsi', got {lc['type']!r}")
    block_size = parse_size(lc["block_size"], where("library", "block_size"))
    if block_size < 512 or block_size % 512 or block_size > 16 * 1024 * 1024:
        raise ConfigError(
            f"{where('library', 'block_size')}: a multiple of 512 between 512 and 16MiB, "
            f"got {block_size}"
        )
    if lc["label_format"] not in ("none", "ansi"):
        raise ConfigError(
            f"{where('library', 'label_format')}: 'none' or 'ansi', got {lc['label_format']!r}"
        )
    library = LibraryConfig(
        type=lc["type"],
        spec=dict(lc),
        block_size=block_size,
        label_format=lc["label_format"],
        cleaning_uses=_positive_int(lc.get("cleaning_uses", 50), where("library", "cleaning_uses")),
    )
    if "default_capacity" in lc:
        library.default_capacity = parse_size(
            lc["default_capacity"], where("library", "default_capacity")
        )

    mc = c["mover"]
    mover = MoverConfig(
        idle_dismount=parse_duration(mc["idle_dismount"], where("mover", "idle_dismount")),
        flush_delay=parse_duration(mc["flush_delay"], where("mover", "flush_delay")),
        batch_files=_positive_int(mc["batch_files"], where("mover", "batch_files")),
        batch_bytes=parse_size(mc["batch_bytes"], where("mover", "batch_bytes")),
        retries=_positive_int(mc["retries"], where("mover", "retries")),
    )

    ac = c["aggregation"]
    aggregation = AggregationConfig(
        threshold=parse_size(ac["threshold"], where("aggregation", "threshold")),
        size=parse_size(ac["size"], where("aggregation", "size")),
        age=(
            parse_duration(ac["age"], where("aggregation", "age"))
            if "age" in ac
            else mover.flush_delay
        ),
        files=_positive_int(ac["files"], where("aggregation", "files")),
    )
    if aggregation.threshold and aggregation.size < aggregation.threshold:
        raise ConfigError(
            f"{CONFIG_NAME}: [aggregation] size ({aggregation.size}) must be at least "
            f"threshold ({aggregation.threshold})"
        )

    on_open = c["recall"]["on_open"]
    if on_open not in ("block", "refuse"):
        raise ConfigError(f"{where('recall', 'on_open')}: 'block' or 'refuse', got {on_open!r}")

    mo = c["mount"]
    if not isinstance(mo["allow_other"], bool):
        raise ConfigError(f"{where('mount', 'allow_other')}: true or false")
    max_file_size = mo.get("max_file_size")
    mount = MountConfig(
        allow_other=mo["allow_other"],
        cache_timeout=parse_duration(mo["cache_timeout"], where("mount", "cache_timeout")),
        max_file_size=(
            None
            if max_file_size is None
            else parse_size(max_file_size, where("mount", "max_file_size"))
        ),
        readahead=parse_size(mo["readahead"], where("mount", "readahead")),
    )

    families: dict[str, int] = {}
    verify: set[str] = set()
    family_copies: dict[str, int] = {}
    for fam, table in c["families"].items():
        if not isinstance(table, dict):
            raise ConfigError(f"{CONFIG_NAME}: [families.{fam}] must be a table")
        check_family_name(fam)
        for k in table:
            if k not in FAMILY_KEYS:
                raise ConfigError(
                    f"{CONFIG_NAME}: unknown key '{k}' in [families.{fam}] "
                    f"(known: {', '.join(sorted(FAMILY_KEYS))})"
                )
        families[fam] = _positive_int(
            table.get("width", 1), f"{CONFIG_NAME}: [families.{fam}] width"
        )
        check = table.get("verify", False)
        if not isinstance(check, bool):
            raise ConfigError(f"{CONFIG_NAME}: [families.{fam}] verify: true or false")
        if check:
            verify.add(fam)
        if "copies" in table:
            family_copies[fam] = _copies(table["copies"], f"{CONFIG_NAME}: [families.{fam}] copies")

    name = c["archive"].get("name", "reelfs")
    return Config(
        archive=archive,
        archive_id=archive_id,
        name=str(name),
        cache=cache,
        library=library,
        mover=mover,
        recall_on_open=on_open,
        mount=mount,
        families=families,
        raw=c,
        aggregation=aggregation,
        verify_families=frozenset(verify),
        family_copies=family_copies,
    )


FAMILY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
FAMILY_KEYS = frozenset({"width", "verify", "copies"})


def check_family_name(name: str) -> str:
    if not FAMILY_RE.fullmatch(name):
        raise ConfigError(
            f"file family {name!r}: 1-64 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def _fraction(v: Any, where: str) -> float:
    if isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < 1:
        return float(v)
    raise ConfigError(f"{where}: a fraction between 0 and 1, got {v!r}")


def _positive_int(v: Any, where: str) -> int:
    if isinstance(v, int) and not isinstance(v, bool) and v > 0:
        return v
    raise ConfigError(f"{where}: a positive integer, got {v!r}")


def _copies(v: Any, where: str) -> int:
    if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_COPIES:
        return v
    raise ConfigError(
        f"{where}: an integer from 1 to {MAX_COPIES} (tape copies of each file), got {v!r}"
    )


def _path(archive: Path, v: Any, where: str) -> Path:
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{where}: a path, got {v!r}")
    p = Path(v)
    return p if p.is_absolute() else archive / p


def dump(raw: Mapping[str, Any]) -> str:
    """Write a config table as TOML (the subset reelfs uses: tables of scalars and lists)."""
    lines: list[str] = []

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list | tuple):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        raise TypeError(f"cannot write {v!r} as TOML")

    def table(prefix: str, t: Mapping[str, Any]) -> None:
        plain = {k: v for k, v in t.items() if not isinstance(v, Mapping)}
        nested = {k: v for k, v in t.items() if isinstance(v, Mapping)}
        if plain or not nested:
            lines.append(f"[{prefix}]")
            for k, v in plain.items():
                lines.append(f"{k} = {scalar(v)}")
            lines.append("")
        for k, v in nested.items():
            table(f"{prefix}.{k}", v)

    for section, t in raw.items():
        table(section, t)
    return "\n".join(lines)

"""An archive's configuration: `reelfs.toml` in the archive directory, overridable per command.

Every value is a typed model (pydantic):
`model` (reelfs.toml's sections and `Config`), `load` (reading, defaults, overrides),
`write` (TOML out), `units` (sizes like ``"2GiB"``, durations like ``"30s"``), `errors`
(one precise line per problem), `values` (the base model and value types). Replication's
own configurations are typed the same way with these parts, beside the code they
configure: backend.replication.post_config ([post] and [serve]), .subscribe.config and
.watch_config (sr3-style files), .sr3_config (what those two share).

Callers import from here: ``from backend.config import Config, load, parse_size``.
"""

from .errors import ConfigError
from .load import (
    CONFIG_NAME,
    DEFAULTS,
    apply_overrides,
    build,
    check_archive_id,
    load,
    parse_override,
    read_raw,
)
from .model import (
    FAMILY_KEYS,
    FAMILY_RE,
    AggregationConfig,
    CacheConfig,
    Config,
    LibraryConfig,
    MountConfig,
    MoverConfig,
    check_family_name,
)
from .units import format_size, parse_duration, parse_size
from .write import dump

__all__ = [
    "CONFIG_NAME",
    "DEFAULTS",
    "FAMILY_KEYS",
    "FAMILY_RE",
    "AggregationConfig",
    "CacheConfig",
    "Config",
    "ConfigError",
    "LibraryConfig",
    "MountConfig",
    "MoverConfig",
    "apply_overrides",
    "build",
    "check_archive_id",
    "check_family_name",
    "dump",
    "format_size",
    "load",
    "parse_duration",
    "parse_override",
    "parse_size",
    "read_raw",
]

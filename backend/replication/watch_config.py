"""Moved to `backend.config.watch`: the configuration of `reelfs watch`.

Kept so that `backend.replication` imports keep working while the code moves."""

from backend.config.watch import ALIASES, KNOWN_KEYS, ConfigError, Filter, WatchConfig, load_config

__all__ = ["ALIASES", "KNOWN_KEYS", "ConfigError", "Filter", "WatchConfig", "load_config"]

"""Moved to `backend.config.subscribe`: the configuration of `reelfs subscribe`.

Kept so that `backend.replication` imports keep working while the code moves."""

from backend.config.subscribe import (
    ALIASES,
    KNOWN_KEYS,
    RETRY_KEYS,
    ConfigError,
    Filter,
    RetryPolicy,
    SubscribeConfig,
    load_config,
)

__all__ = [
    "ALIASES",
    "KNOWN_KEYS",
    "RETRY_KEYS",
    "ConfigError",
    "Filter",
    "RetryPolicy",
    "SubscribeConfig",
    "load_config",
]

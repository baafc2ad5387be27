"""Moved to `backend.config.post`: the `[post]` and `[serve]` sections of reelfs.toml.

Kept so that `backend.replication` imports keep working while the code moves."""

from backend.config import ConfigError
from backend.config.post import (
    IDENTITY_METHODS,
    PostConfig,
    ServeConfig,
    load_post,
    load_serve,
)

__all__ = [
    "IDENTITY_METHODS",
    "ConfigError",
    "PostConfig",
    "ServeConfig",
    "load_post",
    "load_serve",
]

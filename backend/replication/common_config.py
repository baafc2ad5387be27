"""Moved to `backend.config.replication`: what watch and subscribe configurations share.

Kept so that `backend.replication` imports keep working while the code moves."""

from backend.config.replication import (
    ConfigError,
    Filter,
    compile_filters,
    first_match,
    read_document,
    split_filters,
)

__all__ = [
    "ConfigError",
    "Filter",
    "compile_filters",
    "first_match",
    "read_document",
    "split_filters",
]

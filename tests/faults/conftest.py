"""Fixtures of the fault suite: the real mounts of tests/mountfs, reused."""

from __future__ import annotations

from tests.mountfs.conftest import (  # noqa: F401 - fixtures, found by name
    archive,
    library_kind,
    make_archive,
    mounted,
    pytest_collection_modifyitems,
)

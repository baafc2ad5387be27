"""Fixtures of the fault suite: those of the mount tests, reused (tests/mountfs/conftest.py)."""

from tests.mountfs.conftest import archive, library_kind, make_archive, mounted  # noqa: F401

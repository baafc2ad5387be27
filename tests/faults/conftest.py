"""Fixtures of the fault suite: the mount fixtures of tests/mountfs, reused as they are."""

from tests.mountfs.conftest import archive, library_kind, make_archive, mounted  # noqa: F401

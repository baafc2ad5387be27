"""Errors the backend raises toward its front ends (FUSE, CLI, HTTP), with an errno."""

from __future__ import annotations

import errno as _errno


class FsError(OSError):
    """A file-system-level refusal: the FUSE layer turns it into `FUSEError(errno)`.

    The message says why, for the log; the user only sees the errno.
    """

    def __init__(self, err: int, message: str = "") -> None:
        super().__init__(err, message or _errno.errorcode.get(err, str(err)))


class ArchiveError(RuntimeError):
    """An administrative operation that cannot be done; the CLI prints it and exits non-zero."""

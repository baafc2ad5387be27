"""The archive lock: one owner of an archive's library and cache at a time.

The daemon holds it while the archive is mounted; an operator command run with no
daemon (backend.admin.context.LocalContext) holds it for the command's duration, so that
nothing else moves cartridges or cache files meanwhile. An flock on `run/daemon.lock`,
which also carries the holder's pid for the message a second owner gets.
"""

from __future__ import annotations

import fcntl
import os

from backend.config import Config
from backend.errors import ArchiveError


class ArchiveLocked(ArchiveError):
    """Another process owns the archive."""


def lock_archive(config: Config) -> int:
    """Take the archive's exclusive lock; ArchiveLocked if another process holds it."""
    config.run_dir.mkdir(parents=True, exist_ok=True)
    path = config.run_dir / "daemon.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 64, 0).decode().strip()
        finally:
            os.close(fd)
        raise ArchiveLocked(
            f"archive {config.archive} is in use by another reelfs process"
            + (f" (pid {holder})" if holder else "")
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def lock_holder(config: Config) -> int | None:
    """The pid of the process holding the archive lock, or None when nobody holds it.

    A non-blocking shared flock is refused exactly while an owner holds its exclusive
    one; the kernel drops that when the owner dies, even by kill -9, so this tells a
    live daemon from a dead one whatever pid file it left behind."""
    path = config.run_dir / "daemon.lock"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 64, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)

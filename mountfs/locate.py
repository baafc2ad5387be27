"""Finding the archive and the files a command is about.

An archive is found from `--archive DIR`, else `$REELFS_ARCHIVE`, else from a path on a
reelfs mount (the mount answers the `user.reelfs.archive` xattr), else, for commands
that name no path (`status`, `volumes`, ...), from the only reelfs mount there is, or
failing that the only stale one. A path on a mount maps to its inode by `lstat` (the
mount reports catalog inode numbers); with `--archive`, a path that is not on a mount is
taken relative to the archive root.

A mount is stale when its daemon is gone (killed, crashed) but the kernel still has it
in the mount table: `statvfs` then fails with ENOTCONN, reliably, where `stat` may still
be answered from the kernel's attribute cache. Its archive is read from the mount
table's source field (`reelfs:ARCHIVE`, the mount's `fsname`), since nothing answers
the xattr any more.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from backend import config as cfgmod
from backend.catalog.db import Catalog, open_catalog
from backend.catalog.namespace import Namespace
from backend.errors import ArchiveError, FsError

ARCHIVE_XATTR = "user.reelfs.archive"
FSTYPE = "fuse.reelfs"
FSNAME_PREFIX = "reelfs:"
#: what the kernel answers on a FUSE mount whose daemon is gone
STALE_ERRNOS = (errno.ENOTCONN, errno.ECONNABORTED)


def archive_of_path(path: str) -> Path | None:
    """The archive behind `path` if it is on a reelfs mount."""
    p = Path(path)
    # os.path.islink: a stale mount's lstat fails with ENOTCONN, which Path.is_symlink raises
    for candidate in (p, *p.parents) if not os.path.islink(p) else (*p.parents,):
        try:
            value = os.getxattr(candidate, ARCHIVE_XATTR)
        except OSError as e:
            if e.errno in (errno.ENODATA, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM):
                return None
            if e.errno == errno.ENOENT:
                continue
            return None
        return Path(value.decode())
    return None


def find_archive(explicit: str | None, paths: Sequence[str] = ()) -> Path:
    if explicit:
        return Path(explicit).absolute()
    env = os.environ.get("REELFS_ARCHIVE")
    if env:
        return Path(env).absolute()
    for p in (*paths, os.getcwd()):
        a = archive_of_path(p)
        if a is not None:
            return a
    hint = "give --archive DIR, set REELFS_ARCHIVE, or name a path on a reelfs mount"
    if paths:  # paths off every mount: never guess which archive they were meant for
        raise ArchiveError(f"which archive? {hint}")
    mounted = mounted_archives()
    archives = {a for _, a in mounted}
    if len(archives) == 1:
        return archives.pop()
    if archives:
        listed = ", ".join(f"{a} on {m}" for m, a in mounted)
        raise ArchiveError(f"which archive? {len(archives)} are mounted ({listed}): {hint}")
    # after a crash: the archive of the only stale mount, so `reelfs status` can say so
    stale = {m.archive for m in reelfs_mounts() if m.stale and m.archive is not None}
    if len(stale) == 1:
        return stale.pop()
    raise ArchiveError(f"which archive? none is mounted: {hint}")


@dataclass(frozen=True)
class ReelfsMount:
    """A reelfs entry of the mount table: where it is, the archive its source names, and
    whether it is stale (its daemon gone)."""

    mountpoint: str
    archive: Path | None

    @property
    def stale(self) -> bool:
        # asked only when needed: a live daemon answers statvfs, a hung one would block
        return is_stale(self.mountpoint)


def reelfs_mounts(mounts: Path = Path("/proc/self/mounts")) -> list[ReelfsMount]:
    """Every reelfs mount in this process's mount table, live or stale."""
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return []
    out: list[ReelfsMount] = []
    for line in lines:
        fields = line.split()
        if len(fields) < 3 or fields[2] != FSTYPE:
            continue
        source = _unescape(fields[0])
        archive = (
            Path(source.removeprefix(FSNAME_PREFIX)) if source.startswith(FSNAME_PREFIX) else None
        )
        mnt = _unescape(fields[1])
        out.append(ReelfsMount(mnt, archive))
    return out


def is_stale(mountpoint: str | os.PathLike[str]) -> bool:
    """True if `mountpoint` is a FUSE mount whose daemon is gone."""
    try:
        os.statvfs(mountpoint)
    except OSError as e:
        return e.errno in STALE_ERRNOS
    return False


def mount_at(path: str | os.PathLike[str]) -> ReelfsMount | None:
    """The reelfs mount whose mount point is `path`, if there is one."""
    names = {str(Path(path).absolute()), os.path.realpath(path)}
    # the last entry wins: a mount stacked over another hides it
    found = [m for m in reelfs_mounts() if m.mountpoint in names]
    return found[-1] if found else None


def stale_mounts(archive: Path) -> list[str]:
    """The mount points of `archive` whose daemon is gone."""
    want = os.path.realpath(archive)
    return [
        m.mountpoint
        for m in reelfs_mounts()
        if m.archive is not None and os.path.realpath(m.archive) == want and m.stale
    ]


def mounted_archives(mounts: Path = Path("/proc/self/mounts")) -> list[tuple[str, Path]]:
    """(mount point, archive) of every reelfs mount this process can see and reach."""
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return []
    out: list[tuple[str, Path]] = []
    for line in lines:
        fields = line.split()
        if len(fields) < 3 or fields[2] != "fuse.reelfs":
            continue
        mnt = _unescape(fields[1])
        archive = archive_of_path(mnt)
        if archive is not None:
            out.append((mnt, archive))
    return out


def _unescape(field: str) -> str:
    """The kernel writes space, tab, newline and backslash in mount fields as octal."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def load_config(archive: Path, overrides: Sequence[str] = ()) -> cfgmod.Config:
    return cfgmod.load(archive, overrides)


def catalog(config: cfgmod.Config) -> Catalog:
    return open_catalog(config.catalog_path)


@dataclass
class Target:
    """A path a command names, and its catalog inode."""

    path: str
    inode: int


def inodes_for(config: cfgmod.Config, cat: Catalog, paths: list[str]) -> list[Target]:
    """Each path to its catalog inode (paths on the mount, or archive-relative ones)."""
    ns = Namespace(cat)
    out: list[Target] = []
    for p in paths:
        behind = archive_of_path(p) if os.path.lexists(p) else None
        if behind is not None:
            if behind.resolve() != config.archive.resolve():
                raise ArchiveError(f"{p} belongs to archive {behind}, not {config.archive}")
            out.append(Target(p, os.lstat(p).st_ino))
            continue
        try:
            node = ns.resolve(p)
        except FsError as e:
            raise ArchiveError(f"{p}: {os.strerror(e.errno)} in archive {config.archive}") from None
        out.append(Target(p, node.id))
    return out

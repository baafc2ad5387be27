"""Storing into an archive through its mount, the way the archive's poster expects.

`reelfs subscribe` never writes the catalog or the cache itself: it works on the mount,
like any user, so files it stores go to tape like any other. Before each change it tells
the archive daemon which upstream message the change comes from (control operation
`expect_origin`, keyed by the archive path); the daemon's poster then re-announces the
change with the upstream routing fields (pubTime, source, clusters, hops) instead of as a
local change, or not at all when this site is the final destination.

Data arrives in a hidden temp file `<dir>/.reelfs-in.<name>.<random>` beside the final
name (never announced), gets its mode and times, and is renamed into place: no partial
file is ever visible under the final name. A link replacing an existing entry goes through
a temp name too, so every store is exactly one change of the final path (one origin
taken); a link to a new name is made directly, so that the archive announces a link.

All paths from the network pass `message.safe_join` under the subscription's root
(`<mountpoint><directory>`), so nothing lands outside it, through `..` or symlinks.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from backend.admin.control import ControlError, DaemonNotRunning, call
from backend.replication.message import MessageError, safe_join

INCOMING_PREFIX = ".reelfs-in."
NAME_MAX = 255


class MountUnavailable(Exception):
    """The archive is not mounted (or its daemon stopped): nothing can be stored now."""


def normalise(rel_path: str) -> str:
    """relPath without empty and `.` components (`a//./b` -> `a/b`)."""
    return "/".join(p for p in rel_path.split("/") if p not in ("", "."))


def temp_name(name: str) -> str:
    """`.reelfs-in.<name>.<random>`, the name cut (on a UTF-8 boundary) to fit NAME_MAX."""
    suffix = "." + secrets.token_hex(4)
    room = NAME_MAX - len(INCOMING_PREFIX.encode()) - len(suffix)
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > room:
        name = raw[:room].decode("utf-8", "ignore")
    return INCOMING_PREFIX + name + suffix


def origin_of(
    msg: Mapping[str, Any], cluster: str, post_exchange: str | None, post_base_url: str | None
) -> dict[str, Any]:
    """The routing fields of an upstream message, as `expect_origin` takes them."""
    origin: dict[str, Any] = {
        "pubTime": msg["pubTime"],
        "reelfs_hops": list(msg.get("reelfs_hops") or []),
        "final": is_final(msg, cluster),
    }
    for key in ("source", "from_cluster", "to_clusters"):
        if msg.get(key):
            origin[key] = msg[key]
    if post_exchange:
        origin["post_exchange"] = post_exchange
    if post_base_url:
        origin["post_base_url"] = post_base_url
    return origin


def is_final(msg: Mapping[str, Any], cluster: str) -> bool:
    """This site is the message's only destination (`to_clusters` names just it)."""
    to = msg.get("to_clusters")
    if not to:
        return False
    names = {n.strip() for n in str(to).replace(";", ",").split(",") if n.strip()}
    return names == {cluster}


class ArchiveStore:
    """The subscription's root on the archive's mount, and the daemon's control socket."""

    def __init__(
        self, socket_path: Path, directory: str, *, fsync: bool = True, posts: bool = True
    ) -> None:
        self.socket_path = socket_path
        self.directory = directory.rstrip("/") or ""
        self.fsync = fsync
        # an archive without [post] announces nothing: no origin to hand over
        self.posts = posts
        self._mountpoint: str | None = None
        self._lock = threading.Lock()
        self._dirs_lock = threading.Lock()

    # -- the mount ------------------------------------------------------------------------

    def mountpoint(self) -> str:
        """The mount point the daemon reports (asked again after a failure)."""
        with self._lock:
            if self._mountpoint is not None:
                if os.path.ismount(self._mountpoint):
                    return self._mountpoint
                # unmounted under us: never write into the bare directory left behind
                self._mountpoint = None
                raise MountUnavailable("the archive was unmounted")
            try:
                answer = call(self.socket_path, "ping", timeout=10)
            except (DaemonNotRunning, ControlError, OSError, ValueError) as exc:
                raise MountUnavailable(f"the archive daemon is not running ({exc})") from None
            mnt = answer.get("mountpoint")
            if not mnt or not os.path.ismount(mnt):
                raise MountUnavailable("the archive's daemon runs but the archive is not mounted")
            self._mountpoint = os.path.realpath(mnt)
            return self._mountpoint

    def forget_mount(self) -> None:
        with self._lock:
            self._mountpoint = None

    def alive(self) -> bool:
        """The archive is mounted and its daemon answers (re-reads the mount point)."""
        self.forget_mount()
        try:
            self.mountpoint()
            return True
        except MountUnavailable:
            return False

    def root(self) -> str:
        """`<mountpoint><directory>` (created by `ensure_dirs` when first needed)."""
        return self.mountpoint() + self.directory

    def local(self, rel: str, *, follow_final: bool = False) -> Path:
        """The path on the mount of a relPath under the root (MessageError if it escapes)."""
        root = self.root()
        if not os.path.isdir(root):
            # the root itself is created later (with an origin); nothing below it exists
            return Path(root) / normalise(rel)
        return safe_join(root, rel, follow_final=follow_final)

    def archive_path(self, local: Path | str) -> str:
        """The archive path (`/replica/x`) of a path on the mount."""
        mnt = self.mountpoint()
        rel = os.path.relpath(str(local), mnt)
        if rel == ".":
            return "/"
        if rel.startswith(".."):
            raise MessageError(f"{local} is not on the archive's mount")
        return "/" + rel

    # -- the daemon -----------------------------------------------------------------------

    def expect(self, local: Path | str, origin: Mapping[str, Any]) -> None:
        """Tell the daemon the next change of this path comes from `origin`."""
        if not self.posts:
            return
        try:
            call(
                self.socket_path,
                "expect_origin",
                path=self.archive_path(local),
                origin=dict(origin),
                timeout=30,
            )
        except (DaemonNotRunning, OSError) as exc:
            self.forget_mount()
            raise MountUnavailable(f"the archive daemon does not answer: {exc}") from None

    # -- directories ----------------------------------------------------------------------

    def ensure_dirs(self, local_dir: Path, origin: Mapping[str, Any]) -> None:
        """Create `local_dir` and missing parents (down from the mount point), each as a
        change carrying the origin, so that a re-post of it is routed as the data is."""
        if os.path.isdir(local_dir):
            return  # the usual case, without taking the lock
        mnt = self.mountpoint()
        # workers storing side by side may need the same missing ancestors: one makes them
        with self._dirs_lock:
            missing: list[Path] = []
            p = Path(local_dir)
            while str(p) != mnt and not os.path.isdir(p):
                if os.path.lexists(p):
                    raise MessageError(f"{self.archive_path(p)} exists and is not a directory")
                missing.append(p)
                p = p.parent
            for d in reversed(missing):
                self.expect(d, origin)
                os.mkdir(d, 0o755)

    def mkdir(self, local: Path, origin: Mapping[str, Any], mode: int | None) -> bool:
        """A directory; False if it already existed."""
        if os.path.isdir(local) and not os.path.islink(local):
            return False
        self.ensure_dirs(local.parent, origin)
        with self._dirs_lock:
            if os.path.isdir(local) and not os.path.islink(local):
                return False
            if os.path.lexists(local):
                raise MessageError(f"{self.archive_path(local)} exists and is not a directory")
            self.expect(local, origin)
            # made with its announced mode when that lets us in (a reader must never see
            # it with another); a mode that would lock us out is set once it is made
            os.mkdir(local, mode if mode is not None and mode & 0o700 == 0o700 else 0o755)
        if mode is not None and stat.S_IMODE(os.stat(local).st_mode) != mode:
            os.chmod(local, mode)
        return True

    # -- files ----------------------------------------------------------------------------

    def new_temp(self, final: Path) -> Path:
        return final.parent / temp_name(final.name)

    def open_temp(self, temp: Path, *, resume: bool, mode: int | None = None) -> int:
        """A descriptor on the temp file: created empty (with `mode` when it lets the
        owner write, sparing a chmod later), or opened to append to it."""
        if resume:
            return os.open(temp, os.O_WRONLY | os.O_CLOEXEC)
        create = mode if mode is not None and mode & 0o200 else 0o600
        old = os.umask(0)
        try:
            return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, create)
        finally:
            os.umask(old)

    def finish_temp(self, fd: int) -> None:
        try:
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def put(
        self,
        temp: Path,
        final: Path,
        origin: Mapping[str, Any],
        *,
        mode: int | None,
        mtime_ns: int | None,
        atime_ns: int | None,
    ) -> None:
        """Give the complete temp file its mode and times, then rename it into place."""
        if os.path.isdir(final) and not os.path.islink(final):
            raise MessageError(f"{self.archive_path(final)} is a directory")
        want = mode if mode is not None else 0o644
        if stat.S_IMODE(os.stat(temp).st_mode) != want:
            os.chmod(temp, want)
        if mtime_ns is not None:
            os.utime(temp, ns=(atime_ns if atime_ns is not None else mtime_ns, mtime_ns))
        self.expect(final, origin)
        os.rename(temp, final)

    def discard(self, temp: Path | str) -> None:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass

    def symlink(self, final: Path, target: str, origin: Mapping[str, Any]) -> bool:
        """A symbolic link; False if the same link was there already."""
        if os.path.islink(final) and os.readlink(final) == target:
            return False
        if os.path.isdir(final) and not os.path.islink(final):
            raise MessageError(f"{self.archive_path(final)} is a directory")
        self._place(final, origin, lambda path: os.symlink(target, path))
        return True

    def hardlink(self, final: Path, existing: Path, origin: Mapping[str, Any]) -> bool:
        """A hard link to another stored file; False if it is that file already."""
        st_existing = os.lstat(existing)
        try:
            st = os.lstat(final)
            if (st.st_dev, st.st_ino) == (st_existing.st_dev, st_existing.st_ino):
                return False
        except FileNotFoundError:
            pass
        self._place(final, origin, lambda path: os.link(existing, path))
        return True

    def _place(self, final: Path, origin: Mapping[str, Any], make: Callable[[Path], None]) -> None:
        """Make a link at `final` with `make`: straight there when the name is new (one
        change, which the archive announces as a link: fileOp.link or fileOp.hlink), else
        beside it and renamed over the old entry, so that the name never goes missing."""
        self.ensure_dirs(final.parent, origin)
        if not os.path.lexists(final):
            self.expect(final, origin)
            make(final)
            return
        temp = self.new_temp(final)
        make(temp)
        try:
            self.expect(final, origin)
            os.rename(temp, final)
        except BaseException:
            self.discard(temp)
            raise

    def remove(self, local: Path, origin: Mapping[str, Any], *, directory: bool) -> bool:
        """unlink (rmdir for a directory); False if nothing was there."""
        try:
            st = os.lstat(local)
        except FileNotFoundError:
            return False
        self.expect(local, origin)
        if stat.S_ISDIR(st.st_mode):
            os.rmdir(local)
        else:
            os.unlink(local)
        return True

    def rename(self, old: Path, new: Path, origin: Mapping[str, Any]) -> bool:
        """Move `old` to `new`; False if `old` does not exist."""
        if not os.path.lexists(old):
            return False
        self.ensure_dirs(new.parent, origin)
        self.expect(new, origin)
        os.rename(old, new)
        return True

    def matches(self, local: Path, size: int | None, mtime_ns: int | None) -> bool:
        """The regular file at `local` has this size and mtime (what was stored there)."""
        try:
            st = os.lstat(local)
        except (FileNotFoundError, NotADirectoryError):
            return False
        return (
            stat.S_ISREG(st.st_mode)
            and (size is None or st.st_size == size)
            and (mtime_ns is None or st.st_mtime_ns == mtime_ns)
        )


def is_mount_gone(exc: OSError) -> bool:
    """An error that says the FUSE mount went away under us."""
    return exc.errno in (errno.ENOTCONN, errno.ECONNABORTED, errno.ESHUTDOWN)

"""Private files: what is under an archive directory is its daemon's user's alone.

The catalog names every file, cache files and tape images hold every byte, whatever
mode a file has on the mount: other local users must reach them only through the
mount, which checks modes. So files are 0600 and directories 0700. Every process that
writes there sets a umask of 0o077 (`private_umask`: the daemon for its life,
`reelfs init` and an operator command run without the daemon for their duration),
which also makes the modes independent of the umask the command was started with;
`tighten` takes group and other bits off what an older reelfs, a restore or an
operator left, at each mount.

Nothing is chowned: a path owned by another user is counted and named (a daemon that
chowned would move an archive between users behind the operator's back).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

PRIVATE_UMASK = 0o077
FILE_MODE = 0o600
DIR_MODE = 0o700
#: group and other bits, all taken off
GROUP_OTHER = 0o077
#: on the way to a mount point under the archive directory: others may pass, not list
PASSAGE = 0o066
#: how many paths an event names at most
NAMED = 5


def set_private_umask() -> int:
    """The umask of a process that writes only under archive directories (the daemon);
    returns the previous one."""
    return os.umask(PRIVATE_UMASK)


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """The private umask for the duration of a block (a command creating files under the
    archive, in a process that may create others elsewhere afterwards)."""
    old = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(old)


@dataclass
class Tightened:
    """What `tighten` changed, and what it could not."""

    files: int = 0
    dirs: int = 0
    #: paths owned by another user than this process's (left as they are): how many
    foreign_count: int = 0
    #: paths whose mode could not be changed: how many
    failed_count: int = 0
    #: the first few of each, for the event (a whole cache would not fit in one)
    foreign: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return self.files + self.dirs

    def note(self, kind: str, what: str) -> None:
        """Count a foreign owner or a failure, naming the first few."""
        if kind == "foreign":
            self.foreign_count += 1
            named = self.foreign
        else:
            self.failed_count += 1
            named = self.failed
        if len(named) < NAMED:
            named.append(what)

    def details(self) -> dict[str, object]:
        """The event's details: counts, and a few paths of each kind."""
        return {
            "files": self.files,
            "dirs": self.dirs,
            "examples": self.examples,
            "foreign_owner": self.foreign_count,
            "foreign_examples": self.foreign,
            "failed": self.failed_count,
            "failed_examples": self.failed,
        }


def tighten(roots: Iterable[Path], *, mountpoint: Path | None = None) -> Tightened:
    """Take group and other bits off every file and directory below each of `roots`
    (the roots included), staying on each root's file system and out of `mountpoint`;
    the directories leading to a mount point below a root keep search (x) for others."""
    done = Tightened()
    uid = os.geteuid()
    mnt = os.path.realpath(mountpoint) if mountpoint is not None else None
    seen: set[tuple[int, int]] = set()
    for root in roots:
        try:
            st = os.lstat(root)
        except OSError:
            continue  # not there (yet): nothing to tighten
        if not stat.S_ISDIR(st.st_mode):
            continue
        stack = [(os.path.realpath(root), st)]
        while stack:
            path, st = stack.pop()
            if (st.st_dev, st.st_ino) in seen:
                continue  # a root inside another root
            seen.add((st.st_dev, st.st_ino))
            _one(done, path, st, uid, _leads_to(path, mnt))
            if not stat.S_ISDIR(st.st_mode):
                continue
            try:
                with os.scandir(path) as it:
                    entries = list(it)
            except OSError as e:
                done.note("failed", f"{path}: {e.strerror}")
                continue
            for entry in entries:
                if mnt is not None and entry.path == mnt:
                    continue  # the mount point: the mount's own modes show there
                try:
                    est = entry.stat(follow_symlinks=False)
                except OSError as e:
                    done.note("failed", f"{entry.path}: {e.strerror}")
                    continue
                if stat.S_ISLNK(est.st_mode):
                    continue  # chmod would follow it; its own mode means nothing
                if stat.S_ISDIR(est.st_mode) and est.st_dev != st.st_dev:
                    continue  # another file system mounted here is not ours to change
                stack.append((entry.path, est))
    return done


def _leads_to(path: str, mnt: str | None) -> bool:
    return mnt is not None and mnt.startswith(path.rstrip("/") + "/")


def _one(done: Tightened, path: str, st: os.stat_result, uid: int, passage: bool) -> None:
    if st.st_uid != uid:
        done.note("foreign", f"{path} (uid {st.st_uid})")
    mode = stat.S_IMODE(st.st_mode)
    want = mode & ~(PASSAGE if passage else GROUP_OTHER)
    if want == mode:
        return
    try:
        os.chmod(path, want)
    except OSError as e:
        done.note("failed", f"{path}: {e.strerror}")
        return
    if stat.S_ISDIR(st.st_mode):
        done.dirs += 1
    else:
        done.files += 1
    if len(done.examples) < NAMED:
        done.examples.append(f"{path} {mode:04o} -> {want:04o}")

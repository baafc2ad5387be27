"""The change journal: what happened on the mount, recorded for the poster.

The FUSE front end calls one method per change right after it committed it (on the trio
thread, so only a quick INSERT happens here); the poster thread turns the rows into v03
messages in the outbox, computing identities off the FUSE loop. A change a subscriber
made carries the upstream message's routing fields (its *origin*), announced beforehand
through the daemon's `expect_origin` control operation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from backend.catalog import journal
from backend.catalog.db import Catalog
from backend.catalog.namespace import RENAME_EXCHANGE, Namespace

#: names of files a subscriber is still writing: never announced
INCOMING_PREFIX = ".reelfs-in."

CLOSED, MKDIR, RMDIR, UNLINK, SYMLINK, LINK, RENAME = (
    "closed",
    "mkdir",
    "rmdir",
    "unlink",
    "symlink",
    "link",
    "rename",
)


def join(parent_path: str | None, name: bytes) -> str | None:
    if parent_path is None:
        return None
    return parent_path.rstrip("/") + "/" + name.decode("utf-8", "surrogateescape")


class ChangeJournal:
    """The `changes` hook of `mountfs.fs.ReelFS`: it records inside the caller's
    transaction (the change itself), and the caller calls `wake()` after the commit."""

    def __init__(
        self,
        cat: Catalog,
        take_origin: Callable[[str | None], dict[str, Any] | None],
        wake: Callable[[], None],
    ) -> None:
        self.cat = cat
        self.ns = Namespace(cat)
        self.take_origin = take_origin
        self.wake = wake

    def _record(
        self,
        kind: str,
        *,
        inode: int | None = None,
        path: str | None,
        old_path: str | None = None,
        target: str | None = None,
    ) -> None:
        if path is None:
            return  # unlinked meanwhile: nothing left to announce
        origin = self.take_origin(path)
        journal.record(
            self.cat,
            kind,
            inode=inode,
            path=path,
            old_path=old_path,
            target=target,
            origin=json.dumps(origin) if origin else None,
        )
        self.wake()

    def closed(self, inode: int) -> None:
        self._record(CLOSED, inode=inode, path=self.ns.path_of(inode))

    def mkdir(self, inode: int) -> None:
        self._record(MKDIR, inode=inode, path=self.ns.path_of(inode))

    def rmdir(self, path: str | None) -> None:
        self._record(RMDIR, path=path)

    def unlink(self, path: str | None) -> None:
        self._record(UNLINK, path=path)

    def symlink(self, inode: int, target: bytes) -> None:
        self._record(
            SYMLINK,
            inode=inode,
            path=self.ns.path_of(inode),
            target=target.decode("utf-8", "surrogateescape"),
        )

    def link(self, inode: int, new_parent: int, new_name: bytes) -> None:
        path = join(self.ns.path_of(new_parent), new_name)
        others = [join(self.ns.path_of(r[0]), bytes(r[1])) for r in self.ns.entries_of(inode)]
        target = next((p for p in others if p and p != path), None)
        self._record(LINK, inode=inode, path=path, target=target)

    def rename(self, old_path: str | None, new_parent: int, new_name: bytes, flags: int) -> None:
        new_path = join(self.ns.path_of(new_parent), new_name)
        if new_path is None:
            return
        node = self.ns.resolve(new_path)
        if flags & RENAME_EXCHANGE and old_path:
            # no swap in v03: both names are announced with what they now hold
            other = self.ns.resolve(old_path)
            self._record(CLOSED if other.is_reg else MKDIR, inode=other.id, path=old_path)
            self._record(CLOSED if node.is_reg else MKDIR, inode=node.id, path=new_path)
            return
        self._record(RENAME, inode=node.id, path=new_path, old_path=old_path)

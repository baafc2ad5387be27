"""fileOp messages: one handler per operation (remove, rename, link, directory, hlink),
looked up by name in `HANDLERS`, whose order is the precedence when a message asks for
several (a renamed link is a rename; a removed directory a removal).

Every change goes through the mount with the message's origin (`store`), so the archive
re-posts it as the upstream change. A rename whose result is not the announced content
(nothing to rename, or another version) falls through to fetching the file; so does a hard
link whose other name is not stored here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.catalog.subscriptions import SubscriptionState
from backend.replication.identity import encode_digest, new_hasher
from backend.replication.message import DIGEST_SIZES

from .files import FileReceiver
from .keys import content_key
from .store import ArchiveStore
from .work import Result, Work, mode_of


@dataclass
class FileOps:
    """Applies fileOps to the archive and keeps the record of what is stored in step."""

    state: SubscriptionState
    store: ArchiveStore
    files: FileReceiver

    def apply(self, w: Work, origin: dict[str, Any]) -> Result | None:
        """Apply the operation that decides for `w`; None: the message is about data."""
        name = operation(w)
        return None if name is None else HANDLERS[name](self, w, origin)

    def remove(self, w: Work, origin: dict[str, Any]) -> Result:
        op = w.msg.get("fileOp") or {}
        changed = self.store.remove(self.store.local(w.rel), origin, directory="directory" in op)
        self.state.forget_stored(w.rel, subtree=True)
        if w.remove_old:
            return (201, "removed (renamed to a rejected name)") if changed else (202, "absent")
        return (201, "removed") if changed else (202, "nothing to remove")

    def rename(self, w: Work, origin: dict[str, Any]) -> Result:
        msg, op = w.msg, w.msg.get("fileOp") or {}
        assert w.old_rel is not None
        old = self.store.local(w.old_rel)
        new = self.store.local(w.rel)
        moved = self.store.rename(old, new, origin)
        if moved:
            self.state.move_stored(w.old_rel, w.rel)
        if "directory" in op:
            if moved:
                return 201, "renamed"
            self.store.mkdir(new, origin, mode_of(msg))
            return 201, "made directory (nothing to rename)"
        if "link" in op:
            if moved and os.path.islink(new) and os.readlink(new) == op["link"]:
                return 201, "renamed"
            self.store.symlink(new, op["link"], origin)
            return 201, "linked"
        if moved and self._is_announced_content(w, new):
            return 201, "renamed"
        code, text = self.files.receive(w, origin)
        return code, ("renamed, then " + text) if moved else text

    def link(self, w: Work, origin: dict[str, Any]) -> Result:
        target = w.msg["fileOp"]["link"]
        changed = self.store.symlink(self.store.local(w.rel), target, origin)
        self.state.forget_stored(w.rel)
        return (201, "linked") if changed else (202, "link already there")

    def directory(self, w: Work, origin: dict[str, Any]) -> Result:
        changed = self.store.mkdir(self.store.local(w.rel), origin, mode_of(w.msg))
        return (201, "made directory") if changed else (202, "directory already there")

    def hlink(self, w: Work, origin: dict[str, Any]) -> Result | None:
        """A hard link to the file stored under the other name; None if that is not here
        (then the data is fetched as a file of its own)."""
        assert w.link_rel is not None
        existing = self.store.local(w.link_rel, follow_final=True)
        if not os.path.isfile(existing):
            return None
        self.store.hardlink(self.store.local(w.rel), existing, origin)
        other = self.state.stored(w.link_rel)
        if other is not None:
            self.state.set_stored(w.rel, other.key, other.size, other.mtime_ns, other.manifest)
        return 201, "hard linked"

    def _is_announced_content(self, w: Work, local: Path) -> bool:
        """The file now at `local` is what the message announces (known, or checked)."""
        msg = w.msg
        stored = self.state.stored(w.rel)
        key = content_key(msg)
        if stored is not None and stored.key == key and not key.startswith("weak:"):
            return self.store.matches(local, stored.size, stored.mtime_ns)
        ident = msg.get("identity") or {}
        if ident.get("method") not in DIGEST_SIZES or "blocks" in msg:
            return False
        hasher = new_hasher(ident["method"])
        size = 0
        with open(local, "rb") as f:
            while data := f.read(1 << 20):
                hasher.update(data)
                size += len(data)
        if encode_digest(hasher.digest()) != ident["value"]:
            return False
        st = os.lstat(local)
        self.state.set_stored(w.rel, key, st.st_size, st.st_mtime_ns)
        return True


Handler = Callable[[FileOps, Work, dict[str, Any]], Result | None]

#: the handler of each fileOp, in order of precedence
HANDLERS: dict[str, Handler] = {
    "remove": FileOps.remove,
    "rename": FileOps.rename,
    "link": FileOps.link,
    "directory": FileOps.directory,
    "hlink": FileOps.hlink,
}


def operation(w: Work) -> str | None:
    """The fileOp that decides what `w` does (the first in `HANDLERS` it asks for), or
    None for plain data. A rename or hlink counts only with its other name mapped here
    (`filter`); a rename to a rejected name is the removal of the old one."""
    op = w.msg.get("fileOp") or {}
    asked = {
        "remove": w.remove_old or "remove" in op,
        "rename": bool(w.old_rel),
        "link": "link" in op,
        "directory": "directory" in op,
        "hlink": bool(w.link_rel),
    }
    return next((name for name in HANDLERS if asked[name]), None)

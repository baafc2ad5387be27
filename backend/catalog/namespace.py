"""The namespace in the catalog: inodes, directory entries, symlinks, hard links, xattrs.

POSIX rules live here (what a disk would answer), independent of FUSE: the front end
passes the caller's uid/gid/umask and turns `FsError` into an errno. Times are
nanoseconds. Directory `nlink` is 2 plus the number of subdirectories.
"""

from __future__ import annotations

import errno
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass

from backend.catalog.db import Catalog
from backend.catalog.families import INHERITED_XATTRS
from backend.catalog.schema import ROOT_INODE
from backend.errors import FsError

NAME_MAX = 255
SYMLINK_MAX = 4095

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2

_INODE_COLS = "id, mode, uid, gid, size, nlink, atime_ns, mtime_ns, ctime_ns, rdev, bitfile"


@dataclass
class Inode:
    """A row of `inodes`: a file, directory, symlink or special file."""

    id: int
    mode: int
    uid: int
    gid: int
    size: int
    nlink: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    rdev: int
    bitfile: int | None

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_reg(self) -> bool:
        return stat.S_ISREG(self.mode)


def _inode(row) -> Inode:
    return Inode(*row)


def check_name(name: bytes) -> None:
    if len(name) > NAME_MAX:
        raise FsError(errno.ENAMETOOLONG, f"name of {len(name)} bytes (at most {NAME_MAX})")
    if not name or b"/" in name or b"\0" in name or name in (b".", b".."):
        raise FsError(errno.EINVAL, f"invalid name {name!r}")


class Namespace:
    """Namespace operations on one catalog connection (one thread)."""

    def __init__(self, cat: Catalog) -> None:
        self.cat = cat

    # -- reading ---------------------------------------------------------------------------

    def get(self, inode: int) -> Inode:
        row = self.cat.one(f"SELECT {_INODE_COLS} FROM inodes WHERE id=?", (inode,))
        if row is None:
            raise FsError(errno.ENOENT, f"no inode {inode}")
        return _inode(row)

    def lookup(self, parent: int, name: bytes) -> Inode:
        row = self.cat.one(
            f"SELECT {_cols('i')} FROM entries e JOIN inodes i ON i.id = e.inode "
            "WHERE e.parent=? AND e.name=?",
            (parent, name),
        )
        if row is None:
            if len(name) > NAME_MAX:
                raise FsError(errno.ENAMETOOLONG, "name too long")
            raise FsError(errno.ENOENT)
        return _inode(row)

    def entry_inode(self, parent: int, name: bytes) -> int | None:
        return self.cat.value("SELECT inode FROM entries WHERE parent=? AND name=?", (parent, name))

    def readdir(self, parent: int, after: int, limit: int) -> list[tuple[int, bytes, Inode]]:
        """Entries of `parent` after entry id `after`, in id order: linear in the directory."""
        rows = self.cat.all(
            f"SELECT e.id, e.name, {_cols('i')} FROM entries e JOIN inodes i ON i.id = e.inode "
            "WHERE e.parent=? AND e.id>? ORDER BY e.id LIMIT ?",
            (parent, after, limit),
        )
        return [(r[0], r[1], _inode(r[2:])) for r in rows]

    def is_empty_dir(self, inode: int) -> bool:
        return self.cat.one("SELECT 1 FROM entries WHERE parent=? LIMIT 1", (inode,)) is None

    def readlink(self, inode: int) -> bytes:
        row = self.cat.one("SELECT mode, target FROM inodes WHERE id=?", (inode,))
        if row is None:
            raise FsError(errno.ENOENT)
        if not stat.S_ISLNK(row[0]):
            raise FsError(errno.EINVAL, "not a symbolic link")
        return bytes(row[1])

    def parent_of(self, inode: int) -> int | None:
        return self.cat.value("SELECT parent FROM entries WHERE inode=? LIMIT 1", (inode,))

    def entries_of(self, inode: int) -> list[tuple[int, bytes]]:
        """(parent, name) of every directory entry of `inode`: all names of a hard link."""
        return [
            (r[0], bytes(r[1]))
            for r in self.cat.all("SELECT parent, name FROM entries WHERE inode=?", (inode,))
        ]

    def path_of(self, inode: int) -> str | None:
        """One path of `inode` from the archive root ('/' for the root), None if unlinked."""
        parts: list[bytes] = []
        cur = inode
        for _ in range(10_000):  # bounded: a corrupt catalog must not loop forever
            if cur == ROOT_INODE:
                return "/" + "/".join(p.decode("utf-8", "surrogateescape") for p in reversed(parts))
            row = self.cat.one("SELECT parent, name FROM entries WHERE inode=? LIMIT 1", (cur,))
            if row is None:
                return None
            parts.append(bytes(row[1]))
            cur = row[0]
        raise FsError(errno.ELOOP, f"inode {inode}: path deeper than 10000 levels")

    def resolve(self, path: str) -> Inode:
        """An archive-relative path ('/raw/run1.dat') to its inode, symlinks not followed."""
        node = self.get(ROOT_INODE)
        for part in path.encode("utf-8", "surrogateescape").split(b"/"):
            if part in (b"", b"."):
                continue
            if part == b"..":
                parent = self.parent_of(node.id)
                node = self.get(parent if parent is not None else ROOT_INODE)
                continue
            if not node.is_dir:
                raise FsError(errno.ENOTDIR, f"{path}: not a directory")
            node = self.lookup(node.id, part)
        return node

    def subtree(self, inode: int) -> Iterator[Inode]:
        """`inode` and everything below it, each inode once (hard links included)."""
        rows = self.cat.execute(
            "WITH RECURSIVE sub(id) AS (SELECT ? UNION "
            "SELECT e.inode FROM entries e JOIN sub ON e.parent = sub.id) "
            f"SELECT {_cols('i')} FROM sub JOIN inodes i ON i.id = sub.id",
            (inode,),
        )
        for r in rows:
            yield _inode(r)

    # -- creating --------------------------------------------------------------------------

    def create(
        self,
        parent: int,
        name: bytes,
        mode: int,
        uid: int,
        gid: int,
        *,
        rdev: int = 0,
        target: bytes | None = None,
    ) -> Inode:
        """A new inode linked as `parent/name`, inheriting the parent's policy xattrs."""
        check_name(name)
        if target is not None and len(target) > SYMLINK_MAX:
            raise FsError(errno.ENAMETOOLONG, f"symlink target of {len(target)} bytes")
        now = time.time_ns()
        with self.cat.tx():
            p = self.get(parent)
            if not p.is_dir:
                raise FsError(errno.ENOTDIR)
            if p.nlink == 0:
                raise FsError(errno.ENOENT, "parent directory was removed")
            if self.entry_inode(parent, name) is not None:
                raise FsError(errno.EEXIST)
            if p.mode & stat.S_ISGID:
                # BSD group semantics under a setgid directory, as ext4 does
                gid = p.gid
                if stat.S_ISDIR(mode):
                    mode |= stat.S_ISGID
            is_dir = stat.S_ISDIR(mode)
            cur = self.cat.execute(
                "INSERT INTO inodes(mode, uid, gid, size, nlink, atime_ns, mtime_ns, ctime_ns, "
                "rdev, target) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    mode,
                    uid,
                    gid,
                    len(target) if target is not None else 0,
                    2 if is_dir else 1,
                    now,
                    now,
                    now,
                    rdev,
                    target,
                ),
            )
            ino = cur.lastrowid
            assert ino is not None
            self.cat.execute(
                "INSERT INTO entries(parent, name, inode) VALUES (?,?,?)", (parent, name, ino)
            )
            if not stat.S_ISLNK(mode):
                self.cat.execute(
                    "INSERT INTO xattrs(inode, name, value) SELECT ?, name, value FROM xattrs "
                    f"WHERE inode=? AND name IN ({','.join('?' * len(INHERITED_XATTRS))})",
                    (ino, parent, *INHERITED_XATTRS),
                )
            self.cat.execute(
                "UPDATE inodes SET nlink = nlink + ?, mtime_ns=?, ctime_ns=? WHERE id=?",
                (1 if is_dir else 0, now, now, parent),
            )
            return self.get(ino)

    def link(self, inode: int, new_parent: int, new_name: bytes) -> Inode:
        check_name(new_name)
        now = time.time_ns()
        with self.cat.tx():
            node = self.get(inode)
            if node.is_dir:
                raise FsError(errno.EPERM, "hard links to directories are not allowed")
            p = self.get(new_parent)
            if not p.is_dir:
                raise FsError(errno.ENOTDIR)
            if self.entry_inode(new_parent, new_name) is not None:
                raise FsError(errno.EEXIST)
            self.cat.execute(
                "INSERT INTO entries(parent, name, inode) VALUES (?,?,?)",
                (new_parent, new_name, inode),
            )
            self.cat.execute(
                "UPDATE inodes SET nlink = nlink + 1, ctime_ns=? WHERE id=?", (now, inode)
            )
            self.cat.execute(
                "UPDATE inodes SET mtime_ns=?, ctime_ns=? WHERE id=?", (now, now, new_parent)
            )
            return self.get(inode)

    # -- removing --------------------------------------------------------------------------

    def unlink(self, parent: int, name: bytes) -> Inode:
        """Remove the entry of a non-directory; returns its inode with the new nlink."""
        now = time.time_ns()
        with self.cat.tx():
            node = self.lookup(parent, name)
            if node.is_dir:
                raise FsError(errno.EISDIR)
            self.cat.execute("DELETE FROM entries WHERE parent=? AND name=?", (parent, name))
            self.cat.execute(
                "UPDATE inodes SET nlink = nlink - 1, ctime_ns=? WHERE id=?", (now, node.id)
            )
            self.cat.execute(
                "UPDATE inodes SET mtime_ns=?, ctime_ns=? WHERE id=?", (now, now, parent)
            )
            return self.get(node.id)

    def rmdir(self, parent: int, name: bytes) -> Inode:
        now = time.time_ns()
        with self.cat.tx():
            node = self.lookup(parent, name)
            if not node.is_dir:
                raise FsError(errno.ENOTDIR)
            if not self.is_empty_dir(node.id):
                raise FsError(errno.ENOTEMPTY)
            self.cat.execute("DELETE FROM entries WHERE parent=? AND name=?", (parent, name))
            self.cat.execute("UPDATE inodes SET nlink = 0, ctime_ns=? WHERE id=?", (now, node.id))
            self.cat.execute(
                "UPDATE inodes SET nlink = nlink - 1, mtime_ns=?, ctime_ns=? WHERE id=?",
                (now, now, parent),
            )
            return self.get(node.id)

    def delete_inode(self, inode: int) -> int | None:
        """Drop an inode nothing refers to any more; returns its bitfile id, if any."""
        with self.cat.tx():
            row = self.cat.one("SELECT nlink, bitfile FROM inodes WHERE id=?", (inode,))
            if row is None:
                return None
            if row[0] > 0:
                raise FsError(errno.EBUSY, f"inode {inode} still has {row[0]} links")
            self.cat.execute("DELETE FROM xattrs WHERE inode=?", (inode,))
            self.cat.execute("DELETE FROM inodes WHERE id=?", (inode,))
            return row[1]

    # -- renaming --------------------------------------------------------------------------

    def rename(
        self, old_parent: int, old_name: bytes, new_parent: int, new_name: bytes, flags: int = 0
    ) -> Inode | None:
        """POSIX rename(2)/renameat2(2). Returns the inode that lost its entry (replaced)."""
        check_name(new_name)
        if flags & RENAME_NOREPLACE and flags & RENAME_EXCHANGE:
            raise FsError(errno.EINVAL, "RENAME_NOREPLACE with RENAME_EXCHANGE")
        now = time.time_ns()
        with self.cat.tx():
            src = self.lookup(old_parent, old_name)
            dst_ino = self.entry_inode(new_parent, new_name)
            np = self.get(new_parent)
            if not np.is_dir:
                raise FsError(errno.ENOTDIR)
            if src.is_dir and self._is_ancestor(src.id, new_parent):
                raise FsError(errno.EINVAL, "cannot move a directory into itself")
            if dst_ino == src.id:
                return None  # same inode (hard links or the same entry): nothing to do
            if flags & RENAME_EXCHANGE:
                if dst_ino is None:
                    raise FsError(errno.ENOENT)
                dst = self.get(dst_ino)
                if dst.is_dir and self._is_ancestor(dst.id, old_parent):
                    raise FsError(errno.EINVAL, "cannot move a directory into itself")
                self.cat.execute(
                    "UPDATE entries SET inode=? WHERE parent=? AND name=?",
                    (dst.id, old_parent, old_name),
                )
                self.cat.execute(
                    "UPDATE entries SET inode=? WHERE parent=? AND name=?",
                    (src.id, new_parent, new_name),
                )
                if old_parent != new_parent and src.is_dir != dst.is_dir:
                    d = 1 if src.is_dir else -1
                    self._adjust_nlink(old_parent, -d)
                    self._adjust_nlink(new_parent, d)
                self._touch(now, old_parent, new_parent)
                self.cat.execute(
                    "UPDATE inodes SET ctime_ns=? WHERE id IN (?,?)", (now, src.id, dst.id)
                )
                return None
            replaced: Inode | None = None
            if dst_ino is not None:
                if flags & RENAME_NOREPLACE:
                    raise FsError(errno.EEXIST)
                dst = self.get(dst_ino)
                if src.is_dir and not dst.is_dir:
                    raise FsError(errno.ENOTDIR)
                if dst.is_dir and not src.is_dir:
                    raise FsError(errno.EISDIR)
                if dst.is_dir and not self.is_empty_dir(dst.id):
                    raise FsError(errno.ENOTEMPTY)
                self.cat.execute(
                    "DELETE FROM entries WHERE parent=? AND name=?", (new_parent, new_name)
                )
                if dst.is_dir:
                    self.cat.execute(
                        "UPDATE inodes SET nlink=0, ctime_ns=? WHERE id=?", (now, dst.id)
                    )
                    self._adjust_nlink(new_parent, -1)
                else:
                    self.cat.execute(
                        "UPDATE inodes SET nlink=nlink-1, ctime_ns=? WHERE id=?", (now, dst.id)
                    )
                replaced = self.get(dst.id)
            self.cat.execute(
                "UPDATE entries SET parent=?, name=? WHERE parent=? AND name=?",
                (new_parent, new_name, old_parent, old_name),
            )
            if src.is_dir and old_parent != new_parent:
                self._adjust_nlink(old_parent, -1)
                self._adjust_nlink(new_parent, 1)
            self._touch(now, old_parent, new_parent)
            self.cat.execute("UPDATE inodes SET ctime_ns=? WHERE id=?", (now, src.id))
            return replaced

    def _is_ancestor(self, ancestor: int, inode: int) -> bool:
        cur: int | None = inode
        while cur is not None and cur != ROOT_INODE:
            if cur == ancestor:
                return True
            cur = self.parent_of(cur)
        return ancestor == ROOT_INODE and cur == ROOT_INODE

    def _adjust_nlink(self, inode: int, delta: int) -> None:
        self.cat.execute("UPDATE inodes SET nlink = nlink + ? WHERE id=?", (delta, inode))

    def _touch(self, now: int, *dirs: int) -> None:
        for d in set(dirs):
            self.cat.execute("UPDATE inodes SET mtime_ns=?, ctime_ns=? WHERE id=?", (now, now, d))

    # -- attributes ------------------------------------------------------------------------

    def set_attrs(self, inode: int, **fields: int) -> Inode:
        """Update columns of an inode (mode, uid, gid, size, atime_ns, mtime_ns, ctime_ns)."""
        allowed = {"mode", "uid", "gid", "size", "atime_ns", "mtime_ns", "ctime_ns", "bitfile"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"not inode attributes: {bad}")
        if fields:
            cols = ", ".join(f"{k}=?" for k in fields)
            with self.cat.tx():
                cur = self.cat.execute(
                    f"UPDATE inodes SET {cols} WHERE id=?", (*fields.values(), inode)
                )
                if cur.rowcount == 0:
                    raise FsError(errno.ENOENT)
        return self.get(inode)

    def set_written(self, inode: int, size: int, mtime_ns: int, ctime_ns: int) -> None:
        """What writes through an open file changed: its size and times."""
        with self.cat.tx():
            self.cat.execute(
                "UPDATE inodes SET size=?, mtime_ns=?, ctime_ns=MAX(ctime_ns, ?) WHERE id=?",
                (size, mtime_ns, ctime_ns, inode),
            )

    # -- xattrs (stored ones; the virtual user.reelfs.* ones are in mountfs.xattrs) ----------

    def get_xattr(self, inode: int, name: bytes) -> bytes | None:
        v = self.cat.value("SELECT value FROM xattrs WHERE inode=? AND name=?", (inode, name))
        return None if v is None else bytes(v)

    def inodes_with_xattrs_outside(self, prefix: bytes) -> set[int]:
        """The inodes with a stored attribute whose name does not start with `prefix`."""
        return {
            r[0]
            for r in self.cat.all(
                "SELECT DISTINCT inode FROM xattrs WHERE substr(name, 1, ?) != ?",
                (len(prefix), prefix),
            )
        }

    def list_xattrs(self, inode: int) -> list[bytes]:
        return [
            bytes(r[0])
            for r in self.cat.all("SELECT name FROM xattrs WHERE inode=? ORDER BY name", (inode,))
        ]

    def set_xattr(
        self, inode: int, name: bytes, value: bytes, *, create: bool, replace: bool
    ) -> None:
        with self.cat.tx():
            exists = self.get_xattr(inode, name) is not None
            if create and exists:
                raise FsError(errno.EEXIST)
            if replace and not exists:
                raise FsError(errno.ENODATA)
            self.cat.execute(
                "INSERT OR REPLACE INTO xattrs(inode, name, value) VALUES (?,?,?)",
                (inode, name, value),
            )
            self.cat.execute("UPDATE inodes SET ctime_ns=? WHERE id=?", (time.time_ns(), inode))

    def remove_xattr(self, inode: int, name: bytes) -> None:
        with self.cat.tx():
            cur = self.cat.execute("DELETE FROM xattrs WHERE inode=? AND name=?", (inode, name))
            if cur.rowcount == 0:
                raise FsError(errno.ENODATA)
            self.cat.execute("UPDATE inodes SET ctime_ns=? WHERE id=?", (time.time_ns(), inode))

    def unlinked_inodes(self) -> list[int]:
        """Inodes without links (kept while open; a crash leaves them behind)."""
        return [r[0] for r in self.cat.all("SELECT id FROM inodes WHERE nlink = 0")]

    # -- statistics ------------------------------------------------------------------------

    def count_inodes(self) -> int:
        return int(self.cat.value("SELECT count(*) FROM inodes") or 0)


def _cols(alias: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in _INODE_COLS.split(","))

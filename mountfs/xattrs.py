"""The `user.reelfs.*` extended attributes: directory policy and read-only file state.

Policy (on directories, inherited by new entries): `file_family`, `width`, `copies`,
`storage_group`; `width` and `copies` are the family's, also kept in the `families`
table. Read-only, computed from the catalog: `state`, `bfid`, `location` (one
`VOLUME:FILENO:BLOCK` line per active tape copy, in copy order), `checksum.adler32`,
`checksum.crc32c`, `error`, `pinned`, and on the root `archive` (the archive directory,
which the CLI uses to find the archive behind a mount). Any other `user.*` name is
stored as given.

What is listed is what a copy should carry: `cp -a`, `tar --xattrs` and `rsync -X` copy
the listed names, so the computed state (true only here and only now) is readable by
name but never listed, and neither are a file's inherited policy copies (a file takes
its family from the directory it is written in). Policy on directories is listed,
`file_family` first, because the other settings need it. Setting a state attribute is
accepted and changes nothing, and so is setting a file's policy copy to the value it
has: restoring attributes that older copies carry then succeeds without a word.
"""

from __future__ import annotations

import errno
import logging
import re

from backend.catalog import families
from backend.catalog.db import Catalog
from backend.catalog.files import FileClerk
from backend.catalog.namespace import Inode, Namespace
from backend.catalog.queue import RequestQueue
from backend.errors import FsError

log = logging.getLogger("reelfs.xattrs")

PREFIX = b"user.reelfs."
FAMILY = families.FAMILY_XATTR
GROUP = families.GROUP_XATTR
POLICY = families.INHERITED_XATTRS
STATE = b"user.reelfs.state"
BFID = b"user.reelfs.bfid"
LOCATION = b"user.reelfs.location"
ADLER = b"user.reelfs.checksum.adler32"
CRC = b"user.reelfs.checksum.crc32c"
ERROR = b"user.reelfs.error"
ARCHIVE = b"user.reelfs.archive"
PINNED = b"user.reelfs.pinned"
READ_ONLY = (STATE, BFID, LOCATION, ADLER, CRC, ERROR, ARCHIVE, PINNED)
FILE_ATTRS = (STATE, BFID, LOCATION, ADLER, CRC)
#: the listing's order: a restore sets the family before the settings that need it
LISTED_FIRST = (FAMILY,)
XATTR_SIZE_MAX = 65536


class Xattrs:
    """The extended attributes of the mount: stored ones and the computed user.reelfs.* ones."""

    def __init__(self, cat: Catalog, archive_id: str, archive_path: str) -> None:
        self.cat = cat
        self.ns = Namespace(cat)
        self.files = FileClerk(cat, archive_id)
        self.archive_path = archive_path.encode()
        # inodes with a stored attribute outside user.*: rare, so known in memory
        self._special = self.ns.inodes_with_xattrs_outside(b"user.")

    def may_have(self, inode: int, name: bytes) -> bool:
        """False when `name` certainly has no value on `inode` (no catalog lookup needed)."""
        if name.startswith(b"user."):
            return True
        if name.startswith(b"system."):
            return False  # no ACLs: setxattr refuses them
        return inode in self._special

    def get(self, node: Inode, name: bytes) -> bytes:
        if name.startswith(PREFIX) and name not in POLICY:
            value = self._virtual(node, name)
            if value is None:
                raise FsError(errno.ENODATA)
            return value
        value = self.ns.get_xattr(node.id, name)
        if value is None:
            raise FsError(errno.ENODATA)
        return value

    def _virtual(self, node: Inode, name: bytes) -> bytes | None:
        if name == ARCHIVE:
            return self.archive_path
        if node.bitfile is None:
            return None
        bf = self.files.get(node.bitfile)
        if bf is None:
            return None
        if name == STATE:
            state = bf.state
            if state == "released" and RequestQueue(self.cat).has(bf.id, "recall"):
                state = "recalling"
            return state.encode()
        if name == BFID:
            return bf.bfid.encode()
        if name == LOCATION:
            copies = self.files.copies(bf.id)
            return "\n".join(c.location for c in copies).encode() if copies else None
        if name == ADLER:
            return None if bf.adler32 is None else f"{bf.adler32:08x}".encode()
        if name == CRC:
            return None if bf.crc32c is None else f"{bf.crc32c:08x}".encode()
        if name == ERROR:
            return bf.error.encode() if bf.error else None
        if name == PINNED:
            return b"1" if bf.pinned else b"0"
        return None

    def list(self, node: Inode) -> list[bytes]:
        """The stored names a copy of `node` should carry: never the computed state, and
        on a file not the policy it inherited."""
        names = self.ns.list_xattrs(node.id)
        if not node.is_dir:
            return [n for n in names if n not in POLICY]
        return sorted(names, key=lambda n: n not in LISTED_FIRST)

    def set(self, node: Inode, name: bytes, value: bytes) -> None:
        if len(value) > XATTR_SIZE_MAX:
            raise FsError(errno.E2BIG, f"xattr value of {len(value)} bytes")
        if (
            not name.startswith(b"user.")
            and not name.startswith(b"trusted.")
            and not (name.startswith(b"security."))
        ):
            raise FsError(errno.EOPNOTSUPP, f"xattr namespace of {name!r} not supported")
        if name in READ_ONLY:
            # a copy restoring what an older listing exposed: accepted, nothing changes
            log.debug("inode %d: ignored setting computed xattr %s", node.id, name.decode())
            return
        if name in POLICY and not node.is_dir and self.ns.get_xattr(node.id, name) == value:
            return  # a copy restoring the file's own inherited policy
        if name.startswith(PREFIX) and name not in POLICY:
            log.warning("inode %d: refused unknown reelfs xattr %s", node.id, name.decode())
            raise FsError(errno.EINVAL, f"unknown reelfs attribute {name.decode()}")
        if name in POLICY:
            value = self._check_policy(node, name, value)
        self.ns.set_xattr(node.id, name, value, create=False, replace=False)
        if not name.startswith(b"user."):
            self._special.add(node.id)
        if name in families.SETTINGS:
            fam = self.ns.get_xattr(node.id, FAMILY)
            if fam is not None:
                families.set_setting(self.cat, fam.decode(), name, int(value))

    def _check_policy(self, node: Inode, name: bytes, value: bytes) -> bytes:
        label = name.decode()
        if not node.is_dir:
            log.warning("inode %d: %s can only be set on directories", node.id, label)
            raise FsError(errno.EPERM, f"{label} is set on directories")
        try:
            text = value.decode("ascii").strip()
        except UnicodeDecodeError:
            text = ""
        if name in (FAMILY, GROUP):
            if not families.FAMILY_RE.fullmatch(text):
                log.warning(
                    "inode %d: bad %s %r: 1-64 letters, digits, '.', '_', '-'",
                    node.id,
                    label,
                    value,
                )
                raise FsError(errno.EINVAL, f"bad {label}")
            return text.encode()
        column, highest = families.SETTINGS[name]
        if not re.fullmatch(r"[0-9]{1,3}", text) or not 1 <= int(text) <= highest:
            log.warning(
                "inode %d: bad %s %r: an integer from 1 to %d", node.id, label, value, highest
            )
            raise FsError(errno.EINVAL, f"bad {label}")
        if self.ns.get_xattr(node.id, FAMILY) is None:
            log.warning("inode %d: set user.reelfs.file_family before its %s", node.id, column)
            raise FsError(errno.EINVAL, f"{column} without a file family")
        return str(int(text)).encode()

    def remove(self, node: Inode, name: bytes) -> None:
        if name in READ_ONLY:
            log.warning("inode %d: refused to remove read-only xattr %s", node.id, name.decode())
            raise FsError(errno.EPERM, f"{name.decode()} is read-only")
        self.ns.remove_xattr(node.id, name)

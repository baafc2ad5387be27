"""What the readers of foreign archives (tar written by others, cpio) yield: `ArchiveMember`.

One neutral description for every format, so that `tape read` and imports of foreign tapes
handle tar and cpio alike. The member's data is a `MemberStream` valid until the reader
moves to the next member.
"""

from __future__ import annotations

import enum
import stat
from dataclasses import dataclass

from drivers.formats.records import MemberStream


class MemberType(enum.StrEnum):
    """What an archive member is, whatever the archive format calls it."""

    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"  # `linkname` names the member it is a link to
    CHAR_DEVICE = "char_device"
    BLOCK_DEVICE = "block_device"
    FIFO = "fifo"
    SOCKET = "socket"
    SPARSE = "sparse"  # a GNU tar sparse file: listed, its data not reconstructed (empty)
    OTHER = "other"

    @classmethod
    def from_mode(cls, mode: int) -> MemberType:
        """From the file-type bits of a st_mode (as cpio stores it)."""
        return _BY_MODE.get(stat.S_IFMT(mode), cls.OTHER)


_BY_MODE = {
    stat.S_IFREG: MemberType.FILE,
    stat.S_IFDIR: MemberType.DIRECTORY,
    stat.S_IFLNK: MemberType.SYMLINK,
    stat.S_IFCHR: MemberType.CHAR_DEVICE,
    stat.S_IFBLK: MemberType.BLOCK_DEVICE,
    stat.S_IFIFO: MemberType.FIFO,
    stat.S_IFSOCK: MemberType.SOCKET,
}


@dataclass
class ArchiveMember:
    """One member of a tar or cpio archive, its data readable through `data`."""

    name: str  # as stored (UTF-8; undecodable bytes as surrogate escapes)
    type: MemberType
    size: int  # bytes of data in `data` (0 for anything but files)
    mode: int  # permission bits
    mtime_ns: int
    uid: int
    gid: int
    data: MemberStream
    uname: str = ""
    gname: str = ""
    linkname: str = ""  # symlink target or hard link's other name
    ino: int = 0  # cpio: inode number, to pair hard links
    nlink: int = 0  # cpio: link count

"""v03 messages describing local files, directories, links, removals and renames.

The forms are the ones stock `sr3 watch`/`sr3 post` emit (team notes, section 3):

* file: `size`, `mtime`, `atime`, `mode`, `identity`; a rename adds
  `fileOp.rename` = the absolute local path of the old name;
* directory: `fileOp.directory`, `mode`, `contentType: text/directory`, no times;
* symlink: `fileOp.link` = the raw `readlink()` value, no identity;
* removal: `fileOp.remove` (plus `directory` for rmdir), nothing else;
* partitioned file: one message per block with `blocks` = `{method: inplace, size,
  number, manifest}`, top-level `size`/`identity` of that block.

`PostSettings` holds what a poster's configuration decides: `post_base_url`,
`post_base_dir` (relPath is relative to it), identity method, source and clusters.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .identity import Block, block_identities, identity_of_file
from .message import MessageError, build_message, check_rel_path


@dataclass(frozen=True)
class PostSettings:
    """What a poster puts in every message it builds."""

    base_url: str
    base_dir: str
    identity_method: str = "sha512"  # or md5, arbitrary, cod,sha512, cod,md5
    arbitrary_value: str | None = None
    source: str | None = None
    from_cluster: str | None = None
    to_clusters: str | None = None

    def rel_path(self, path: str | os.PathLike[str]) -> str:
        """relPath of a local path under base_dir (`/`-separated, never `..`)."""
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(self.base_dir))
        rel = rel.replace(os.sep, "/")
        if rel == "." or rel.startswith("../") or rel == "..":
            raise MessageError(f"{path} is not under post_base_dir {self.base_dir}")
        return check_rel_path(rel)

    def abs_path(self, rel_path: str) -> str:
        return os.path.join(os.path.abspath(self.base_dir), rel_path)

    def _common(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "source": self.source,
            "from_cluster": self.from_cluster,
            "to_clusters": self.to_clusters,
        }


def file_message(
    settings: PostSettings,
    path: str | os.PathLike[str],
    *,
    rename_from: str | None = None,
    st: os.stat_result | None = None,
    identity: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A regular file (computing its identity unless given); `rename_from` is the old
    absolute path when the file was renamed."""
    st = st or os.stat(path)
    if identity is None:
        method, _, algorithm = settings.identity_method.partition(",")
        identity = identity_of_file(
            path,
            method,
            arbitrary_value=settings.arbitrary_value,
            cod_algorithm=algorithm or "sha512",
        )
    return build_message(
        rel_path=settings.rel_path(path),
        identity=identity,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        atime_ns=st.st_atime_ns,
        mode=stat.S_IMODE(st.st_mode),
        file_op={"rename": rename_from} if rename_from else None,
        **settings._common(),
    )


def directory_message(
    settings: PostSettings, path: str | os.PathLike[str], *, rename_from: str | None = None
) -> dict[str, Any]:
    """mkdir (or a renamed directory)."""
    st = os.stat(path)
    op = {"directory": ""}
    if rename_from:
        op["rename"] = rename_from
    return build_message(
        rel_path=settings.rel_path(path),
        mode=stat.S_IMODE(st.st_mode),
        file_op=op,
        content_type="text/directory",
        **settings._common(),
    )


def link_message(
    settings: PostSettings, path: str | os.PathLike[str], *, rename_from: str | None = None
) -> dict[str, Any]:
    """A symbolic link: its raw target, no identity."""
    op = {"link": os.readlink(path)}
    if rename_from:
        op["rename"] = rename_from
    return build_message(
        rel_path=settings.rel_path(path),
        file_op=op,
        content_type="text/link",
        **settings._common(),
    )


def remove_message(
    settings: PostSettings, path: str | os.PathLike[str], *, directory: bool = False
) -> dict[str, Any]:
    """unlink (or rmdir with `directory`): no size, no identity."""
    op = {"remove": ""}
    if directory:
        op["directory"] = ""
    return build_message(rel_path=settings.rel_path(path), file_op=op, **settings._common())


def block_messages(
    settings: PostSettings,
    path: str | os.PathLike[str],
    block_size: int,
    *,
    st: os.stat_result | None = None,
    known: Mapping[int, tuple[int, str]] | None = None,
) -> tuple[list[dict[str, Any]], list[Block]]:
    """Messages for the blocks of a file that differ from `known` (number -> (size,
    identity) already announced), and the full block list (to remember for next time).

    Every message carries the full manifest, so a receiver knows the whole layout from any
    one of them. The extent is frozen at the stat'ed size, so a growing file is described
    consistently up to that point.
    """
    # Blocks need a real digest (arbitrary cannot tell blocks apart): cod,md5 -> md5.
    method = settings.identity_method.rpartition(",")[2]
    if method not in ("sha512", "md5"):
        method = "sha512"
    st = st or os.stat(path)
    blocks = block_identities(path, block_size, method, file_size=st.st_size)
    manifest = {b.number: {"size": b.size, "identity": b.identity} for b in blocks}
    known = known or {}
    messages = []
    for b in blocks:
        if known.get(b.number) == (b.size, b.identity):
            continue
        messages.append(
            build_message(
                rel_path=settings.rel_path(path),
                identity={"method": method, "value": b.identity},
                size=b.size,
                mtime_ns=st.st_mtime_ns,
                atime_ns=st.st_atime_ns,
                mode=stat.S_IMODE(st.st_mode),
                blocks={
                    "method": "inplace",
                    "size": block_size,
                    "number": b.number,
                    "manifest": manifest,
                },
                **settings._common(),
            )
        )
    return messages, blocks

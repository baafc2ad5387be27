"""What a message announces, as keys the subscriber compares: the content a file message
announces (`content_key`, recorded with what is stored and with partial downloads) and the
duplicate-suppression key of any message (`winnow_key`, sr3's nodupe `deriveKey`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def manifest_digest(manifest: Mapping[int, Mapping[str, Any]], block_size: int) -> str:
    """A short stable name for a block layout (sizes and identities of all parts)."""
    canon = json.dumps(
        [block_size, [[n, manifest[n]["size"], manifest[n]["identity"]] for n in sorted(manifest)]]
    )
    return hashlib.sha256(canon.encode()).hexdigest()[:32]


def content_key(msg: Mapping[str, Any]) -> str:
    """What content a file message announces: identity digest, block layout, or (for
    identities that say nothing about the data) size and mtime."""
    blocks = msg.get("blocks")
    if blocks:
        return "blocks:" + manifest_digest(blocks["manifest"], blocks["size"])
    ident = msg.get("identity") or {}
    if ident.get("method") in ("sha512", "md5"):
        return f"{ident['method']}:{ident['value']}"
    return f"weak:{ident.get('method', '-')}:{ident.get('value', '')}:{msg.get('size')}:" + str(
        msg.get("mtime") or msg["pubTime"]
    )


def winnow_key(msg: Mapping[str, Any]) -> str:
    """The duplicate-suppression key, after sr3's nodupe `deriveKey` (link target for
    links, the operation for removals and directories, identity for data, else
    mtime/pubTime and size); renames and hard links include their source."""
    op = msg.get("fileOp") or {}
    if "remove" in op:
        return "remove"
    prefix = ""
    if "rename" in op:
        prefix = "rename:" + op["rename"] + "|"
    if "hlink" in op:
        prefix += "hlink:" + op["hlink"] + "|"
    if "link" in op:
        return prefix + "link:" + op["link"]
    if "directory" in op:
        return prefix + "directory"
    return prefix + content_key(msg)

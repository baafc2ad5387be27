"""Streaming computation of v03 `identity` values for files, chunk streams and blocks.

Methods: `sha512` (default) and `md5` hash the data and carry the base64 digest, as sr3
does; `arbitrary` carries a configured value; `cod` ("calculate on download") carries the
name of the algorithm the receiver must use. Files are read in 1 MiB chunks so any size
works in constant memory.

Block identities (`blocks` messages for partitioned files) cover exactly the bytes of each
block: block i is `[i * block_size, min(size, (i + 1) * block_size))`.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from .message import DIGEST_SIZES, MessageError

CHUNK = 1 << 20
DEFAULT_METHOD = "sha512"


def new_hasher(method: str) -> hashlib._Hash:
    """A hashlib object for a digest method (`sha512` or `md5`)."""
    if method not in DIGEST_SIZES:
        raise MessageError(f"identity: {method!r} is not a digest method")
    if method == "md5":
        # Not for security here: md5 is one of the sr3 identity methods.
        return hashlib.md5(usedforsecurity=False)
    return hashlib.new(method)


def encode_digest(digest: bytes) -> str:
    """Base64 of a raw digest, the form sr3 puts in identity.value."""
    return base64.b64encode(digest).decode("ascii")


def _fixed_identity(method: str, arbitrary_value: str | None, cod_algorithm: str) -> dict | None:
    if method == "arbitrary":
        if arbitrary_value is None:
            raise MessageError("identity: method arbitrary needs a value")
        return {"method": "arbitrary", "value": arbitrary_value}
    if method == "cod":
        if cod_algorithm not in DIGEST_SIZES:
            raise MessageError(f"identity: cod of unknown algorithm {cod_algorithm!r}")
        return {"method": "cod", "value": cod_algorithm}
    return None


def identity_of_chunks(
    chunks: Iterable[bytes],
    method: str = DEFAULT_METHOD,
    *,
    arbitrary_value: str | None = None,
    cod_algorithm: str = "sha512",
) -> dict[str, str]:
    """The identity of the concatenation of `chunks` (not consumed for arbitrary/cod)."""
    fixed = _fixed_identity(method, arbitrary_value, cod_algorithm)
    if fixed is not None:
        return fixed
    hasher = new_hasher(method)
    for chunk in chunks:
        hasher.update(chunk)
    return {"method": method, "value": encode_digest(hasher.digest())}


def read_chunks(f: BinaryIO, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
    """Yield the bytes of `f` from `offset`, `length` of them (to EOF if None)."""
    f.seek(offset)
    remaining = length
    while remaining is None or remaining > 0:
        want = CHUNK if remaining is None else min(CHUNK, remaining)
        data = f.read(want)
        if not data:
            return
        if remaining is not None:
            remaining -= len(data)
        yield data


def identity_of_file(
    path: str | os.PathLike[str],
    method: str = DEFAULT_METHOD,
    *,
    arbitrary_value: str | None = None,
    cod_algorithm: str = "sha512",
) -> dict[str, str]:
    """The identity of a whole file, read in chunks."""
    fixed = _fixed_identity(method, arbitrary_value, cod_algorithm)
    if fixed is not None:
        return fixed
    new_hasher(method)  # an unknown method fails before the file is opened
    with open(path, "rb") as f:
        return identity_of_chunks(read_chunks(f), method)


@dataclass(frozen=True)
class Block:
    """One block of a partitioned file: its number, byte offset, length and identity value."""

    number: int
    offset: int
    size: int
    identity: str


def block_count(file_size: int, block_size: int) -> int:
    """Number of blocks of a file (at least one, so an empty file has one empty block)."""
    if block_size <= 0:
        raise ValueError("block_size must be positive")
    return max(1, -(-file_size // block_size))


def block_identities(
    path: str | os.PathLike[str],
    block_size: int,
    method: str = DEFAULT_METHOD,
    *,
    file_size: int | None = None,
) -> list[Block]:
    """Digest of every block of a file, in one sequential read.

    `file_size` freezes the extent considered (a growing file is hashed up to the size that
    was stat'ed, so the manifest and the announced sizes agree).
    """
    if method not in DIGEST_SIZES:
        raise MessageError(f"identity: blocks need a digest method, not {method!r}")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size if file_size is None else file_size
        blocks = []
        for number in range(block_count(size, block_size)):
            offset = number * block_size
            length = min(block_size, size - offset)
            hasher = new_hasher(method)
            got = 0
            for chunk in read_chunks(f, offset, length):
                hasher.update(chunk)
                got += len(chunk)
            if got != length:
                raise OSError(f"{path}: shrank while being hashed ({offset + got} < {size})")
            blocks.append(Block(number, offset, length, encode_digest(hasher.digest())))
        return blocks


def verify_file(path: str | os.PathLike[str], identity: dict[str, str]) -> bool:
    """True if the file matches a digest identity; arbitrary/cod/random cannot be checked."""
    method = identity.get("method", "")
    if method not in DIGEST_SIZES:
        raise MessageError(f"identity: {method!r} cannot be verified")
    return identity_of_file(path, method)["value"] == identity.get("value")

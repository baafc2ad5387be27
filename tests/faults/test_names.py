"""Names are bytes end to end: a file named with any byte but `/` (and NUL, which no
name can hold) is written to tape, released, recalled, renamed, listed by GNU tar,
rebuilt from tape and imported, with the very bytes it was given."""

from __future__ import annotations

import os
from pathlib import Path

from tests.archive import Mount

#: every byte a name may hold, one file per byte
BYTES = [b for b in range(1, 256) if b != 0x2F]


def name_of(b: int) -> bytes:
    return b"n" + bytes([b]) + b"\xff"  # \xff: never UTF-8 whatever the byte before


def data_of(b: int) -> bytes:
    return f"file of byte {b:02x}\n".encode()


def write_all(d: Path) -> None:
    os.mkdir(os.fsencode(d))
    for b in BYTES:
        with open(os.fsencode(d) + b"/" + name_of(b), "wb") as f:
            f.write(data_of(b))


def test_every_byte_is_written_to_tape(mounted: Mount) -> None:
    d = mounted.mnt / "names"
    write_all(d)
    innocent = mounted.mnt / "plain.txt"
    innocent.write_bytes(b"an ordinary name\n")
    mounted.flush(timeout=90)
    assert mounted.state(innocent) == "archived"
    for b in BYTES:
        p = os.fsencode(d) + b"/" + name_of(b)
        assert os.getxattr(p, "user.reelfs.state") == b"archived", hex(b)

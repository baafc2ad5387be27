"""cpio odc/newc/crc archives made by GNU cpio, read from streams and tape files; malformed
input gives a precise FormatError."""

from __future__ import annotations

import io
import os
import random
import stat
import subprocess
from pathlib import Path

import pytest

from drivers.formats.archive import MemberType
from drivers.formats.cpio import iter_cpio
from drivers.formats.errors import FormatError
from drivers.formats.foreign import Format, iter_archive, read_tape_file, sniff
from drivers.formats.records import StreamSource
from tests.formats.util import chop, load_records

MTIME = 1_600_000_000
FILES = {
    "empty": b"",
    "one": b"1",
    "three": b"333",
    "four": b"4444",
    "five": b"55555",
    "sub/block.bin": bytes(range(256)) * 2 + b"x",
    "sub/big.bin": bytes((i * 13) % 256 for i in range(70_001)),
    "ünïcödé/日本語.txt": "データ".encode() * 100,
    "n" * 255: b"long name",
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cpio-src")
    for name, data in FILES.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        p.chmod(0o640)
    (root / "link").symlink_to("sub/block.bin")
    os.link(root / "five", root / "hard5")
    (root / "emptydir").mkdir()
    for p in sorted(root.rglob("*"), reverse=True):
        os.utime(p, (MTIME, MTIME), follow_symlinks=False)
    return root


def make_cpio(cpio_bin: str, root: Path, fmt: str) -> bytes:
    names = subprocess.run(
        ["find", ".", "-print0"], cwd=root, capture_output=True, check=True
    ).stdout
    out = subprocess.run(
        [cpio_bin, "-o", "-0", "-H", fmt, "--quiet"],
        input=names,
        cwd=root,
        capture_output=True,
        check=True,
        timeout=60,
    )
    return out.stdout


def check_members(members, root: Path) -> None:
    seen = set()
    by_inode: dict[int, list[bytes]] = {}
    for m in members:
        name = m.name.removeprefix("./")
        data = m.data.read()
        assert len(data) == m.size
        if name == ".":
            continue
        seen.add(name)
        st = os.lstat(root / name)
        assert m.type == MemberType.from_mode(st.st_mode), name
        assert m.mode == stat.S_IMODE(st.st_mode), name
        assert m.mtime_ns == MTIME * 10**9
        assert (m.uid, m.gid) == (st.st_uid, st.st_gid)
        if m.type == MemberType.SYMLINK:
            assert m.linkname == os.readlink(root / name)
        elif m.type == MemberType.FILE:
            by_inode.setdefault(m.ino, []).append(data)
            expected = (root / name).read_bytes()
            # newc stores a hard-linked file's data once, with its last link
            assert data == expected or (m.nlink > 1 and data == b""), name
    assert seen == {str(p.relative_to(root)) for p in root.rglob("*")}
    for datas in by_inode.values():
        assert any(d for d in datas) or all(d == b"" for d in datas)


@pytest.mark.parametrize("fmt", ["odc", "newc", "crc"])
def test_reads_what_gnu_cpio_writes_from_a_stream(cpio_bin, tree, fmt):
    archive = make_cpio(cpio_bin, tree, fmt)
    assert sniff(archive[:4096]) == {"odc": Format.CPIO_ODC, "newc": Format.CPIO_NEWC,
                                     "crc": Format.CPIO_CRC}[fmt]  # fmt: skip
    # 7-byte chunks: every header, name and data crosses chunk boundaries
    check_members(iter_cpio(StreamSource(io.BytesIO(archive), chunk_size=7)), tree)


@pytest.mark.parametrize("fmt", ["odc", "newc", "crc"])
def test_reads_a_cpio_tape_file_and_stops_after_its_filemark(cpio_bin, tree, fmt):
    archive = make_cpio(cpio_bin, tree, fmt)
    drive = load_records(chop(archive, 5120))
    drive.objects += [b"next tape file", None]
    check_members(read_tape_file(drive), tree)
    assert drive.read_position().file == 1
    assert drive.read_block(100) == b"next tape file"


def test_members_left_unread_are_skipped(cpio_bin, tree):
    archive = make_cpio(cpio_bin, tree, "newc")
    names = [m.name for m in iter_archive(StreamSource(io.BytesIO(archive)))]
    assert "sub/big.bin" in names and len(names) == len(list(tree.rglob("*"))) + 1


def test_crc_mismatch_is_detected_even_when_the_data_is_not_read(cpio_bin, tree):
    archive = bytearray(make_cpio(cpio_bin, tree, "crc"))
    at = archive.index(b"long name")
    archive[at] ^= 0x01
    for read in (True, False):
        with pytest.raises(FormatError, match=r"checksum .* header says"):
            for m in iter_cpio(StreamSource(io.BytesIO(bytes(archive)))):
                if read:
                    m.data.read()


def newc_header(name: bytes, size: int, *, mode=0o100644, namesize=None, check=0) -> bytes:
    namesize = len(name) + 1 if namesize is None else namesize
    fields = [1, mode, 0, 0, 1, MTIME, size, 0, 0, 0, 0, namesize, check]
    head = b"070701" + b"".join(b"%08X" % f for f in fields) + name + b"\0"
    return head + bytes(-len(head) % 4)


TRAILER = newc_header(b"TRAILER!!!", 0)
GOOD = newc_header(b"a", 3) + b"abc\0" + TRAILER


@pytest.mark.parametrize(
    "data,message",
    [
        (b"", r"ended without its TRAILER!!!"),
        (b"0707", r"truncated cpio header"),
        (b"070709" + bytes(200), r"bad cpio magic b'070709'"),
        (b"\xc7\x71" + bytes(200), r"old binary cpio"),
        (GOOD[:50], r"truncated cpio newc header"),
        (GOOD.replace(b"070701", b"070701", 1)[:6] + b"0x000001" + GOOD[14:], r"field ino"),
        (GOOD[: -len(TRAILER)], r"ended without its TRAILER"),
        (newc_header(b"a", 100) + b"abc", r"truncated data of 'a'"),
        (newc_header(b"a", 0, namesize=0) + TRAILER, r"name size 0"),
        (newc_header(b"a", 0, namesize=0x7FFFFFFF) + TRAILER, r"name size 2147483647"),
        (newc_header(b"a\0b", 0) + TRAILER, r"not one NUL-terminated string"),
        (newc_header(b"d", 5, mode=0o40755) + b"xxxxx", r"directory member 'd' has 5 bytes"),
        (b"070707" + b"0" * 12 + b"0006x4" + b"0" * 52, r"odc header field mode"),
        (b"070707" + b"0" * 70, r"name size 0"),
    ],
)
def test_malformed_cpio_is_a_precise_format_error(data, message):
    with pytest.raises(FormatError, match=message):
        for m in iter_cpio(StreamSource(io.BytesIO(data))):
            m.data.read()


def test_random_corruption_never_crashes_or_hangs(cpio_bin, tree):
    rng = random.Random(1)
    for fmt in ("odc", "newc", "crc"):
        archive = make_cpio(cpio_bin, tree, fmt)
        end = archive.index(b"TRAILER!!!") + 16
        for _ in range(150):
            mutated = bytearray(archive[:end])
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            if rng.random() < 0.3:
                mutated = mutated[: rng.randrange(len(mutated))]
            try:
                for m in iter_cpio(StreamSource(io.BytesIO(bytes(mutated)), chunk_size=4096)):
                    m.data.read()
            except FormatError:
                pass

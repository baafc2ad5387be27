"""Sniffing tape files and reading tar archives written by others."""

from __future__ import annotations

import io
import os
import random
import subprocess
from pathlib import Path

import pytest

from drivers.formats.ansi import Vol1
from drivers.formats.archive import MemberType
from drivers.formats.errors import FormatError
from drivers.formats.foreign import (
    Format,
    iter_archive,
    iter_tar,
    open_tape_file,
    read_tape_file,
    sniff,
)
from drivers.formats.pax import MemberInfo, reelfs_records
from drivers.formats.records import StreamSource
from tests.formats.memdrive import MemDrive
from tests.formats.util import chop, load_records, run_tar, write_tape_file

MTIME_NS = 1_650_000_000_250_000_000
LONG = "l" * 150 + "/" + "m" * 120  # beyond ustar's 100-byte name field


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tar-src")
    (root / "d" / "e").mkdir(parents=True)
    (root / "d" / "f.txt").write_bytes(b"file f\n" * 1000)
    (root / "d" / "e" / "g.bin").write_bytes(bytes(range(256)) * 9)
    (root / "d" / "link").symlink_to("f.txt")
    os.link(root / "d" / "f.txt", root / "d" / "hard")
    for p in [*sorted((root / "d").rglob("*"), reverse=True), root / "d"]:
        os.utime(p, ns=(MTIME_NS, MTIME_NS), follow_symlinks=False)
    return root


def make_tar(tar: str, root: Path, fmt: str, *extra: str) -> bytes:
    out = subprocess.run(
        [tar, f"--format={fmt}", *extra, "-C", str(root), "-cf", "-", "d"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return out.stdout


@pytest.mark.parametrize(
    "fmt,expected",
    [
        ("pax", Format.PAX),
        ("ustar", Format.USTAR),
        ("gnu", Format.GNU_TAR),
        ("oldgnu", Format.GNU_TAR),
        ("v7", Format.V7_TAR),
    ],
)
def test_reads_every_tar_flavour_gnu_tar_writes(gnu_tar, tree, fmt, expected):
    archive = make_tar(gnu_tar, tree, fmt)
    assert sniff(archive[:4096]) == expected
    members = {m.name: (m, m.data.read()) for m in iter_archive(StreamSource(io.BytesIO(archive)))}
    assert set(members) == {"d", "d/e", "d/f.txt", "d/e/g.bin", "d/link", "d/hard"}
    f, data = members["d/f.txt"]
    assert f.type == MemberType.FILE and data == b"file f\n" * 1000
    assert members["d/e/g.bin"][1] == bytes(range(256)) * 9
    assert members["d"][0].type == MemberType.DIRECTORY
    assert members["d/link"][0].type == MemberType.SYMLINK
    assert members["d/link"][0].linkname == "f.txt"
    hard = members["d/hard"][0]
    # GNU tar archives the second name of a file as a hard link to the first
    assert hard.type in (MemberType.HARDLINK, MemberType.FILE)
    if hard.type == MemberType.HARDLINK:
        assert hard.linkname == "d/f.txt" and hard.size == 0
    if fmt == "pax":
        assert f.mtime_ns == MTIME_NS  # pax keeps the fraction
    else:
        assert f.mtime_ns == MTIME_NS // 10**9 * 10**9


@pytest.mark.parametrize("fmt", ["pax", "gnu"])
def test_long_names_from_gnu_tar(gnu_tar, tmp_path, fmt):
    (tmp_path / "d" / LONG).parent.mkdir(parents=True)
    (tmp_path / "d" / LONG).write_bytes(b"deep")
    archive = make_tar(gnu_tar, tmp_path, fmt)
    files = {m.name: m.data.read() for m in iter_tar(StreamSource(io.BytesIO(archive)))}
    assert files[f"d/{LONG}"] == b"deep"


def test_a_reelfs_tape_file_is_told_from_plain_pax():
    drive = MemDrive()
    write_tape_file(
        drive, 4096, [(MemberInfo("a", 1, 0, 0o644, records=reelfs_records(bfid="B")), b"a")]
    )
    write_tape_file(drive, 4096, [(MemberInfo("b", 1, 123 * 10**9, 0o644), b"b")])  # no pax header
    drive.rewind()
    fmt, source = open_tape_file(drive)
    assert fmt == Format.REELFS_PAX
    assert [m.name for m in iter_archive(source, fmt)] == ["a"]
    assert drive.read_position().file == 1
    fmt, source = open_tape_file(drive)
    assert fmt == Format.USTAR
    assert [m.data.read() for m in iter_archive(source, fmt)] == [b"b"]


def test_sniffs_labels_compression_and_nothing(gnu_tar, tree):
    assert sniff(Vol1("A00001").to_bytes(), 80) == Format.ANSI_LABEL
    assert sniff(b"VOL1" + bytes(600), 604) != Format.ANSI_LABEL  # a data record, not a label
    assert sniff(b"") == Format.EMPTY
    assert sniff(bytes(10240)) == Format.ZEROS
    assert sniff(os.urandom(0) + b"\x89PNG" + bytes(600)) == Format.UNKNOWN
    gz = make_tar(gnu_tar, tree, "pax", "-z")
    assert sniff(gz[:4096]) == Format.GZIP
    drive = load_records(chop(gz, 512))
    fmt, source = open_tape_file(drive)
    assert fmt == Format.GZIP
    with pytest.raises(FormatError, match="cannot read a gzip tape file"):
        list(iter_archive(source, fmt))
    assert list(read_tape_file(load_records([]))) == []


def test_records_longer_than_the_buffer_are_read_whole(gnu_tar, tree):
    archive = make_tar(gnu_tar, tree, "pax", "-b", "64")  # 32 KiB records
    drive = load_records(chop(archive, 32768))
    names = [m.name for m in read_tape_file(drive, max_record=512)]
    assert "d/e/g.bin" in names
    assert drive.read_position().file == 1


def test_tar_truncated_or_corrupt_is_a_format_error(gnu_tar, tree):
    archive = make_tar(gnu_tar, tree, "ustar")
    with pytest.raises(FormatError, match="truncated"):
        for m in iter_tar(StreamSource(io.BytesIO(archive[:1100]))):
            m.data.read()
    bad = bytearray(archive)
    bad[148] ^= 0x01  # the first header's checksum field
    with pytest.raises(FormatError, match=r"invalid tar header: bad checksum \(at byte 0\)"):
        list(iter_tar(StreamSource(io.BytesIO(bytes(bad)))))


def test_random_tar_corruption_never_crashes_or_hangs(gnu_tar, tree):
    rng = random.Random(2)
    for fmt in ("pax", "gnu", "ustar"):
        archive = make_tar(gnu_tar, tree, fmt)
        for _ in range(150):
            mutated = bytearray(archive[:16384])
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(2048)] = rng.randrange(256)
            try:
                for m in iter_tar(StreamSource(io.BytesIO(bytes(mutated)))):
                    m.data.read()
            except FormatError:
                pass


def test_tar_listing_by_gnu_tar_agrees_with_the_reader(gnu_tar, tree):
    archive = make_tar(gnu_tar, tree, "pax")
    listing = run_tar(gnu_tar, ["-tf", "-"], archive).stdout.decode().split()
    ours = [
        m.name + ("/" if m.type == MemberType.DIRECTORY else "")
        for m in iter_tar(StreamSource(io.BytesIO(archive)))
    ]
    assert ours == listing

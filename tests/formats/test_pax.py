"""pax tape files: round trips, extents, GNU tar interoperability, the writer's edge cases."""

from __future__ import annotations

import io
import os
import tarfile
import zlib
from pathlib import Path

import pytest

from drivers.formats.errors import FormatError, ShortSourceError, WriterStateError
from drivers.formats.pax import (
    REELFS_ADLER32,
    REELFS_BFID,
    REELFS_VERSION,
    MemberInfo,
    TapeFileWriter,
    header_bytes,
    iter_members,
    read_member,
    reelfs_records,
)
from drivers.tape import EndOfMediumError
from tests.formats.memdrive import MemDrive
from tests.formats.util import chop, load_records, run_tar, write_tape_file

BS = 10240
MTIME = 1_700_000_000_123_456_789
NAME_255 = "é" * 127 + "x"  # 255 bytes of UTF-8


def long_path(total: int) -> str:
    """A relative path of exactly `total` bytes, components of at most 200 bytes."""
    parts, length = [], 0
    while total - length > 201:
        parts.append(chr(ord("a") + len(parts) % 26) * 200)
        length += 201
    parts.append("f" * (total - length))
    path = "/".join(parts)
    assert len(path.encode()) == total
    return path


def info(name: str, data: bytes, **kw) -> MemberInfo:
    kw.setdefault("mtime_ns", MTIME)
    kw.setdefault("mode", 0o640)
    return MemberInfo(name=name, size=len(data), **kw)


def payload(n: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(n))


def archive_bytes(drive: MemDrive, tape_file: int = 0) -> bytes:
    return b"".join(drive.tape_file(tape_file))


def read_deep(root: Path, rel: str) -> bytes:
    """Read a file whose absolute path may exceed PATH_MAX, one directory at a time."""
    *dirs, leaf = rel.split("/")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for d in dirs:
            nxt = os.open(d, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        leaf_fd = os.open(leaf, os.O_RDONLY, dir_fd=fd)
        with os.fdopen(leaf_fd, "rb") as f:
            return f.read()
    finally:
        os.close(fd)


def stat_deep(root: Path, rel: str) -> os.stat_result:
    *dirs, leaf = rel.split("/")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for d in dirs:
            nxt = os.open(d, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return os.stat(leaf, dir_fd=fd)
    finally:
        os.close(fd)


# -- round trips ----------------------------------------------------------------------


def test_round_trip_keeps_every_field_and_the_data():
    drive = MemDrive()
    data = payload(30_000)
    member = info(
        "dir/file.bin",
        data,
        uid=1234,
        gid=5678,
        uname="alice",
        gname="physics",
        records=reelfs_records(bfid="B0001", adler32=zlib.adler32(data), path="/a/b"),
    )
    (extent,), _ = write_tape_file(drive, BS, [(member, data)])
    assert extent.record == 0 and extent.offset == 0 and extent.size == len(data)

    drive.rewind()
    out = io.BytesIO()
    got = read_member(drive, BS, 0, out)
    assert out.getvalue() == data
    assert got == member
    assert got.records[REELFS_VERSION] == "1"
    assert got.records[REELFS_ADLER32] == f"{zlib.adler32(data):08x}"


def test_every_record_is_block_size_and_the_archive_ends_properly():
    drive = MemDrive()
    (extent,), _ = write_tape_file(drive, BS, [(info("a", payload(5000)), payload(5000))])
    records = drive.tape_file(0)
    assert {len(r) for r in records} == {BS}
    blob = archive_bytes(drive)
    assert blob[extent.data_offset : extent.data_offset + 5000] == payload(5000)
    tail = blob[extent.data_offset + 5000 :]
    assert len(tail) >= 120 + 1024 and tail == bytes(len(tail))  # padding, end of archive
    assert drive.objects[-1] is None  # the filemark
    assert drive.syncs == 1  # finish() synchronises


def test_nanosecond_and_negative_mtimes_round_trip():
    drive = MemDrive()
    cases = [MTIME, 1_700_000_000_000_000_000, -1_500_000_000, -3_000_000_000, 0, 8**11 * 10**9]
    members = [(info(f"f{i}", b"x", mtime_ns=t), b"x") for i, t in enumerate(cases)]
    write_tape_file(drive, BS, members)
    drive.rewind()
    got = [m.mtime_ns for m, _, _ in iter_members(drive, BS)]
    assert got == cases


def test_large_ids_and_non_ascii_owner_round_trip():
    drive = MemDrive()
    member = info("f", b"abc", uid=2**31, gid=3_000_000, uname="jörg", gname="grüppe")
    write_tape_file(drive, BS, [(member, b"abc")])
    drive.rewind()
    (got, _, _), *_ = list(iter_members(drive, BS))
    assert (got.uid, got.gid, got.uname, got.gname) == (2**31, 3_000_000, "jörg", "grüppe")


def test_multiple_members_are_each_locatable_by_extent():
    drive = MemDrive()
    # a first tape file, so that the pax tape file does not start at block 0
    write_tape_file(drive, 4096, [(info("other", b"zz"), b"zz")])
    sizes = [0, 1, 511, 512, 513, 4096, 9000, 25_000, 3, 70_000]
    members = [
        (info(f"m{i:02d}", payload(n, i), records={REELFS_BFID: f"B{i}"}), payload(n, i))
        for i, n in enumerate(sizes)
    ]
    extents, start = write_tape_file(drive, 4096, members)
    assert start == 2  # one record and one filemark before it
    assert [e.size for e in extents] == sizes
    assert len({(e.record, e.offset) for e in extents}) == len(sizes)

    for (member, data), extent in reversed(list(zip(members, extents, strict=True))):
        drive.locate(start + extent.record)
        out = io.BytesIO()
        got = read_member(drive, 4096, extent.offset, out)
        assert got.name == member.name and got.records[REELFS_BFID] == member.records[REELFS_BFID]
        assert out.getvalue() == data

    blob = archive_bytes(drive, 1)
    for (_, data), extent in zip(members, extents, strict=True):
        assert blob[extent.data_offset : extent.data_offset + extent.size] == data


def test_headers_spanning_records_with_512_byte_blocks():
    drive = MemDrive()
    path = long_path(4095)
    members = [(info("small", b"s"), b"s"), (info(path, payload(2000)), payload(2000))]
    extents, _ = write_tape_file(drive, 512, members)
    assert len(header_bytes(members[1][0])) > 4096  # the pax header alone spans 9+ records
    drive.locate(extents[1].record)
    out = io.BytesIO()
    assert read_member(drive, 512, extents[1].offset, out).name == path
    assert out.getvalue() == payload(2000)


def test_on_data_sees_the_data_in_order_when_writing_and_reading():
    drive = MemDrive()
    data = payload(3 * BS + 123)
    seen_w: list[bytes] = []
    writer = TapeFileWriter(drive, BS)
    writer.add(info("a", data), io.BytesIO(data), on_data=lambda v: seen_w.append(bytes(v)))
    writer.finish()
    assert b"".join(seen_w) == data
    assert len(seen_w) == 4  # one chunk per record, no per-byte calls

    drive.rewind()
    crc = 0

    def on_data(v: memoryview) -> None:
        nonlocal crc
        crc = zlib.crc32(v, crc)

    read_member(drive, BS, 0, io.BytesIO(), on_data=on_data)
    assert crc == zlib.crc32(data)


def test_iter_members_streams_partial_reads_and_skips_the_rest_by_spacing():
    drive = MemDrive()
    big = payload(20 * BS)
    members = [(info("big", big), big), (info("next", b"after"), b"after")]
    extents, _ = write_tape_file(drive, BS, members)
    write_tape_file(drive, BS, [(info("second-file", b"2"), b"2")])
    drive.rewind()
    seen = []
    for member, extent, stream in iter_members(drive, BS):
        seen.append((member.name, extent, stream.read(7)))
    assert seen == [("big", extents[0], big[:7]), ("next", extents[1], b"after")]
    assert any(count > 1 for count, _ in drive.space_calls)  # whole records spaced over
    assert drive.read_calls < 10  # not 20 records read
    assert drive.read_position().file == 1  # after the tape file's filemark
    (second, _, _), *_ = list(iter_members(drive, BS))
    assert second.name == "second-file"


def test_iter_members_stream_is_invalid_after_the_next_iteration():
    drive = MemDrive()
    write_tape_file(drive, BS, [(info("a", b"aaa"), b"aaa"), (info("b", b"bbb"), b"bbb")])
    drive.rewind()
    streams = [s for _, _, s in iter_members(drive, BS)]
    with pytest.raises(ValueError):
        streams[0].read()


def test_short_reads_from_the_source_are_completed():
    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data = memoryview(data)

        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:
            n = min(len(b), 777, len(self.data))
            b[:n] = self.data[:n]
            self.data = self.data[n:]
            return n

    drive = MemDrive()
    data = payload(5 * BS)
    writer = TapeFileWriter(drive, BS)
    writer.add(info("t", data), Trickle(data))
    writer.finish()
    drive.rewind()
    out = io.BytesIO()
    read_member(drive, BS, 0, out)
    assert out.getvalue() == data


def test_the_drive_gets_the_writers_one_buffer_not_a_copy_per_record():
    class Spy(MemDrive):
        def __init__(self) -> None:
            super().__init__()
            self.buffers: set[int] = set()

        def write_block(self, data) -> bool:
            assert isinstance(data, memoryview)
            self.buffers.add(id(data.obj))
            return super().write_block(data)

    drive = Spy()
    data = payload(10 * BS)
    write_tape_file(drive, BS, [(info("a", data), data), (info("b", data), data)])
    assert len(drive.buffers) == 1


# -- GNU tar ------------------------------------------------------------------------------


def test_gnu_tar_lists_and_extracts_byte_identical(gnu_tar: str, tmp_path: Path):
    path_4095 = long_path(4095)
    files = {
        "plain.txt": b"hello\n",
        NAME_255: payload(12_345),
        "dir/" + "ü" * 60 + "/日本語.dat": payload(40_000, 3),
        path_4095: payload(777, 5),
        "empty": b"",
    }
    drive = MemDrive()
    members = [
        (info(n, d, uid=1234, gid=5678, records=reelfs_records(bfid=f"B{i}")), d)
        for i, (n, d) in enumerate(files.items())
    ]
    write_tape_file(drive, BS, members)
    blob = archive_bytes(drive)

    listing = run_tar(gnu_tar, ["--numeric-owner", "--full-time", "-tvf", "-"], blob)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.decode().splitlines()
    assert [line.endswith(name) for line, name in zip(lines, files, strict=True)] == [True] * 5
    assert all("-rw-r----- 1234/5678" in line for line in lines)
    assert "2023-11-14 22:13:20.123456789" in lines[0]
    assert b"REELFS.bfid" in listing.stderr  # ignored, with GNU tar's warning

    quiet = run_tar(gnu_tar, ["--warning=no-unknown-keyword", "-tf", "-"], blob)
    assert quiet.returncode == 0 and quiet.stderr == b""

    out = tmp_path / "x"
    out.mkdir()
    extract = run_tar(gnu_tar, ["--warning=no-unknown-keyword", "-xf", "-"], blob, cwd=out)
    assert extract.returncode == 0, extract.stderr
    for name, data in files.items():
        assert read_deep(out, name) == data
        st = stat_deep(out, name)
        assert st.st_mtime_ns == MTIME
        assert st.st_mode & 0o7777 == 0o640
        if os.geteuid() == 0:
            assert (st.st_uid, st.st_gid) == (1234, 5678)


def test_gnu_tar_reads_a_header_of_more_than_8_gib(gnu_tar: str):
    size = 9 * 2**30 + 3  # beyond ustar's 11 octal digits: needs a pax size record

    class HeadDrive(MemDrive):
        """Keeps the first records, counts the others."""

        def __init__(self) -> None:
            super().__init__()
            self.dropped = 0

        def write_block(self, data) -> bool:
            if len(self.objects) < 2:
                return super().write_block(data)
            self.dropped += 1
            return False

    class Zeros(io.RawIOBase):
        """As fast a source as there can be: the buffer is left as it is."""

        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:
            return len(b)

    drive = HeadDrive()
    block = 1 << 20
    writer = TapeFileWriter(drive, block)
    extent = writer.add(MemberInfo("huge.bin", size, MTIME, 0o640), Zeros())
    records = writer.finish()
    assert records == -(-(512 * 3 + size + 1024) // block) == drive.dropped + 2
    assert extent.size == size
    assert b"size=%d" % size in drive.objects[0][:1024]

    listing = run_tar(gnu_tar, ["-tvf", "-"], drive.objects[0])
    assert f" {size} " in listing.stdout.decode()  # listed before tar meets the cut

    drive.objects = drive.objects[:2]
    drive.rewind()
    member, ext, _ = next(iter_members(drive, block))
    assert (member.size, ext.size, ext.data_offset) == (size, size, 1536)


def test_reads_pax_written_by_gnu_tar(gnu_tar: str, tmp_path: Path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / NAME_255).write_bytes(payload(3000))
    (src / "a").write_bytes(b"a" * 10)
    os.utime(src / "a", ns=(MTIME, MTIME))
    made = run_tar(
        gnu_tar, ["--format=pax", "-b", "4", "-C", str(src), "-cf", "-", "a", "sub"], b""
    )
    assert made.returncode == 0, made.stderr
    drive = load_records(chop(made.stdout, 2048))
    got = {m.name: (m, s.read()) for m, _, s in iter_members(drive, 2048)}
    assert set(got) == {"a", f"sub/{NAME_255}"}  # the directory is skipped
    assert got["a"][1] == b"a" * 10 and got["a"][0].mtime_ns == MTIME
    assert got[f"sub/{NAME_255}"][1] == payload(3000)


# -- writer failures ----------------------------------------------------------------------


def test_early_warning_is_reported_and_writing_goes_on():
    drive = MemDrive(early_warning_after=3 * BS)
    writer = TapeFileWriter(drive, BS)
    writer.add(info("a", payload(2 * BS)), io.BytesIO(payload(2 * BS)))
    assert writer.early_warning is False
    writer.add(info("b", payload(2 * BS)), io.BytesIO(payload(2 * BS)))
    assert writer.early_warning is True
    writer.add(info("c", b"c"), io.BytesIO(b"c"))
    assert writer.finish() == writer.records_written == len(drive.tape_file(0))
    drive.rewind()
    assert [m.name for m, _, _ in iter_members(drive, BS)] == ["a", "b", "c"]


def test_short_source_raises_and_abandons_the_writer():
    drive = MemDrive()
    writer = TapeFileWriter(drive, BS)
    with pytest.raises(ShortSourceError) as e:
        writer.add(info("a", payload(3 * BS)), io.BytesIO(payload(2 * BS + 5)))
    assert (e.value.expected, e.value.got) == (3 * BS, 2 * BS + 5)
    with pytest.raises(WriterStateError):
        writer.add(info("b", b"b"), io.BytesIO(b"b"))
    with pytest.raises(WriterStateError):
        writer.finish()


def test_end_of_medium_propagates_and_breaks_the_writer():
    drive = MemDrive(capacity=4 * BS)
    writer = TapeFileWriter(drive, BS)
    with pytest.raises(EndOfMediumError):
        writer.add(info("a", payload(6 * BS)), io.BytesIO(payload(6 * BS)))
    assert writer.records_written == 4
    with pytest.raises(WriterStateError):
        writer.finish()


def test_invalid_member_info_is_refused_before_anything_is_written():
    drive = MemDrive()
    writer = TapeFileWriter(drive, BS)
    for bad in (
        info("", b""),
        info("dir/", b""),
        info("a", b"", records={"path": "other"}),
        info("a", b"", records={"bad=key": "v"}),
        MemberInfo("a", -1, 0, 0o644),
    ):
        with pytest.raises(ValueError):
            writer.add(bad, io.BytesIO(b""))
    assert drive.write_calls == 0
    writer.add(info("ok", b"1"), io.BytesIO(b"1"))  # still usable
    assert writer.finish() == 1
    with pytest.raises(ValueError):
        TapeFileWriter(drive, 1000)


def test_finish_without_filemark_leaves_it_to_the_caller():
    drive = MemDrive()
    writer = TapeFileWriter(drive, BS)
    writer.add(info("a", b"a"), io.BytesIO(b"a"))
    assert writer.finish(filemark=False) == 1
    assert drive.objects[-1] is not None and drive.syncs == 0


# -- reader failures ----------------------------------------------------------------------


def test_read_member_at_a_wrong_place_is_a_format_error():
    drive = MemDrive()
    extents, _ = write_tape_file(drive, BS, [(info("a", payload(100)), payload(100))])
    data_at = extents[0].data_offset
    drive.rewind()
    with pytest.raises(FormatError, match="invalid tar header"):
        read_member(drive, BS, data_at, io.BytesIO())  # the data
    drive.rewind()
    with pytest.raises(FormatError, match="end of archive"):
        read_member(drive, BS, data_at + 512, io.BytesIO())  # the end-of-archive blocks
    with pytest.raises(ValueError):
        read_member(drive, BS, 100, io.BytesIO())


def test_truncated_tape_file_is_a_format_error():
    drive = MemDrive()
    write_tape_file(drive, BS, [(info("a", payload(5 * BS)), payload(5 * BS))])
    drive.objects = [*drive.objects[:3], None]  # two records lost, then the filemark
    drive.rewind()
    with pytest.raises(FormatError, match=r"truncated data of 'a'"):
        read_member(drive, BS, 0, io.BytesIO())
    drive.rewind()
    with pytest.raises(FormatError, match="truncated"):
        for _, _, stream in iter_members(drive, BS):
            stream.read()


def test_corrupt_header_checksum_is_reported_with_its_offset():
    drive = MemDrive()
    members = [(info("a", b"1", mtime_ns=0), b"1"), (info("b", b"2"), b"2")]
    extents, _ = write_tape_file(drive, BS, members)
    assert extents[1].offset == 1024  # "a" has no pax header: header, data, then "b"
    for where, expected in (
        (1024, r"header: bad checksum \(at byte 1024\)"),
        (2048, r"starts at byte 1024: bad checksum \(at byte 2048\)"),
    ):
        record = bytearray(drive.objects[0])
        record[where] ^= 0xFF  # "b"'s pax header, then its ustar header
        drive.objects[0] = bytes(record)
        drive.rewind()
        with pytest.raises(FormatError, match=expected):
            list(iter_members(drive, BS))
        record[where] ^= 0xFF
        drive.objects[0] = bytes(record)


def test_oversized_extended_header_is_refused_without_allocating_it():
    ti = tarfile.TarInfo("././@PaxHeader")
    ti.type = tarfile.XHDTYPE
    ti.size = 1 << 32
    drive = load_records(chop(ti.tobuf(tarfile.USTAR_FORMAT).ljust(BS, b"\0"), BS))
    with pytest.raises(FormatError, match="extended header data"):
        list(iter_members(drive, BS))


def test_an_empty_tape_file_has_no_members():
    drive = load_records([])
    assert list(iter_members(drive, BS)) == []
    assert drive.read_position().file == 1  # after the filemark


def test_truncation_found_while_spacing_over_unread_data():
    drive = MemDrive()
    write_tape_file(drive, BS, [(info("a", payload(8 * BS)), payload(8 * BS))])
    drive.objects = [*drive.objects[:4], None]  # the data's last records lost
    drive.rewind()
    with pytest.raises(FormatError, match=r"truncated data of 'a'"):
        for _ in iter_members(drive, BS):
            pass  # nothing read: the reader spaces over the data
    assert any(count > 1 for count, _ in drive.space_calls)


def test_reelfs_records_encoding():
    recs = reelfs_records(
        bfid="0A1B2C3D-42",
        version=3,
        family="raw",
        path="/exp/run1.dat",
        archive="0A1B2C3D",
        adler32=0x1,
        crc32c=0xDEADBEEF,
    )
    assert recs == {
        "REELFS.bfid": "0A1B2C3D-42",
        "REELFS.version": "3",
        "REELFS.family": "raw",
        "REELFS.path": "/exp/run1.dat",
        "REELFS.archive": "0A1B2C3D",
        "REELFS.adler32": "00000001",
        "REELFS.crc32c": "deadbeef",
    }

"""GNU sparse 1.0 members: only the data regions are stored, and every reader (Python's
tarfile, GNU tar, reelfs's read_member and iter_members) gets the real content back."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import zlib
from pathlib import Path

import pytest

from drivers.formats.pax import MemberInfo, TapeFileWriter, iter_members, read_member
from tests.formats.memdrive import MemDrive

BS = 4096
SIZE = 3 * 2**20


def sparse_file(path: Path, *, tail_hole: bool) -> tuple[bytes, list[tuple[int, int]]]:
    a, b = os.urandom(5000), os.urandom(8192)
    content = bytearray(SIZE)
    content[4096 : 4096 + len(a)] = a
    end = SIZE - len(b) if not tail_hole else 2**20
    content[end : end + len(b)] = b
    path.write_bytes(bytes(content))
    return bytes(content), [(4096, len(a)), (end, len(b))]


@pytest.mark.parametrize("tail_hole", [True, False])
def test_sparse_member_reads_back_whole_everywhere(tmp_path: Path, tail_hole: bool) -> None:
    src = tmp_path / "src"
    content, regions = sparse_file(src, tail_hole=tail_hole)
    drive = MemDrive()
    w = TapeFileWriter(drive, BS)
    seen = bytearray()
    info = MemberInfo(name="d/sparse.bin", size=SIZE, mtime_ns=0, mode=0o644)
    with open(src, "rb", buffering=0) as f:
        w.add(info, f, on_data=lambda v: seen.extend(v), sparse=regions)
    w.finish()
    assert bytes(seen) == content  # on_data sees the real file: checksums stay the file's
    data = b"".join(drive.tape_file(0))
    assert len(data) <= 64 * 1024  # the regions and the map, not 3 MiB

    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        (m,) = t.getmembers()
        assert (m.name, m.size) == ("d/sparse.bin", SIZE)
        assert t.extractfile(m).read() == content  # type: ignore[union-attr]

    out = tmp_path / "gnu"
    out.mkdir()
    subprocess.run(["tar", "-xf", "-", "-C", str(out)], input=data, check=True)
    assert (out / "d" / "sparse.bin").read_bytes() == content
    assert os.stat(out / "d" / "sparse.bin").st_blocks * 512 < SIZE // 4

    drive.rewind()
    dest = io.BytesIO()
    got = read_member(drive, BS, 0, dest)
    assert (got.name, got.size, dest.getvalue()) == ("d/sparse.bin", SIZE, content)
    assert not any(k.startswith("GNU.sparse") for k in got.records)

    drive.rewind()
    ((mi, stream),) = [(a, c.read()) for a, _, c in iter_members(drive, BS)]
    assert (mi.name, mi.size, stream) == ("d/sparse.bin", SIZE, content)
    assert zlib.adler32(stream) == zlib.adler32(content)

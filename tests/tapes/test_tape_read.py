"""`reelfs tape read` gives GNU tar what it reads: listing and extraction byte-identical,
255-byte names and long paths included, with the daemon running or not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.archive import REPO, file_of, init_archive, mount, reelfs, tape_locations

TAR = ["tar", "--warning=no-unknown-keyword"]
MTIME_NS = 1_600_000_000_123_456_789


def _tree(mnt: Path) -> dict[Path, bytes]:
    deep = mnt
    for i in range(6):
        deep = deep / (str(i) + "d" * 199)  # a path of over 1,200 bytes
    deep.mkdir(parents=True)
    files = {
        mnt / ("n" * 251 + ".dat"): file_of(7000, 1),  # a 255-byte name
        deep / ("é" * 100 + ".txt"): file_of(12345, 2),  # 204 bytes of UTF-8
        mnt / "plain.txt": b"hello\n",
        mnt / "large.bin": file_of(1_300_000, 3),  # a data file of its own
    }
    for p, data in files.items():
        p.write_bytes(data)
    os.utime(mnt / "plain.txt", ns=(MTIME_NS, MTIME_NS))
    return files


@pytest.mark.parametrize("labels", ["none", "ansi"])
def test_gnu_tar_lists_and_extracts_tape_read_output(tmp_path: Path, labels: str) -> None:
    archive = init_archive(
        tmp_path / "a",
        extra=["--label-format", labels],
        options={"aggregation.threshold": "1MiB"},
    )
    m = mount(archive, tmp_path / "mnt")
    try:
        files = _tree(m.mnt)
        m.flush()
        locs = {p: tape_locations(m, p)[0].split(":") for p in files}
        assert {v for v, _, _ in locs.values()} == {"RF0001"}
        datafiles = sorted({int(f) for _, f, _ in locs.values()})
        assert datafiles == [0, 1]
        read = ("tape", "read", "--archive", str(archive), "RF0001")
        online = {n: m.cli(*read, str(n)).stdout for n in datafiles}  # through the daemon
        # the command of the issue, in a shell pipe, while the archive is mounted
        pipe = subprocess.run(
            f"{sys.executable} -m mountfs.cli tape read --archive {archive} RF0001 0 "
            f"| {' '.join(TAR)} -tvf -",
            shell=True,
            capture_output=True,
            cwd=REPO,
        )
        assert pipe.returncode == 0, pipe.stderr
        assert "n" * 251 + ".dat" in pipe.stdout.decode()
        m.umount()
    finally:
        m.stop()
    offline = {n: reelfs(*read, str(n)).stdout for n in datafiles}
    assert offline == online
    assert all(len(data) % (256 * 1024) == 0 for data in online.values())
    out = tmp_path / "out"
    out.mkdir()
    names: list[str] = []
    for data in online.values():
        listing = subprocess.run([*TAR, "-tf", "-"], input=data, capture_output=True, check=True)
        names += listing.stdout.decode().splitlines()
        subprocess.run([*TAR, "-xf", "-", "-C", str(out)], input=data, check=True)
    assert sorted(names) == sorted(str(p.relative_to(m.mnt)) for p in files)
    for p, data in files.items():
        assert (out / p.relative_to(m.mnt)).read_bytes() == data
    assert (out / "plain.txt").stat().st_mtime_ns == MTIME_NS


def test_tape_read_says_what_is_not_there(tmp_path: Path) -> None:
    archive = init_archive(tmp_path / "a")
    m = mount(archive, tmp_path / "mnt")
    try:
        (m.mnt / "x").write_bytes(b"x")
        m.flush()
        p = m.cli("tape", "read", "--archive", str(archive), "RF0001", "3", check=False)
        assert p.returncode == 1 and "no data file 3" in p.stderr.decode() and not p.stdout
        p = m.cli("tape", "read", "--archive", str(archive), "NOPE01", "0", check=False)
        assert p.returncode == 1 and "NOPE01" in p.stderr.decode()
        m.umount()
    finally:
        m.stop()
    p = reelfs("tape", "read", "--archive", str(archive), "RF0001", "1", check=False)
    assert p.returncode == 1 and "no data file 1" in p.stderr.decode()

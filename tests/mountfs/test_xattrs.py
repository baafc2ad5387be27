"""Directory policy and file state through extended attributes."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from tests.archive import Mount


def xerr(fn, *args) -> int:
    with pytest.raises(OSError) as e:
        fn(*args)
    return e.value.errno


def test_family_is_inherited_by_new_entries(mounted: Mount) -> None:
    raw = mounted.mnt / "raw"
    raw.mkdir()
    os.setxattr(raw, "user.reelfs.file_family", b"raw")
    os.setxattr(raw, "user.reelfs.width", b"2")
    os.setxattr(raw, "user.reelfs.storage_group", b"exp1")
    (raw / "sub").mkdir()
    (raw / "sub" / "f").write_bytes(b"x")
    for p in (raw / "sub", raw / "sub" / "f"):
        assert os.getxattr(p, "user.reelfs.file_family") == b"raw"
        assert os.getxattr(p, "user.reelfs.width") == b"2"
        assert os.getxattr(p, "user.reelfs.storage_group") == b"exp1"
    # existing entries keep what they had; new ones get the new value
    os.setxattr(raw, "user.reelfs.file_family", b"raw2")
    (raw / "g").write_bytes(b"y")
    assert os.getxattr(raw / "sub" / "f", "user.reelfs.file_family") == b"raw"
    assert os.getxattr(raw / "g", "user.reelfs.file_family") == b"raw2"
    info = mounted.json("info", str(raw / "g"))
    assert info["family"] == "raw2"


def test_file_state_attributes(mounted: Mount) -> None:
    f = mounted.mnt / "f"
    f.write_bytes(b"hello")

    def getfattr(name: str) -> str:
        p = subprocess.run(["getfattr", "-n", f"user.reelfs.{name}", str(f)], capture_output=True)
        return p.stdout.decode() + p.stderr.decode()

    assert 'user.reelfs.state="dirty"' in getfattr("state")
    assert "user.reelfs.bfid=" in getfattr("bfid")
    assert 'adler32="062c0215"' in getfattr("checksum.adler32")  # adler32(b"hello"), seeded 1
    assert 'crc32c="9a71bb4c"' in getfattr("checksum.crc32c")
    assert "No such attribute" in getfattr("location")
    mounted.flush(f)
    loc = os.getxattr(f, "user.reelfs.location").decode()
    assert loc.count(":") == 2


def test_bad_values_are_einval(mounted: Mount) -> None:
    d = mounted.mnt / "d"
    d.mkdir()
    set_ = os.setxattr
    assert xerr(set_, d, "user.reelfs.file_family", b"has space") == errno.EINVAL
    assert xerr(set_, d, "user.reelfs.file_family", b"") == errno.EINVAL
    assert xerr(set_, d, "user.reelfs.file_family", b"x" * 65) == errno.EINVAL
    assert xerr(set_, d, "user.reelfs.width", b"2") == errno.EINVAL  # no family yet
    os.setxattr(d, "user.reelfs.file_family", b"ok")
    assert xerr(set_, d, "user.reelfs.width", b"0") == errno.EINVAL
    assert xerr(set_, d, "user.reelfs.width", b"two") == errno.EINVAL
    assert xerr(set_, d, "user.reelfs.width", b"65") == errno.EINVAL
    assert xerr(set_, d, "user.reelfs.bogus", b"1") == errno.EINVAL
    log = (mounted.archive / "log" / "reelfsd.log").read_text()
    assert "bad user.reelfs.file_family" in log and "width" in log


def test_read_only_and_misplaced_attributes_are_eperm(mounted: Mount) -> None:
    f = mounted.mnt / "f"
    f.write_bytes(b"x")
    for name in ("state", "bfid", "location", "checksum.adler32", "checksum.crc32c"):
        os.setxattr(f, f"user.reelfs.{name}", b"x")  # accepted (a copy restoring), ignored
    assert os.getxattr(f, "user.reelfs.state") == b"dirty"
    assert xerr(os.removexattr, f, "user.reelfs.state") == errno.EPERM
    assert xerr(os.setxattr, f, "user.reelfs.file_family", b"raw") == errno.EPERM
    log = (mounted.archive / "log" / "reelfsd.log").read_text()
    assert "read-only" in log and "can only be set on directories" in log


def test_other_user_attributes_are_stored(mounted: Mount) -> None:
    f = mounted.mnt / "f"
    f.write_bytes(b"x")
    os.setxattr(f, "user.project", b"\x00binary\xff")
    assert os.getxattr(f, "user.project") == b"\x00binary\xff"
    assert "user.project" in os.listxattr(f)
    os.setxattr(f, "user.project", b"v2", os.XATTR_REPLACE)
    assert xerr(os.setxattr, f, "user.project", b"v3", os.XATTR_CREATE) == errno.EEXIST
    os.removexattr(f, "user.project")
    assert xerr(os.getxattr, f, "user.project") == errno.ENODATA
    assert xerr(os.removexattr, f, "user.project") == errno.ENODATA
    big = b"v" * 65536
    os.setxattr(f, "user.big", big)
    assert os.getxattr(f, "user.big") == big
    assert xerr(os.setxattr, f, "user.big", b"v" * 65537) == errno.E2BIG


def test_mount_root_names_its_archive(mounted: Mount) -> None:
    assert os.getxattr(mounted.mnt, "user.reelfs.archive").decode() == str(mounted.archive)


def test_copies_is_family_policy_and_bad_values_are_einval(mounted: Mount) -> None:
    d = mounted.mnt / "two"
    d.mkdir()
    set_ = os.setxattr
    assert xerr(set_, d, "user.reelfs.copies", b"2") == errno.EINVAL  # no family yet
    os.setxattr(d, "user.reelfs.file_family", b"two")
    for bad in (b"0", b"5", b"abc", b"", b"-1", b"2.0"):
        assert xerr(set_, d, "user.reelfs.copies", bad) == errno.EINVAL, bad
    assert xerr(os.getxattr, d, "user.reelfs.copies") == errno.ENODATA  # nothing was set
    os.setxattr(d, "user.reelfs.copies", b" 4\n")
    assert os.getxattr(d, "user.reelfs.copies") == b"4"
    os.setxattr(d, "user.reelfs.copies", b"2")
    (d / "sub").mkdir()
    (d / "f").write_bytes(b"x")
    assert os.getxattr(d / "sub", "user.reelfs.copies") == b"2"  # inherited
    assert os.getxattr(d / "f", "user.reelfs.copies") == b"2"
    assert xerr(set_, d / "f", "user.reelfs.copies", b"1") == errno.EPERM
    out = subprocess.run(
        ["getfattr", "-n", "user.reelfs.copies", "--only-values", str(d)],
        capture_output=True,
        check=True,
    ).stdout
    assert out == b"2"
    # the family's setting, whatever directory set it: both copies of the file are queued
    queued = sorted(r["family"] for r in mounted.json("queue"))
    assert queued == ["two", "two#2"]
    log = (mounted.archive / "log" / "reelfsd.log").read_text()
    assert "bad user.reelfs.copies" in log and "before its copies" in log

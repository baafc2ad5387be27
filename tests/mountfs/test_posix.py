"""The mount behaves as a disk for the usual tools and POSIX calls."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.archive import Mount, file_of

libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def renameat2(old: Path, new: Path, flags: int) -> None:
    r = libc.renameat2(AT_FDCWD, bytes(old), AT_FDCWD, bytes(new), flags)
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def test_shell_tools(mounted: Mount, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "one.txt").write_bytes(b"one\n")
    (src / "a" / "b" / "two.bin").write_bytes(file_of(300_000, 2))
    (src / "top.txt").write_text("top\n")
    dst = mounted.mnt / "copy"
    subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
    assert subprocess.run(["diff", "-r", str(src), str(dst)]).returncode == 0
    found = subprocess.run(
        ["find", str(dst), "-type", "f"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(Path(f).name for f in found) == ["one.txt", "top.txt", "two.bin"]
    ls = subprocess.run(
        ["ls", "-la", str(dst / "a")], capture_output=True, text=True, check=True
    ).stdout
    assert " . " in ls.replace("\n", " \n") or ls.splitlines()[1].endswith(" .")
    assert "one.txt" in ls and " b" in ls
    du = subprocess.run(["du", "-sb", str(dst)], capture_output=True, text=True, check=True)
    assert int(du.stdout.split()[0]) >= 300_000 + 8
    subprocess.run(["mv", str(dst / "top.txt"), str(dst / "a" / "moved.txt")], check=True)
    assert (dst / "a" / "moved.txt").read_text() == "top\n"
    assert not (dst / "top.txt").exists()
    subprocess.run(["rm", "-r", str(dst / "a")], check=True)
    assert os.listdir(dst) == []
    os.rmdir(dst)
    assert os.listdir(mounted.mnt) == []


def test_readdir_lists_dot_entries_and_is_complete(mounted: Mount) -> None:
    d = mounted.mnt / "many"
    d.mkdir()
    names = {f"f{i:05d}" for i in range(2500)}
    for n in names:
        (d / n).touch()
    assert set(os.listdir(d)) == names
    with os.scandir(d) as it:
        assert sum(1 for _ in it) == 2500
    ls = subprocess.run(["ls", "-a", str(d)], capture_output=True, text=True, check=True)
    assert ls.stdout.split()[:2] == [".", ".."]


def test_long_names_and_paths(mounted: Mount) -> None:
    ok = "n" * 255
    p = mounted.mnt / ok
    p.write_bytes(b"x")
    assert p.read_bytes() == b"x"
    with pytest.raises(OSError) as e:
        (mounted.mnt / ("n" * 256)).write_bytes(b"x")
    assert e.value.errno == errno.ENAMETOOLONG
    # a path far longer than 1,023 bytes, created relative to avoid PATH_MAX in one call
    deep = mounted.mnt
    for i in range(20):
        deep = deep / (f"{i:02d}" + "d" * 98)
        deep.mkdir()
    assert len(bytes(deep)) > 2000
    fd = os.open(deep, os.O_RDONLY | os.O_DIRECTORY)
    try:
        f = os.open("leaf.txt", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd)
        os.write(f, b"deep")
        os.close(f)
        assert os.stat("leaf.txt", dir_fd=fd).st_size == 4
    finally:
        os.close(fd)


def test_create_honours_mode_umask_and_owner(mounted: Mount) -> None:
    old = os.umask(0o027)
    try:
        f = mounted.mnt / "f"
        fd = os.open(f, os.O_CREAT | os.O_WRONLY, 0o666)
        os.close(fd)
        (mounted.mnt / "d").mkdir(0o777)
    finally:
        os.umask(old)
    assert stat.S_IMODE(f.stat().st_mode) == 0o640
    assert stat.S_IMODE((mounted.mnt / "d").stat().st_mode) == 0o750
    assert f.stat().st_uid == os.getuid()
    os.chmod(f, 0o600)
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    os.chown(f, 1234, 5678)
    assert (f.stat().st_uid, f.stat().st_gid) == (1234, 5678)


def test_times(mounted: Mount) -> None:
    f = mounted.mnt / "t"
    f.write_bytes(b"1")
    d_before = os.stat(mounted.mnt).st_mtime_ns
    os.utime(f, ns=(1_000_000_000, 2_000_000_123))
    st = f.stat()
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_000, 2_000_000_123)
    ctime = st.st_ctime_ns
    os.chmod(f, 0o640)
    assert f.stat().st_ctime_ns >= ctime
    (mounted.mnt / "u").touch()
    assert os.stat(mounted.mnt).st_mtime_ns >= d_before
    with open(f, "ab") as fh:
        fh.write(b"2")
    assert f.stat().st_mtime_ns > 2_000_000_123


def test_unlinked_file_stays_usable_through_open_descriptors(mounted: Mount) -> None:
    f = mounted.mnt / "gone"
    f.write_bytes(b"before")
    fd = os.open(f, os.O_RDWR)
    try:
        os.unlink(f)
        assert not f.exists()
        assert os.fstat(fd).st_nlink == 0
        os.pwrite(fd, b"after!", 0)
        assert os.pread(fd, 6, 0) == b"after!"
    finally:
        os.close(fd)
    assert os.listdir(mounted.mnt) == []


def test_hard_links_share_data(mounted: Mount) -> None:
    a = mounted.mnt / "a"
    a.write_bytes(b"shared")
    b = mounted.mnt / "b"
    os.link(a, b)
    assert a.stat().st_nlink == 2 and a.stat().st_ino == b.stat().st_ino
    with open(b, "r+b") as fh:
        fh.write(b"SH")
    assert a.read_bytes() == b"SHared"
    a.unlink()
    assert b.read_bytes() == b"SHared" and b.stat().st_nlink == 1
    with pytest.raises(OSError) as e:
        os.link(mounted.mnt, mounted.mnt / "dirlink")
    assert e.value.errno == errno.EPERM


def test_symlinks(mounted: Mount) -> None:
    (mounted.mnt / "target").write_text("t")
    os.symlink("target", mounted.mnt / "link")
    assert os.readlink(mounted.mnt / "link") == "target"
    assert (mounted.mnt / "link").read_text() == "t"
    assert stat.S_ISLNK(os.lstat(mounted.mnt / "link").st_mode)
    long_target = "x/" * 2000
    os.symlink(long_target, mounted.mnt / "long")
    assert os.readlink(mounted.mnt / "long") == long_target


def test_rename_semantics(mounted: Mount) -> None:
    m = mounted.mnt
    (m / "a").write_text("A")
    (m / "b").write_text("B")
    with pytest.raises(OSError) as e:
        renameat2(m / "a", m / "b", RENAME_NOREPLACE)
    assert e.value.errno == errno.EEXIST
    renameat2(m / "a", m / "b", RENAME_EXCHANGE)
    assert (m / "a").read_text() == "B" and (m / "b").read_text() == "A"
    with pytest.raises(OSError) as e:
        renameat2(m / "a", m / "nope", RENAME_EXCHANGE)
    assert e.value.errno == errno.ENOENT
    os.rename(m / "a", m / "b")  # replaces
    assert (m / "b").read_text() == "B" and not (m / "a").exists()
    (m / "d1").mkdir()
    (m / "d2").mkdir()
    (m / "d2" / "x").touch()
    with pytest.raises(OSError) as e:
        os.rename(m / "d1", m / "d2")
    assert e.value.errno == errno.ENOTEMPTY
    with pytest.raises(OSError) as e:
        os.rename(m / "d1", m / "d1" / "sub")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        os.rename(m / "b", m / "d1")
    assert e.value.errno == errno.EISDIR
    os.rename(m / "d1", m / "d2" / "moved")
    assert os.stat(m / "d2").st_nlink == 3
    assert os.stat(m).st_nlink == 3


def test_rmdir_and_unlink_errors(mounted: Mount) -> None:
    m = mounted.mnt
    (m / "d").mkdir()
    (m / "d" / "f").touch()
    with pytest.raises(OSError) as e:
        os.rmdir(m / "d")
    assert e.value.errno == errno.ENOTEMPTY
    with pytest.raises(OSError) as e:
        os.unlink(m / "d")
    assert e.value.errno in (errno.EISDIR, errno.EPERM)
    with pytest.raises(OSError) as e:
        os.rmdir(m / "d" / "f")
    assert e.value.errno == errno.ENOTDIR
    with pytest.raises(FileExistsError):
        os.mkdir(m / "d")


def test_truncate_and_sparse_writes(mounted: Mount) -> None:
    f = mounted.mnt / "t"
    f.write_bytes(b"0123456789")
    os.truncate(f, 4)
    assert f.read_bytes() == b"0123"
    os.truncate(f, 8)
    assert f.read_bytes() == b"0123\0\0\0\0"
    with open(f, "r+b") as fh:
        fh.seek(100)
        fh.write(b"end")
    assert f.stat().st_size == 103
    assert f.read_bytes()[100:] == b"end"


def test_o_direct_works(mounted: Mount) -> None:
    f = mounted.mnt / "direct"
    buf = ctypes.create_string_buffer(4096 * 4)
    data = file_of(4096 * 4, 3)
    ctypes.memmove(buf, data, len(data))
    fd = os.open(f, os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o644)
    try:
        assert os.write(fd, memoryview(buf).cast("B")) == len(data)
    finally:
        os.close(fd)
    assert f.read_bytes() == data


def test_fsync_and_statfs(mounted: Mount) -> None:
    f = mounted.mnt / "durable"
    with open(f, "wb") as fh:
        fh.write(b"x" * 1000)
        fh.flush()
        os.fsync(fh.fileno())
    st = os.statvfs(mounted.mnt)
    assert st.f_namemax == 255
    assert st.f_blocks * st.f_frsize == 4 * 64 * 1024 * 1024  # the tape pool
    assert 0 < st.f_bavail <= st.f_blocks


def test_mknod_fifo(mounted: Mount) -> None:
    os.mkfifo(mounted.mnt / "fifo", 0o600)
    assert stat.S_ISFIFO(os.lstat(mounted.mnt / "fifo").st_mode)


def test_copy_tree_with_shutil_preserves_content(mounted: Mount, tmp_path: Path) -> None:
    src = tmp_path / "tree"
    for i in range(30):
        p = src / f"d{i % 3}" / f"f{i}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(file_of(1000 * i + 1, i))
    shutil.copytree(src, mounted.mnt / "tree")
    for p in src.rglob("*.bin"):
        assert (mounted.mnt / "tree" / p.relative_to(src)).read_bytes() == p.read_bytes()


def test_fsync_leaves_the_catalog_shared_with_other_processes(mounted: Mount) -> None:
    # regression: syncing the catalog by opening its files beside SQLite dropped the
    # daemon's POSIX locks, and the next process to close the catalog deleted its WAL
    with open(mounted.mnt / "synced", "wb") as fh:
        fh.write(b"x")
        fh.flush()
        os.fsync(fh.fileno())
    mounted.json("status")  # another process opens and closes the catalog
    for i in range(3):
        (mounted.mnt / f"after{i}").write_bytes(b"y")
    targets = []
    for fd in os.listdir(f"/proc/{mounted.pid}/fd"):
        try:
            targets.append(os.readlink(f"/proc/{mounted.pid}/fd/{fd}"))
        except FileNotFoundError:
            pass  # closed by the daemon meanwhile
    assert not [t for t in targets if "catalog.db" in t and "(deleted)" in t]
    queued = {r["path"] for r in mounted.json("queue")}
    assert {"/synced", "/after0", "/after1", "/after2"} <= queued

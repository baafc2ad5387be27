"""Size limits and full file systems, on real mounts and real small (tmpfs) file systems.

The largest file is what a volume holds less tape headers and labels: a write beyond it
is EFBIG at once, `[mount] max_file_size` beyond it a configuration error. `umount` says
what cannot reach tape instead of waiting for it. A cache file system smaller than
`[cache] size` is warned about, and its real ENOSPC evicts archived files before a write
fails; a full catalog file system answers ENOSPC, not EIO.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.archive import file_of, init_archive, mount, reelfs

MiB = 1024 * 1024
BLOCK = 256 * 1024  # [library] block_size of a test archive
VOLUME = 4 * MiB
#: a 4 MiB volume of 256 KiB blocks: its capacity less the two records that
#: `backend.library.selection.need` keeps for headers, padding and labels
LIMIT = VOLUME - 2 * BLOCK


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs, unmounted afterwards (lazily: a daemon may still hold it)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    d = tmp_path / "small"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def test_a_write_beyond_what_a_volume_holds_is_refused_with_efbig(tmp_path: Path) -> None:
    archive = init_archive(tmp_path / "a", volume_size="4MiB", volumes=2)
    m = mount(archive, tmp_path / "mnt")
    try:
        fits = m.mnt / "fits"
        fits.write_bytes(file_of(LIMIT, 1))
        too = m.mnt / "too"
        with open(too, "wb") as f:
            f.write(b"x" * MiB)
            f.flush()
            with pytest.raises(OSError) as e:
                f.write(file_of(LIMIT, 2))
                f.flush()
            assert e.value.errno == errno.EFBIG
        (event,) = m.events("file_too_large")
        assert str(LIMIT) in event["message"] and "tape headers" in event["message"]
        # the kernel splits the write: what fits under the limit was written, no more
        assert MiB < too.stat().st_size <= LIMIT
        m.flush(fits, too, timeout=60)  # the largest accepted file does reach tape
        assert m.state(fits) == "archived" and m.state(too) == "archived"
        m.release(fits)
        assert fits.read_bytes() == file_of(LIMIT, 1)
    finally:
        m.stop()


def test_max_file_size_beyond_the_largest_volume_is_a_configuration_error(
    tmp_path: Path,
) -> None:
    p = reelfs(
        "init", str(tmp_path / "bad"), "--volume-size", "4MiB", "-o",
        'mount.max_file_size="4MiB"', check=False,
    )  # fmt: skip
    assert p.returncode == 2, p.stderr
    assert b"[mount] max_file_size" in p.stderr and str(LIMIT).encode() in p.stderr
    assert not (tmp_path / "bad").exists()
    archive = init_archive(tmp_path / "a", volume_size="4MiB", volumes=1)
    (tmp_path / "mnt").mkdir()
    p = reelfs(
        "mount", str(archive), str(tmp_path / "mnt"), "-o", "mount.max_file_size=5MiB",
        check=False,
    )  # fmt: skip
    assert p.returncode == 2, p.stderr
    assert b"larger than the largest file a volume can hold" in p.stderr
    assert not os.path.ismount(tmp_path / "mnt")


def test_umount_says_what_cannot_reach_tape_and_exits_1(tmp_path: Path) -> None:
    archive = init_archive(tmp_path / "a", volume_size="4MiB", volumes=1)
    m = mount(archive, tmp_path / "mnt")
    try:
        first, second = m.mnt / "first", m.mnt / "second"
        first.write_bytes(file_of(3 * MiB, 1))
        m.flush(first, timeout=60)
        second.write_bytes(file_of(3 * MiB, 2))  # the only volume has 1 MiB left
        t0 = time.monotonic()
        p = m.cli("umount", str(m.mnt), "--timeout", "120", check=False)
        took = time.monotonic() - t0
        assert p.returncode == 1, p.stderr
        err = p.stderr.decode()
        assert "cannot flush: 1 file(s)" in err and "no blank or writable volume" in err
        assert "--no-wait" in err
        assert took < 60, f"umount took {took:.0f}s to give up"
        assert os.path.ismount(m.mnt) and m.state(second) == "dirty"  # nothing hidden
        m.umount("--no-wait")
    finally:
        m.stop()


def test_a_small_cache_fs_is_warned_about_and_its_enospc_evicts(
    tmp_path: Path, small_fs: Path
) -> None:
    p = reelfs(
        "init", str(tmp_path / "a"), "--volume-size", "16MiB", "--volumes", "2",
        "--cache-size", "64MiB", "-o", f'cache.path="{small_fs}"', "-o",
        'mover.flush_delay="1h"', "-o", 'cache.full_timeout="20s"',
    )  # fmt: skip
    assert b"warning: the cache file system" in p.stderr and b"8.0 MiB" in p.stderr
    m = mount(tmp_path / "a", tmp_path / "mnt")
    try:
        (event,) = m.events("cache_fs_small")[:1]
        assert "less than [cache] size 64.0 MiB" in event["message"]
        a, b = m.mnt / "a", m.mnt / "b"
        a.write_bytes(file_of(5 * MiB, 1))
        m.flush(a, timeout=60)
        b.write_bytes(file_of(5 * MiB, 2))  # 10 MiB in 8: a must leave the cache first
        assert m.state(a) == "released"
        assert b.read_bytes() == file_of(5 * MiB, 2)
        m.flush(b, timeout=60)
        # a's recall meets the full file system (the cache's count has room): b, on
        # tape now, leaves the cache for it, and the recall is tried again
        assert a.read_bytes() == file_of(5 * MiB, 1)
        assert m.state(b) == "released"
        assert any("cache file system is full" in e["message"] for e in m.events("cache_full"))
    finally:
        m.stop()


def test_a_full_catalog_fs_answers_enospc_not_eio(tmp_path: Path, small_fs: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    archive = init_archive(
        small_fs / "a",
        volume_size="1MiB",
        volumes=1,
        drives=1,
        cache_size="16MiB",
        options={"cache.path": str(cache)},
    )
    m = mount(archive, tmp_path / "mnt")
    filler = small_fs / "filler"
    try:
        d = m.mnt / "d"
        d.mkdir()
        with open(filler, "wb") as f:
            with pytest.raises(OSError) as e:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            assert e.value.errno == errno.ENOSPC
        with pytest.raises(OSError) as e:
            for i in range(2000):  # 60 KiB of catalog each: the WAL must grow
                os.setxattr(d, f"user.n{i}", bytes([i % 251]) * 60_000)
        assert e.value.errno == errno.ENOSPC, e.value
        filler.unlink()
        assert d.is_dir()  # the archive still answers once there is room again
        os.setxattr(d, "user.after", b"ok")
        assert os.getxattr(d, "user.after") == b"ok"
    finally:
        filler.unlink(missing_ok=True)
        m.stop()


def test_the_limit_counts_every_record_and_label_on_large_volumes() -> None:
    from backend.tape.limits import largest_file

    # small volumes: the two records selection keeps bind; large ones: the cost of
    # every record (64 Ki records of 16 KiB, 512 bytes each in tgt's file)
    assert largest_file(VOLUME, BLOCK, layout="none", object_cost=32) == LIMIT
    cap, block = 1 << 30, 16 * 1024
    records = (cap - 512) // (block + 512)
    plain = largest_file(cap, block, layout="none", object_cost=512)
    assert plain == records * block - 8192 - 1024 < cap - 2 * block
    assert largest_file(cap, block, layout="ansi", object_cost=512) < plain
    assert largest_file(0, block, layout="none", object_cost=0) == 0

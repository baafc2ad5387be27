"""No wasted tape: one version and one tape copy per write session (a session ends at the
last release, not at every FLUSH), flush delay counted from the last change, sparse files
stored as their data only, and the space of deleted copies shown by df and volumes."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.archive import Mount, mount, tape_locations, wait_state
from tests.waiting import wait_for


def tape_copies(m: Mount) -> int:
    """Tape copies ever written (active and deleted) over every volume."""
    return sum(v["copies"] + v["deleted_copies"] for v in m.json("volumes"))


def version(m: Mount, path: Path) -> int:
    return int(m.json("info", str(path))["version"])


def test_shell_redirects_give_one_version_and_one_tape_copy(
    make_archive: Callable[..., Path], tmp_path: Path
) -> None:
    # flush_delay 0: any session that ended early would go to tape at once and the next
    # write would need a new version
    archive = make_archive(drives=1, volumes=2, options={"mover.flush_delay": "0s"})
    m = mount(archive, tmp_path / "mnt")
    try:
        redirect = m.mnt / "redirect"
        log = m.mnt / "log"
        # the shell's own descriptor is closed (a FLUSH) before the child writes a byte
        subprocess.run(["sh", "-c", f"/bin/echo hello > {redirect}"], check=True)
        # a log kept open while children inherit (and close) its descriptor
        script = f"exec 3>{log}; for i in 1 2 3 4; do echo line$i >&3; /bin/true; sleep 0.3; done"
        subprocess.run(["sh", "-c", script], check=True)
        wait_state(m, redirect, "archived")
        wait_state(m, log, "archived")
        assert redirect.read_bytes() == b"hello\n"
        assert log.read_text() == "".join(f"line{i}\n" for i in range(1, 5))
        assert version(m, redirect) == 1
        assert version(m, log) == 1
        assert tape_copies(m) == 2
    finally:
        m.stop()


def test_flush_delay_counts_from_the_last_change(
    make_archive: Callable[..., Path], tmp_path: Path
) -> None:
    archive = make_archive(drives=1, volumes=2, options={"mover.flush_delay": "4s"})
    m = mount(archive, tmp_path / "mnt")
    try:
        f = m.mnt / "growing"
        end = time.monotonic() + 10
        n = 0
        while time.monotonic() < end:
            with open(f, "ab") as out:
                out.write(b"x" * 1000)
            n += 1
            time.sleep(0.2)  # the workload's pace, not a synchronisation
        wait_state(m, f, "archived", timeout=60)
        assert f.stat().st_size == 1000 * n
        assert tape_copies(m) == 1
    finally:
        m.stop()


def test_df_and_volumes_show_the_space_of_deleted_copies(mounted: Mount) -> None:
    f = mounted.mnt / "doomed"
    f.write_bytes(os.urandom(2 * 2**20))
    mounted.flush(f)
    before = os.statvfs(mounted.mnt)
    assert sum(v["deleted"] for v in mounted.json("volumes")) == 0
    f.unlink()
    wait_for(
        lambda: sum(v["deleted"] for v in mounted.json("volumes")) >= 2 * 2**20,
        timeout=30,
        what="the removed file's tape copy to count as deleted",
    )
    assert mounted.json("status")["volumes"]["deleted"] >= 2 * 2**20
    after = os.statvfs(mounted.mnt)
    # df: "Used" drops by the removed copy, "Avail" (writable now) stays until a repack
    assert (after.f_bfree - before.f_bfree) * after.f_frsize >= 2 * 2**20
    assert after.f_bavail == before.f_bavail


def du_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-B1", str(path)], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[0])


def make_sparse(path: Path) -> bytes:
    """An 8 MiB file with two data extents and holes around them; returns its content."""
    a, b = os.urandom(64 * 1024), os.urandom(4096)
    with open(path, "wb") as out:
        out.truncate(8 * 2**20)
        out.seek(2**20)
        out.write(a)
        out.seek(6 * 2**20)
        out.write(b)
    content = bytearray(8 * 2**20)
    content[2**20 : 2**20 + len(a)] = a
    content[6 * 2**20 : 6 * 2**20 + len(b)] = b
    return bytes(content)


def test_sparse_file_keeps_its_holes_on_tape_in_the_cache_and_through_recall(
    mounted: Mount, tmp_path: Path
) -> None:
    f = mounted.mnt / "dir" / "sparse"
    f.parent.mkdir()
    content = make_sparse(f)
    assert du_bytes(f) <= 256 * 1024  # two extents, not 8 MiB
    assert f.read_bytes() == content
    mounted.flush(f)
    volume, fileno, _ = tape_locations(mounted, f)[0].split(":")
    used = {v["label"]: v["used"] for v in mounted.json("volumes")}[volume]
    assert used <= 1 * 2**20  # GNU sparse 1.0: the data regions and their map only
    # GNU tar reads the tape file back as the same sparse file
    data = mounted.cli("tape", "read", "--archive", str(mounted.archive), volume, fileno).stdout
    out = tmp_path / "untarred"
    out.mkdir()
    subprocess.run(
        ["tar", "--warning=no-unknown-keyword", "-xf", "-", "-C", str(out)], input=data, check=True
    )
    assert (out / "dir" / "sparse").read_bytes() == content
    mounted.release(f)
    assert mounted.state(f) == "released"
    assert du_bytes(f) <= 256 * 1024  # the allocation recorded at the end of the session
    assert f.read_bytes() == content  # recalled from tape
    assert mounted.state(f) == "archived"
    cached = next(mounted.archive.rglob(mounted.xattr(f, "bfid")))
    assert os.stat(cached).st_blocks * 512 <= 256 * 1024  # the recall restored the holes
    assert du_bytes(f) <= 256 * 1024


def test_truncated_gigabyte_takes_no_space_in_cache_or_on_tape(
    make_archive: Callable[..., Path], tmp_path: Path
) -> None:
    archive = make_archive(drives=1, volumes=2, volume_size="2GiB", cache_size="2GiB")
    m = mount(archive, tmp_path / "mnt")
    try:
        f = m.mnt / "big"
        subprocess.run(["truncate", "-s", "1G", str(f)], check=True)
        assert f.stat().st_size == 2**30
        assert du_bytes(f) == 0
        m.flush(f)
        assert m.state(f) == "archived"
        used = sum(v["used"] for v in m.json("volumes"))
        assert used <= 1 * 2**20  # a few records, not 1 GiB
        assert du_bytes(f) == 0
    finally:
        m.stop()

"""Several tape copies per family: each copy on a volume of its own pool, a file archived
only once every copy is on tape, a bad or unreadable copy skipped for the next, EIO only
when none is left, a bad copy written again from a good one (the data kept in the cache
until then), and every copy readable by GNU tar."""

from __future__ import annotations

import errno
import io
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from drivers.emulated import inject_fault, insert_cartridge
from tests.archive import REPO, Mount, file_of, init_archive, mount, reelfs, tape_locations
from tests.tapes.tapetools import flip_byte
from tests.waiting import wait_for

SMALL = [file_of(5000 + 1000 * i, i) for i in range(5)]  # aggregated in one tape file
LARGE = file_of(1_300_000, 9)  # a tape file of its own
TAR = ["tar", "--warning=no-unknown-keyword"]


def two_copy_family(m: Mount, name: str = "raw") -> Path:
    d = m.mnt / name
    d.mkdir()
    os.setxattr(d, "user.reelfs.file_family", name.encode())
    os.setxattr(d, "user.reelfs.copies", b"2")
    return d


def corrupt(archive: Path, location: str, records_in: int, offset: int) -> None:
    """Flip a byte of the copy at `location` (VOLUME:FILENO:BLOCK), `records_in` records
    past its header, `offset` bytes into that record."""
    volume, _, block = location.split(":")
    flip_byte(archive, volume, int(block) + records_in, offset)


def volumes_of(m: Mount, path: Path) -> list[str]:
    return [loc.split(":")[0] for loc in tape_locations(m, path)]


def copy_rows(archive: Path, path: str) -> list[tuple[int, str, str, str | None]]:
    """(copy, volume, state, error) of every tape copy of the file at archive path `path`."""
    db = sqlite3.connect(f"file:{archive}/catalog.db?mode=ro", uri=True)
    try:
        return db.execute(
            "SELECT c.copy, c.volume, c.state, c.error FROM tape_copies c "
            "JOIN bitfiles b ON b.id = c.bitfile WHERE b.path=? AND b.state != 'deleted' "
            "ORDER BY c.copy",
            (path,),
        ).fetchall()
    finally:
        db.close()


def test_two_copies_of_small_and_large_files_on_volumes_of_two_pools(tmp_path: Path) -> None:
    archive = init_archive(tmp_path / "a", volumes=4, options={"aggregation.threshold": "1MiB"})
    m = mount(archive, tmp_path / "mnt")
    try:
        raw = two_copy_family(m)
        one = m.mnt / "one"  # a family that keeps the default single copy
        one.mkdir()
        os.setxattr(one, "user.reelfs.file_family", b"one")
        files = {raw / f"s{i}": data for i, data in enumerate(SMALL)}
        files[raw / "large"] = LARGE
        for p, data in files.items():
            p.write_bytes(data)
        (one / "single").write_bytes(b"just one copy")
        m.flush()
        pools = {v["label"]: v["family"] for v in m.json("volumes") if v["family"]}
        for p in files:
            assert m.state(p) == "archived"
            first, second = volumes_of(m, p)
            assert first != second
            assert (pools[first], pools[second]) == ("raw", "raw#2")
            info = m.json("info", str(p))
            assert [c["copy"] for c in info["copies"]] == [1, 2]
        assert len(volumes_of(m, one / "single")) == 1
        # the small files went as one tape file per copy, the large one a tape file each
        small_files = {tuple(tape_locations(m, raw / f"s{i}")) for i in range(len(SMALL))}
        assert len({loc.rsplit(":", 1)[0] for locs in small_files for loc in locs}) == 2
        assert sorted(pools.values()) == ["one", "raw", "raw#2"]
        m.release()
        for p, data in files.items():
            assert p.read_bytes() == data
    finally:
        m.stop()


def test_a_file_is_archived_only_once_every_copy_is_on_tape(tmp_path: Path) -> None:
    # one blank volume: whichever copy gets it first, the other waits for a second volume
    archive = init_archive(tmp_path / "a", volumes=1, options={"aggregation.threshold": 0})
    with open(archive / "reelfs.toml", "a") as toml:
        toml.write("\n[families.raw]\ncopies = 2\n")
    m = mount(archive, tmp_path / "mnt")
    try:
        d = m.mnt / "raw"
        d.mkdir()
        os.setxattr(d, "user.reelfs.file_family", b"raw")
        f = d / "f"
        f.write_bytes(b"first version")
        m.cli("flush", str(f))
        wait_for(lambda: len(tape_locations(m, f)) == 1, timeout=60, what="one copy on tape")
        wait_for(lambda: m.events("stalled"), timeout=30, what="the other copy to stall")
        assert m.state(f) == "dirty"  # not evictable: one copy is not what the family keeps
        assert m.json("release", str(f))["done"] == 0
        # a change now makes the copy on tape stale: it stops counting, both are written again
        with open(f, "ab") as fh:
            fh.write(b", and more")
        assert tape_locations(m, f) == []
        m.cli("flush", str(f))
        wait_for(lambda: len(tape_locations(m, f)) == 1, timeout=60, what="the new copy 1")
        assert m.state(f) == "dirty"
        insert_cartridge(archive / "library", "RF0099")
        m.cli("library", "import", "--archive", str(archive))
        m.flush(f)
        assert m.state(f) == "archived"
        assert len(set(volumes_of(m, f))) == 2
        states = sorted(state for _, _, state, _ in copy_rows(archive, "/raw/f"))
        assert states == ["active", "active", "deleted"]  # the stale one is not a copy
        m.release(f)
        assert f.read_bytes() == b"first version, and more"
    finally:
        m.stop()


def _archive_with_two_copies(tmp_path: Path, data: bytes) -> tuple[Path, list[str]]:
    """An unmounted archive holding /raw/f in two copies; their locations, copy 1 first."""
    archive = init_archive(tmp_path / "a", volumes=3)
    m = mount(archive, tmp_path / "mnt")
    try:
        f = two_copy_family(m) / "f"
        f.write_bytes(data)
        m.flush(f)
        locations = tape_locations(m, f)
        m.umount()
    finally:
        m.stop()
    assert len(locations) == 2
    return archive, locations


def test_a_corrupt_first_copy_is_read_from_the_second(tmp_path: Path) -> None:
    data = file_of(600_000, 4)  # three records
    archive, (first, second) = _archive_with_two_copies(tmp_path, data)
    corrupt(archive, first, 1, 1000)  # inside the data: only checksums tell
    m = mount(archive, tmp_path / "mnt")
    try:
        f = m.mnt / "raw" / "f"
        m.release(f)
        assert f.read_bytes() == data
        (bad,) = m.events("copy_bad")
        assert f"copy 1 at {first} is bad" in bad["message"] and "checksums" in bad["message"]
        assert bad["details"]["volume"] == first.split(":")[0]
        rows = copy_rows(archive, "/raw/f")
        assert [(c, state) for c, _, state, _ in rows] == [(1, "bad"), (2, "active")]
        assert "checksums" in (rows[0][3] or "")
        assert tape_locations(m, f) == [second]
        assert m.state(f) == "archived"
    finally:
        m.stop()


def test_an_unreadable_first_copy_is_read_from_the_second(tmp_path: Path) -> None:
    data = file_of(300_000, 5)
    archive, (first, second) = _archive_with_two_copies(tmp_path, data)
    vol, _, block = first.split(":")
    inject_fault(archive / "library", kind="media", volume=vol, block=int(block), op="read")
    m = mount(archive, tmp_path / "mnt")
    try:
        f = m.mnt / "raw" / "f"
        m.release(f)
        assert f.read_bytes() == data
        (bad,) = m.events("copy_bad")
        assert f"copy 1 at {first} unreadable" in bad["message"]
        vols = {v["label"]: v for v in m.json("volumes")}
        assert vols[vol]["state"] == "suspect"
        # the volume is suspect: the next recall reads the other copy straight away
        last = max(e["id"] for e in m.events("mount"))
        m.release(f)
        assert f.read_bytes() == data
        new_mounts = [e for e in m.events("mount") if e["id"] > last]
        assert {e["details"]["volume"] for e in new_mounts} <= {second.split(":")[0]}
        assert len(m.events("copy_bad")) == 1
    finally:
        m.stop()


def test_eio_when_both_copies_are_bad(tmp_path: Path) -> None:
    data = file_of(600_000, 6)
    archive, locations = _archive_with_two_copies(tmp_path, data)
    for loc in locations:
        corrupt(archive, loc, 2, 7)
    m = mount(archive, tmp_path / "mnt")
    try:
        f = m.mnt / "raw" / "f"
        m.release(f)
        with pytest.raises(OSError) as e:
            f.read_bytes()
        assert e.value.errno == errno.EIO
        assert "no good copy left" in m.xattr(f, "error")
        bad = m.events("copy_bad")
        assert sorted(ev["details"]["location"] for ev in bad) == sorted(locations)
        assert [state for _, _, state, _ in copy_rows(archive, "/raw/f")] == ["bad", "bad"]
        with pytest.raises(OSError) as e:
            f.read_bytes()  # and it stays so, without a mount
        assert e.value.errno == errno.EIO
        assert "2 bad" in m.xattr(f, "error")
        # no good copy to re-create the others from: nothing is queued
        assert _pending_writes(archive, "/raw/f") == []
        assert not m.events("recopy_queued")
    finally:
        m.stop()


def test_gnu_tar_reads_the_second_copy(tmp_path: Path) -> None:
    data = file_of(200_000, 7)
    archive = init_archive(tmp_path / "a", volumes=3, extra=["--label-format", "ansi"])
    m = mount(archive, tmp_path / "mnt")
    try:
        f = two_copy_family(m) / "f.dat"
        f.write_bytes(data)
        m.flush(f)
        vol, fileno, _ = tape_locations(m, f)[1].split(":")
        pipe = subprocess.run(
            f"{sys.executable} -m mountfs.cli tape read --archive {archive} {vol} {fileno} "
            f"| {' '.join(TAR)} -tvf -",
            shell=True,
            capture_output=True,
            cwd=REPO,
        )
        assert pipe.returncode == 0, pipe.stderr
        assert "raw/f.dat" in pipe.stdout.decode()
        tape_file = m.cli("tape", "read", "--archive", str(archive), vol, fileno).stdout
        out = tmp_path / "out"
        out.mkdir()
        subprocess.run([*TAR, "-xf", "-", "-C", str(out)], input=tape_file, check=True)
        assert (out / "raw" / "f.dat").read_bytes() == data
        with tarfile.open(fileobj=io.BytesIO(tape_file)) as tar:
            (member,) = tar.getmembers()
        assert member.pax_headers["REELFS.copy"] == "2"  # which copy: for rebuild-catalog
    finally:
        m.stop()


def test_rebuild_catalog_puts_each_copy_back_in_its_pool(tmp_path: Path) -> None:
    data = file_of(100_000, 8)
    archive, locations = _archive_with_two_copies(tmp_path, data)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{archive}/catalog.db{suffix}").unlink(missing_ok=True)
    rep = json.loads(
        reelfs("rebuild-catalog", "--from-tapes", "--archive", str(archive), "--json").stdout
    )
    assert rep["files"] == 1 and rep["copies"] == 2
    rows = copy_rows(archive, "/raw/f")
    assert [(c, v) for c, v, _, _ in rows] == [
        (1, locations[0].split(":")[0]),
        (2, locations[1].split(":")[0]),
    ]
    m = mount(archive, tmp_path / "mnt")
    try:
        pools = {v["label"]: v["family"] for v in m.json("volumes")}
        assert [pools[loc.split(":")[0]] for loc in locations] == ["raw", "raw#2"]
        assert (m.mnt / "raw" / "f").read_bytes() == data
    finally:
        m.stop()


def _pending_writes(archive: Path, path: str) -> list[str]:
    """The pools of the write requests of the file at archive path `path`."""
    db = sqlite3.connect(f"file:{archive}/catalog.db?mode=ro", uri=True)
    try:
        return [
            r[0]
            for r in db.execute(
                "SELECT r.family FROM requests r JOIN bitfiles b ON b.id = r.bitfile "
                "WHERE b.path=? AND b.state != 'deleted' AND r.kind='write' ORDER BY r.family",
                (path,),
            )
        ]
    finally:
        db.close()


def test_a_bad_copy_is_written_again_from_a_good_one(tmp_path: Path) -> None:
    data = file_of(600_000, 3)
    archive, (first, second) = _archive_with_two_copies(tmp_path, data)
    corrupt(archive, first, 1, 1000)
    m = mount(archive, tmp_path / "mnt")
    try:
        f = m.mnt / "raw" / "f"
        m.release(f)
        assert f.read_bytes() == data  # from copy 2; copy 1 is found bad
        # the recall's completion queued copy 1 again, for its own pool
        assert _pending_writes(archive, "/raw/f") == ["raw"]
        (queued,) = m.events("recopy_queued")
        assert queued["details"]["copies"] == [1] and queued["details"]["source"] == second
        assert m.state(f) == "archived"
        m.flush(f)  # makes the re-copy urgent and waits for it (flush_delay is 1h here)
        (made,) = m.events("copy_recreated")
        assert made["details"]["copy"] == 1 and made["details"]["path"] == "/raw/f"
        new_first = made["details"]["location"]
        assert new_first != first and new_first.split(":")[0] == made["details"]["volume"]
        pools = {v["label"]: v["family"] for v in m.json("volumes")}
        assert pools[made["details"]["volume"]] == "raw"
        assert m.state(f) == "archived"  # it never stopped being archived
        assert _pending_writes(archive, "/raw/f") == []
        assert sorted(tape_locations(m, f)) == sorted([new_first, second])
        rows = copy_rows(archive, "/raw/f")
        assert sorted((c, state) for c, _, state, _ in rows) == [
            (1, "active"),
            (1, "bad"),
            (2, "active"),
        ]
        assert f.read_bytes() == data
        m.umount()
    finally:
        m.stop()
    # now copy 2 goes bad too: the file is read from the new copy 1
    corrupt(archive, second, 1, 1000)
    m = mount(archive, tmp_path / "mnt")
    try:
        f = m.mnt / "raw" / "f"
        m.release(f)
        assert m.state(f) == "released"
        last = max(e["id"] for e in m.events())
        assert f.read_bytes() == data
        new = [e for e in m.events() if e["id"] > last]
        mounted = {e["details"]["volume"] for e in new if e["kind"] == "mount"}
        assert mounted == {new_first.split(":")[0]}  # read from the new copy 1 alone
        assert not [e for e in new if e["kind"] in ("copy_bad", "recopy_queued")]
        assert m.state(f) == "archived"
    finally:
        m.stop()


def test_data_waiting_for_a_recopy_stays_in_the_cache(tmp_path: Path) -> None:
    data = file_of(300_000, 2)
    archive, (first, _) = _archive_with_two_copies(tmp_path, data)
    corrupt(archive, first, 1, 100)
    m = mount(archive, tmp_path / "mnt")
    try:
        f = m.mnt / "raw" / "f"
        m.release(f)
        assert f.read_bytes() == data
        # the re-copy is held back by the flush delay (1h in tests)
        assert _pending_writes(archive, "/raw/f") == ["raw"]
        out = " ".join(m.cli("release", str(f)).stdout.decode().split())
        assert "1 skipped: a lost tape copy is being re-created from the cache" in out
        rep = m.json("release", str(f))
        assert rep["done"] == 0 and len(rep["skipped"]) == 1
        assert m.state(f) == "archived"
        assert not m.events("copy_recreated")
        m.flush(f)
        wait_for(lambda: m.events("copy_recreated"), timeout=60, what="the new copy 1")
        m.release(f)
        assert m.state(f) == "released"  # once it is on tape the data may go
        assert f.read_bytes() == data
    finally:
        m.stop()

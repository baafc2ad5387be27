"""Data goes to tape, leaves the cache, and comes back from tape byte-identical."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.archive import Mount, file_of, mount, tape_locations, wait_state
from tests.waiting import wait_for


@pytest.fixture(params=["emulated", "scsi"])
def library_kind(request: pytest.FixtureRequest) -> str:
    """Every test here runs on the emulated library and on the tgt VTL over iSCSI."""
    return request.param


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def make_family(m: Mount, name: str, width: int | None = None) -> Path:
    d = m.mnt / name
    d.mkdir()
    os.setxattr(d, "user.reelfs.file_family", name.encode())
    if width:
        os.setxattr(d, "user.reelfs.width", str(width).encode())
    return d


def test_write_flush_release_recall_two_families_two_drives(
    make_archive: Callable[..., Path], tmp_path: Path
) -> None:
    archive = make_archive(drives=2, volumes=4)
    m = mount(archive, tmp_path / "mnt")
    try:
        raw, sim = make_family(m, "raw"), make_family(m, "sim")
        expect = {}
        for fam, d in (("raw", raw), ("sim", sim)):
            for i in range(3):
                p = d / f"{fam}{i}.dat"
                p.write_bytes(file_of(200_000 * (i + 1), hash(fam) % 1000 + i))
                expect[p] = sha(p)
        assert all(m.state(p) == "dirty" for p in expect)
        m.flush(m.mnt)
        for p in expect:
            assert m.state(p) == "archived"
            (loc,) = tape_locations(m, p)
            vol, fileno, block = loc.split(":")
            assert vol.startswith("RF") and int(fileno) >= 0 and int(block) >= 0
        raw_vols = {tape_locations(m, p)[0].split(":")[0] for p in expect if p.parent == raw}
        sim_vols = {tape_locations(m, p)[0].split(":")[0] for p in expect if p.parent == sim}
        assert len(raw_vols) == 1 and len(sim_vols) == 1 and raw_vols != sim_vols
        vols = {v["label"]: v for v in m.json("volumes")}
        assert vols[raw_vols.pop()]["family"] == "raw"
        m.release(m.mnt)
        assert all(m.state(p) == "released" for p in expect)
        assert m.json("status")["files"]["released"]["files"] == 6
        for p, digest in expect.items():
            assert sha(p) == digest  # open recalls from tape
            assert m.state(p) == "archived"
        mounts = m.events("mount")
        assert {e["subject"] for e in mounts} == {"drive0", "drive1"}
    finally:
        m.stop()


def test_concurrent_opens_share_one_recall(mounted: Mount) -> None:
    f = mounted.mnt / "big.dat"
    data = file_of(3_000_000, 7)
    f.write_bytes(data)
    mounted.flush(f)
    mounted.release(f)
    results: list[bytes] = []

    def reader() -> None:
        results.append(f.read_bytes())

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [data] * 4
    recalls = [e for e in mounted.events("mount")]
    assert len(mounted.events("copy_bad")) == 0
    assert len(recalls) >= 1


def test_nonblocking_open_of_released_file_says_eagain(mounted: Mount) -> None:
    f = mounted.mnt / "nb.dat"
    f.write_bytes(b"x" * 10000)
    mounted.flush(f)
    mounted.release(f)
    with pytest.raises(OSError) as e:
        os.open(f, os.O_RDONLY | os.O_NONBLOCK)
    assert e.value.errno == errno.EAGAIN
    wait_state(mounted, f, "archived")  # the recall it queued completes
    assert f.read_bytes() == b"x" * 10000


def test_recall_refused_on_open_when_configured(archive: Path, tmp_path: Path) -> None:
    m = mount(archive, tmp_path / "mnt", 'recall.on_open="refuse"')
    try:
        f = m.mnt / "r.dat"
        f.write_bytes(b"y" * 5000)
        m.flush(f)
        m.release(f)
        with pytest.raises(OSError) as e:
            f.read_bytes()
        assert e.value.errno == errno.EAGAIN
        m.cli("recall", "--wait", str(f))
        assert m.state(f) == "archived"
        assert f.read_bytes() == b"y" * 5000
    finally:
        m.stop()


def test_recall_of_a_set_is_ordered_by_tape_position(mounted: Mount) -> None:
    d = mounted.mnt / "set"
    d.mkdir()
    files = [d / f"f{i:02d}" for i in range(12)]
    for i, p in enumerate(files):
        p.write_bytes(file_of(20_000, i))
    mounted.flush(d)
    mounted.release(d)
    out = mounted.cli("recall", "--wait", str(d)).stdout.decode()
    assert "12 of 12" in out
    assert all(mounted.state(p) == "archived" for p in files)
    assert [p.read_bytes() for p in files] == [file_of(20_000, i) for i in range(12)]


def test_rewriting_an_archived_file_makes_a_new_version(mounted: Mount) -> None:
    f = mounted.mnt / "v.dat"
    f.write_bytes(b"version one")
    mounted.flush(f)
    bfid1 = mounted.xattr(f, "bfid")
    loc1 = tape_locations(mounted, f)
    with open(f, "r+b") as fh:
        fh.write(b"VERSION")
    assert mounted.state(f) == "dirty"
    bfid2 = mounted.xattr(f, "bfid")
    assert bfid2 != bfid1
    assert tape_locations(mounted, f) == []
    assert f.read_bytes() == b"VERSION one"
    mounted.flush(f)
    loc2 = tape_locations(mounted, f)
    assert loc2 and loc2 != loc1
    info = mounted.json("info", str(f))
    assert info["version"] == 2
    mounted.release(f)
    assert f.read_bytes() == b"VERSION one"


def test_truncating_a_released_file_needs_no_recall(mounted: Mount) -> None:
    f = mounted.mnt / "t.dat"
    f.write_bytes(b"z" * 50000)
    mounted.flush(f)
    mounted.release(f)
    mounts_before = len(mounted.events("mount"))
    with open(f, "wb") as fh:
        fh.write(b"new")
    assert f.read_bytes() == b"new"
    assert len(mounted.events("mount")) == mounts_before


def test_appending_keeps_streaming_checksums(mounted: Mount) -> None:
    import zlib

    import crc32c

    f = mounted.mnt / "app.log"
    with open(f, "ab") as fh:
        fh.write(b"first line\n")
    with open(f, "ab") as fh:
        fh.write(b"second line\n")
    data = f.read_bytes()
    assert mounted.xattr(f, "checksum.adler32") == f"{zlib.adler32(data):08x}"
    assert mounted.xattr(f, "checksum.crc32c") == f"{crc32c.crc32c(data):08x}"
    with open(f, "r+b") as fh:  # a random write: the checksums are recomputed at close
        fh.seek(3)
        fh.write(b"XX")
    data = f.read_bytes()
    assert mounted.xattr(f, "checksum.adler32") == f"{zlib.adler32(data):08x}"


def test_width_bounds_volumes_written_at_once(
    make_archive: Callable[..., Path], tmp_path: Path
) -> None:
    # batches of at most 4 files of 1.5 MB: several per family, each long enough that
    # the second drive joins in while the first is still writing
    archive = make_archive(drives=2, volumes=6, options={"mover.batch_bytes": "6MB"})
    m = mount(archive, tmp_path / "mnt")
    try:
        one = make_family(m, "one", width=1)
        two = make_family(m, "two", width=2)
        for d in (one, two):
            for i in range(16):
                (d / f"f{i}").write_bytes(file_of(1_500_000, i))
        m.flush(two)
        m.flush(one)
        vols_one = {tape_locations(m, p)[0].split(":")[0] for p in one.iterdir()}
        vols_two = {tape_locations(m, p)[0].split(":")[0] for p in two.iterdir()}
        assert len(vols_one) == 1
        assert len(vols_two) == 2
        assert not vols_one & vols_two
        # never more volumes of a family mounted at once than its width
        family = {v["label"]: v["family"] for v in m.json("volumes")}
        mounted: dict[str, str] = {}
        for e in m.events():
            if e["kind"] == "mount":
                mounted[e["subject"]] = e["details"]["volume"]
            elif e["kind"] == "dismount":
                mounted.pop(e["subject"], None)
            per_family = [family.get(v) for v in mounted.values()]
            assert per_family.count("one") <= 1 and per_family.count("two") <= 2
    finally:
        m.stop()


def test_full_volume_moves_on_to_the_next(
    make_archive: Callable[..., Path], tmp_path: Path
) -> None:
    archive = make_archive(drives=1, volumes=3, volume_size="3MiB")
    m = mount(archive, tmp_path / "mnt")
    try:
        files = [m.mnt / f"f{i}" for i in range(8)]
        for i, p in enumerate(files):
            p.write_bytes(file_of(700_000, i))
        m.flush(m.mnt)
        used = {}
        for p in files:
            (loc,) = tape_locations(m, p)
            used.setdefault(loc.split(":")[0], []).append(p)
        assert len(used) >= 2
        vols = {v["label"]: v for v in m.json("volumes")}
        assert any(vols[v]["state"] == "full" for v in used)
        m.release(m.mnt)
        for i, p in enumerate(files):
            assert p.read_bytes() == file_of(700_000, i)
    finally:
        m.stop()


def test_umount_waits_for_pending_writes(make_archive: Callable[..., Path], tmp_path: Path) -> None:
    archive = make_archive()
    m = mount(archive, tmp_path / "mnt")
    try:
        (m.mnt / "p.dat").write_bytes(b"pending" * 1000)
        out = m.umount().stderr.decode()
        assert "not on tape yet" in out
    finally:
        m.stop()
    m2 = mount(archive, tmp_path / "mnt")
    try:
        assert m2.state(m2.mnt / "p.dat") == "archived"
        assert not [d for d in m2.json("drives") if d["volume"]]
    finally:
        m2.stop()


def test_umount_no_wait_keeps_files_queued_for_the_next_mount(
    make_archive: Callable[..., Path], tmp_path: Path
) -> None:
    archive = make_archive()
    m = mount(archive, tmp_path / "mnt")
    try:
        (m.mnt / "q.dat").write_bytes(b"queued")
        err = m.umount("--no-wait").stderr.decode()
        assert "stay queued" in err
    finally:
        m.stop()
    m2 = mount(archive, tmp_path / "mnt")
    try:
        f = m2.mnt / "q.dat"
        assert m2.state(f) == "dirty"
        assert m2.events("recovery") == []  # a clean stop needs no recovery
        assert any(r["kind"] == "write" for r in m2.json("queue"))
        m2.flush(f)
        assert m2.state(f) == "archived" and f.read_bytes() == b"queued"
    finally:
        m2.stop()


def test_idle_volume_is_dismounted_and_put_home(mounted: Mount) -> None:
    (mounted.mnt / "x").write_bytes(b"x")
    mounted.flush(mounted.mnt)
    wait_for(
        lambda: all(d["volume"] is None and d["session"] == "idle" for d in mounted.json("drives")),
        timeout=30,
        what="drives idle and empty",
    )
    assert mounted.events("dismount")


def test_empty_files_go_to_tape_and_back(mounted: Mount) -> None:
    d = mounted.mnt / "empties"
    d.mkdir()
    for i in range(3):
        (d / f"e{i}").touch()
    assert mounted.xattr(d / "e0", "checksum.adler32") == "00000001"
    mounted.flush(d)
    mounted.release(d)
    assert [mounted.state(d / f"e{i}") for i in range(3)] == ["released"] * 3
    assert [(d / f"e{i}").read_bytes() for i in range(3)] == [b""] * 3
    with open(d / "e1", "ab") as f:  # an empty file's first byte makes its cache file
        f.write(b"now one byte")
    assert (d / "e1").read_bytes() == b"now one byte"

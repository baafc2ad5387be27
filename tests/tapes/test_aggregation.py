"""Small files share tape files; one of them is recalled by locating straight to it; large
files go where they fit, or are refused when they fit nowhere."""

from __future__ import annotations

import errno
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from backend import config as cfgmod
from backend.catalog import open_catalog
from backend.catalog.db import Catalog
from backend.catalog.files import FileClerk
from backend.catalog.namespace import Namespace
from backend.catalog.queue import RequestQueue
from backend.catalog.schema import ROOT_INODE
from backend.catalog.volumes import VolumeClerk
from backend.library.aggregation import plan
from backend.library.manager import LibraryManager
from tests.archive import file_of, init_archive, mount, reelfs, tape_locations
from tests.waiting import wait_for

BLOCK = 256 * 1024


def test_small_files_share_a_tape_file_and_a_recall_reads_only_its_member(
    tmp_path: Path,
) -> None:
    archive = init_archive(tmp_path / "a", drives=1)
    m = mount(archive, tmp_path / "mnt")
    try:
        d = m.mnt / "many"
        d.mkdir()
        sizes = [3000 + (i * 997) % 17000 for i in range(300)]
        files = [d / f"f{i:03d}" for i in range(300)]
        for i, p in enumerate(files):
            p.write_bytes(file_of(sizes[i], i))
        m.flush(d)
        locs = [tape_locations(m, p)[0].split(":") for p in files]
        assert {(v, f) for v, f, _ in locs} == {("RF0001", "0")}  # one tape file for all
        blocks = [int(b) for _, _, b in locs]
        assert blocks == sorted(blocks) and len(set(blocks)) > 10
        vol = {v["label"]: v for v in m.json("volumes")}["RF0001"]
        assert vol["next_fileno"] == 1 and vol["files"] == 300
        total = sum(sizes)
        # the records of one pax archive (headers of 1.5 to 4 KiB a member) and a filemark
        assert total // BLOCK + 2 <= vol["eod_block"] <= (total + 300 * 4096) // BLOCK + 2
        # recall one member from the middle: the drive reads the records holding it only
        target = files[150]
        m.release(target)
        wait_for(lambda: not [x for x in m.json("drives") if x["volume"]], timeout=30)
        before = len(m.events("dismount"))
        assert target.read_bytes() == file_of(sizes[150], 150)
        wait_for(lambda: len(m.events("dismount")) > before, timeout=30, what="dismount")
        stats = m.events("dismount")[-1]["details"]
        assert stats["records_read"] <= 2 and stats["bytes_read"] <= 2 * BLOCK
    finally:
        m.stop()


def test_aggregates_are_capped_and_large_files_get_a_tape_file_each(tmp_path: Path) -> None:
    archive = init_archive(
        tmp_path / "a",
        options={"aggregation.threshold": "512KiB", "aggregation.size": "1MiB"},
    )
    m = mount(archive, tmp_path / "mnt")
    try:
        small = [m.mnt / f"s{i:02d}" for i in range(30)]
        for i, p in enumerate(small):
            p.write_bytes(file_of(100_000, i))
        large = m.mnt / "large"
        large.write_bytes(file_of(800_000, 77))
        m.flush()
        filenos = [int(tape_locations(m, p)[0].split(":")[1]) for p in small]
        # at most ten 100 kB files in 1 MiB; request order kept
        assert filenos == sorted(filenos)
        assert all(filenos.count(n) <= 10 for n in set(filenos)) and len(set(filenos)) >= 3
        big = int(tape_locations(m, large)[0].split(":")[1])
        assert big not in filenos
        m.release()
        assert all(p.read_bytes() == file_of(100_000, i) for i, p in enumerate(small))
        assert large.read_bytes() == file_of(800_000, 77)
    finally:
        m.stop()


def test_a_file_larger_than_the_space_left_goes_to_a_volume_with_room(tmp_path: Path) -> None:
    archive = init_archive(
        tmp_path / "a", drives=1, volume_size="6MiB", options={"aggregation.threshold": "1MiB"}
    )
    m = mount(archive, tmp_path / "mnt")
    try:
        a, b = m.mnt / "a", m.mnt / "b"
        a.write_bytes(file_of(3_500_000, 1))
        m.flush(a)
        assert tape_locations(m, a)[0].startswith("RF0001:")
        b.write_bytes(file_of(3_000_000, 2))  # fits on no volume but a blank one
        m.flush(b)
        assert tape_locations(m, b)[0].startswith("RF0002:")
        vols = {v["label"]: v for v in m.json("volumes")}
        assert vols["RF0001"]["state"] == "writable"  # not tried, so not found full
        assert not m.events("volume_full") and not m.events("volume_suspect")
        m.release()
        assert b.read_bytes() == file_of(3_000_000, 2)
    finally:
        m.stop()


def test_a_file_larger_than_any_volume_is_refused_at_write(tmp_path: Path) -> None:
    archive = init_archive(tmp_path / "a", volume_size="4MiB")
    # a limit above what a volume holds is refused (backend.tape.limits), so the file
    # can never be written in the first place: EFBIG at write, not a refusal at flush
    (tmp_path / "mnt").mkdir()
    p = reelfs("mount", str(archive), str(tmp_path / "mnt"), "-o", "mount.max_file_size=64MiB",
               check=False)  # fmt: skip
    assert p.returncode == 2 and b"max_file_size" in p.stderr
    m = mount(archive, tmp_path / "mnt")
    try:
        f = m.mnt / "huge"
        with pytest.raises(OSError) as e:
            f.write_bytes(file_of(5_000_000, 3))
        assert e.value.errno == errno.EFBIG
        assert not m.events("write_refused") and not tape_locations(m, f)
    finally:
        m.stop()


# -- the policy, on a catalog without drives ----------------------------------------------


@dataclass
class R:
    id: int
    size: int


def test_plan_packs_small_files_in_order_and_gives_large_ones_a_tape_file() -> None:
    reqs = [R(1, 300), R(2, 300), R(3, 5000), R(4, 300), R(5, 600), R(6, 100)]
    groups = plan(reqs, threshold=1000, max_bytes=700)
    assert [[r.id for r in g] for g in groups] == [[1, 2], [4], [5, 6], [3]]
    assert [[r.id for r in g] for g in plan(reqs, threshold=0, max_bytes=700)] == [
        [1],
        [2],
        [3],
        [4],
        [5],
        [6],
    ]


@pytest.fixture
def cat(tmp_path: Path) -> Iterator[Catalog]:
    c = open_catalog(tmp_path / "catalog.db", create=True)
    VolumeClerk(c).add("V1", capacity=100_000_000, home=1000)
    yield c
    c.close()


def _lm(tmp_path: Path) -> LibraryManager:
    raw = cfgmod.apply_overrides(
        {"archive": {"id": "0123ABCD"}},
        [
            'mover.flush_delay="1h"',
            'aggregation.threshold="100kB"',
            'aggregation.size="1MB"',
            'aggregation.age="2h"',
        ],
    )
    lm = LibraryManager(cfgmod.build(tmp_path, raw))
    lm.register("d0")
    return lm


def _queued(cat: Catalog, size: int, n: int = 1) -> list[int]:
    out = []
    ns, files = Namespace(cat), FileClerk(cat, "0123ABCD")
    for _ in range(n):
        name = f"f{cat.value('SELECT COUNT(*) FROM inodes')}".encode()
        node = ns.create(ROOT_INODE, name, stat.S_IFREG | 0o644, 0, 0)
        bf = files.create(node.id, family="default", size=size)
        RequestQueue(cat).enqueue_write(bf.id, "default")
        out.append(bf.id)
    return out


def test_small_files_wait_for_a_full_aggregate_or_its_age(cat: Catalog, tmp_path: Path) -> None:
    lm = _lm(tmp_path)
    small = _queued(cat, 90_000, 10)  # 900 kB: below the aggregate size
    large = _queued(cat, 5_000_000)
    assert lm.next_work("d0", cat) is None
    more = _queued(cat, 90_000, 2)  # now 1.08 MB of small files
    lm.wake()  # whoever queues work wakes the library manager
    w = lm.next_work("d0", cat)
    # one aggregate of at most 1 MB: eleven files, and not the large one
    assert w is not None and [r.bitfile for r in w.requests] == small + more[:1]
    lm.finished("d0")
    cat.execute("DELETE FROM requests WHERE bitfile != ?", (large[0],))
    assert lm.next_work("d0", cat) is None  # the large file waits for flush_delay
    cat.execute("UPDATE requests SET created_ns = created_ns - ?", (int(3700e9),))
    # a request ages from the later of its queueing and its file's last change
    cat.execute("UPDATE bitfiles SET modified_ns = modified_ns - ?", (int(3700e9),))
    lm.wake()  # time passing, as the library manager's periodic look would see it
    w = lm.next_work("d0", cat)  # flush_delay passed for the large file
    assert w is not None and [r.bitfile for r in w.requests] == large
    lm.finished("d0")
    cat.execute("DELETE FROM requests")
    old = _queued(cat, 1000)
    assert lm.next_work("d0", cat) is None
    cat.execute("UPDATE requests SET created_ns = created_ns - ?", (int(7300e9),))
    # a request ages from the later of its queueing and its file's last change
    cat.execute("UPDATE bitfiles SET modified_ns = modified_ns - ?", (int(7300e9),))
    lm.wake()
    w = lm.next_work("d0", cat)  # the aggregation age passed
    assert w is not None and [r.bitfile for r in w.requests] == old

"""The library manager's policy, on a real catalog, without drives."""

from __future__ import annotations

import stat
from collections.abc import Iterator
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
from backend.library.manager import LibraryManager

ARCHIVE_ID = "0123ABCD"


@pytest.fixture
def cat(tmp_path: Path) -> Iterator[Catalog]:
    c = open_catalog(tmp_path / "catalog.db", create=True)
    vc = VolumeClerk(c)
    # inserted in an order different from their labels: the pool is drawn by insertion time
    for i, label in enumerate(["V3", "V1", "V2", "V4"]):
        vc.add(label, capacity=10_000_000, home=1000 + i, inserted_ns=1_000 + i)
    yield c
    c.close()


def lm_for(tmp_path: Path, **mover: object) -> LibraryManager:
    raw = cfgmod.apply_overrides(
        {"archive": {"id": ARCHIVE_ID}},
        [f"mover.{k}={v!r}".replace("'", '"') for k, v in mover.items()],
    )
    lm = LibraryManager(cfgmod.build(tmp_path, raw))
    lm.register("d0")
    lm.register("d1")
    return lm


_n = 0


def new_file(cat: Catalog, family: str = "default", size: int = 1000) -> int:
    global _n
    _n += 1
    ns = Namespace(cat)
    node = ns.create(ROOT_INODE, f"f{_n}".encode(), stat.S_IFREG | 0o644, 0, 0)
    bf = FileClerk(cat, ARCHIVE_ID).create(node.id, family=family, size=size)
    return bf.id


def archived_on(cat: Catalog, volume: str, fileno: int, block: int) -> int:
    bid = new_file(cat)
    with cat.tx():
        cat.execute("UPDATE bitfiles SET state='released' WHERE id=?", (bid,))
        cat.execute("UPDATE volumes SET state='full', family='default' WHERE label=?", (volume,))
        cat.execute(
            "INSERT INTO tape_copies(bitfile, volume, fileno, block, length, state) "
            "VALUES (?,?,?,?,?, 'active')",
            (bid, volume, fileno, block, 1000),
        )
    RequestQueue(cat).enqueue_recall(bid, volume, fileno, block)
    return bid


def test_recalls_are_ordered_by_tape_position(cat: Catalog, tmp_path: Path) -> None:
    lm = lm_for(tmp_path)
    ids = {}
    for fileno, block in [(7, 70), (2, 20), (5, 50), (1, 10), (9, 90)]:
        ids[fileno] = archived_on(cat, "V1", fileno, block)
    w = lm.next_work("d0", cat)
    assert w is not None and w.kind == "recall" and w.volume == "V1"
    assert [r.fileno for r in w.requests] == [1, 2, 5, 7, 9]
    assert {r["state"] for r in map(dict, cat.all("SELECT state FROM requests"))} == {"running"}


def test_the_mounted_volume_is_preferred_and_held_volumes_are_left_alone(
    cat: Catalog, tmp_path: Path
) -> None:
    lm = lm_for(tmp_path)
    archived_on(cat, "V1", 0, 0)
    archived_on(cat, "V2", 0, 0)
    cat.execute("UPDATE requests SET created_ns = created_ns - 1000000000 WHERE volume='V1'")
    lm.set_volume("d1", "V2")
    w = lm.next_work("d1", cat)
    assert w is not None and w.volume == "V2"  # mounted beats older
    lm.finished("d1")
    lm.set_volume("d1", "V1")  # d1 now holds V1: d0 must not take V1's recalls
    assert lm.next_work("d0", cat) is None
    w = lm.next_work("d1", cat)
    assert w is not None and w.volume == "V1"


def test_recalls_come_before_writes(cat: Catalog, tmp_path: Path) -> None:
    lm = lm_for(tmp_path)
    b = new_file(cat)
    RequestQueue(cat).enqueue_write(b, "default", urgent=True)
    archived_on(cat, "V2", 3, 30)
    w = lm.next_work("d0", cat)
    assert w is not None and w.kind == "recall"
    w = lm.next_work("d1", cat)
    assert w is not None and w.kind == "write"


def test_writes_wait_for_flush_delay_unless_urgent_or_a_full_batch(
    cat: Catalog, tmp_path: Path
) -> None:
    lm = lm_for(tmp_path, flush_delay="1h", batch_files=3)
    q = RequestQueue(cat)
    b1, b2 = new_file(cat), new_file(cat)
    q.enqueue_write(b1, "default")
    q.enqueue_write(b2, "default")
    assert lm.next_work("d0", cat) is None  # too young, too few
    b3 = new_file(cat)
    q.enqueue_write(b3, "default")
    lm.wake()  # whoever queues work wakes the library manager
    w = lm.next_work("d0", cat)
    assert w is not None and [r.bitfile for r in w.requests] == [b1, b2, b3]
    lm.finished("d0")
    b4 = new_file(cat, family="other")
    q.enqueue_write(b4, "other")
    assert lm.next_work("d1", cat) is None
    q.make_urgent([b4])
    lm.wake()
    w = lm.next_work("d1", cat)
    assert w is not None and w.family == "other"


def test_the_due_list_is_reused_until_something_changes(cat: Catalog, tmp_path: Path) -> None:
    lm = lm_for(tmp_path)
    assert lm.next_work("d0", cat) is None
    RequestQueue(cat).enqueue_write(new_file(cat), "default", urgent=True)
    assert lm.next_work("d0", cat) is None  # nobody said anything changed
    lm.wake()
    assert lm.next_work("d0", cat) is not None


def test_open_files_are_not_written(cat: Catalog, tmp_path: Path) -> None:
    lm = lm_for(tmp_path)
    b = new_file(cat)
    RequestQueue(cat).enqueue_write(b, "default", urgent=True)
    cat.execute("UPDATE bitfiles SET writers=1 WHERE id=?", (b,))
    assert lm.next_work("d0", cat) is None
    cat.execute("UPDATE bitfiles SET writers=0 WHERE id=?", (b,))
    lm.wake()
    assert lm.next_work("d0", cat) is not None


def test_blank_volumes_are_drawn_in_insertion_order(cat: Catalog, tmp_path: Path) -> None:
    lm = lm_for(tmp_path)
    q = RequestQueue(cat)
    for fam in ("a", "b"):
        q.enqueue_write(new_file(cat, fam), fam, urgent=True)
    w0 = lm.next_work("d0", cat)
    w1 = lm.next_work("d1", cat)
    assert (w0.volume, w1.volume) == ("V3", "V1")  # type: ignore[union-attr]
    vols = {v.label: v for v in VolumeClerk(cat).all()}
    assert vols["V3"].family == "a" and vols["V1"].family == "b"
    assert vols["V3"].state == "writable"


def test_width_limits_concurrent_volumes(cat: Catalog, tmp_path: Path) -> None:
    lm = lm_for(tmp_path, batch_bytes=1500)
    q = RequestQueue(cat)
    for _ in range(4):
        q.enqueue_write(new_file(cat, "w1"), "w1", urgent=True)
    w = lm.next_work("d0", cat)
    assert w is not None and len(w.requests) == 1  # batch_bytes keeps batches small
    assert lm.next_work("d1", cat) is None  # width 1: the family is being written
    cat.execute("INSERT INTO families(name, width) VALUES ('w1', 2)")
    w2 = lm.next_work("d1", cat)
    assert w2 is not None and w2.volume != w.volume


def test_recalls_for_a_missing_volume_are_bounced(cat: Catalog, tmp_path: Path) -> None:
    lm = lm_for(tmp_path)
    failed: list[tuple[list[int], str]] = []
    lm.on_recall_failed = lambda b, why: failed.append((b, why))  # type: ignore[method-assign]
    bid = archived_on(cat, "V4", 0, 0)
    VolumeClerk(cat).set_state("V4", "missing", "missing; was full")
    assert lm.next_work("d0", cat) is None
    assert failed and failed[0][0] == [bid] and "V4 is missing" in failed[0][1]
    err = cat.value("SELECT error FROM bitfiles WHERE id=?", (bid,))
    assert "recall failed" in err
    assert cat.value("SELECT count(*) FROM requests") == 0


def test_files_larger_than_any_volume_are_refused(cat: Catalog, tmp_path: Path) -> None:
    lm = lm_for(tmp_path)
    b = new_file(cat, size=50_000_000)
    RequestQueue(cat).enqueue_write(b, "default", urgent=True)
    assert lm.next_work("d0", cat) is None
    assert "larger than any volume" in cat.value("SELECT error FROM bitfiles WHERE id=?", (b,))
    assert cat.value("SELECT count(*) FROM events WHERE kind='write_refused'") == 1


def test_each_copy_is_queued_for_a_pool_of_its_own(cat: Catalog, tmp_path: Path) -> None:
    lm = lm_for(tmp_path)
    q = RequestQueue(cat)
    cat.execute("INSERT INTO families(name, copies) VALUES ('raw', 2)")
    b = new_file(cat, "raw")
    q.enqueue_write(b, "raw", urgent=True)
    q.enqueue_write(b, "raw", urgent=True)  # the end of another session: nothing doubled
    pools = sorted(r[0] for r in cat.all("SELECT family FROM requests WHERE bitfile=?", (b,)))
    assert pools == ["raw", "raw#2"]
    w0, w1 = lm.next_work("d0", cat), lm.next_work("d1", cat)
    assert w0 is not None and w1 is not None
    assert {w0.family, w1.family} == {"raw", "raw#2"}  # both copies written at once
    assert w0.volume != w1.volume
    vols = {v.label: v.family for v in VolumeClerk(cat).all()}
    assert vols[w0.volume] == w0.family and vols[w1.volume] == w1.family
    assert q.make_urgent([b]) == 1  # counts files, not requests


def test_a_copy_already_on_tape_is_not_queued_again(cat: Catalog, tmp_path: Path) -> None:
    q = RequestQueue(cat)
    cat.execute("INSERT INTO families(name, copies) VALUES ('raw', 3)")
    b = new_file(cat, "raw")
    cat.execute(
        "INSERT INTO tape_copies(bitfile, volume, copy, fileno, block, length, state) "
        "VALUES (?, 'V1', 2, 0, 0, 1000, 'active')",
        (b,),
    )
    q.enqueue_write(b, "raw")
    pools = sorted(r[0] for r in cat.all("SELECT family FROM requests WHERE bitfile=?", (b,)))
    assert pools == ["raw", "raw#3"]
    # the family keeps one copy now: queued requests for the others go
    cat.execute("UPDATE families SET copies=1 WHERE name='raw'")
    q.enqueue_write(b, "raw")
    assert [r[0] for r in cat.all("SELECT family FROM requests WHERE bitfile=?", (b,))] == ["raw"]


def test_pool_names_cannot_clash_with_families() -> None:
    from backend.catalog.families import pool_name, split_pool
    from backend.config import FAMILY_RE

    assert pool_name("raw", 1) == "raw" and pool_name("raw", 2) == "raw#2"
    assert split_pool("raw#2") == ("raw", 2) and split_pool("raw.copy2") == ("raw.copy2", 1)
    assert not FAMILY_RE.fullmatch(pool_name("raw", 2))

"""Re-creating lost tape copies, at the catalog level: which copies an archived file gets
queued again, and that its cached data stays until they are written."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from backend.admin import files as admin
from backend.cache.eviction import evict, release_bitfile
from backend.cache.store import Cache
from backend.catalog import open_catalog
from backend.catalog.db import Catalog
from backend.catalog.files import FileClerk
from backend.catalog.namespace import Namespace
from backend.catalog.queue import RequestQueue
from backend.catalog.schema import ROOT_INODE
from backend.catalog.volumes import VolumeClerk

ARCHIVE_ID = "0123ABCD"


@dataclass
class CatalogOnly:
    """The part of backend.admin.context.AdminContext that file commands use."""

    cat: Catalog
    cache: Cache
    online: bool = True
    woken: bool = False

    def wake(self) -> None:
        self.woken = True


@pytest.fixture
def cat(tmp_path: Path) -> Iterator[Catalog]:
    c = open_catalog(tmp_path / "catalog.db", create=True)
    vc = VolumeClerk(c)
    for i, label in enumerate(["V1", "V2", "V3"]):
        vc.add(label, capacity=10_000_000, home=1000 + i, inserted_ns=1_000 + i)
    with c.tx():
        c.execute("INSERT INTO families(name, copies) VALUES ('raw', 3)")
    yield c
    c.close()


def archived_file(cat: Catalog, copies: dict[int, str]) -> tuple[int, int]:
    """An archived file of family raw with tape copies {copy number: state}: (bitfile, inode)."""
    ns = Namespace(cat)
    node = ns.create(ROOT_INODE, f"f{len(copies)}{sorted(copies.items())}".encode(),
                     stat.S_IFREG | 0o644, 0, 0)  # fmt: skip
    bf = FileClerk(cat, ARCHIVE_ID).create(node.id, family="raw", size=1000)
    with cat.tx():
        cat.execute("UPDATE bitfiles SET state='archived' WHERE id=?", (bf.id,))
        for copy, state in copies.items():
            cat.execute(
                "INSERT INTO tape_copies(bitfile, volume, copy, fileno, block, length, state) "
                "VALUES (?,?,?,0,1,1000,?)",
                (bf.id, f"V{copy}", copy, state),
            )
    return bf.id, node.id


def pools(cat: Catalog, bitfile: int) -> list[str]:
    return [r[0] for r in cat.all("SELECT family FROM requests WHERE bitfile=?", (bitfile,))]


def test_missing_copies_are_queued_once_for_their_pools(cat: Catalog) -> None:
    bid, _ = archived_file(cat, {1: "bad", 2: "active"})
    q = RequestQueue(cat)
    assert q.enqueue_recopies(bid, "raw") == [1, 3]  # bad copy 1, copy 3 never made
    assert sorted(pools(cat, bid)) == ["raw", "raw#3"]
    assert q.enqueue_recopies(bid, "raw") == []  # idempotent
    assert len(pools(cat, bid)) == 2


def test_nothing_is_queued_without_a_good_copy_or_when_enough_are_good(cat: Catalog) -> None:
    q = RequestQueue(cat)
    bid, _ = archived_file(cat, {1: "bad", 2: "bad"})
    assert q.enqueue_recopies(bid, "raw") == []
    bid2, _ = archived_file(cat, {1: "active", 2: "active", 3: "active"})
    assert q.enqueue_recopies(bid2, "raw") == []
    assert pools(cat, bid) == pools(cat, bid2) == []


def test_a_file_waiting_for_a_recopy_is_neither_evicted_nor_released(
    cat: Catalog, tmp_path: Path
) -> None:
    cache = Cache(tmp_path / "cache", limit=1 << 20, high=0.9, low=0.5)
    bid, ino = archived_file(cat, {1: "bad", 2: "active"})
    bfid = FileClerk(cat, ARCHIVE_ID).get(bid).bfid  # type: ignore[union-attr]
    cache.path(bfid).parent.mkdir(parents=True, exist_ok=True)
    cache.path(bfid).write_bytes(b"x" * 1000)
    RequestQueue(cat).enqueue_recopies(bid, "raw")
    assert evict(cat, cache, 1 << 20) == 0
    assert release_bitfile(cat, cache, bid) == 0
    ctx = CatalogOnly(cat, cache)
    s = admin.release(ctx, [ino])  # type: ignore[arg-type]
    assert s["done"] == 0
    assert s["skipped"] == {"a lost tape copy is being re-created from the cache": 1}
    state = cat.value("SELECT state FROM bitfiles WHERE id=?", (bid,))
    assert state == "archived" and cache.path(bfid).exists()
    # flush makes the re-copy due now
    assert admin.flush(ctx, [ino])["done"] == 1  # type: ignore[arg-type]
    assert ctx.woken
    assert cat.value("SELECT urgent FROM requests WHERE bitfile=?", (bid,)) == 1
    cat.execute("DELETE FROM requests WHERE bitfile=?", (bid,))  # the copy landed
    assert admin.release(ctx, [ino])["done"] == 1  # type: ignore[arg-type]

"""Start-up recovery (backend.daemon.recovery) on a real catalog and cache directory, each
thing a crash can leave behind set up by hand, as the crash would have left it."""

from __future__ import annotations

import os
import stat
import zlib
from collections.abc import Iterator
from pathlib import Path

import crc32c
import pytest

from backend.cache.store import Cache
from backend.catalog import events, open_catalog
from backend.catalog.db import Catalog
from backend.catalog.files import FileClerk
from backend.catalog.integrity import integrity_check
from backend.catalog.namespace import Namespace
from backend.catalog.queue import RequestQueue
from backend.catalog.schema import ROOT_INODE
from backend.catalog.volumes import VolumeClerk
from backend.daemon.recovery import recover

ARCHIVE_ID = "0123ABCD"
FILE = stat.S_IFREG | 0o644


@pytest.fixture
def cat(tmp_path: Path) -> Iterator[Catalog]:
    c = open_catalog(tmp_path / "catalog.db", create=True)
    VolumeClerk(c).add("V1", capacity=10_000_000, home=1000)
    yield c
    c.close()


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    return Cache(tmp_path / "cache", limit=1 << 30, high=0.9, low=0.5)


def new_file(cat: Catalog, name: str, *, size: int = 0, family: str = "default") -> tuple[int, int]:
    node = Namespace(cat).create(ROOT_INODE, name.encode(), FILE, 0, 0)
    bf = FileClerk(cat, ARCHIVE_ID).create(node.id, family=family, size=size)
    return bf.id, node.id


def bfid_of(cat: Catalog, bid: int) -> str:
    bf = FileClerk(cat).get(bid)
    assert bf is not None
    return bf.bfid


def put(cache: Cache, bfid: str, data: bytes) -> None:
    os.close(cache.create(bfid))
    cache.path(bfid).write_bytes(data)


def row(cat: Catalog, sql: str, *args: object) -> tuple:
    r = cat.one(sql, args)
    assert r is not None
    return tuple(r)


def test_a_session_cut_short_keeps_what_reached_the_cache(cat: Catalog, cache: Cache) -> None:
    bid, ino = new_file(cat, "growing")
    with cat.tx():
        cat.execute("UPDATE bitfiles SET writers=1, adler32=NULL, crc32c=NULL WHERE id=?", (bid,))
    data = b"reached the cache before the crash"
    put(cache, bfid_of(cat, bid), data)
    rep = recover(cat, cache, ARCHIVE_ID)
    assert rep.sessions_closed == 1
    size, adler, crc, writers = row(
        cat, "SELECT size, adler32, crc32c, writers FROM bitfiles WHERE id=?", bid
    )
    assert (size, writers) == (len(data), 0)
    assert (adler, crc) == (zlib.adler32(data), crc32c.crc32c(data))
    assert row(cat, "SELECT size FROM inodes WHERE id=?", ino) == (len(data),)


def test_a_dirty_file_whose_cache_file_vanished_is_reported_lost(
    cat: Catalog, cache: Cache
) -> None:
    bid, _ = new_file(cat, "gone", size=10)
    with cat.tx():
        cat.execute("UPDATE bitfiles SET writers=1 WHERE id=?", (bid,))
    rep = recover(cat, cache, ARCHIVE_ID)
    assert rep.lost == [bfid_of(cat, bid)]
    (error,) = row(cat, "SELECT error FROM bitfiles WHERE id=?", bid)
    assert error == "cache file missing after a crash"
    assert [e["subject"] for e in events.recent(cat, kind="data_lost")] == [bfid_of(cat, bid)]


def test_unlinked_inodes_left_open_are_freed_with_their_data(cat: Catalog, cache: Cache) -> None:
    bid, ino = new_file(cat, "unlinked", size=3)
    bfid = bfid_of(cat, bid)
    put(cache, bfid, b"abc")
    Namespace(cat).unlink(ROOT_INODE, b"unlinked")  # still open when the daemon died
    rep = recover(cat, cache, ARCHIVE_ID)
    assert rep.orphans_removed == 1
    assert cat.one("SELECT 1 FROM inodes WHERE id=?", (ino,)) is None
    assert row(cat, "SELECT state FROM bitfiles WHERE id=?", bid) == ("deleted",)
    assert not cache.exists(bfid)


def test_every_dirty_file_has_a_write_request_per_copy_after_a_crash(
    cat: Catalog, cache: Cache
) -> None:
    with cat.tx():
        cat.execute("INSERT INTO families(name, copies) VALUES ('two', 2)")
    bid, _ = new_file(cat, "unqueued", family="two")  # the crash hit before its requests
    queued, _ = new_file(cat, "queued")
    RequestQueue(cat).enqueue_write(queued, "default")
    rep = recover(cat, cache, ARCHIVE_ID)
    pools = sorted(r[0] for r in cat.all("SELECT family FROM requests WHERE bitfile=?", (bid,)))
    assert pools == ["two", "two#2"]
    assert rep.requeued == 1  # per file, not per request
    assert len(cat.all("SELECT id FROM requests WHERE bitfile=?", (queued,))) == 1


def test_running_requests_go_back_to_the_queue(cat: Catalog, cache: Cache) -> None:
    bid, _ = new_file(cat, "claimed")
    (rid,) = RequestQueue(cat).enqueue_write(bid, "default")
    RequestQueue(cat).claim([rid], "drive0")
    recover(cat, cache, ARCHIVE_ID, clean=True)
    assert row(cat, "SELECT state, drive FROM requests WHERE id=?", rid) == ("queued", None)


def test_cache_files_are_checked_against_the_catalog(cat: Catalog, cache: Cache) -> None:
    archived, _ = new_file(cat, "archived", size=4)
    with cat.tx():
        cat.execute("UPDATE bitfiles SET state='archived' WHERE id=?", (archived,))
        cat.execute(
            "INSERT INTO tape_copies(bitfile, volume, copy, fileno, block, length, state) "
            "VALUES (?, 'V1', 1, 0, 1, 4, 'active')",
            (archived,),
        )
        cat.execute("UPDATE volumes SET next_fileno=1, eod_block=2 WHERE label='V1'")
    kept, _ = new_file(cat, "kept", size=4)
    put(cache, bfid_of(cat, kept), b"kept")
    put(cache, "0123ABCD999999999999", b"nobody's")  # a stray: no bitfile owns it
    (cache.tmp / "half-recalled.1.1").write_bytes(b"x")
    rep = recover(cat, cache, ARCHIVE_ID)
    assert rep.stray_cache_files == 1 and not cache.exists("0123ABCD999999999999")
    assert rep.released_without_cache == 1
    assert row(cat, "SELECT state FROM bitfiles WHERE id=?", archived) == ("released",)
    assert cache.exists(bfid_of(cat, kept)) and not list(cache.tmp.iterdir())
    assert cache.used == 4  # what the catalog has cached: the dirty file only
    assert [e["kind"] for e in events.recent(cat, kind="recovery")] == ["recovery"]
    assert integrity_check(cat) == []


def test_after_a_clean_stop_the_crash_only_checks_are_skipped(cat: Catalog, cache: Cache) -> None:
    bid, _ = new_file(cat, "unqueued")
    put(cache, "0123ABCD999999999999", b"stray")
    rep = recover(cat, cache, ARCHIVE_ID, clean=True)
    assert not rep
    assert cat.one("SELECT 1 FROM requests WHERE bitfile=?", (bid,)) is None
    assert cache.exists("0123ABCD999999999999")
    assert events.recent(cat, kind="recovery") == []

"""No wait without a deadline: a blocked recall fails the open() with the errno of its
reason after `[cache] recall_timeout`, without holding up the rest of the mount; `flush
--wait` says why it waits and notices a dead daemon; complaint timers work from boot."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from backend import config as cfgmod
from backend.catalog import events, open_catalog
from backend.catalog.drives import DriveTable
from backend.catalog.files import FileClerk
from backend.catalog.namespace import Namespace
from backend.catalog.queue import RequestQueue
from backend.catalog.schema import ROOT_INODE
from backend.catalog.volumes import VolumeClerk
from backend.library import cleaning, diagnosis, manager
from backend.library import recall as recall_policy
from backend.library.manager import LibraryManager
from tests.archive import REPO, Mount, file_of, mount, wait_state
from tests.waiting import wait_for

CLI = (sys.executable, "-m", "mountfs.cli")
#: short enough for a test, long enough that "still blocked" can be observed meanwhile
RECALL_TIMEOUT = 4.0


def _archive(make_archive: Any, **kw: Any) -> Path:
    opts = {"cache.recall_timeout": f"{RECALL_TIMEOUT:.0f}s", **kw.pop("options", {})}
    return make_archive(options=opts, **kw)


def _all_drives_down(m: Mount, reason: str) -> None:
    for d in m.json("drives"):
        m.cli("drive", "down", d["name"], "--reason", reason, "--archive", str(m.archive))


def _timed_open(path: Path, out: dict[str, Any]) -> None:
    t0 = time.monotonic()
    try:
        with open(path, "rb") as f:
            out["data"] = f.read()
    except OSError as e:
        out["errno"] = e.errno
    out["elapsed"] = time.monotonic() - t0


def test_every_drive_down_during_a_recall_gives_etimedout_and_blocks_nothing_else(
    make_archive: Any, tmp_path: Path
) -> None:
    # longer than the others: the checks below that the open still waits run a few CLI
    # commands first, which take seconds each on a loaded machine
    timeout = 15.0
    m = mount(
        _archive(make_archive, options={"cache.recall_timeout": f"{timeout:.0f}s"}),
        tmp_path / "mnt",
    )
    try:
        a, b = m.mnt / "a", m.mnt / "b"
        a.write_bytes(file_of(64 * 1024, 1))
        b.write_bytes(b"still here")
        m.flush(a)
        m.release(a)
        wait_state(m, a, "released")
        _all_drives_down(m, "test: cable pulled")

        result: dict[str, Any] = {}
        opener = threading.Thread(target=_timed_open, args=(a, result), daemon=True)
        opener.start()
        # and a second reader, which kill -9 cannot free while the daemon holds its open
        # (the kernel waits for the answer once the request went out): the deadline does
        killed = subprocess.Popen(["cat", str(a)], stdout=subprocess.DEVNULL)
        wait_for(lambda: m.json("status")["queue"].get("recall_queued"), what="the recall")
        killed.kill()
        t_kill = time.monotonic()
        # the blocked open holds up no other request of the mount
        t0 = time.monotonic()
        assert sorted(os.listdir(m.mnt)) == ["a", "b"]
        assert os.stat(b).st_size == 10
        assert b.read_bytes() == b"still here"
        assert time.monotonic() - t0 < timeout / 3  # not held until the deadline
        assert opener.is_alive(), "the open should still wait for its recall"

        opener.join(timeout=timeout + 30)
        assert not opener.is_alive(), "the open outlived its deadline"
        assert result.get("errno") == errno.ETIMEDOUT, result
        assert result["elapsed"] < timeout + 15
        killed.wait(timeout=30)
        assert time.monotonic() - t_kill < timeout + 15
        why = m.xattr(a, "error")
        assert "timed out" in why and "every drive is down" in why and "cable pulled" in why
        assert any("cable pulled" in e["message"] for e in m.events("recall_timeout"))

        # recall --wait says why it waits, then gives the recall's error
        p = m.cli("recall", "--wait", "--timeout", "60", str(a), check=False)
        said = p.stdout.decode() + p.stderr.decode()
        assert p.returncode == 1, said
        assert "waiting: every drive is down" in said, said
        assert "recall timed out" in p.stderr.decode(), said
    finally:
        m.stop()


def test_a_cache_full_of_dirty_data_during_a_recall_gives_enospc(
    make_archive: Any, tmp_path: Path
) -> None:
    m = mount(_archive(make_archive, cache_size="4MiB"), tmp_path / "mnt")
    try:
        a = m.mnt / "a"
        a.write_bytes(file_of(2 * 2**20, 2))
        m.flush(a)
        m.release(a)
        wait_state(m, a, "released")
        # not on tape (flush_delay is 1h) and so not evictable: no room for a's 2 MiB
        (m.mnt / "dirty").write_bytes(file_of(3 * 2**20, 3))

        result: dict[str, Any] = {}
        _timed_open(a, result)
        assert result.get("errno") == errno.ENOSPC, result
        assert result["elapsed"] < RECALL_TIMEOUT + 20
        assert "cache is full" in m.xattr(a, "error")
        assert m.events("recall_timeout")
    finally:
        m.stop()


def _flush_wait(m: Mount, path: Path, timeout: float) -> subprocess.CompletedProcess:
    return m.cli("flush", "--wait", "--timeout", str(timeout), str(path), check=False)


def test_flush_wait_says_every_drive_is_down(make_archive: Any, tmp_path: Path) -> None:
    m = mount(_archive(make_archive), tmp_path / "mnt")
    try:
        _all_drives_down(m, "test: drive unplugged")
        (m.mnt / "f").write_bytes(b"data")
        p = _flush_wait(m, m.mnt / "f", 3)
        said = p.stdout.decode() + p.stderr.decode()
        assert p.returncode == 1, said
        assert "waiting: every drive is down" in said and "drive unplugged" in said
        assert "not done after 3s: every drive is down" in p.stderr.decode()
    finally:
        m.stop()


def test_flush_wait_says_no_writable_volume(make_archive: Any, tmp_path: Path) -> None:
    archive = _archive(make_archive, volumes=1, volume_size="4MiB")
    m = mount(archive, tmp_path / "mnt")
    try:
        (m.mnt / "first").write_bytes(file_of(2 * 2**20, 4))
        m.flush(m.mnt / "first")
        # fits a volume, not what is left of the only one, and no blank remains
        (m.mnt / "second").write_bytes(file_of(2 * 2**20, 5))
        p = _flush_wait(m, m.mnt / "second", 4)
        said = p.stdout.decode() + p.stderr.decode()
        assert p.returncode == 1, said
        assert "waiting: no writable volume" in said and "no blank volume is left" in said
    finally:
        m.stop()


def test_flush_wait_notices_the_daemon_killed(make_archive: Any, tmp_path: Path) -> None:
    m = mount(_archive(make_archive), tmp_path / "mnt")
    try:
        _all_drives_down(m, "test: nothing may reach tape")
        (m.mnt / "f").write_bytes(b"data")
        p = subprocess.Popen(
            [*CLI, "flush", "--wait", "--timeout", "120", str(m.mnt / "f")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO,
        )
        try:
            assert p.stdout is not None
            # it waits (and says why) before the daemon goes
            said = [p.stdout.readline().decode() for _ in range(2)]
            assert "waiting: every drive is down" in said[-1], said
            pid = m.pid
            m.kill()
            t0 = time.monotonic()
            _out, err = p.communicate(timeout=30)
            assert time.monotonic() - t0 < 10
            assert p.returncode == 1
            assert f"daemon (pid {pid}) stopped while 1 file(s) were not archived" in err.decode()
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    finally:
        m.stop()


def test_cleaning_impossible_is_said_on_a_freshly_booted_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """time.monotonic() counts from boot: 100 s after it, "never said" must not read as
    "said 100 s ago"."""
    cat = open_catalog(tmp_path / "catalog.db", create=True)
    try:
        monkeypatch.setattr(cleaning, "_complained", {})
        monkeypatch.setattr(cleaning.time, "monotonic", lambda: 100.0)
        cleaning.no_cartridge(cat, "d0")
        cleaning.no_cartridge(cat, "d0")  # the same hour: said once
        assert len(events.recent(cat, kind="cleaning_impossible")) == 1
    finally:
        cat.close()


def test_a_stalled_pool_is_said_on_a_freshly_booted_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cat = open_catalog(tmp_path / "catalog.db", create=True)
    try:
        raw = cfgmod.apply_overrides({"archive": {"id": "0123ABCD"}}, [])
        lm = LibraryManager(cfgmod.build(tmp_path, raw))
        monkeypatch.setattr(manager.time, "monotonic", lambda: 100.0)
        lm._complain(cat, "family:x", "no writable volume for family x")
        lm._complain(cat, "family:x", "no writable volume for family x")
        assert len(events.recent(cat, kind="stalled")) == 1
    finally:
        cat.close()


# -- the expiry sweep's choice, on a real catalog (pure logic: no daemon, no drives) ------


@pytest.fixture
def cat_config(tmp_path: Path) -> Any:
    cat = open_catalog(tmp_path / "catalog.db", create=True)
    raw = cfgmod.apply_overrides({"archive": {"id": "0123ABCD"}}, ['cache.recall_timeout="5s"'])
    config = cfgmod.build(tmp_path, raw)
    VolumeClerk(cat).add("V1", capacity=10_000_000, home=1000, inserted_ns=1000)
    drives = DriveTable(cat)
    drives.register("d0", 0, "S0")
    drives.register("d1", 1, "S1")
    try:
        yield cat, config
    finally:
        cat.close()


def _released_and_queued(cat: Any, config: Any, age: float) -> int:
    node = Namespace(cat).create(ROOT_INODE, b"f", stat.S_IFREG | 0o644, 0, 0)
    bid = FileClerk(cat, config.archive_id).create(node.id, family="default", size=1000).id
    with cat.tx():
        cat.execute("UPDATE bitfiles SET state='released' WHERE id=?", (bid,))
        cat.execute("UPDATE volumes SET state='full', family='default' WHERE label='V1'")
        cat.execute(
            "INSERT INTO tape_copies(bitfile, volume, fileno, block, length, state) "
            "VALUES (?, 'V1', 1, 10, 1000, 'active')",
            (bid,),
        )
    RequestQueue(cat).enqueue_recall(bid, "V1", 1, 10)
    cat.execute("UPDATE requests SET created_ns = created_ns - ?", (int(age * 1e9),))
    return bid


def test_the_sweep_keeps_a_recall_that_only_waits_its_turn(cat_config: Any) -> None:
    cat, config = cat_config
    bid = _released_and_queued(cat, config, age=60)
    assert recall_policy.expire(cat, config, time.time_ns()) == []
    assert RequestQueue(cat).has(bid, "recall")
    # an open at its own deadline still gets ETIMEDOUT, and the recall stays queued
    reason = recall_policy.give_up(cat, config, bid, 5)
    assert reason is not None and reason.errno == errno.ETIMEDOUT and reason.code == "queued"
    assert RequestQueue(cat).has(bid, "recall")


def test_the_sweep_fails_a_blocked_recall_with_its_reason(cat_config: Any) -> None:
    cat, config = cat_config
    young = _released_and_queued(cat, config, age=1)
    DriveTable(cat).set_down("d0", "test: fire")
    DriveTable(cat).set_down("d1", "test: flood")
    assert recall_policy.expire(cat, config, time.time_ns()) == []  # not 5 s old yet
    cat.execute("UPDATE requests SET created_ns = created_ns - 10000000000")
    [(bid, reason)] = recall_policy.expire(cat, config, time.time_ns())
    assert bid == young and reason.errno == errno.ETIMEDOUT and reason.code == "no_drive_up"
    assert "fire" in reason.message and "flood" in reason.message
    assert not RequestQueue(cat).has(bid, "recall")
    assert FileClerk(cat).get(bid).error == reason.message  # user.reelfs.error
    assert events.recent(cat, kind="recall_timeout")


def test_a_recall_waiting_for_cache_room_times_out_with_enospc(cat_config: Any) -> None:
    cat, config = cat_config
    bid = _released_and_queued(cat, config, age=60)
    rid = RequestQueue(cat).recall_of(bid)[0]  # type: ignore[index]
    RequestQueue(cat).requeue(rid, diagnosis.CACHE_WAIT)
    [(_, reason)] = recall_policy.expire(cat, config, time.time_ns())
    assert reason.errno == errno.ENOSPC and "cache is full" in reason.message


def test_a_recall_of_a_volume_stuck_in_a_down_drive_says_so(cat_config: Any) -> None:
    cat, config = cat_config
    bid = _released_and_queued(cat, config, age=60)
    DriveTable(cat).set_down("d1", "test: load failed", stuck="V1")
    reason = diagnosis.why_recall_waits(cat, config, bid)
    assert reason is not None and reason.code == "volume_unavailable"
    assert "V1 is stuck in drive d1" in reason.message and "load failed" in reason.message
    [(_, expired)] = recall_policy.expire(cat, config, time.time_ns())
    assert expired.errno == errno.ETIMEDOUT

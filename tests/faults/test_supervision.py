"""Supervised workers under faults: a catalog write-locked by another process for 60 s
(during a flush, with a tape idle in a drive, during a recall, with the poster at work),
changer failures on load and on unload, drive failures mid-write and mid-recall, and a
mover crash restarted through a cleaner session. The work completes, nothing is lost,
and every worker is still alive afterwards."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

from backend.admin.control import call
from backend.catalog import outbox as outbox_rows
from drivers.emulated import inject_fault
from tests.archive import REPO, Mount, file_of, init_archive, mount, wait_state
from tests.ports import free_port
from tests.waiting import wait_for

LOCK_SECONDS = 60

# Another process journals one change (so the poster has work), then holds the catalog's
# write lock for LOCK_SECONDS: what a long `sqlite3` session or a stuck tool does.
LOCKER = """
import sqlite3, sys, time
from backend.catalog import journal
from backend.catalog.db import open_catalog
cat = open_catalog(sys.argv[1])
journal.record(cat, "closed", inode=None, path="/posted.dat", old_path=None, target=None,
               origin=None)
cat.close()
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))  # the fault itself: the lock is held this long
conn.rollback()
"""


def _drives(m: Mount) -> dict[str, dict]:
    return {d["name"]: d for d in m.json("drives")}


def _status(m: Mount) -> dict:
    return m.json("status")


def _queue(m: Mount) -> list[dict]:
    return m.json("queue")


def _volumes(m: Mount) -> dict[str, dict]:
    return {v["label"]: v for v in m.json("volumes")}


def _read_in_thread(path: Path) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def read() -> None:
        try:
            result["data"] = path.read_bytes()
        except OSError as e:
            result["error"] = e

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t, result


def test_a_catalog_locked_for_60s_pauses_every_worker_and_nothing_dies(tmp_path: Path) -> None:
    archive = init_archive(
        tmp_path / "archive",
        options={
            "mover.idle_dismount": "5s",  # a tape sits idle in a drive when the lock comes
            "post.broker": f"amqp://127.0.0.1:{free_port()}/",  # nobody there: the outbox keeps
            "post.base_url": "http://127.0.0.1:1/",
        },
    )
    m = mount(archive, tmp_path / "mnt")
    try:
        a, b = m.mnt / "a.dat", m.mnt / "b.dat"
        a_data, b_data = file_of(200_000, 1), file_of(300_000, 2)
        a.write_bytes(a_data)
        m.flush(a)
        m.release(a)
        (m.mnt / "posted.dat").write_bytes(b"p")
        b.write_bytes(b_data)
        reader, got = _read_in_thread(a)  # a recall...
        wait_for(
            lambda: got or any(r["kind"] == "recall" for r in _queue(m)),
            timeout=60,
            what="the recall of a.dat queued",
        )
        m.cli("flush", str(b))  # ...and a flush, both under way when the lock comes
        locker = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(archive / "catalog.db"), str(LOCK_SECONDS)],
            cwd=REPO,
            stdout=subprocess.PIPE,
        )
        try:
            assert locker.stdout is not None and locker.stdout.readline() == b"locked\n"
            assert locker.wait(LOCK_SECONDS + 60) == 0
        finally:
            if locker.poll() is None:
                locker.kill()
        reader.join(120)
        assert not reader.is_alive(), "the recall never finished"
        assert got.get("data") == a_data, got.get("error")
        wait_state(m, b, "archived", timeout=120)
        busy = m.events("catalog_busy")
        subjects = {e["subject"] for e in busy}
        assert "poster" in subjects, busy
        assert subjects & {"drive0", "drive1"}, busy
        st = _status(m)
        assert all(mv["alive"] and not mv["down"] for mv in st["daemon"]["movers"]), st
        poster = next(w for w in st["daemon"]["workers"] if w["worker"] == "poster")
        assert poster["alive"] and poster["busy_waits"] >= 1, poster
        assert all(d["state"] == "up" for d in _drives(m).values())
        # the change journalled just before the lock was announced after it
        wait_for(
            lambda: b"posted.dat" in _outbox(archive),
            timeout=60,
            what="the poster announced the change it found under the lock",
        )
        table = m.cli("status", "--archive", str(archive)).stdout.decode()
        assert "poster" in table and "alive" in table  # in the plain table, not only --json
    finally:
        m.stop()


def _outbox(archive: Path) -> bytes:
    """The bodies of the messages waiting in the outbox (nobody takes them: no broker)."""
    conn = sqlite3.connect(f"file:{archive / 'catalog.db'}?mode=ro", uri=True)
    try:
        return json.dumps([r[3] for r in outbox_rows.oldest(conn, 10_000)]).encode()
    finally:
        conn.close()


def test_changer_failures_on_load_and_unload_mark_the_volume_stuck_until_reconciled(
    tmp_path: Path,
) -> None:
    # the written volume stays a while in the drive: its dismount is the next move
    archive = init_archive(tmp_path / "archive", drives=1, options={"mover.idle_dismount": "8s"})
    m = mount(archive, tmp_path / "mnt")
    lib = archive / "library"
    try:
        f = m.mnt / "f.dat"
        data = file_of(100_000, 3)
        f.write_bytes(data)
        inject_fault(lib, kind="changer", count=1)  # the load fails
        m.flush(f)  # ...and the write goes to another volume
        inject_fault(lib, kind="changer", count=1)  # and so will the dismount
        stuck = [v for v in _volumes(m).values() if v["state"] == "stuck"]
        assert len(stuck) == 1, _volumes(m)
        assert "drive0" in stuck[0]["error"] and "slot" in stuck[0]["error"]
        assert "picker failure" in stuck[0]["error"]
        label = stuck[0]["label"]
        out = m.cli("library", "reconcile", "--archive", str(archive)).stdout.decode()
        assert f"unstuck: {label}" in out
        before = stuck[0]["error"].rpartition("; was ")[2]
        assert before in ("blank", "writable")
        assert _volumes(m)[label]["state"] == before  # its state before, back
        wait_for(lambda: m.events("volume_unstuck"), timeout=90, what="the tape put home")
        assert len([e for e in m.events("volume_stuck") if "in drive" in e["message"]]) == 1
        drive = _drives(m)["drive0"]
        assert drive["state"] == "up" and drive["mover"] == "alive", drive
        assert drive["restarts"] == 1 and "picker failure" in drive["last_error"]
        assert not [v for v in _volumes(m).values() if v["state"] == "stuck"]
        m.release(f)
        assert f.read_bytes() == data  # nothing lost
    finally:
        m.stop()


def test_a_drive_failing_mid_write_or_mid_recall_leaves_the_work_to_the_other(
    tmp_path: Path,
) -> None:
    archive = init_archive(tmp_path / "archive")
    m = mount(archive, tmp_path / "mnt")
    lib = archive / "library"
    arch = ["--archive", str(archive)]
    try:
        f = m.mnt / "f.dat"
        data = file_of(500_000, 4)
        f.write_bytes(data)
        inject_fault(lib, kind="drive", op="write", count=1)
        m.flush(f)
        (down,) = [d for d in _drives(m).values() if d["state"] == "down"]
        assert "hardware failure during write" in down["reason"]
        m.cli("drive", "up", down["name"], *arch)
        wait_for(lambda: all(d["state"] == "up" for d in _drives(m).values()), timeout=60)
        m.release(f)
        inject_fault(lib, kind="drive", op="read", count=1)
        assert f.read_bytes() == data  # the recall is retried on the other drive: no EIO
        (down,) = [d for d in _drives(m).values() if d["state"] == "down"]
        assert "hardware failure during read" in down["reason"]
    finally:
        m.stop()


def test_a_crashed_mover_restarts_through_a_cleaner_session(tmp_path: Path) -> None:
    archive = init_archive(tmp_path / "archive", drives=1, options={"mover.idle_dismount": "5m"})
    m = mount(archive, tmp_path / "mnt")
    try:
        f1, f2 = m.mnt / "one.dat", m.mnt / "two.dat"
        f1.write_bytes(b"1" * 1000)
        m.flush(f1)  # its volume stays in the drive (idle_dismount)
        assert _drives(m)["drive0"]["volume"]
        call(archive / "run" / "reelfsd.sock", "inject_fault", target="mover", count=1)
        f2.write_bytes(b"2" * 1000)
        m.flush(f2)
        assert m.state(f2) == "archived"
        # the tape left in the drive was put home first
        assert len(m.events("cleaner_session")) == 1
        drive = _drives(m)["drive0"]
        assert drive["restarts"] == 1 and "injected fault" in drive["last_error"]
        assert drive["state"] == "up" and drive["mover"] == "alive"
    finally:
        m.stop()


def test_a_recall_waits_for_a_cartridge_stuck_in_a_failed_drive(tmp_path: Path) -> None:
    # the volume stays in the drive after the flush: the changer's next move is its unload
    archive = init_archive(tmp_path / "archive", drives=1, options={"mover.idle_dismount": "5m"})
    m = mount(archive, tmp_path / "mnt")
    lib = archive / "library"
    try:
        f = m.mnt / "f.dat"
        data = file_of(200_000, 5)
        f.write_bytes(data)
        m.flush(f)
        m.release(f)
        # the drive fails mid-recall, and the changer cannot take the cartridge out of it
        inject_fault(lib, kind="drive", op="read", count=1)
        inject_fault(lib, kind="changer", count=1)
        reader, got = _read_in_thread(f)
        wait_for(lambda: _drives(m)["drive0"]["state"] == "down", timeout=90, what="drive0 down")
        drive = _drives(m)["drive0"]
        (stuck,) = [v for v in _volumes(m).values() if v["state"] == "stuck"]
        assert drive["volume"] == stuck["label"] and "in drive drive0" in stuck["error"]
        assert reader.is_alive() and not got, (got, m.events()[-8:])  # waits: no EIO
        assert any(r["kind"] == "recall" for r in _queue(m))
        m.cli("drive", "up", "drive0", "--archive", str(archive))  # repaired
        reader.join(120)
        assert got.get("data") == data, got.get("error")
        assert _volumes(m)[stuck["label"]]["state"] != "stuck"
    finally:
        m.stop()

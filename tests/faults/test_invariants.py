"""No lost requests, `reelfs check` and its repairs, and a journal failure that fails its
FUSE operation: the catalog's invariants kept by construction and verified."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from backend.admin.control import call
from backend.cache.staging import Staging
from backend.cache.store import Cache
from backend.catalog import open_catalog
from backend.catalog.files import DIRTY
from backend.catalog.integrity import INVARIANTS, check
from backend.catalog.namespace import Namespace
from backend.catalog.queue import RequestQueue
from backend.catalog.schema import ROOT_INODE
from backend.config import load
from backend.library.manager import LibraryManager
from backend.mover import write
from backend.mover.session import MoverContext, MoverHooks
from drivers.emulated import open_library
from drivers.tape import ElementType
from tests.archive import Mount, init_archive, mount
from tests.waiting import wait_for


def test_a_session_ending_between_the_movers_look_and_its_drop_keeps_the_request(
    tmp_path: Path,
) -> None:
    """The race of issue 10 item 10, forced: the mover claimed a file's write, the file
    was opened for writing again, the mover sees the writer and drops the request, and
    the close commits in between (finding the request, so queueing none)."""
    archive = init_archive(tmp_path / "archive", drives=1, volumes=1)
    config = load(archive)
    cat = open_catalog(config.catalog_path)
    mover_cat = open_catalog(config.catalog_path)
    lib = open_library(archive / "library")
    try:
        cache = Cache(config.cache.path, config.cache.size, 0.9, 0.5)
        st = Staging(cat, cache, config.archive_id, max_file_size=1_000_000)
        ns = Namespace(cat)
        node = ns.create(ROOT_INODE, b"f", stat.S_IFREG | 0o644, 0, 0)
        h = st.create(node, os.O_WRONLY)
        st.write(h.fh, 0, b"first")
        end = st.release(h.fh)
        assert end is not None and end.sums is not None
        st.finish(end)
        bitfile = h.oi.bitfile
        queue = RequestQueue(cat)
        (req,) = queue.write_batch("default", 2**62, small=False, threshold=-1, limit=10)
        queue.claim([req.id], "drive0")
        h2 = st.open(ns.get(node.id), os.O_WRONLY)
        st.write(h2.fh, 5, b" more")  # the session begins: one writer

        def close_now(where: str) -> None:
            if where == "write.drop":
                e = st.release(h2.fh)
                assert e is not None
                if e.sums is None:
                    Staging.compute_sums(e)
                assert st.finish(e)

        address = min(e.address for e in lib.changer.inventory().of_type(ElementType.DRIVE))
        ctx = MoverContext(
            name="drive0",
            address=address,
            drive=lib.drives[address],
            changer=lib.changer,
            changer_lock=threading.Lock(),
            lm=LibraryManager(config),
            config=config,
            cache=cache,
            hooks=MoverHooks(race_point=close_now),
        )
        ctx.cat = mover_cat
        pending = [req]
        members = write._prepare(ctx, [req], pending)
        assert members == [] and pending == []  # not written now: it was being written
        row = cat.one("SELECT state, writers FROM bitfiles WHERE id=?", (bitfile,))
        assert row is not None and tuple(row) == (DIRTY, 0)
        # the closed file is still to be written: its request back in the queue
        assert queue.write_state(bitfile) == "queued"
        assert check(cat).ok
    finally:
        lib.close()
        mover_cat.close()
        cat.close()


def _check(m: Mount, *args: str) -> tuple[int, dict]:
    p = m.cli("check", "--archive", str(m.archive), "--json", *args, check=False)
    return p.returncode, json.loads(p.stdout)


def test_check_finds_a_lost_request_and_repair_queues_it(mounted: Mount) -> None:
    m = mounted
    f = m.mnt / "lost.dat"
    f.write_bytes(b"lost request")
    g = m.mnt / "linked.dat"
    g.write_bytes(b"fine")
    rc, answer = _check(m)
    assert rc == 0 and answer["ok"] and answer["problems"] == []
    assert {inv.name for inv in INVARIANTS} <= set(answer["checked"])
    config = load(m.archive)
    bfid = m.xattr(f, "bfid")
    db = sqlite3.connect(config.catalog_path, timeout=30)
    try:
        with db:  # what the lost-request race left behind, and a broken link count
            db.execute(
                "DELETE FROM requests WHERE bitfile=(SELECT id FROM bitfiles WHERE bfid=?)",
                (bfid,),
            )
            ino = os.stat(g).st_ino
            db.execute("UPDATE inodes SET nlink=3 WHERE id=?", (ino,))
        rc, answer = _check(m)
        assert rc == 1 and not answer["ok"]
        found = {x["invariant"]: x for x in answer["findings"]}
        assert set(found) == {"dirty-has-request", "nlink-files"}
        assert found["dirty-has-request"]["count"] == 1
        assert found["nlink-files"]["ids"] == [ino]
        p = m.cli("check", "--archive", str(m.archive), check=False)
        assert p.returncode == 1
        assert "1 dirty file nobody is writing without a write request" in p.stderr.decode()
        # repair: the request is queued again; the link count needs a human
        rc, answer = _check(m, "--repair")
        assert rc == 1 and answer["repaired"] == {"dirty-has-request": 1}
        assert [x["invariant"] for x in answer["findings"]] == ["nlink-files"]
        (ev,) = [e for e in m.events("check_repaired") if e["subject"] == bfid]
        assert "queued again" in ev["message"]
        with db:
            db.execute("UPDATE inodes SET nlink=1 WHERE id=?", (ino,))
    finally:
        db.close()
    rc, answer = _check(m)
    assert rc == 0 and answer["ok"]
    m.flush(f, timeout=120)  # the re-queued request really writes it
    assert m.state(f) == "archived"


WRITER = r"""
import os, sys
root, w, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    p = os.path.join(root, f"w{w}-{i:04d}")
    with open(p, "wb") as f:
        f.write(b"%d %d first\n" % (w, i))
    if i % 2 == 0:
        with open(p, "ab") as f:  # a new session on a file whose write may be claimed
            f.write(b"%d %d again\n" % (w, i))
"""


def test_eight_parallel_writers_lose_no_request(make_archive) -> None:
    """Issue 10 item 10: 8 writers, each file written and reopened while the movers
    flush continually (so sessions start on files whose writes are claimed)."""
    archive = make_archive(
        drives=2,
        volumes=4,
        options={
            "mover.flush_delay": "0s",
            "aggregation.age": "0.5s",
            "aggregation.files": 500,
            # many small tape files: small blocks, or 64 MiB volumes fill up
            "library.block_size": "32KiB",
        },
    )
    m = mount(archive, archive.parent / "mnt")
    try:
        writers, per = 8, 250
        procs = [
            subprocess.Popen([sys.executable, "-c", WRITER, str(m.mnt), str(w), str(per)])
            for w in range(writers)
        ]
        for p in procs:
            assert p.wait(timeout=300) == 0
        m.flush(m.mnt, timeout=300)
        names = sorted(os.listdir(m.mnt))
        assert len(names) == writers * per
        not_archived = [n for n in names if m.state(m.mnt / n) != "archived"]
        assert not_archived == []
        rc, answer = _check(m)
        assert rc == 0, answer["problems"]
        assert (m.mnt / "w3-0006").read_bytes() == b"3 6 first\n3 6 again\n"
        assert (m.mnt / "w3-0007").read_bytes() == b"3 7 first\n"
    finally:
        m.stop()


def test_a_journal_failure_fails_the_operation_and_changes_nothing(tmp_path: Path) -> None:
    archive = init_archive(
        tmp_path / "archive",
        options={
            # nothing listens there: messages wait in the outbox, the journal works
            "post.broker": "amqp://nobody@127.0.0.1:1/",
            "post.base_url": "http://127.0.0.1:1/",
        },
    )
    m = mount(archive, tmp_path / "mnt")
    try:
        config = load(archive)
        (m.mnt / "d").mkdir()
        (m.mnt / "f").write_bytes(b"x")
        before = sorted(os.listdir(m.mnt))
        cases = [
            ("mkdir", lambda: os.mkdir(m.mnt / "new")),
            ("rename", lambda: os.rename(m.mnt / "f", m.mnt / "g")),
            ("unlink", lambda: os.unlink(m.mnt / "f")),
            ("rmdir", lambda: os.rmdir(m.mnt / "d")),
            ("symlink", lambda: os.symlink("f", m.mnt / "s")),
            ("link", lambda: os.link(m.mnt / "f", m.mnt / "h")),
        ]
        for what, op in cases:
            call(config.socket_path, "inject_fault", target="journal", count=1)
            with pytest.raises(OSError) as e:
                op()
            assert e.value.errno == errno.EIO, what
            # rolled back: the kernel caches nothing of a failed operation
            assert sorted(os.listdir(m.mnt)) == before, what
            assert (m.mnt / "f").read_bytes() == b"x"
        assert os.stat(m.mnt / "f").st_nlink == 1
        failed = m.events("journal_failed")
        assert len(failed) == len(cases)
        # The session ends at the last RELEASE, which the kernel sends after close(2) has
        # returned and whose answer nobody reads: the end is not committed (no version
        # without its announcement), the session stays counted, and the next start of the
        # archive closes it and queues the file.
        fd = os.open(m.mnt / "f", os.O_WRONLY | os.O_APPEND)
        os.write(fd, b"y")
        call(config.socket_path, "inject_fault", target="journal", count=1)
        os.close(fd)
        wait_for(
            lambda: len(m.events("journal_failed")) == len(cases) + 1,
            timeout=30,
            what="the release's journal failure to be recorded",
        )
        bfid = m.xattr(m.mnt / "f", "bfid")

        def writers() -> int:
            db = sqlite3.connect(config.catalog_path, timeout=30)
            try:
                row = db.execute("SELECT writers FROM bitfiles WHERE bfid=?", (bfid,)).fetchone()
                return int(row[0])
            finally:
                db.close()

        assert writers() == 1  # not ended: its announcement could not be written
        m.stop()
        m = mount(archive, tmp_path / "mnt")
        assert writers() == 0  # closed at start, and queued
        assert (m.mnt / "f").read_bytes() == b"xy"
        m.cli("flush", "--wait", str(m.mnt / "f"))
        assert m.xattr(m.mnt / "f", "state") == "archived"
        rc, answer = _check(m)
        assert rc == 0, answer["problems"]
    finally:
        m.stop()

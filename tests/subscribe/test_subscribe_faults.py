"""Faults: a subscriber killed mid-download resumes without ever showing a partial file,
malformed and lying messages are rejected with a report and an archive event (and never
stop the subscriber or write outside its root), the retry queue survives kill -9, and a
broker restart or an unmounted archive delays replication without losing anything."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
from pathlib import Path

import pytest

from backend.replication import message as m
from backend.replication.broker import Broker
from backend.replication.http_service import DirectorySource, NotCached, serve
from tests.archive import file_of, mount
from tests.waiting import wait_for

from .conftest import no_temp_files, receive_until

pytestmark = [pytest.mark.fuse, pytest.mark.slow]


def temps(root: Path) -> list[Path]:
    return [p for p in root.rglob(".reelfs-in.*")]


def test_killed_mid_download_resumes_and_never_shows_a_partial_file(
    tag, make_site, subscriber_factory, upstream, poster_factory, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="backend.replication.http_service")
    site = make_site("siteB")
    root, http = upstream()
    src = poster_factory("alice", f"xs_alice_{tag}")
    keys = dict(exchange=f"xs_alice_{tag}", report_exchange="")
    sub = subscriber_factory("b", site, bytes_per_second=1_000_000, **keys)
    data = file_of(6_000_000, 11)
    (root / "d").mkdir()
    (root / "d" / "big.bin").write_bytes(data)
    src.file(root, http.url.rstrip("/"), "d/big.bin")
    final = site.mnt / "d" / "big.bin"

    def partial() -> int:
        found = temps(site.mnt)
        return found[0].stat().st_size if found else 0

    wait_for(lambda: partial() >= 1_500_000, timeout=60, what="a partial download")
    assert not final.exists()  # while partial, nothing under the final name
    sub.kill9()
    (temp,) = temps(site.mnt)
    size_at_kill = temp.stat().st_size
    assert 0 < size_at_kill < len(data) and not final.exists()

    again = subscriber_factory("b", site, **keys)  # same config name: same queue and state
    wait_for(lambda: final.exists(), timeout=60, what="the file after the restart")
    assert final.read_bytes() == data
    assert no_temp_files(site.mnt)
    resumed = [line for line in again.text().splitlines() if "resuming a partial" in line]
    assert resumed, again.text()
    offset = int(resumed[-1].rsplit(" ", 1)[1])
    assert offset == size_at_kill
    # the data service was asked for the rest only
    ranges = [r.getMessage() for r in caplog.records if '" 206 ' in r.getMessage()]
    assert ranges and ranges[-1].split()[-1] == str(len(data) - offset)


def _sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha512(data).digest()).decode()


def test_malformed_and_lying_messages_are_rejected_and_reported(
    tag, make_site, subscriber_factory, upstream, poster_factory, queue_factory, tmp_path
) -> None:
    site = make_site("siteB")
    reports = queue_factory("alice", f"xr_alice_{tag}")
    root, http = upstream()
    base = http.url.rstrip("/")
    src = poster_factory("alice", f"xs_alice_{tag}")
    sub = subscriber_factory(
        "b", site, exchange=f"xs_alice_{tag}", report_exchange=f"xr_{{source}}_{tag}"
    )
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), site.mnt / "lnk")  # a link in the archive leading out of it
    (root / "ten.txt").write_bytes(b"0123456789")
    (root / "ten2.txt").write_bytes(b"0123456789")
    (root / "lnk").mkdir()
    (root / "lnk" / "evil.txt").write_bytes(b"evil")
    (root / "good.txt").write_bytes(b"good\n")
    ok = {"pubTime": m.now_time(), "baseUrl": base}
    bodies = [
        b"{not json",
        json.dumps({"pubTime": m.now_time(), "relPath": "nobase.txt"}).encode(),
        json.dumps(
            {**ok, "relPath": "crc.txt", "identity": {"method": "crc", "value": "1"}}
        ).encode(),
        json.dumps({**ok, "relPath": "../escape.txt"}).encode(),
        json.dumps({**ok, "relPath": "/etc/abs.txt"}).encode(),
    ]
    for body in bodies:
        src.raw(body)
    src.file(root, base, "ten.txt", size=11)  # size mismatch
    src.post(
        m.build_message(
            base_url=base,
            rel_path="ten2.txt",
            size=10,
            identity={"method": "sha512", "value": _sha(b"not this")},
        )
    )
    src.file(root, base, "lnk/evil.txt")
    src.file(root, base, "good.txt", source="bob")  # forged: this is alice's exchange
    src.file(root, base, "good.txt")
    got = receive_until(reports, lambda g: len(g) >= 10, timeout=90)
    by = [
        (x.get("rejected_relPath", x["relPath"]), x["report"]["code"], x["report"]["message"])
        for x in got
    ]
    codes = sorted((r, c) for r, c, _ in by)
    assert codes == sorted(
        [
            ("invalid", 417),  # bad JSON
            ("nobase.txt", 417),
            ("crc.txt", 417),
            ("../escape.txt", 417),
            ("/etc/abs.txt", 417),
            ("ten.txt", 417),  # size
            ("ten2.txt", 417),  # identity
            ("lnk/evil.txt", 422),
            ("good.txt", 403),
            ("good.txt", 201),
        ]
    ), by
    text = {(r, c): t for r, c, t in by}
    assert "bad JSON" in text[("invalid", 417)]
    assert "baseUrl" in text[("nobase.txt", 417)]
    assert "unknown method 'crc'" in text[("crc.txt", 417)]
    assert "contains '..'" in text[("../escape.txt", 417)]
    assert "absolute" in text[("/etc/abs.txt", 417)]
    assert "leads out of" in text[("lnk/evil.txt", 422)]
    assert "forged" in text[("good.txt", 403)]
    mism = sorted(t for r, c, t in by if r.startswith("ten"))
    assert "11 announced" in mism[0] or "11 announced" in mism[1]
    assert any("differs from the announced identity" in t for t in mism)
    assert all("given up after 3 attempt(s)" in t for t in mism)
    # nothing outside the root, nothing partial, the good file stored, still running
    assert list(outside.iterdir()) == [] and not (tmp_path / "escape.txt").exists()
    assert not Path("/etc/abs.txt").exists()
    assert (site.mnt / "good.txt").read_bytes() == b"good\n"
    assert not (site.mnt / "ten.txt").exists() and not (site.mnt / "ten2.txt").exists()
    assert no_temp_files(site.mnt)
    assert sub.alive()
    # and each is an event in the archive's log
    rejected = site.events("subscribe_rejected")
    failed = site.events("subscribe_failed")
    assert len(rejected) == 6 and len(failed) == 3
    assert {e["subject"] for e in failed} == {"ten.txt", "ten2.txt", "lnk/evil.txt"}


class FlakySource(DirectorySource):
    """Answers 503 (as for a file being recalled from tape) the first `fails` times."""

    def __init__(self, root: Path, fails: int) -> None:
        super().__init__(root)
        self.fails = fails
        self.lock = threading.Lock()

    def open(self, relpath: str):
        with self.lock:
            if self.fails > 0:
                self.fails -= 1
                raise NotCached(retry_after=2)
        return super().open(relpath)

    def wait_cached(self, relpath: str, timeout: float) -> bool:
        return False


def test_retry_queue_survives_kill_and_honours_retry_after(
    broker, tag, make_site, subscriber_factory, poster_factory, tmp_path
) -> None:
    site = make_site("siteB")
    root = tmp_path / "flaky"
    root.mkdir()
    (root / "r.bin").write_bytes(file_of(50_000, 5))
    source = FlakySource(root, fails=2)
    src = poster_factory("alice", f"xs_alice_{tag}")
    keys = dict(
        exchange=f"xs_alice_{tag}",
        report_exchange="",
        retry={"initial": 0.2, "maximum": 5.0, "attempts": 5},
    )
    with serve(source, "127.0.0.1:0", url_prefix="/flaky", recall_wait=0.1) as http:
        sub = subscriber_factory("b", site, **keys)
        src.file(root, http.url.rstrip("/"), "r.bin")
        sub.wait_log("attempt 1 of 5 in 2.")  # Retry-After (2 s) beats the 0.2 s backoff
        sub.kill9()
        # whether or not the ack got out, drop the broker's queue: only the retry table
        # can bring the message back now
        queue_name = sub.config.with_suffix(".state.queue").read_text().strip()
        with Broker(broker.url("admin"), credentials=broker.credentials) as admin:
            admin.connect()
            admin.channel.queue_delete(queue_name)
        again = subscriber_factory("b", site, **keys)
        wait_for(lambda: (site.mnt / "r.bin").exists(), timeout=60, what="retried file")
        assert (site.mnt / "r.bin").read_bytes() == (root / "r.bin").read_bytes()
        assert "attempt 2 of 5" in again.text() and "201 r.bin: stored" in again.text()
        assert source.fails == 0


def test_broker_restart_and_unmounted_archive_lose_nothing(
    broker, tag, make_site, subscriber_factory, upstream, poster_factory, tmp_path
) -> None:
    site = make_site("siteB")
    root, http = upstream()
    base = http.url.rstrip("/")
    src = poster_factory("alice", f"xs_alice_{tag}")  # declares the exchange
    sub = subscriber_factory("b", site, exchange=f"xs_alice_{tag}", report_exchange="")
    for i in range(40):
        (root / f"f{i:02d}.txt").write_bytes(f"file {i}\n".encode() * 100)
    for i in range(20):
        src.file(root, base, f"f{i:02d}.txt")
    wait_for(lambda: len(list(site.mnt.glob("f*.txt"))) >= 5, timeout=60, what="some stored")
    broker.stop()
    broker.start()
    src = poster_factory("alice", f"xs_alice_{tag}")  # a new connection after the restart
    for i in range(20, 40):
        src.file(root, base, f"f{i:02d}.txt")
    want = {f"f{i:02d}.txt" for i in range(40)}
    wait_for(
        lambda: {p.name for p in site.mnt.glob("f*.txt")} == want,
        timeout=120,
        what="all 40 files after the broker restart",
    )
    assert all((site.mnt / n).read_bytes() == (root / n).read_bytes() for n in want)
    assert sub.alive()

    # the archive goes away: messages wait (unacknowledged) until it is mounted again
    site.mount.umount("--no-wait")
    (root / "while-unmounted.txt").write_bytes(b"held\n")
    src.file(root, base, "while-unmounted.txt")
    sub.wait_log("holding messages until it is back")
    assert not (site.mnt / "while-unmounted.txt").exists()  # nothing in the bare directory
    site.mount = mount(
        site.archive, site.mnt, env={"REELFS_CREDENTIALS": sub.env["REELFS_CREDENTIALS"]}
    )
    wait_for(lambda: (site.mnt / "while-unmounted.txt").exists(), timeout=60, what="held file")
    assert (site.mnt / "while-unmounted.txt").read_bytes() == b"held\n"
    assert sub.alive()

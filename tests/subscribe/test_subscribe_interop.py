"""Interoperability with stock Sarracenia (metpx-sr3 3.3.1) on the private RabbitMQ.

(a) `reelfs subscribe` stores, byte for byte, what `sr3 post` and `sr3 watch` announce
    (their `file:` baseUrls, renames and removals), and what it stores goes to tape;
(b) `sr3 subscribe` mirrors, byte for byte, what a reelfs mount posts and serves.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backend.replication.broker import Broker
from tests.archive import file_of, wait_state
from tests.replication.test_sr3_interop import Sr3
from tests.waiting import wait_for

pytestmark = [pytest.mark.fuse, pytest.mark.slow]


def _declare(broker, exchange: str) -> None:
    with Broker(broker.url("admin"), credentials=broker.credentials) as admin:
        admin.declare_exchange(exchange)


def _same(src: Path, dst: Path, rels: list[str]) -> bool:
    return all(
        (dst / r).is_file() and (dst / r).read_bytes() == (src / r).read_bytes() for r in rels
    )


def test_reelfs_subscribe_stores_what_sr3_post_and_watch_announce(
    broker,
    tag,
    sr3: Sr3,
    make_site,
    subscriber_factory,
    tmp_path,
) -> None:
    exchange = f"xs_alice_{tag}"
    _declare(broker, exchange)
    site = make_site("siteB")
    posted = tmp_path / "posted"
    watched = tmp_path / "watched"
    (posted / "sub").mkdir(parents=True)
    watched.mkdir()
    sub = subscriber_factory(
        "b",
        site,
        exchange=exchange,
        directory="/from-sr3",
        file_url_roots=[str(posted), str(watched)],
        report_exchange="",
    )
    files = {
        "sub/p.txt": b"posted by sr3\n",
        "q.bin": file_of(700_000, 2),
        "sub/caf\u00e9 #1.txt": b"odd name\n",
    }
    for rel, data in files.items():
        (posted / rel).write_bytes(data)
    sr3.config(
        "post",
        "p",
        [
            f"post_broker {broker.url('alice')}",
            f"post_exchange {exchange}",
            f"post_baseUrl file:{posted}",
            f"post_baseDir {posted}",
            *[f"path {posted / rel}" for rel in files],
        ],
    )
    done = sr3.run("foreground", "post/p")
    assert done.returncode == 0, done.stdout + done.stderr
    root = site.mnt / "from-sr3"
    wait_for(lambda: _same(posted, root, list(files)), timeout=60, what="sr3 post stored")
    mtimes = [os.stat(d / "q.bin").st_mtime_ns for d in (root, posted)]
    assert abs(mtimes[0] - mtimes[1]) < 1_000_000  # sr3 prints mtime through a float

    sr3.config(
        "watch",
        "w",
        [
            f"post_broker {broker.url('alice')}",
            f"post_exchange {exchange}",
            f"post_baseUrl file:{watched}",
            f"post_baseDir {watched}",
            f"path {watched}",
            "fileAgeMin 1",
            "sleep 1",  # sr3 watch handles events once per `sleep` (default 5 s)
        ],
    )
    log = sr3.start("foreground", "watch/w")
    wait_for(
        lambda: "now active on" in log.read_text(errors="replace"),
        timeout=60,
        what="sr3 watch active",
    )
    (watched / "w.txt").write_bytes(b"watched file\n")
    wait_for(lambda: _same(watched, root, ["w.txt"]), timeout=60, what="watched file")
    (watched / "dir").mkdir()
    # sr3 watch announces a rename as one (rename) message only if it already announced
    # the target directory; in the same event cycle it sends a removal and a new file
    wait_for(lambda: (root / "dir").is_dir(), timeout=60, what="watched mkdir")
    os.rename(watched / "w.txt", watched / "dir" / "w2.txt")
    wait_for(
        lambda: _same(watched, root, ["dir/w2.txt"]) and not (root / "w.txt").exists(),
        timeout=60,
        what="sr3 rename applied",
    )
    assert "201 dir/w2.txt: renamed" in sub.text()  # moved in place, not fetched again
    (watched / "dir" / "w2.txt").unlink()
    wait_for(lambda: not (root / "dir" / "w2.txt").exists(), timeout=60, what="sr3 removal")
    sr3.stop_all()

    # what was stored is an archive file like any other: it goes to tape
    site.mount.flush(root)
    for rel in files:
        wait_state(site.mount, root / rel, "archived")
    assert _same(posted, root, list(files))


def test_sr3_subscribe_mirrors_what_a_reelfs_mount_posts(
    broker,
    tag,
    sr3: Sr3,
    make_site,
    tmp_path,
) -> None:
    exchange = f"xs_alice_{tag}"
    _declare(broker, exchange)
    site = make_site("siteA", post_user="alice", exchange=exchange, serve_http=True)
    rx = tmp_path / "rx"
    rx.mkdir()
    sr3.config(
        "subscribe",
        "rx",
        [
            f"broker {broker.url('alice')}",
            f"exchange {exchange}",
            "topicPrefix v03",
            "subtopic #",
            f"directory {rx}",
            "mirror on",
            "accept .*",
        ],
    )
    declared = sr3.run("declare", "subscribe/rx")
    assert declared.returncode == 0, declared.stdout + declared.stderr
    sr3.start("foreground", "subscribe/rx")
    raw = site.mnt / "raw"
    raw.mkdir()
    files = {
        "raw/a.txt": b"alpha\n",
        "raw/big.bin": file_of(3_000_000, 9),
        "raw/with space.txt": b"spaces\n",
    }
    for rel, data in files.items():
        (site.mnt / rel).write_bytes(data)
    wait_for(lambda: _same(site.mnt, rx, list(files)), timeout=90, what="sr3 mirror")
    os.rename(raw / "a.txt", raw / "b.txt")
    (raw / "big.bin").unlink()
    wait_for(
        lambda: (
            _same(site.mnt, rx, ["raw/b.txt"])
            and not (rx / "raw" / "a.txt").exists()
            and not (rx / "raw" / "big.bin").exists()
        ),
        timeout=90,
        what="sr3 applied the rename and the removal",
    )

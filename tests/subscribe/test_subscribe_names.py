"""Names that are any bytes but `/` replicate: archive A's mount posts them (relPath as
stock sr3 3.3.1 writes it, a byte that is not UTF-8 as `\\udcNN` in the JSON; topics with
`%XX`), its daemon serves them, and `reelfs subscribe` stores them in archive B under the
very same bytes, renames included."""

from __future__ import annotations

import json
import os
import time

import pytest

from backend.replication.broker import Consumer
from backend.replication.watch_config import load_config
from backend.replication.watch_service import WatchService
from tests.faults.test_names import BYTES, data_of, name_of, read_all, write_all
from tests.waiting import wait_for

pytestmark = pytest.mark.fuse

RENAMED = (0x01, 0x0A, 0x25, 0x80, 0xE9, 0xFF)


def raw_until(consumer: Consumer, want: set[str], timeout: float = 90) -> dict[str, tuple]:
    """(routing key, raw body) of the messages received by relPath, until every relPath
    in `want` came; fails after `timeout` seconds."""
    got: dict[str, tuple] = {}
    deadline = time.monotonic() + timeout
    while not want <= set(got):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; missing {sorted(want - set(got))[:5]}, got {sorted(got)[:9]}"
        d = consumer.get(min(left, 1.0))
        if d is not None:
            d.ack()
            got[d.message()["relPath"]] = (d.routing_key, d.body)
    return got


def test_every_byte_is_posted_and_subscribed(
    tag, make_site, subscriber_factory, queue_factory
) -> None:
    xa, xb = f"xs_alice_{tag}", f"xb_{tag}"
    a = make_site("siteA", post_user="alice", exchange=xa, serve_http=True)
    b = make_site("siteB", post_user="admin", exchange=xb)
    on_a = queue_factory("admin", xa)
    subscriber_factory("b", b, exchange=[xa], parallel=4)

    on_b = queue_factory("admin", xb)
    write_all(os.fsencode(a.mnt) + b"/names")
    os.makedirs(os.fsencode(a.mnt) + b"/sub\xe9")
    with open(os.fsencode(a.mnt) + b"/sub\xe9/f\x1b", "wb") as f:
        f.write(b"in a directory whose name is not UTF-8\n")
    want = {"names/" + os.fsdecode(name_of(x)) for x in BYTES} | {"sub\udce9/f\x1b"}
    bodies = raw_until(on_a, want)
    # the body as sr3 3.3.1 writes it: JSON, a byte that is not UTF-8 as \udcNN
    topic, body = bodies["names/" + os.fsdecode(name_of(0xE9))]
    assert b'"relPath": "names/n\\udce9\\udcff"' in body and topic == "v03.names"
    topic, body = bodies["sub\udce9/f\x1b"]
    assert b'"relPath": "sub\\udce9/f\\u001b"' in body
    assert topic == "v03.sub%E9"  # a routing key is UTF-8: the byte as %XX

    d = os.fsencode(b.mnt) + b"/names"

    def arrived() -> bool:
        try:
            return len(os.listdir(d)) == len(BYTES) and all(
                os.path.getsize(d + b"/" + name_of(x)) == len(data_of(x)) for x in BYTES
            )
        except OSError:
            return False

    wait_for(arrived, timeout=120, what="every name stored at B")
    read_all(d)
    with open(os.fsencode(b.mnt) + b"/sub\xe9/f\x1b", "rb") as f:
        assert f.read() == b"in a directory whose name is not UTF-8\n"
    # and archive B announces them again, under the same names
    assert set(raw_until(on_b, want)) >= want

    # renamed at A: the rename arrives as one, under the new bytes
    src = os.fsencode(a.mnt) + b"/names"
    for x in RENAMED:
        os.rename(src + b"/" + name_of(x), src + b"/" + name_of(x, b"r"))
    wait_for(
        lambda: all(os.path.exists(d + b"/" + name_of(x, b"r")) for x in RENAMED),
        timeout=90,
        what="renames applied at B",
    )
    for x in RENAMED:
        with open(d + b"/" + name_of(x, b"r"), "rb") as f:
            assert f.read() == data_of(x)
        assert not os.path.exists(d + b"/" + name_of(x))


def test_watch_announces_names_that_are_not_utf8(broker, tag, queue_factory, tmp_path) -> None:
    """`reelfs watch` on an ordinary directory: files and a directory named with bytes
    that are not UTF-8 are announced, and a rename of that directory moves what it
    announced below it (the watcher's state DB matches them as bytes)."""
    exchange = f"xs_alice_{tag}"
    consumer = queue_factory("admin", exchange)
    d = tmp_path / "data"
    os.makedirs(os.fsencode(d) + b"/s\xff")
    cfg_path = tmp_path / "watch.toml"
    cfg_path.write_text(
        f'broker = "{broker.url("alice")}"\nexchange = "{exchange}"\n'
        'post_base_url = "http://127.0.0.1:9/data"\nsettle = 0.3\n'
    )
    svc = WatchService(load_config(cfg_path, d), broker.credentials)
    svc.start()
    try:
        raw = os.fsencode(d)
        with open(raw + b"/s\xff/f\xe9\x01", "wb") as f:
            f.write(b"watched\n")
        got = raw_until(consumer, {"s\udcff/f\udce9\x01"})
        topic, body = got["s\udcff/f\udce9\x01"]
        assert topic == "v03.s%FF" and b'"s\\udcff/f\\udce9\\u0001"' in body
        os.rename(raw + b"/s\xff", raw + b"/t\xfe")
        # one message for the directory, as sr3 announces a renamed directory
        moved = json.loads(raw_until(consumer, {"t\udcfe"})["t\udcfe"][1])
        assert moved["fileOp"]["rename"].endswith("/s\udcff")
        # the file below it is known at its new path: its removal is announced there
        os.unlink(raw + b"/t\xfe/f\xe9\x01")
        gone = json.loads(raw_until(consumer, {"t\udcfe/f\udce9\x01"})["t\udcfe/f\udce9\x01"][1])
        assert gone["fileOp"] == {"remove": ""}
    finally:
        svc.stop()


@pytest.mark.slow
def test_stock_sr3_posts_such_a_name_as_we_do(broker, tag, sr3, queue_factory, tmp_path) -> None:
    """What stock `sr3 post` (3.3.1) publishes for a file whose name is not UTF-8 is what
    reelfs posts and reads: relPath with the byte as `\\udcNN`, parsed back to the same
    bytes by our decoder."""
    exchange = f"xs_alice_{tag}"
    consumer = queue_factory("admin", exchange)
    src = tmp_path / "posted"
    src.mkdir()
    with open(os.fsencode(src) + b"/caf\xe9.txt", "wb") as f:
        f.write(b"posted by sr3\n")
    sr3.config(
        "post",
        "p",
        [
            f"post_broker {broker.url('alice')}",
            f"post_exchange {exchange}",
            "post_baseUrl http://127.0.0.1:9/posted",
            f"post_baseDir {src}",
            f"path {src}",
        ],
    )
    posted = sr3.run("foreground", "post/p")
    assert posted.returncode == 0, posted.stdout + posted.stderr
    got = raw_until(consumer, {"caf\udce9.txt"}, timeout=60)
    topic, body = got["caf\udce9.txt"]
    assert b'"relPath": "caf\\udce9.txt"' in body and topic == "v03"

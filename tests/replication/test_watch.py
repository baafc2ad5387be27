"""`reelfs watch`: configuration, the event engine (with a controlled clock), and the
running service posting through the real broker."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest

from backend.catalog.outbox import OUTBOX_TABLE, open_state_db
from backend.replication import message as m
from backend.replication.watch import Watcher
from backend.replication.watch_config import ConfigError, load_config
from backend.replication.watch_service import WatchService
from tests.waiting import wait_for

from .conftest import REPO


def write_config(path, broker_url: str, **keys) -> str:
    lines = [f'broker = "{broker_url}"']
    for k, v in keys.items():
        lines.append(f"{k} = {json.dumps(v)}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha512(data).digest()).decode()


# -- configuration --------------------------------------------------------------------


def test_config_defaults_and_sr3_aliases(tmp_path) -> None:
    d = tmp_path / "data"
    d.mkdir()
    cfg_file = tmp_path / "w.toml"
    cfg_file.write_text(
        textwrap.dedent(
            """
            broker = "amqp://alice@127.0.0.1:5672/"
            post_baseUrl = "http://127.0.0.1:8080/x"
            reject = '.*\\.log$'
            accept = ['.*\\.txt$', '.*\\.dat$']
            acceptUnmatched = false
            fileAgeMin = 2.5
            to = "B"
            cluster = "A"

            [[filter]]
            reject = '.*'
            """
        )
    )
    cfg = load_config(cfg_file, d)
    assert cfg.exchange == "xs_alice" and cfg.source == "alice"
    assert cfg.post_base_dir == d.resolve()
    assert cfg.state_db == tmp_path / "w.state.db"
    assert cfg.settle == 2.5 and cfg.to_clusters == "B" and cfg.cluster == "A"
    assert [repr(f) for f in cfg.filters] == [
        "reject .*\\.log$",
        "accept .*\\.txt$",
        "accept .*\\.dat$",
        "reject .*",
    ]
    assert cfg.accepts("http://127.0.0.1:8080/x/a.txt")
    assert not cfg.accepts("http://127.0.0.1:8080/x/a.txt.log")
    assert not cfg.accepts("http://127.0.0.1:8080/x/a.bin")
    assert cfg.ignored_name("a/.hidden/f") and cfg.ignored_name("f.part")
    assert not cfg.ignored_name("a/f.txt")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('broker = "amqp://alice:pw@h/"', "credentials file"),
        ('broker = "amqp://alice@h/"\nbogus = 1', "unknown key 'bogus'"),
        ('broker = "amqp://alice@h/"\naccept = "("', "bad regex"),
        ('broker = "amqp://alice@h/"\nidentity = "crc"', "identity"),
        ('broker = "amqp://alice@h/"\nidentity = "arbitrary"', "identity_arbitrary_value"),
        ('broker = "amqp://alice@h/"\nsettle = -1', "settle"),
        ('broker = "amqp://alice@h/"\npost_base_dir = "/nonexistent/x"', "must contain"),
        ("exchange = 'x'", "broker is required"),
        ('broker = "amqp://alice@h/"\nblock_size = "1MiB"', "block_size: expected a positive"),
        ('broker = "amqp://alice@h/"\nhttp_auth = "no"', "http_auth: expected true or false"),
        ('broker = "amqp://alice@h/"\nidentity = "cod"', "identity: cod needs an algorithm"),
        ('broker = "amqp://alice@h/"\nignore_suffixes = [1]', "ignore_suffixes: expected a str"),
        ("broker = ", "Invalid value"),
    ],
)
def test_config_errors(tmp_path, text: str, reason: str) -> None:
    (tmp_path / "w.toml").write_text(text + "\n")
    with pytest.raises(ConfigError, match=reason):
        load_config(tmp_path / "w.toml", tmp_path)


# -- the engine with a controlled clock -----------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def outbox_messages(conn) -> list[dict]:
    rows = conn.execute(f"SELECT topic, body FROM {OUTBOX_TABLE} ORDER BY id").fetchall()
    return [m.decode(body) for _, body in rows]


@pytest.fixture
def engine(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    cfg = load_config(
        write_config(
            tmp_path / "w.toml",
            "amqp://alice@127.0.0.1:5672/",
            post_base_url="http://127.0.0.1:9/srv",
            settle=1.0,
            repost_interval=2.0,
            block_size=4096,
        ),
        d,
    )
    conn = open_state_db(cfg.state_db)
    clock = Clock()
    w = Watcher(cfg, conn, clock=clock)
    yield w, clock, d, conn
    conn.close()


def test_settle_waits_for_quiet_file(engine) -> None:
    w, clock, d, conn = engine
    f = d / "f.txt"
    f.write_bytes(b"part one")
    w.touch("f.txt")
    w.tick()
    clock.now += 0.6
    with open(f, "ab") as fh:
        fh.write(b" and two")
    w.tick()
    clock.now += 0.6  # 1.2 s after the first write, 0.6 s after the last
    w.tick()
    assert outbox_messages(conn) == []
    clock.now += 0.5
    w.tick()
    (msg,) = outbox_messages(conn)
    assert msg["relPath"] == "f.txt" and msg["size"] == 16
    assert msg["identity"] == {"method": "sha512", "value": sha(b"part one and two")}
    assert msg["baseUrl"] == "http://127.0.0.1:9/srv" and msg["source"] == "alice"
    # no change since: nothing more
    w.touch("f.txt")
    clock.now += 5
    w.tick()
    assert len(outbox_messages(conn)) == 1


def test_growing_file_is_reposted_in_changed_blocks(engine) -> None:
    w, clock, d, conn = engine
    f = d / "capture.bin"
    data = os.urandom(10_000)
    f.write_bytes(data)
    w.touch("capture.bin")
    w.tick()
    for _ in range(4):  # keeps growing: never quiet for the settle time
        clock.now += 0.6
        more = os.urandom(1000)
        data += more
        with open(f, "ab") as fh:
            fh.write(more)
        w.tick()
    # 2.4 s of growth: one re-post, in blocks, of the 14000 bytes seen then.
    first = outbox_messages(conn)
    assert [x["blocks"]["number"] for x in first] == [0, 1, 2, 3]
    for x in first:
        b = x["blocks"]
        assert b["method"] == "inplace" and b["size"] == 4096
        assert set(b["manifest"]) == {0, 1, 2, 3}
        off = b["number"] * 4096
        chunk = data[off : off + 4096]
        assert x["size"] == len(chunk) == b["manifest"][b["number"]]["size"]
        assert x["identity"]["value"] == sha(chunk)
        assert "fileOp" not in x
    for _ in range(4):  # appends touch only the last block
        clock.now += 0.6
        more = os.urandom(10)
        data += more
        with open(f, "ab") as fh:
            fh.write(more)
        w.tick()
    second = outbox_messages(conn)[len(first) :]
    assert [x["blocks"]["number"] for x in second] == [3]
    # re-posted 2.4 s after the first re-post, when the file had 14040 bytes
    assert second[0]["size"] == 14040 - 3 * 4096
    assert second[0]["identity"]["value"] == sha(data[3 * 4096 : 14040])
    clock.now += 0.6
    with open(f, "ab") as fh:
        fh.write(b"tail")
    data += b"tail"
    w.tick()
    clock.now += 1.5  # quiet now: the final post announces what changed since the last one
    w.tick()
    final = outbox_messages(conn)[len(first) + len(second) :]
    assert [x["blocks"]["number"] for x in final] == [3]
    assert final[0]["identity"]["value"] == sha(data[3 * 4096 :])
    assert final[0]["blocks"]["manifest"][3]["size"] == len(data) - 3 * 4096


def test_only_announced_entries_are_removed(engine) -> None:
    w, clock, d, conn = engine
    (d / "kept.txt").write_text("x")
    w.scan()
    clock.now += 2
    w.tick()
    (d / "kept.txt").unlink()
    (d / "never.txt").write_text("y")
    w.touch("never.txt")
    (d / "never.txt").unlink()
    from watchdog.events import FileDeletedEvent

    w.handle(FileDeletedEvent(str(d / "kept.txt")))
    w.handle(FileDeletedEvent(str(d / "never.txt")))
    clock.now += 2
    w.tick()
    msgs = outbox_messages(conn)
    assert [(x["relPath"], x.get("fileOp")) for x in msgs] == [
        ("kept.txt", None),
        ("kept.txt", {"remove": ""}),
    ]


# -- the running service through the broker -------------------------------------------


@pytest.fixture
def service_factory(broker, tmp_path):
    started = []

    def make(directory, **keys):
        cfg_path = write_config(
            tmp_path / "watch.toml",
            broker.url("alice"),
            **{"settle": 0.3, "post_base_url": "http://127.0.0.1:9/data", **keys},
        )
        cfg = load_config(cfg_path, directory)
        svc = WatchService(cfg, broker.credentials)
        svc.publisher.broker.backoff.maximum = 1.0
        started.append(svc)
        svc.start()
        return svc

    yield make
    for svc in started:
        if not svc.stop_event.is_set():
            svc.stop()


def next_msg(consumer, timeout: float = 20.0) -> dict:
    d = consumer.get(timeout)
    assert d is not None, "no message arrived"
    d.ack()
    return d.message()


@pytest.mark.slow
def test_watch_posts_files_dirs_links_renames_removals(
    broker, names, consumer_factory, service_factory, tmp_path
) -> None:
    consumer = consumer_factory(names["exchange"], names["queue"])
    d = tmp_path / "data"
    d.mkdir()
    service_factory(d, exchange=names["exchange"])

    (d / "a.txt").write_bytes(b"alpha\n")
    msg = next_msg(consumer)
    assert (msg["relPath"], msg["size"], msg["mode"]) == ("a.txt", 6, "644")
    assert msg["identity"]["value"] == sha(b"alpha\n")
    assert m.parse_time(msg["mtime"]) == os.stat(d / "a.txt").st_mtime_ns

    (d / "sub").mkdir()
    msg = next_msg(consumer)
    assert msg["relPath"] == "sub" and msg["fileOp"] == {"directory": ""}
    assert msg["contentType"] == "text/directory"

    (d / "sub" / "b.txt").write_bytes(b"beta\n")
    d_msg = consumer.get(20)
    assert d_msg.routing_key == "v03.sub"
    d_msg.ack()
    assert d_msg.message()["relPath"] == "sub/b.txt"

    # write under a temporary name, then rename: one post, at once, for the final name
    (d / "sub" / "c.tmp").write_bytes(b"gamma\n")
    os.rename(d / "sub" / "c.tmp", d / "sub" / "c.dat")
    msg = next_msg(consumer)
    assert msg["relPath"] == "sub/c.dat" and "fileOp" not in msg

    os.rename(d / "a.txt", d / "sub" / "a2.txt")
    msg = next_msg(consumer)
    assert msg["relPath"] == "sub/a2.txt"
    assert msg["fileOp"] == {"rename": str((d / "a.txt").resolve())}
    assert msg["identity"]["value"] == sha(b"alpha\n")
    assert m.rename_old_relpath(msg, str(d.resolve())) == "a.txt"

    os.symlink("b.txt", d / "sub" / "link")
    msg = next_msg(consumer)
    assert msg["relPath"] == "sub/link" and msg["fileOp"] == {"link": "b.txt"}
    assert "identity" not in msg

    (d / "sub" / "b.txt").unlink()
    msg = next_msg(consumer)
    assert msg["relPath"] == "sub/b.txt" and msg["fileOp"] == {"remove": ""}
    assert "identity" not in msg and "size" not in msg

    (d / "empty").mkdir()
    assert next_msg(consumer)["fileOp"] == {"directory": ""}
    (d / "empty").rmdir()
    msg = next_msg(consumer)
    assert msg["relPath"] == "empty" and msg["fileOp"] == {"remove": "", "directory": ""}

    os.rename(d / "sub", d / "moved")
    msg = next_msg(consumer)
    assert msg["relPath"] == "moved"
    assert msg["fileOp"] == {"rename": str((d / "sub").resolve()), "directory": ""}

    # ignored names are never posted
    (d / ".hidden").write_text("h")
    (d / "notes~").write_text("n")
    (d / "big.part").write_text("p")
    (d / "last.txt").write_text("z")
    assert next_msg(consumer)["relPath"] == "last.txt"
    assert consumer.get(1.0) is None


@pytest.mark.slow
def test_watch_filters_and_catch_up_after_restart(
    broker, names, consumer_factory, service_factory, tmp_path
) -> None:
    consumer = consumer_factory(names["exchange"], names["queue"])
    d = tmp_path / "data"
    d.mkdir()
    (d / "before.txt").write_text("existed before the first start")
    svc = service_factory(
        d,
        exchange=names["exchange"],
        reject=[".*\\.log$"],
        accept=[".*\\.txt$"],
        accept_unmatched=False,
    )
    assert next_msg(consumer)["relPath"] == "before.txt"
    (d / "x.log").write_text("no")
    (d / "y.bin").write_text("no")
    (d / "z.txt").write_text("yes")
    assert next_msg(consumer)["relPath"] == "z.txt"
    wait_for(svc.idle, timeout=10, what="watch idle")
    svc.stop()

    # changes while stopped are announced at the next start
    (d / "z.txt").unlink()
    (d / "new.txt").write_text("new")
    service_factory(d, exchange=names["exchange"], accept=[".*\\.txt$"], accept_unmatched=False)
    got = {
        (x["relPath"], json.dumps(x.get("fileOp")))
        for x in (next_msg(consumer), next_msg(consumer))
    }
    assert got == {("z.txt", json.dumps({"remove": ""})), ("new.txt", "null")}
    assert consumer.get(1.0) is None


@pytest.mark.slow
def test_reelfs_watch_once_and_credentials_check(broker, names, consumer_factory, tmp_path) -> None:
    consumer = consumer_factory(names["exchange"], names["queue"])
    d = tmp_path / "data"
    (d / "x").mkdir(parents=True)
    (d / "x" / "f1").write_bytes(b"one")
    cfg = write_config(
        tmp_path / "w.toml",
        broker.url("alice"),
        exchange=names["exchange"],
        settle=0.0,
        credentials=str(broker.credentials_path),
    )
    cmd = [sys.executable, "-m", "mountfs.cli", "watch", str(d), "--config", cfg, "--once"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = {next_msg(consumer)["relPath"], next_msg(consumer)["relPath"]}
    assert got == {"x", "x/f1"}

    loose = tmp_path / "loose.conf"
    loose.write_text(broker.credentials_path.read_text())
    loose.chmod(0o644)
    cfg = write_config(tmp_path / "w2.toml", broker.url("alice"), credentials=str(loose))
    proc = subprocess.run(
        [*cmd[:6], cfg, "--once"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert f"chmod 600 {loose}" in proc.stderr
    assert proc.stderr.count("\n") == 1  # one line on stderr

"""An archive announces the changes on its mount as v03 messages, and serves their data."""

from __future__ import annotations

import base64
import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.admin.control import call
from tests.archive import Mount, file_of, init_archive, mount, reelfs
from tests.ports import free_port
from tests.replication.conftest import BrokerHandle, collect
from tests.waiting import wait_for


def sha512(data: bytes) -> str:
    return base64.b64encode(hashlib.sha512(data).digest()).decode()


@pytest.fixture
def posting(
    tmp_path: Path, broker: BrokerHandle, names: dict[str, str], consumer_factory
) -> Iterator[tuple[Mount, object, str]]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/arch"
    archive = init_archive(
        tmp_path / "a",
        options={
            "post.broker": broker.url("alice"),
            "post.exchange": names["exchange"],
            "post.base_url": base_url,
            "post.cluster": "siteA",
            "post.to_clusters": "siteC",
            "post.blocksize": "1MiB",
            "serve.listen": f"127.0.0.1:{port}",
            "serve.url_prefix": "/arch",
            "serve.recall_wait": "30s",
        },
    )
    consumer = consumer_factory(names["exchange"], names["queue"])
    env = {"REELFS_CREDENTIALS": str(broker.credentials_path)}
    m = mount(archive, tmp_path / "mnt", env=env)
    try:
        yield m, consumer, base_url
    finally:
        m.stop()


def bodies(consumer, n: int) -> list[dict]:
    got = collect(consumer, n, timeout=30)
    out = []
    for d in got:
        out.append(d.message())
    return out


def test_every_change_on_the_mount_is_announced(posting) -> None:
    m, consumer, base_url = posting
    data = b"hello reelfs\n"
    raw = m.mnt / "raw"
    # the poster announces the state it finds, so one change at a time, as a user works
    steps = [
        (lambda: raw.mkdir(), "raw", {"directory": ""}),
        (lambda: (raw / "a.txt").write_bytes(data), "raw/a.txt", {}),
        (lambda: os.symlink("a.txt", raw / "ln"), "raw/ln", {"link": "a.txt"}),
        (
            lambda: os.link(raw / "a.txt", raw / "hard.txt"),
            "raw/hard.txt",
            {"hlink": "/arch/raw/a.txt"},
        ),
        (
            lambda: os.rename(raw / "a.txt", raw / "b.txt"),
            "raw/b.txt",
            {"rename": "/arch/raw/a.txt"},
        ),
        (lambda: os.unlink(raw / "hard.txt"), "raw/hard.txt", {"remove": ""}),
        (lambda: (raw / "touched").touch(), "raw/touched", {}),  # new and empty
        (lambda: (m.mnt / "empty").mkdir(), "empty", {"directory": ""}),
        (lambda: os.rmdir(m.mnt / "empty"), "empty", {"remove": "", "directory": ""}),
    ]
    msgs = []
    for action, rel, op in steps:
        action()
        (msg,) = bodies(consumer, 1)
        assert (msg["relPath"], msg.get("fileOp", {})) == (rel, op)
        msgs.append(msg)
    f = msgs[1]
    assert f["identity"] == {"method": "sha512", "value": sha512(data)}
    assert f["size"] == len(data) and f["mode"] == "644"
    assert f["baseUrl"] == base_url and f["source"] == "alice"
    assert f["from_cluster"] == "siteA" and f["to_clusters"] == "siteC"
    assert f["reelfs_hops"] == ["siteA"]
    assert msgs[4]["identity"] == f["identity"]  # a rename carries the file's metadata
    assert "version" not in f and "conformsTo" not in f
    assert msgs[0]["contentType"] == "text/directory" and "identity" not in msgs[5]
    assert msgs[6]["size"] == 0 and msgs[6]["identity"]["value"] == sha512(b"")
    # the data is where baseUrl + relPath says
    with urllib.request.urlopen(f"{base_url}/raw/b.txt", timeout=30) as r:
        assert r.read() == data


def test_large_files_are_announced_in_parts(posting) -> None:
    m, consumer, base_url = posting
    data = file_of(2 * 1024 * 1024 + 100, 4)
    (m.mnt / "big.bin").write_bytes(data)
    msgs = bodies(consumer, 3)
    assert [x["blocks"]["number"] for x in msgs] == [0, 1, 2]
    sizes = [1024 * 1024, 1024 * 1024, 100]
    for x, size in zip(msgs, sizes, strict=True):
        n = x["blocks"]["number"]
        part = data[n * 1024 * 1024 : n * 1024 * 1024 + size]
        assert x["size"] == size and x["identity"]["value"] == sha512(part)
        assert x["blocks"]["method"] == "inplace" and len(x["blocks"]["manifest"]) == 3
        req = urllib.request.Request(
            f"{base_url}/big.bin",
            headers={"Range": f"bytes={n * 1024 * 1024}-{n * 1024 * 1024 + size - 1}"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 206 and r.read() == part


def test_a_subscribers_store_keeps_the_upstream_routing(posting) -> None:
    m, consumer, _ = posting
    sock = m.archive / "run" / "reelfsd.sock"
    origin = {
        "pubTime": "20260101T000000.5",
        "source": "carol",
        "from_cluster": "siteX",
        "to_clusters": "siteZ",
        "reelfs_hops": ["siteX"],
    }
    tmp = m.mnt / ".reelfs-in.copy.txt.1234"
    tmp.write_bytes(b"from upstream")
    call(sock, "expect_origin", path="/copy.txt", origin=origin)
    os.rename(tmp, m.mnt / "copy.txt")
    call(sock, "expect_origin", path="/final.txt", origin={**origin, "final": True})
    (m.mnt / "final.txt").write_bytes(b"stays here")
    (m.mnt / "local.txt").write_bytes(b"mine")
    msgs = bodies(consumer, 2)
    assert [x["relPath"] for x in msgs] == ["copy.txt", "local.txt"]
    c = msgs[0]
    assert "fileOp" not in c  # a download put in place is a new file downstream
    assert (c["pubTime"], c["source"], c["from_cluster"], c["to_clusters"]) == (
        "20260101T000000.5",
        "carol",
        "siteX",
        "siteZ",
    )
    assert c["reelfs_hops"] == ["siteX", "siteA"]
    assert msgs[1]["source"] == "alice"


def test_a_file_on_tape_only_is_recalled_for_http(posting) -> None:
    m, _, base_url = posting
    data = file_of(300_000, 9)
    (m.mnt / "t.dat").write_bytes(data)
    m.flush(m.mnt / "t.dat")
    m.release(m.mnt / "t.dat")
    assert m.state(m.mnt / "t.dat") == "released"
    with urllib.request.urlopen(f"{base_url}/t.dat", timeout=60) as r:
        assert r.read() == data
    assert m.state(m.mnt / "t.dat") == "archived"
    for bad in ("../reelfs.toml", "%2e%2e/catalog.db", "raw/../../x"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{base_url}/{bad}", timeout=30)
        assert e.value.code in (400, 404)
    os.symlink("/etc/passwd", m.mnt / "out")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{base_url}/out", timeout=30)
    assert e.value.code == 404


def test_messages_wait_in_the_outbox_while_the_broker_is_down(
    posting, broker: BrokerHandle
) -> None:
    m, consumer, _ = posting
    broker.stop()
    try:
        for i in range(1000):
            (m.mnt / f"f{i:04d}").write_bytes(b"%d" % i)
        wait_for(lambda: m.json("status") is not None, timeout=30)
    finally:
        broker.start()
    wait_for(lambda: broker.reachable(), timeout=120, what="broker back")
    seen: set[str] = set()

    def drained() -> bool:
        for d in collect(consumer, 1000, timeout=5):
            seen.add(d.message()["relPath"])
        return len(seen) >= 1000

    wait_for(drained, timeout=180, what="all 1000 messages")
    assert seen == {f"f{i:04d}" for i in range(1000)}


def test_credentials_readable_by_others_stop_the_mount(
    tmp_path: Path, broker: BrokerHandle
) -> None:
    creds = tmp_path / "credentials.conf"
    creds.write_text(broker.credentials_path.read_text())
    creds.chmod(0o644)
    archive = init_archive(
        tmp_path / "a",
        options={"post.broker": broker.url("alice"), "post.base_url": "http://127.0.0.1:1/"},
    )
    (tmp_path / "mnt").mkdir()
    p = reelfs(
        "mount",
        str(archive),
        str(tmp_path / "mnt"),
        check=False,
        env={"REELFS_CREDENTIALS": str(creds)},
    )
    assert p.returncode == 1
    assert "chmod 600" in p.stderr.decode() and str(creds) in p.stderr.decode()
    assert not os.path.ismount(tmp_path / "mnt")


def test_bad_post_configuration_is_refused(tmp_path: Path) -> None:
    archive = init_archive(tmp_path / "a", options={"post.broker": "amqp://x@h/"})
    (tmp_path / "mnt").mkdir()
    p = reelfs("mount", str(archive), str(tmp_path / "mnt"), check=False)
    assert p.returncode == 2 and "[post] base_url" in p.stderr.decode()

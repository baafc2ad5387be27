"""`reelfs subscribe` into a mounted archive: files and file operations arrive, the archive
re-posts them with the upstream routing, reports go back to the source, `on_file` runs
once per stored file, and parts of a large file are fetched in parallel and reassembled."""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import pytest

from backend.replication import message as m
from backend.replication.identity import block_identities
from tests.archive import file_of, reelfs
from tests.waiting import wait_for

from .conftest import drain, no_temp_files, receive_until, write_toml

pytestmark = pytest.mark.fuse

ON_FILE = [sys.executable, "-c", "import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n')"]


def same(a: Path, b: Path) -> bool:
    return b.is_file() and a.read_bytes() == b.read_bytes()


def test_files_and_file_operations_arrive_and_are_reposted(
    tag, make_site, subscriber_factory, upstream, poster_factory, queue_factory, tmp_path
) -> None:
    site = make_site("siteB", post_user="admin", exchange=f"xb_{tag}")
    reposts = queue_factory("admin", f"xb_{tag}")
    reports = queue_factory("alice", f"xr_alice_{tag}")
    root, http = upstream()
    src = poster_factory("alice", f"xs_alice_{tag}")
    calls = tmp_path / "on_file.txt"
    sub = subscriber_factory(
        "b",
        site,
        exchange=f"xs_alice_{tag}",
        directory="/replica",
        report_exchange=f"xr_{{source}}_{tag}",
        on_file=[*ON_FILE, str(calls)],
        parallel=2,
    )
    (root / "d").mkdir()
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "d" / "b.bin").write_bytes(file_of(300_000, 1))
    os.chmod(root / "d" / "b.bin", 0o640)
    os.utime(root / "a.txt", ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    base = http.url.rstrip("/")
    up_a = src.file(root, base, "a.txt", from_cluster="siteA", extra={"reelfs_hops": ["siteA"]})
    src.file(root, base, "d/b.bin")
    rep = site.mnt / "replica"
    wait_for(lambda: same(root / "a.txt", rep / "a.txt"), timeout=60, what="a.txt stored")
    wait_for(lambda: same(root / "d/b.bin", rep / "d/b.bin"), timeout=60, what="b.bin stored")
    st = os.stat(rep / "a.txt")
    assert st.st_mtime_ns == 1_700_000_000_123_456_789
    assert stat.S_IMODE(os.stat(rep / "d" / "b.bin").st_mode) == 0o640

    # file operations, each as sr3/reelfs announce them
    def op(rel: str, file_op: dict, **kw) -> None:
        src.post(m.build_message(base_url=base, rel_path=rel, file_op=file_op, **kw))

    op("e", {"directory": ""}, mode="750")
    op("d/ln", {"link": "b.bin"})
    wait_for(lambda: (rep / "e").is_dir() and (rep / "d" / "ln").is_symlink(), what="dir+link")
    assert stat.S_IMODE(os.stat(rep / "e").st_mode) == 0o750
    assert os.readlink(rep / "d" / "ln") == "b.bin"
    os.link(root / "d" / "b.bin", root / "d" / "h.bin")
    src.file(root, base, "d/h.bin", file_op={"hlink": "/up/d/b.bin"})
    os.rename(root / "a.txt", root / "d" / "a2.txt")
    src.file(root, base, "d/a2.txt", file_op={"rename": "/up/a.txt"})
    # two paths, so the two messages may be applied in either order (parallel=2)
    wait_for(
        lambda: (rep / "d" / "a2.txt").is_file() and (rep / "d" / "h.bin").exists(),
        what="rename and hard link applied",
    )
    assert not (rep / "a.txt").exists() and same(root / "d" / "a2.txt", rep / "d" / "a2.txt")
    assert os.stat(rep / "d" / "h.bin").st_ino == os.stat(rep / "d" / "b.bin").st_ino
    op("d/b.bin", {"remove": ""})
    op("e", {"remove": "", "directory": ""})
    wait_for(lambda: not (rep / "d" / "b.bin").exists() and not (rep / "e").exists(), what="rm")
    assert same(root / "d" / "h.bin", rep / "d" / "h.bin")  # the other link stays
    assert no_temp_files(site.mnt)

    # the archive re-posted every change with the upstream routing and itself as a hop
    got = receive_until(
        reposts,
        lambda g: any(x["relPath"] == "replica/e" and "remove" in x.get("fileOp", {}) for x in g),
    )
    by = {}
    for x in got:
        by.setdefault(x["relPath"], []).append(x)
    a = by["replica/a.txt"][0]
    assert a["pubTime"] == up_a["pubTime"] and a["source"] == "alice"
    assert a["reelfs_hops"] == ["siteA", "siteB"] and a["from_cluster"] == "siteA"
    assert a["identity"] == up_a["identity"] and a["mtime"] == up_a["mtime"]
    assert by["replica"][0]["fileOp"] == {"directory": ""}  # the root, made for a.txt
    assert by["replica/d/a2.txt"][-1]["fileOp"]["rename"].endswith("/replica/a.txt")
    assert by["replica/d/ln"][0]["fileOp"] == {"link": "b.bin"}
    assert by["replica/d/h.bin"][0]["fileOp"] == {"hlink": "/siteB/replica/d/b.bin"}
    assert not [r for r in by if ".reelfs-in." in r]  # temp names are never announced
    # reports: alice's exchange, one per message, 201 for what changed
    reps = receive_until(reports, lambda g: len(g) >= 8)
    codes = {(x["relPath"], x["report"]["code"]) for x in reps}
    assert ("a.txt", 201) in codes and ("d/b.bin", 201) in codes and ("e", 201) in codes
    assert all(x["report"]["cluster"] == "siteB" for x in reps)
    # on_file: once per downloaded file (a rename or a hard link fetches nothing)
    assert sorted(calls.read_text().splitlines()) == [str(rep / "a.txt"), str(rep / "d/b.bin")]

    # a duplicate within the window is suppressed; a stopped subscriber catches up
    src.post(up_a)
    (dup,) = receive_until(reports, lambda g: len(g) >= 1)
    assert dup["report"]["code"] == 304 and "winnow" in dup["report"]["message"]
    assert sub.stop() == 0
    (root / "late.txt").write_bytes(b"while stopped\n")
    src.file(root, base, "late.txt")
    sub.start()
    wait_for(lambda: same(root / "late.txt", rep / "late.txt"), timeout=60, what="caught up")


def test_parts_are_fetched_in_parallel_and_completed_once(
    tag, make_site, subscriber_factory, upstream, poster_factory, queue_factory, tmp_path
) -> None:
    site = make_site("siteB")  # not posting: stores only
    reports = queue_factory("alice", f"xr_alice_{tag}")
    root, http = upstream()
    src = poster_factory("alice", f"xs_alice_{tag}")
    calls = tmp_path / "on_file.txt"
    subscriber_factory(
        "b",
        site,
        exchange=f"xs_alice_{tag}",
        report_exchange=f"xr_{{source}}_{tag}",
        on_file=[*ON_FILE, str(calls)],
        parallel=4,
    )
    block = 1 << 20
    data = file_of(5 * block + 100, 7)
    (root / "big.bin").write_bytes(data)
    base = http.url.rstrip("/")

    def announce(numbers: list[int] | None = None) -> None:
        st = os.stat(root / "big.bin")
        parts = block_identities(root / "big.bin", block)
        manifest = {b.number: {"size": b.size, "identity": b.identity} for b in parts}
        for b in parts:
            if numbers is not None and b.number not in numbers:
                continue
            src.post(
                m.build_message(
                    base_url=base,
                    rel_path="big.bin",
                    identity={"method": "sha512", "value": b.identity},
                    size=b.size,
                    mtime_ns=st.st_mtime_ns,
                    mode=st.st_mode,
                    blocks={
                        "method": "inplace",
                        "size": block,
                        "number": b.number,
                        "manifest": manifest,
                    },
                )
            )

    announce()
    reps = receive_until(reports, lambda g: len(g) >= 6)
    assert (site.mnt / "big.bin").read_bytes() == data
    codes = sorted(x["report"]["code"] for x in reps)
    assert codes == [201, 304, 304, 304, 304, 304]  # completed once, the others find it done
    assert (
        "6 parts, 6 fetched"
        in next(x for x in reps if x["report"]["code"] == 201)["report"]["message"]
    )
    assert calls.read_text().splitlines() == [str(site.mnt / "big.bin")]

    # the file grows at the end: only the changed part travels, the rest is copied locally
    data2 = data[:-100] + file_of(300, 8)
    (root / "big.bin").write_bytes(data2)
    announce([5])
    (rep,) = receive_until(reports, lambda g: len(g) >= 1)
    assert rep["report"]["code"] == 201
    assert "1 fetched, 5 copied locally" in rep["report"]["message"]
    assert (site.mnt / "big.bin").read_bytes() == data2
    assert len(calls.read_text().splitlines()) == 2


def test_rate_limit_and_cli_errors(
    tag, make_site, subscriber_factory, upstream, poster_factory, tmp_path, credentials_file
) -> None:
    site = make_site("siteB")
    root, http = upstream()
    src = poster_factory("alice", f"xs_alice_{tag}")
    sub = subscriber_factory(
        "b", site, exchange=f"xs_alice_{tag}", bytes_per_second=400_000, report_exchange=""
    )
    data = file_of(1_200_000, 3)
    (root / "slow.bin").write_bytes(data)
    t0 = time.monotonic()
    src.file(root, http.url.rstrip("/"), "slow.bin")
    wait_for(lambda: (site.mnt / "slow.bin").exists(), timeout=60, what="slow.bin stored")
    elapsed = time.monotonic() - t0
    # 1.2 MB at 400 kB/s with a quarter second of burst: at least 2.75 s
    assert elapsed >= 2.5, elapsed
    assert (site.mnt / "slow.bin").read_bytes() == data

    # configuration errors: exit 2, one line on stderr
    bad = write_toml(
        tmp_path / "bad.toml",
        {"broker": "amqp://admin@127.0.0.1:1/", "archive": str(site.archive), "bogus": 1},
    )
    p = reelfs(
        "subscribe",
        "--config",
        str(bad),
        check=False,
        env={"REELFS_CREDENTIALS": str(credentials_file)},
    )
    assert p.returncode == 2 and p.stderr.decode().count("\n") == 1
    assert "unknown key 'bogus'" in p.stderr.decode()
    # --once: what is queued now is stored, the reports published, then exit 0
    assert sub.stop() == 0
    (root / "once.txt").write_bytes(b"once\n")
    src.file(root, http.url.rstrip("/"), "once.txt")
    p = reelfs(
        "subscribe",
        "--config",
        str(sub.config),
        "--once",
        "--timeout",
        "60",
        check=False,
        env={"REELFS_CREDENTIALS": str(credentials_file)},
    )
    assert p.returncode == 0, p.stderr
    assert (site.mnt / "once.txt").read_bytes() == b"once\n"
    assert "201 once.txt: stored" in p.stderr.decode()
    # the archive must be mounted: exit 1, one line saying so
    site.mount.umount("--no-wait")
    p = reelfs(
        "subscribe",
        "--config",
        str(sub.config),
        "--once",
        check=False,
        env={"REELFS_CREDENTIALS": str(credentials_file)},
    )
    assert p.returncode == 1, p.stderr
    err = p.stderr.decode()
    assert err.count("\n") == 1 and "is not mounted" in err and "reelfs mount" in err


def test_reelfs_watch_is_wired(broker, tag, queue_factory, tmp_path, credentials_file) -> None:
    d = tmp_path / "w"
    d.mkdir()
    (d / "f.txt").write_text("watched\n")
    cfg = write_toml(
        tmp_path / "w.toml",
        {
            "broker": broker.url("alice"),
            "exchange": f"xs_alice_{tag}",
            "settle": 0.0,
            "credentials": str(credentials_file),
        },
    )
    q = queue_factory("alice", f"xs_alice_{tag}")
    p = reelfs("watch", str(d), "--config", str(cfg), "--once", check=False)
    assert p.returncode == 0, p.stderr
    assert [x["relPath"] for x in drain(q)] == ["f.txt"]

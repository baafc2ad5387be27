"""Three sites on one machine: archive A (its mount posts, its daemon serves) -> site B
(`reelfs subscribe` into archive B, which re-posts through its own [post]) -> archive C.

Files, a file in parts, a rename and a removal made on A's mount arrive at C; reports
about alice's data reach alice's report exchange only, bob's only bob's; and the links
close a cycle (C -> B, C -> A) that stops: a site drops what passed through it, so every
change is announced exactly once on every exchange. A message for `to_clusters = siteC`
is stored at C and goes no further.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from backend.replication.broker import Consumer
from tests.archive import file_of
from tests.waiting import wait_for

from .conftest import drain, no_temp_files, receive_until

pytestmark = [pytest.mark.fuse, pytest.mark.slow]


def _same(a: Path, b: Path) -> bool:
    return b.is_file() and a.read_bytes() == b.read_bytes()


def _kind(x: dict) -> str:
    op = x.get("fileOp", {})
    if "blocks" in x:
        return f"part{x['blocks']['number']}"
    return ",".join(sorted(op)) or "file"


def test_three_sites_files_renames_removals_reports_and_a_cycle(
    broker, tag, make_site, subscriber_factory, poster_factory, queue_factory, upstream
) -> None:
    xs_alice, xs_bob, xb, xc = f"xs_alice_{tag}", f"xs_bob_{tag}", f"xb_{tag}", f"xc_{tag}"
    a = make_site("siteA", post_user="alice", exchange=xs_alice, serve_http=True, blocksize="1MiB")
    b = make_site("siteB", post_user="admin", exchange=xb, serve_http=True, blocksize="1MiB")
    c = make_site("siteC", post_user="admin", exchange=xc, serve_http=True)
    # monitors on every exchange (declared first: a topic exchange drops what no queue takes)
    on_a, on_b, on_c = (queue_factory("admin", x) for x in (xs_alice, xb, xc))
    reports_alice = queue_factory("alice", f"xr_alice_{tag}")
    reports_bob = queue_factory("bob", f"xr_bob_{tag}")
    bob = poster_factory("bob", xs_bob)
    reports = {"report_exchange": f"xr_{{source}}_{tag}"}
    sub_b = subscriber_factory("b", b, exchange=[xs_alice, xs_bob, xc], parallel=4, **reports)
    sub_c = subscriber_factory("c", c, exchange=[xb], parallel=4, **reports)
    sub_a = subscriber_factory("a", a, exchange=[xc], **reports)  # closes the cycle at A

    # sources can read their own reports, not each other's
    intruder = Consumer(
        broker.url("alice"),
        f"q_alice.peek.{tag}",
        [(f"xr_bob_{tag}", "#")],
        credentials=broker.credentials,
    )
    with pytest.raises(Exception, match=r"ACCESS_REFUSED"):
        intruder.connect()
    intruder.close()

    raw = a.mnt / "raw"
    raw.mkdir()
    (raw / "f1.txt").write_bytes(b"first file\n")
    big = file_of(3 * 1024 * 1024 + 5, 21)
    (raw / "big.bin").write_bytes(big)
    up, http = upstream("bobdata")
    (up / "bob").mkdir()
    (up / "bob" / "x.txt").write_bytes(b"bob's data, for siteC only\n")
    bob.file(up, http.url.rstrip("/"), "bob/x.txt", to_clusters="siteC")

    for site in (b, c):
        wait_for(
            lambda s=site: (
                _same(raw / "f1.txt", s.mnt / "raw" / "f1.txt")
                and _same(raw / "big.bin", s.mnt / "raw" / "big.bin")
                and _same(up / "bob" / "x.txt", s.mnt / "bob" / "x.txt")
            ),
            timeout=120,
            what=f"first files at {site.name}",
        )
    os.rename(raw / "f1.txt", raw / "f2.txt")
    (raw / "big.bin").unlink()
    for site in (b, c):
        wait_for(
            lambda s=site: (
                _same(raw / "f2.txt", s.mnt / "raw" / "f2.txt")
                and not (s.mnt / "raw" / "f1.txt").exists()
                and not (s.mnt / "raw" / "big.bin").exists()
            ),
            timeout=120,
            what=f"rename and removal at {site.name}",
        )
    assert "201 raw/f2.txt: renamed" in sub_c.text()  # moved at C, not fetched again
    assert "4 parts, 4 fetched" in sub_c.text()  # B re-posted the file in parts too

    # the cycle: everything C announced came back to B and A, and was dropped there
    seen_c = receive_until(
        on_c,
        lambda g: any(x["relPath"] == "raw/big.bin" and "remove" in x.get("fileOp", {}) for x in g),
    )
    n_c = len(seen_c)
    sub_b.wait_log("has passed through siteB already", count=n_c)
    sub_a.wait_log("has passed through siteA already", count=n_c)
    seen_c += drain(on_c)
    seen_b = drain(on_b)
    seen_a = drain(on_a)
    # ... so each change is on each exchange exactly once
    for name, seen in (("A", seen_a), ("B", seen_b), ("C", seen_c)):
        counts = Counter((x["relPath"], _kind(x)) for x in seen)
        assert max(counts.values()) == 1, (name, counts)
    expect = {
        ("raw", "directory"),
        ("raw/f1.txt", "file"),
        ("raw/f2.txt", "rename"),
        ("raw/big.bin", "remove"),
    }
    parts = {("raw/big.bin", f"part{i}") for i in range(4)}
    assert expect | parts <= {(x["relPath"], _kind(x)) for x in seen_b}
    # C has no blocksize: it announces the file whole (each hop chooses its layout)
    assert expect | {("raw/big.bin", "file")} <= {(x["relPath"], _kind(x)) for x in seen_c}
    # a hop list grows along the way; pubTime and source are those of the origin
    f2_a = next(x for x in seen_a if x["relPath"] == "raw/f2.txt")
    f2_c = next(x for x in seen_c if x["relPath"] == "raw/f2.txt")
    assert f2_c["reelfs_hops"] == ["siteA", "siteB", "siteC"]
    assert f2_c["pubTime"] == f2_a["pubTime"] and f2_c["source"] == "alice"
    assert f2_c["from_cluster"] == "siteA" and f2_c["fileOp"]["rename"] == "/siteC/raw/f1.txt"
    # bob's file was for siteC: stored there, announced no further
    assert (c.mnt / "bob" / "x.txt").read_bytes() == (up / "bob" / "x.txt").read_bytes()
    assert not [x for x in seen_c if x["relPath"].startswith("bob")]
    assert [x["to_clusters"] for x in seen_b if x["relPath"] == "bob/x.txt"] == ["siteC"]

    # reports: alice's about alice's data from B and C, bob's about bob's; nothing crossed
    want_alice = {(s, r) for s in ("siteB", "siteC") for r in ("raw/f2.txt", "raw/big.bin")}
    got_alice = receive_until(
        reports_alice,
        lambda g: want_alice <= {(x["report"]["cluster"], x["relPath"]) for x in g},
    )
    got_bob = receive_until(
        reports_bob,
        lambda g: (
            {("siteB", "bob/x.txt"), ("siteC", "bob/x.txt")}
            <= {(x["report"]["cluster"], x["relPath"]) for x in g}
        ),
    )
    got_alice += drain(reports_alice)
    got_bob += drain(reports_bob)
    assert {x["source"] for x in got_alice} == {"alice"}
    assert all(x["relPath"].startswith("raw") for x in got_alice)
    assert {x["source"] for x in got_bob} == {"bob"}
    assert all(x["relPath"].startswith("bob") for x in got_bob)
    assert all(x["report"]["code"] in (201, 202, 304) for x in got_alice + got_bob)
    for site in (a, b, c):
        assert no_temp_files(site.mnt)

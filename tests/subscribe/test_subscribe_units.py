"""Pure logic of `reelfs subscribe`: configuration, routing decisions, keys and names, the
fileOp table, the filter's mapping of renames, and the dispatcher's per-path order."""

from __future__ import annotations

import json
import textwrap
import threading
from pathlib import Path

import pytest

from backend.catalog.subscriptions import SubscriptionState
from backend.replication import message as m
from backend.replication.subscribe.config import ConfigError, load_config
from backend.replication.subscribe.dispatch import Dispatcher, conflict
from backend.replication.subscribe.fetch import build_url
from backend.replication.subscribe.fileops import HANDLERS, operation
from backend.replication.subscribe.filter import Filter, mapped_path
from backend.replication.subscribe.keys import content_key, winnow_key
from backend.replication.subscribe.reports import Reporter, exchange_owner, skeleton_of_body
from backend.replication.subscribe.store import is_final, normalise, origin_of, temp_name
from backend.replication.subscribe.work import Outcome, Stats, Work

SHA = {"method": "sha512", "value": "A" * 86 + "=="}


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    a = tmp_path / "arch"
    a.mkdir()
    (a / "reelfs.toml").write_text('[archive]\nid = "0000ABCD"\n[post]\ncluster = "siteB"\n')
    return a


def cfg_file(tmp_path: Path, archive: Path, extra: str = "") -> Path:
    p = tmp_path / "s.toml"
    p.write_text(f'broker = "amqp://feeder@127.0.0.1:5672/"\narchive = "{archive}"\n' + extra)
    return p


def test_config_defaults_and_sr3_aliases(tmp_path: Path, archive: Path) -> None:
    cfg = load_config(
        cfg_file(
            tmp_path,
            archive,
            textwrap.dedent(
                """
                topicPrefix = "v03"
                subtopic = ["raw.#", "obs.*"]
                instances = 3
                nodupe_ttl = 60
                sourceFromExchange = false
                post_baseUrl = "http://b:8080/"
                bytes_per_second = "2MiB"
                on_file = "/bin/ingest --site 'B 1'"
                directory = "/replica//x/."
                reject = 'scratch/.*'
                accept = '.*\\.nc$'
                acceptUnmatched = false
                report_exchange = ["xr_{source}", "xreport"]
                [retry]
                initial = 0.5
                attempts = 4
                """
            ),
        )
    )
    assert cfg.exchanges == ["xs_feeder"] and cfg.cluster == "siteB"  # from [post]
    assert cfg.subtopics == ["raw.#", "obs.*"] and cfg.parallel == 3
    assert cfg.winnow_window == 60 and not cfg.source_from_exchange
    assert cfg.bytes_per_second == 2 * 1024 * 1024
    assert cfg.on_file == ["/bin/ingest", "--site", "B 1"]
    assert cfg.directory == "/replica/x" and cfg.archive_path("a/b.nc") == "/replica/x/a/b.nc"
    assert cfg.accepts("a/b.nc") and not cfg.accepts("scratch/b.nc")
    assert not cfg.accepts("a/b.txt")
    assert cfg.report_exchanges_for("alice") == ["xr_alice", "xreport"]
    assert (cfg.retry.initial, cfg.retry.maximum, cfg.retry.attempts) == (0.5, 300.0, 4)
    assert [cfg.retry.delay(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert cfg.state_db == tmp_path / "s.state.db" and cfg.prefetch == 16


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ("bogus = 1", "unknown key 'bogus'"),
        ("parallel = 0", "parallel"),
        ('bytes_per_second = "fast"', "bytes_per_second"),
        ('directory = "relative"', "directory"),
        ('directory = "/a/../b"', "'..'"),
        ('exchange = "bad name"', "bad exchange name"),
        ('accept = "("', "bad regex"),
        ("[retry]\nbackoff = 2", "retry: unknown key 'backoff'"),
        ("[retry]\ninitial = 5\nmaximum = 1", "retry.maximum"),
        ('cluster = "a b"', "cluster"),
        ("fsync = 1", "fsync: expected true or false"),
        ("on_file = []", "on_file"),
        ('file_url_roots = ["relative"]', "file_url_roots"),
        ("instances = 2\nparallel = 3", "given twice"),
        # a wrong type, and every kind of table
        ('parallel = "4"', "parallel: expected an integer >= 1, got '4'"),
        ("queue = 5", "queue: expected a queue name"),
        ("timeout = 0.5", "timeout: expected a number >= 1, got 0.5"),
        ("retry = 5", r"retry: expected a table \[retry\] with attempts, initial, maximum"),
        ('[retry]\nattempts = "x"', "retry.attempts: expected an integer >= 1, got 'x'"),
        ('subtopic = ["a b"]', "subtopic: bad pattern 'a b'"),
        ('post_base_url = "/srv/x"', r"post_base_url: expected a URL \(http"),
        ("credentials = 5", "credentials: expected a string, got 5"),
    ],
)
def test_config_errors(tmp_path: Path, archive: Path, extra: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        load_config(cfg_file(tmp_path, archive, extra + "\n"))


def test_config_needs_broker_archive_and_cluster(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('archive = "/nonexistent"\n')
    with pytest.raises(ConfigError, match="broker is required"):
        load_config(tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text('broker = "amqp://u:pw@h/"\narchive = "/x"\n')
    with pytest.raises(ConfigError, match="credentials file"):
        load_config(tmp_path / "b.toml")
    (tmp_path / "c.toml").write_text('broker = "amqp://u@h/"\narchive = "/nonexistent"\n')
    with pytest.raises(ConfigError, match="not a reelfs archive"):
        load_config(tmp_path / "c.toml")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "reelfs.toml").write_text('[archive]\nid = "0000ABCD"\n')
    (tmp_path / "d.toml").write_text(f'broker = "amqp://u@h/"\narchive = "{bare}"\n')
    with pytest.raises(ConfigError, match="cluster: required"):
        load_config(tmp_path / "d.toml")


def test_routing_decisions() -> None:
    assert exchange_owner("xs_alice") == "alice"
    assert exchange_owner("xs_alice_t123") == "alice" and exchange_owner("xpublic") is None
    assert is_final({"to_clusters": "siteB"}, "siteB")
    assert not is_final({"to_clusters": "siteB,siteC"}, "siteB")
    assert not is_final({"to_clusters": "ALL"}, "siteB") and not is_final({}, "siteB")
    msg = m.build_message(
        base_url="http://a/",
        rel_path="x",
        source="alice",
        from_cluster="siteA",
        extra={"reelfs_hops": ["siteA"]},
    )
    origin = origin_of(msg, "siteB", "xpublic", None)
    assert origin == {
        "pubTime": msg["pubTime"],
        "reelfs_hops": ["siteA"],
        "final": False,
        "source": "alice",
        "from_cluster": "siteA",
        "post_exchange": "xpublic",
    }
    json.dumps(origin)  # what the control socket carries


def test_keys_names_and_paths() -> None:
    f = m.build_message(base_url="http://a/", rel_path="d/f", identity=SHA, size=3)
    assert content_key(f) == "sha512:" + SHA["value"] == winnow_key(f)
    assert winnow_key({**f, "fileOp": {"remove": ""}}) == "remove"
    assert winnow_key({**f, "fileOp": {"link": "t"}}) == "link:t"
    assert winnow_key({**f, "fileOp": {"rename": "/a/x"}}).startswith("rename:/a/x|sha512:")
    cod = {**f, "identity": {"method": "cod", "value": "sha512"}}
    assert content_key(cod).startswith("weak:cod:sha512:3:")
    parts = {
        "method": "inplace",
        "size": 4,
        "number": 0,
        "manifest": {0: {"size": 4, "identity": "x"}, 1: {"size": 1, "identity": "y"}},
    }
    k1 = content_key({**f, "blocks": parts})
    k2 = content_key({**f, "blocks": {**parts, "number": 1}})
    assert k1 == k2 and k1.startswith("blocks:")  # every part names the same layout
    assert normalise("a//./b/") == "a/b"
    name = temp_name("é" * 200)
    assert name.startswith(".reelfs-in.") and len(name.encode()) <= 255
    assert build_url("http://h:1/base/", "a b/c#d.txt") == "http://h:1/base/a%20b/c%23d.txt"
    assert build_url("file:/srv/x", "a b.txt") == "file:/srv/x/a b.txt"
    assert build_url("http://h/", "x", "api?id=3&f=a b") == "http://h/api?id=3&f=a%20b"
    assert conflict(("a/b",), ("a",)) and conflict(("a",), ("a/b/c",))
    assert not conflict(("a/b",), ("a/bc",)) and not conflict(("x",), ("y",))
    # fileOp paths: baseUrl's path + relPath, a root baseUrl included (as sr3 maps them)
    at = {"baseUrl": "http://h:1/arch", "relPath": "n"}
    assert mapped_path(at, "/arch/raw/a.txt") == "raw/a.txt"
    assert mapped_path(at, "/elsewhere/a.txt") is None
    root = {"baseUrl": "http://h:1/", "relPath": "n"}
    assert mapped_path(root, "/raw/a.txt") == "raw/a.txt"
    assert mapped_path(root, "/raw/../../etc/passwd") is None


def test_reports_of_undecodable_messages_keep_what_can_be_kept() -> None:
    s = skeleton_of_body(b"{not json")
    assert s["relPath"] == "invalid" and s["baseUrl"] == "invalid:"
    body = json.dumps(
        {"pubTime": "20260101T000000", "baseUrl": "http://a/", "relPath": "../x", "source": "alice"}
    ).encode()
    s = skeleton_of_body(body)
    assert s["rejected_relPath"] == "../x" and s["relPath"] == "invalid"
    assert s["pubTime"] == "20260101T000000" and s["source"] == "alice"
    m.validate(m.make_report(s, 417, "bad"))


def test_state_retry_queue_winnow_and_stored(tmp_path: Path) -> None:
    st = SubscriptionState(tmp_path / "s.db")
    msg = m.build_message(base_url="http://a/", rel_path="f", identity=SHA)
    pub_ns = m.parse_time(msg["pubTime"])
    rid = st.add_retry("f", "xs_a", "v03", msg, pub_ns=pub_ns, attempts=1, delay=0, error="503")
    # the same message again (redelivered) does not queue twice
    again = st.add_retry("f", "xs_a", "v03", msg, pub_ns=pub_ns, attempts=1, delay=0, error="503")
    assert again == rid
    (row,) = st.due_retries(10, set())
    assert row.id == rid and row.message == msg and row.attempts == 1
    assert st.due_retries(10, {rid}) == []
    newer = pub_ns + 1
    assert st.supersede(["f"], newer, None) == 1 and st.retry_count() == 0
    assert not st.is_duplicate("f", "k", 60)
    st.remember("f", "k")
    assert st.is_duplicate("f", "k", 60) and not st.is_duplicate("f", "other", 60)
    assert not st.is_duplicate("f", "k", 0)  # window 0: off
    st.set_stored("d/a", "k1", 3, 5)
    st.set_stored("d/b/c", "k2", 4, 6)
    st.move_stored("d", "e")
    assert st.stored("e/a").key == "k1" and st.stored("e/b/c").key == "k2"
    assert st.stored("d/a") is None
    st.forget_stored("e", subtree=True)
    assert st.stored("e/b/c") is None
    st.close()


def work(seq: int, rel: str, op: dict | None = None, **fields) -> Work:
    msg = m.build_message(base_url="http://h:1/arch", rel_path=rel, identity=SHA, file_op=op)
    return Work(seq, msg, rel, "xs_a", "v03", **fields)


def test_fileop_handler_table() -> None:
    # one handler per v03 fileOp, looked up by name
    assert set(HANDLERS) == m.FILEOP_KEYS
    assert operation(work(0, "f")) is None  # plain data
    assert operation(work(0, "d", {"remove": ""})) == "remove"
    assert operation(work(0, "d", {"remove": "", "directory": ""})) == "remove"
    assert operation(work(0, "n", {"rename": "/arch/o"}, old_rel="o")) == "rename"
    assert operation(work(0, "n", {"rename": "/arch/o", "directory": ""}, old_rel="o")) == "rename"
    assert operation(work(0, "n", {"rename": "/arch/o", "link": "t"}, old_rel="o")) == "rename"
    # the old name is not ours (unmapped or rejected): what the message is about otherwise
    assert operation(work(0, "n", {"rename": "/elsewhere/o"})) is None
    assert operation(work(0, "n", {"rename": "/elsewhere/o", "link": "t"})) == "link"
    # renamed to a rejected name: the old name is removed
    assert operation(work(0, "o", {"rename": "/arch/o"}, remove_old=True)) == "remove"
    assert operation(work(0, "l", {"link": "t"})) == "link"
    assert operation(work(0, "d", {"directory": ""})) == "directory"
    assert operation(work(0, "h", {"hlink": "/arch/f"}, link_rel="f")) == "hlink"
    assert operation(work(0, "h", {"hlink": "/arch/f"})) is None  # other name not here


def test_filter_maps_renames_and_applies_patterns(tmp_path: Path, archive: Path) -> None:
    cfg = load_config(cfg_file(tmp_path, archive, "reject = 'scratch/.*'\n"))
    state = SubscriptionState(tmp_path / "s.db")
    filt = Filter(cfg, Reporter(cfg, state, None), Stats())
    base = {"baseUrl": "http://h:1/arch", "pubTime": "20260101T000000"}
    w = filt.work_for(
        {**base, "relPath": "raw/b.txt", "fileOp": {"rename": "/arch/raw/a.txt"}}, "x", "t"
    )
    assert w is not None and (w.rel, w.old_rel, w.remove_old) == ("raw/b.txt", "raw/a.txt", False)
    w2 = filt.work_for(
        {**base, "relPath": "scratch/a.txt", "fileOp": {"rename": "/arch/raw/a.txt"}}, "x", "t"
    )
    assert w2 is not None and (w2.rel, w2.old_rel, w2.remove_old) == ("raw/a.txt", None, True)
    assert filt.work_for({**base, "relPath": "scratch/new.txt"}, "x", "t") is None
    assert w2.seq == w.seq + 1  # numbered in arrival order
    state.close()


def test_dispatch_keeps_the_order_of_each_path() -> None:
    gates: dict[int, threading.Event] = {}

    def run(w: Work) -> Outcome:
        gates[w.seq].wait(30)
        return Outcome(True, 201, w.rel)

    d = Dispatcher(2, run)
    ws = [work(i, rel) for i, rel in enumerate(["a", "a/b", "c", "a/b/c", "e"])]
    for w in ws:
        gates[w.seq] = threading.Event()
        d.add(w)
    try:
        d.start()
        # a/b waits for a (below it); a/b/c for a/b, though a/b is not running either
        assert sorted(d.running) == [0, 2] and [w.seq for w in d.pending] == [1, 3, 4]
        gates[0].set()
        done = d.wait(30)
        assert done is not None and done[0].seq == 0 and done[1].text == "a"
        d.start()
        assert sorted(d.running) == [1, 2] and [w.seq for w in d.pending] == [3, 4]
        gates[2].set()
        assert d.wait(30) is not None
        d.start()
        assert sorted(d.running) == [1, 4] and [w.seq for w in d.pending] == [3]
        # held work (the archive went away) goes back in line in arrival order
        for seq in (1, 4):
            gates[seq].set()
            item = d.wait(30)
            assert item is not None
            d.hold(item[0])
        assert d.in_hand() == 3 and not d.running
        assert d.resume() == 2 and [w.seq for w in d.pending] == [1, 3, 4]
        assert d.finished() == []
    finally:
        for g in gates.values():
            g.set()
        d.shutdown()

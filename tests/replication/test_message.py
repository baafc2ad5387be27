"""v03 messages: building, serialising, strict parsing, topics and relPath confinement."""

from __future__ import annotations

import base64
import json
import os

import pytest

from backend.replication import message as m
from backend.replication.message import MessageError

SHA = base64.b64encode(b"\x01" * 64).decode()
MD5 = base64.b64encode(b"\x02" * 16).decode()


def good(**extra) -> dict:
    msg = {
        "pubTime": "20261125T011725.639868736",
        "baseUrl": "http://127.0.0.1:8080/srv",
        "relPath": "x/with space.txt",
        "identity": {"method": "sha512", "value": SHA},
        "size": 6,
        "mtime": "20261125T011722.696680069",
    }
    msg.update(extra)
    return msg


# -- times ----------------------------------------------------------------------------


def test_format_time_has_nine_fraction_digits_and_roundtrips() -> None:
    ns = 1_764_033_445_034_577_846
    text = m.format_time(ns)
    assert text == "20251125T011725.034577846"
    assert m.parse_time(text) == ns


@pytest.mark.parametrize(
    ("text", "ns_fraction"),
    [
        ("20261125T011725", 0),
        ("20261125T011725.5", 500_000_000),
        ("20261125T011725.0345778465", 34_577_846),  # sr3: 10 digits when fraction < 0.1
        ("20261125T011725.2e-05", 2_000),  # sr3's f"{x:.9g}" exponent quirk, read as sr3 does
    ],
)
def test_parse_time_accepts_sr3_variants(text: str, ns_fraction: int) -> None:
    assert m.parse_time(text) % 1_000_000_000 == ns_fraction


@pytest.mark.parametrize(
    "text",
    ["2026112T011725", "20261125 011725", "20261325T011725", "20261125T016125.1", "", "now"],
)
def test_parse_time_rejects_garbage(text: str) -> None:
    with pytest.raises(MessageError, match="pubTime"):
        m.parse_time(text)


# -- building and serialising --------------------------------------------------------


def test_build_message_emits_sr3_fields_only() -> None:
    msg = m.build_message(
        base_url="http://h:1/d",
        rel_path="a/b.txt",
        identity={"method": "md5", "value": MD5},
        size=3,
        mtime_ns=1_000_000_000,
        mode=0o100644,
        source="alice",
        from_cluster="A",
        to_clusters="B",
    )
    assert msg["mode"] == "644"
    assert msg["mtime"] == "19700101T000001.000000000"
    assert {"version", "conformsTo", "topic"}.isdisjoint(msg)
    body = json.loads(m.encode(msg))
    assert body == msg


def test_encode_refuses_wis_markers() -> None:
    with pytest.raises(MessageError, match="version"):
        m.encode(good(version="v04"))
    with pytest.raises(MessageError, match="conformsTo"):
        m.encode(good(conformsTo=["http://wis.wmo.int/spec/wnm/1/conf/core"]))


def test_decode_roundtrip_and_unknown_fields_kept() -> None:
    msg = good(geometry=None, custom={"a": 1})
    assert m.decode(json.dumps(msg).encode()) == msg


def test_decode_applies_sr3_renames_and_size_string() -> None:
    raw = good(size="12")
    raw["integrity"] = raw.pop("identity")
    raw["retPath"] = "api?id=3"
    out = m.decode(json.dumps(raw))
    assert out["identity"]["method"] == "sha512"
    assert out["retrievePath"] == "api?id=3"
    assert out["size"] == 12


def test_report_message() -> None:
    report = m.make_report(good(content={"encoding": "utf-8", "value": "x"}), 201, "ok")
    assert "content" not in report
    assert report["report"]["code"] == 201
    m.parse_time(report["report"]["timeCompleted"])


# -- strict validation, one malformed case each ---------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "bad JSON"),
        (b"[1, 2]", "expected an object"),
        (b"\xff\xfe", "not UTF-8"),
        (json.dumps({k: v for k, v in good().items() if k != "pubTime"}), "pubTime"),
        (json.dumps({k: v for k, v in good().items() if k != "baseUrl"}), "baseUrl"),
        (json.dumps({k: v for k, v in good().items() if k != "relPath"}), "relPath"),
        (json.dumps(good(pubTime="2026-11-25T01:17:25")), "pubTime"),
        (json.dumps(good(pubTime=20261125)), "pubTime"),
        (json.dumps(good(mtime="yesterday")), "mtime"),
        (json.dumps(good(baseUrl="no scheme here")), "baseUrl"),
        (json.dumps(good(identity={"method": "crc32", "value": "x"})), "unknown method"),
        (json.dumps(good(identity={"method": "sha512", "value": "!!"})), "not base64"),
        (json.dumps(good(identity={"method": "sha512", "value": MD5})), "16 bytes"),
        (json.dumps(good(identity={"method": "cod", "value": "crc"})), "cod"),
        (json.dumps(good(identity="sha512")), "identity"),
        (json.dumps(good(relPath="/etc/passwd")), "absolute"),
        (json.dumps(good(relPath="a/../../etc")), "'..'"),
        (json.dumps(good(relPath="..")), "'..'"),
        (json.dumps(good(relPath="a\u0000b")), "NUL"),
        (json.dumps(good(relPath="")), "empty"),
        (json.dumps(good(relPath="./")), "names no file"),
        (json.dumps(good(size=-1)), "size"),
        (json.dumps(good(size=1.5)), "size"),
        (json.dumps(good(size=True)), "size"),
        (json.dumps(good(size="12a")), "size"),
        (json.dumps(good(mode="rw-r--r--")), "mode"),
        (json.dumps(good(mode=420)), "mode"),
        (json.dumps(good(fileOp={"move": "x"})), "unknown operation"),
        (json.dumps(good(fileOp={"rename": ""})), "empty path"),
        (json.dumps(good(fileOp={"link": 3})), "fileOp.link"),
        (json.dumps(good(report={"code": 999, "timeCompleted": "20261125T011725"})), "code"),
        (json.dumps(good(content={"encoding": "rot13", "value": "x"})), "content"),
    ],
)
def test_decode_rejects_with_precise_reason(body, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        m.decode(body)


def test_decode_requires_json_content_type() -> None:
    body = json.dumps(good())
    with pytest.raises(MessageError, match="content type"):
        m.decode(body, "text/plain")
    assert m.decode(body, "application/json")["relPath"] == "x/with space.txt"
    assert m.decode(body, None)["size"] == 6


def blocks_msg(**blocks) -> dict:
    b = {
        "method": "inplace",
        "size": 4,
        "number": 1,
        "manifest": {"0": {"size": 4, "identity": SHA}, "1": {"size": 2, "identity": SHA}},
    }
    b.update(blocks)
    return good(size=2, blocks=b)


def test_blocks_valid_and_manifest_keys_become_ints() -> None:
    out = m.decode(json.dumps(blocks_msg()))
    assert set(out["blocks"]["manifest"]) == {0, 1}
    # and serialised again, keys are strings as sr3 writes them
    assert set(json.loads(m.encode(out))["blocks"]["manifest"]) == {"0", "1"}


@pytest.mark.parametrize(
    ("blocks", "reason"),
    [
        ({"method": "torrent"}, "blocks.method"),
        ({"size": 0}, "blocks.size"),
        ({"number": 5}, "not in the manifest"),
        ({"number": -1}, "blocks.number"),
        ({"manifest": {}}, "manifest"),
        ({"manifest": {"x": {"size": 1, "identity": SHA}}}, "bad block number"),
        (
            {"manifest": {"0": {"size": 9, "identity": SHA}, "1": {"size": 2, "identity": SHA}}},
            "exceeds",
        ),
        ({"manifest": {"1": {"size": 3, "identity": SHA}}}, "differs"),
    ],
)
def test_bad_blocks(blocks: dict, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        m.decode(json.dumps(blocks_msg(**blocks)))


# -- topics ---------------------------------------------------------------------------


def test_topic_is_prefix_plus_directories() -> None:
    assert m.topic_for("f.txt") == "v03"
    assert m.topic_for("a/b/f.txt") == "v03.a.b"
    assert m.topic_for("a/b/f.txt", "v03.post") == "v03.post.a.b"


def test_topic_escapes_wildcards_like_sr3() -> None:
    topic = m.topic_for("we#ird/st*r/f")
    assert topic == "v03.we%23ird.st%22r"
    assert m.decode_topic(topic) == ["v03", "we#ird", "st*r"]


def test_topic_truncated_to_255_bytes_on_character_boundary() -> None:
    rel = "/".join(["é" * 40] * 10) + "/f"
    topic = m.topic_for(rel)
    raw = topic.encode("utf-8")
    assert len(raw) <= 255
    assert len(raw) >= 253  # cut at the limit, minus at most one partial character
    assert topic.startswith("v03.éé")


def test_binding_key() -> None:
    assert m.binding_key() == "v03.#"
    assert m.binding_key("a.*", "v03") == "v03.a.*"


def test_download_url_joins_with_one_slash() -> None:
    assert m.download_url(good(baseUrl="http://h/d/")) == "http://h/d/x/with space.txt"
    assert m.download_url(good(retrievePath="/api/3")) == "http://127.0.0.1:8080/srv/api/3"


# -- confinement ----------------------------------------------------------------------


def test_safe_join_confines_paths(tmp_path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "a" / "f").write_text("x")
    os.symlink(outside, root / "escape")
    os.symlink("../a/f", root / "a" / "inner-link")
    os.symlink("/etc/passwd", root / "abs-link")

    assert m.safe_join(root, "a/f") == (root / "a" / "f").resolve()
    assert m.safe_join(root, "a/new/file") == (root / "a" / "new" / "file").resolve()
    assert m.safe_join(root, "a/inner-link") == (root / "a" / "f").resolve()
    for bad in ("../outside", "/etc/passwd", "a/../../x", "a\x00"):
        with pytest.raises(MessageError):
            m.safe_join(root, bad)
    for escaping in ("escape/x", "escape", "abs-link"):
        with pytest.raises(MessageError, match="leads out"):
            m.safe_join(root, escaping)
    # The link itself may be addressed (to remove or replace it) without following it.
    assert m.safe_join(root, "abs-link", follow_final=False) == root.resolve() / "abs-link"
    with pytest.raises(MessageError, match="leads out"):
        m.safe_join(root, "escape/x", follow_final=False)


def test_rename_old_relpath_maps_sr3_absolute_paths() -> None:
    msg = good(baseUrl="http://h:1/srv/data", fileOp={"rename": "/srv/data/x/old.txt"})
    assert m.rename_old_relpath(msg) == "x/old.txt"
    msg = good(baseUrl="http://h:1/", fileOp={"rename": "/home/a/src/old.txt"})
    assert m.rename_old_relpath(msg) is None
    assert m.rename_old_relpath(msg, "/home/a/src") == "old.txt"
    msg = good(baseUrl="http://h:1/srv", fileOp={"rename": "/srv/../etc/passwd"})
    assert m.rename_old_relpath(msg) is None

"""reelfs.toml parsing: every bad value is refused with where and why."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from backend import config as c
from backend.errors import ArchiveError

BASE = {"archive": {"id": "0123ABCD"}}


def test_sizes_and_durations() -> None:
    assert c.parse_size("256KiB") == 262144
    assert c.parse_size("2GB") == 2_000_000_000
    assert c.parse_size(" 1.5 MiB ") == 1572864
    assert c.parse_size(42) == 42
    assert c.parse_duration("500ms") == 0.5
    assert c.parse_duration("5m") == 300
    assert c.parse_duration(2) == 2.0
    for bad in ("lots", "-1", "1 XB", True, None, -5):
        with pytest.raises(c.ConfigError):
            c.parse_size(bad)
    for bad in ("soon", "1 fortnight", False, -1):
        with pytest.raises(c.ConfigError):
            c.parse_duration(bad)


def test_defaults(tmp_path: Path) -> None:
    cfg = c.build(tmp_path, BASE)
    assert cfg.cache.size == 4 * 1024**3
    assert cfg.library.block_size == 256 * 1024
    assert cfg.recall_on_open == "block"
    assert cfg.catalog_path == tmp_path / "catalog.db"


@pytest.mark.parametrize(
    "raw, words",
    [
        ({"bogus": {}}, ["unknown section [bogus]"]),
        ({"cache": {"sise": 1}}, ["unknown key 'sise'", "[cache]"]),
        ({"cache": {"size": "big"}}, ["[cache] size", "'big'"]),
        ({"cache": {"high_watermark": 0.5, "low_watermark": 0.6}}, ["low_watermark"]),
        ({"cache": {"high_watermark": 1.5}}, ["high_watermark", "between 0 and 1"]),
        ({"library": {"type": "cloud"}}, ["[library] type"]),
        ({"library": {"block_size": 1000}}, ["block_size", "multiple of 512"]),
        ({"library": {"label_format": "ibm"}}, ["label_format"]),
        ({"mover": {"batch_files": 0}}, ["batch_files", "positive"]),
        ({"recall": {"on_open": "maybe"}}, ["on_open"]),
        ({"mount": {"allow_other": "yes"}}, ["allow_other"]),
        ({"families": {"bad name": {"width": 1}}}, ["file family"]),
        ({"families": {"raw": {"width": 0}}}, ["width"]),
        ({"families": {"raw": {"width": 65}}}, ["[families.raw] width", "1 to 64", "65"]),
        ({"families": {"raw": {"width": 1_000_000_000}}}, ["1 to 64", "1000000000"]),
        ({"families": {"raw": {"copies": 0}}}, ["[families.raw] copies", "1 to 4", "0"]),
        ({"families": {"raw": {"copies": 5}}}, ["[families.raw] copies", "1 to 4", "5"]),
        ({"families": {"raw": {"copies": "two"}}}, ["[families.raw] copies", "'two'"]),
        ({"families": {"raw": {"copies": True}}}, ["[families.raw] copies"]),
        ({"families": {"raw": {"copy": 2}}}, ["unknown key 'copy'", "[families.raw]"]),
        ({"archive": {"id": "xyz"}}, ["[archive] id"]),
    ],
)
def test_bad_values_name_section_and_key(tmp_path: Path, raw: dict, words: list[str]) -> None:
    merged = {**BASE, **raw, "archive": {**BASE["archive"], **raw.get("archive", {})}}
    with pytest.raises(c.ConfigError) as e:
        c.build(tmp_path, merged)
    for w in words:
        assert w in str(e.value)


def test_overrides(tmp_path: Path) -> None:
    raw = c.apply_overrides(
        BASE,
        ["cache.size=1GiB", "mover.retries=5", "families.raw.width=3", "mount.allow_other=true"],
    )
    cfg = c.build(tmp_path, raw)
    assert cfg.cache.size == 1024**3 and cfg.mover.retries == 5
    assert cfg.families == {"raw": 3} and cfg.mount.allow_other is True
    for bad in ("cache", "size=1", "=1"):
        with pytest.raises(c.ConfigError):
            c.apply_overrides(BASE, [bad])


def test_missing_archive_and_dump_round_trip(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="not a reelfs archive"):
        c.load(tmp_path)
    raw = {
        **BASE,
        "library": {"type": "scsi", "changer": "iscsi://h/iqn/1", "drives": ["iscsi://h/iqn/2"]},
        "families": {"raw": {"width": 2}},
    }
    (tmp_path / c.CONFIG_NAME).write_text(c.dump(raw))
    cfg = c.load(tmp_path)
    assert cfg.library.spec["drives"] == ["iscsi://h/iqn/2"] and cfg.families == {"raw": 2}


def test_family_copies(tmp_path: Path) -> None:
    raw = {**BASE, "families": {"raw": {"copies": 3, "width": 2}, "sim": {"verify": True}}}
    cfg = c.build(tmp_path, raw)
    # only the families that say: a family table without `copies` leaves the xattr's be
    assert cfg.family_copies == {"raw": 3}
    assert cfg.families == {"raw": 2, "sim": 1}


# one wrong type, one unknown key and one bad value in every section: each message names
# the file, the section and the key, and says what was expected
@pytest.mark.parametrize(
    "raw, message",
    [
        ({"archive": {"id": 1234}}, "[archive] id: expected 8 hex digits, got 1234"),
        ({"archive": {"uid": "x"}}, "unknown key 'uid' in [archive] (known: id, name)"),
        ({"archive": {"id": "0123abcd"}}, "[archive] id: expected 8 hex digits, got '0123abcd'"),
        ({"cache": {"size": True}}, "[cache] size: expected a size like '2GiB', got True"),
        ({"cache": {"sise": 1}}, "unknown key 'sise' in [cache] (known: full_timeout, "),
        ({"cache": {"size": 1000}}, "[cache] size: at least 1MiB, got 1000"),
        ({"cache": 5}, "[cache] must be a table"),
        ({"library": {"drives": "x"}}, "[library] drives: expected a list, got 'x'"),
        ({"library": {"drive": ["x"]}}, "unknown key 'drive' in [library] (known: block_size, "),
        (
            {"library": {"type": "cloud"}},
            "[library] type: expected 'emulated' or 'scsi', got 'cloud'",
        ),
        ({"library": {"drive_elements": ["500"]}}, "[library] drive_elements: expected an integer"),
        ({"library": {"default_capacity": "huge"}}, "[library] default_capacity: expected a size"),
        ({"mover": {"retries": "3"}}, "[mover] retries: expected a positive integer, got '3'"),
        ({"mover": {"retry": 3}}, "unknown key 'retry' in [mover] (known: batch_bytes, "),
        ({"mover": {"flush_delay": "soon"}}, "[mover] flush_delay: expected a duration like '30s'"),
        (
            {"aggregation": {"files": 1.5}},
            "[aggregation] files: expected a positive integer, got 1.5",
        ),
        (
            {"aggregation": {"count": 1}},
            "unknown key 'count' in [aggregation] (known: age, files, ",
        ),
        (
            {"aggregation": {"threshold": "2MiB", "size": "1MiB"}},
            "[aggregation] size (1048576) must be at least threshold (2097152)",
        ),
        ({"recall": {"on_open": True}}, "[recall] on_open: expected 'block' or 'refuse', got True"),
        ({"recall": {"open": "block"}}, "unknown key 'open' in [recall] (known: on_open)"),
        ({"mount": {"allow_other": 1}}, "[mount] allow_other: expected true or false, got 1"),
        ({"mount": {"timeout": 1}}, "unknown key 'timeout' in [mount] (known: allow_other, "),
        ({"mount": {"max_file_size": "-1"}}, "[mount] max_file_size: expected a size like"),
        ({"families": {"raw": {"verify": "yes"}}}, "[families.raw] verify: expected true or false"),
        ({"families": {"raw": {"wide": 2}}}, "unknown key 'wide' in [families.raw] (known: "),
        ({"families": {"raw": 2}}, "[families.raw] must be a table"),
        ({"families": {"a.b": {"copies": 9}}}, '[families."a.b"] copies: expected an integer from'),
    ],
)
def test_messages_of_every_section(tmp_path: Path, raw: dict, message: str) -> None:
    merged = {**BASE, **raw, "archive": {**BASE["archive"], **raw.get("archive", {})}}
    with pytest.raises(c.ConfigError) as e:
        c.build(tmp_path, merged)
    assert str(e.value).startswith("reelfs.toml: ")
    assert message in str(e.value)
    assert "\n" not in str(e.value) and "pydantic" not in str(e.value)


def test_missing_archive_id_is_named(tmp_path: Path) -> None:
    with pytest.raises(c.ConfigError, match=r"\[archive\] id: required \(8 hex digits"):
        c.build(tmp_path, {})


def test_the_default_capacity_is_read_once(tmp_path: Path) -> None:
    assert c.build(tmp_path, BASE).library.default_capacity == 0
    raw = {**BASE, "library": {"type": "scsi", "default_capacity": "12TB"}}
    assert c.build(tmp_path, raw).library.default_capacity == 12 * 1000**4


def test_cache_path_must_exist_unless_it_is_the_default(tmp_path: Path) -> None:
    assert not (tmp_path / "cache").exists()  # init makes the archive's own cache directory
    assert c.build(tmp_path, BASE).cache.path == tmp_path / "cache"
    elsewhere = tmp_path / "big" / "cache"
    raw = {**BASE, "cache": {"path": str(elsewhere)}}
    with pytest.raises(c.ConfigError) as e:
        c.build(tmp_path, raw)
    assert f"[cache] path: {elsewhere} does not exist" in str(e.value)
    elsewhere.mkdir(parents=True)
    assert c.build(tmp_path, raw).cache.path == elsewhere
    (tmp_path / "file").write_text("")
    with pytest.raises(c.ConfigError, match="is not a directory"):
        c.build(tmp_path, {**BASE, "cache": {"path": "file"}})


def test_defaults_are_the_documented_ones(tmp_path: Path) -> None:
    cfg = c.build(tmp_path, BASE)
    assert (cfg.cache.high_watermark, cfg.cache.low_watermark) == (0.9, 0.75)
    assert cfg.cache.full_timeout == 60 and cfg.library.type == "emulated"
    assert cfg.library.label_format == "none" and cfg.library.cleaning_uses == 50
    assert (cfg.mover.idle_dismount, cfg.mover.flush_delay) == (60, 30)
    assert (cfg.mover.batch_files, cfg.mover.batch_bytes, cfg.mover.retries) == (
        1000,
        16 * 2**30,
        3,
    )
    assert cfg.aggregation.threshold == 256 * 2**20 and cfg.aggregation.size == 4 * 2**30
    assert cfg.aggregation.age == 30 and cfg.aggregation.files == 10_000
    assert cfg.mount.allow_other is False and cfg.mount.cache_timeout == 300
    assert cfg.mount.max_file_size is None and cfg.mount.readahead == 2**20
    assert cfg.name == "reelfs" and cfg.families == {} and cfg.verify_families == frozenset()
    assert cfg.library.spec["path"] == "library"
    # the age of small files follows flush_delay unless set
    assert c.build(tmp_path, {**BASE, "mover": {"flush_delay": "5m"}}).aggregation.age == 300


def test_overrides_name_families_with_dots(tmp_path: Path) -> None:
    raw = c.apply_overrides(BASE, ['families."a.b".width=2', "families.raw.verify=true"])
    assert raw["families"] == {"a.b": {"width": 2}, "raw": {"verify": True}}
    cfg = c.build(tmp_path, raw)
    assert cfg.families == {"a.b": 2, "raw": 1} and cfg.verify_families == {"raw"}
    with pytest.raises(c.ConfigError, match=r"expected SECTION\.KEY=VALUE"):
        c.parse_override("cache.size")


def test_dump_round_trips_dotted_names_and_newlines(tmp_path: Path) -> None:
    raw = {
        **BASE,
        "archive": {"id": "0123ABCD", "name": 'two\nlines "quoted" \\ back'},
        "families": {"a.b": {"width": 3}, "raw": {"copies": 2}},
        "library": {"type": "scsi", "changer": "iscsi://h/iqn/1", "drives": ["d\n1", "d2"]},
    }
    text = c.dump(raw)
    assert '[families."a.b"]' in text
    assert tomllib.loads(text) == raw
    (tmp_path / c.CONFIG_NAME).write_text(text)
    cfg = c.load(tmp_path)
    assert cfg.name == raw["archive"]["name"] and cfg.families == {"a.b": 3, "raw": 1}
    assert cfg.family_copies == {"raw": 2} and cfg.library.spec["drives"] == ["d\n1", "d2"]


POST = {"broker": "amqp://alice@127.0.0.1:5672/", "base_url": "http://127.0.0.1:8080/"}


@pytest.mark.parametrize(
    "section, table, message",
    [
        ("post", {**POST, "blocksize": []}, "[post] blocksize: expected a size like '2GiB'"),
        ("post", {**POST, "base": "x"}, "unknown key 'base' in [post] (known: base_url, "),
        ("post", {**POST, "identity": "crc"}, "[post] identity: expected 'sha512', 'md5', "),
        ("post", {"broker": POST["broker"]}, "[post] base_url: required (a URL)"),
        ("post", {**POST, "base_url": "gopher://h/"}, "[post] base_url: expected an http(s)://"),
        ("post", {**POST, "broker": "amqp://a:pw@h/"}, "[post] broker: no password here"),
        ("post", {**POST, "exchange": "x y"}, "[post] exchange: bad exchange name 'x y'"),
        ("post", {**POST, "identity": "arbitrary"}, '[post] identity = "arbitrary" needs '),
        ("post", "amqp://h/", "[post] must be a table"),
        ("serve", {"listen": "h:1", "auth": "yes"}, "[serve] auth: expected true or false"),
        ("serve", {"listen": "h:1", "user": "x"}, "unknown key 'user' in [serve] (known: auth, "),
        ("serve", {"listen": "h"}, "[serve] listen: expected HOST:PORT, got 'h'"),
        ("serve", {}, "[serve] listen: required (HOST:PORT)"),
    ],
)
def test_post_and_serve_messages(section: str, table: object, message: str) -> None:
    from backend.replication.post_config import load_post, load_serve

    loader = load_post if section == "post" else load_serve
    with pytest.raises(c.ConfigError) as e:
        loader({section: table})
    assert str(e.value).startswith("reelfs.toml: ") and message in str(e.value)


def test_post_defaults_follow_the_broker_user() -> None:
    from backend.replication.post_config import load_post, load_serve

    post = load_post({"post": POST})
    assert post is not None and (post.exchange, post.source) == ("xs_alice", "alice")
    assert post.identity == "sha512" and post.blocksize == 0 and post.base_path == ""
    anonymous = load_post({"post": {**POST, "broker": "amqp://h/", "blocksize": "1MiB"}})
    assert anonymous is not None and anonymous.exchange == "xpublic"
    assert anonymous.blocksize == 2**20
    serve = load_serve({"serve": {"listen": "127.0.0.1:8080"}})
    assert serve is not None and serve.recall_wait == 20 and serve.url_prefix == "/"
    assert load_post({}) is None and load_serve({}) is None

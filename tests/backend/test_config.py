"""reelfs.toml parsing: every bad value is refused with where and why."""

from __future__ import annotations

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

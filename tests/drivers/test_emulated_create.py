"""Creating and opening an emulated library: the layout on disk and every refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drivers.emulated import create_library, open_library
from drivers.library import open_library as open_configured
from drivers.tape import ElementType, LibraryConfigError


def make(path: Path, **kw) -> None:
    args = {"drives": 1, "slots": 4, "volumes": ["A1"], "capacity": 100_000}
    create_library(path, **{**args, **kw})


def test_layout(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    make(lib, volumes=["A1", "B2"], cleaning=["CLN1"], drives=3, ie_slots=0)
    assert sorted(p.name for p in lib.iterdir()) == ["library.json", "state.json", "tapes"]
    assert sorted(p.name for p in (lib / "tapes").iterdir()) == [
        f"{barcode}.{suffix}" for barcode in ("A1", "B2", "CLN1") for suffix in ("index", "tape")
    ]
    desc = json.loads((lib / "library.json").read_text())
    assert desc["format"] == "reelfs-emulated-library" and desc["version"] == 1
    assert [d["address"] for d in desc["drives"]] == [256, 257, 258]
    assert desc["early_warning"] == 95_000  # the default: 5% before the end
    library = open_library(lib)
    inv = library.changer.inventory()
    assert [e.barcode for e in inv.of_type(ElementType.SLOT)] == ["A1", "B2", "CLN1", None]
    assert inv.of_type(ElementType.IMPORT_EXPORT) == []
    assert sorted(library.drives) == [256, 257, 258]
    library.close()


def test_existing_empty_directory_is_fine(tmp_path: Path) -> None:
    make(tmp_path)
    assert (tmp_path / "library.json").exists()


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"slots": 1, "volumes": ["A1", "B2"]}, "too few slots: 2 volume"),
        ({"slots": 2, "volumes": ["A1", "B2"], "cleaning": ["CLN1"]}, "need 3 slots"),
        ({"volumes": ["A1", "A1"]}, "duplicate barcode 'A1'"),
        ({"volumes": ["CLN9"], "cleaning": ["CLN9"]}, "duplicate barcode"),
        ({"volumes": ["a1"]}, "invalid barcode 'a1'"),
        ({"volumes": [""]}, "invalid barcode"),
        ({"volumes": ["ABCDEFGHIJK"]}, "1 to 10 characters"),
        ({"volumes": ["A-1"]}, "invalid barcode"),
        ({"volumes": "A1"}, "not one string"),
        ({"volumes": ["CLN1"]}, "prefix of cleaning"),
        ({"cleaning": ["XYZ1"]}, "must start with CLN"),
        ({"drives": 0}, "drives must be"),
        ({"slots": 0}, "slots must be"),
        ({"ie_slots": -1}, "ie_slots must be"),
        ({"capacity": 10}, "capacity must be"),
        ({"early_warning": 0}, "early_warning must be"),
        ({"early_warning": 100_001}, "early_warning must be"),
        ({"cleaning_uses": 0}, "cleaning_uses must be"),
    ],
)
def test_refusals(tmp_path: Path, kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(tmp_path / "lib", **kw)
    assert not (tmp_path / "lib").exists()


def test_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "precious").write_text("data")
    with pytest.raises(ValueError, match="not empty"):
        make(tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="not a directory"):
        make(tmp_path / "file")


def test_refuses_to_recreate(tmp_path: Path) -> None:
    make(tmp_path / "lib")
    with pytest.raises(ValueError, match="not empty"):
        make(tmp_path / "lib")


def test_opening_something_else_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(LibraryConfigError, match="not an emulated library"):
        open_library(tmp_path)
    (tmp_path / "library.json").write_text('{"format": "reelfs-emulated-library", "version": 7}')
    with pytest.raises(LibraryConfigError, match="unsupported library version 7"):
        open_library(tmp_path)


def test_serials_differ_between_libraries(tmp_path: Path) -> None:
    make(tmp_path / "a")
    make(tmp_path / "b")
    a, b = open_library(tmp_path / "a"), open_library(tmp_path / "b")
    assert a.drives[256].serial != b.drives[256].serial
    a.close()
    b.close()


def test_opened_through_the_archive_configuration(tmp_path: Path) -> None:
    make(tmp_path / "library")
    library = open_configured({"type": "emulated"}, tmp_path)
    assert library.changer.inventory().find("A1") is not None
    library.close()

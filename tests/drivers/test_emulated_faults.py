"""Fault injection: media and drive errors, write protection, cleaning, changer failures,
injected from this process or from another one while the drive is in use."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.emulated import clear_faults, inject_fault, list_faults
from drivers.tape import (
    BlankCheckError,
    DriveError,
    ErrorClass,
    IllegalRequestError,
    Library,
    MediaError,
    Position,
    TapeDrive,
    WriteProtectedError,
)
from tests.drivers.emulated_support import CLEANING_USES, DRIVE0, DRIVE1, SLOT0, run_python

CLEAN_SLOT = SLOT0 + 3  # CLN001


def test_media_error_reading_one_block(emu_libdir: Path, emu_drive: TapeDrive) -> None:
    for i in range(4):
        emu_drive.write_block(bytes([i]) * 10)
    inject_fault(emu_libdir, kind="media", volume="VOL001", block=2, op="read")
    emu_drive.rewind()
    emu_drive.read_block(100)
    emu_drive.read_block(100)
    with pytest.raises(MediaError) as e:
        emu_drive.read_block(100)
    assert e.value.error_class == ErrorClass.MEDIA
    assert e.value.alerts == {4, 5}
    assert emu_drive.read_position() == Position(3, 0)  # past the bad record
    assert emu_drive.read_block(100) == bytes([3]) * 10
    emu_drive.locate(2)
    with pytest.raises(MediaError):  # a media defect stays
        emu_drive.read_block(100)
    assert emu_drive.statistics()["read_errors"] == 2
    assert emu_drive.alerts() == {4, 5}
    assert emu_drive.alerts() == frozenset()  # reading the flags cleared them


def test_media_error_writing_one_block(emu_libdir: Path, emu_drive: TapeDrive) -> None:
    inject_fault(emu_libdir, kind="media", volume="VOL001", block=1, op="write", count=1)
    emu_drive.write_block(b"zero")
    with pytest.raises(MediaError) as e:
        emu_drive.write_block(b"one")
    assert e.value.alerts == {4, 6}
    assert emu_drive.read_position() == Position(1, 0)  # nothing written
    with pytest.raises(BlankCheckError):
        emu_drive.read_block(100)
    emu_drive.locate(1)
    emu_drive.write_block(b"one")  # the count is used up
    assert list_faults(emu_libdir) == []
    assert emu_drive.statistics()["write_errors"] == 1


def test_media_error_only_on_its_volume(emu_libdir: Path, emu_library: Library) -> None:
    inject_fault(emu_libdir, kind="media", volume="VOL002", block=0)
    emu_library.changer.move(SLOT0, DRIVE0)
    drive = emu_library.drives[DRIVE0]
    drive.load()
    drive.write_block(b"fine on VOL001")
    drive.unload()
    emu_library.changer.move(DRIVE0, SLOT0)
    emu_library.changer.move(SLOT0 + 1, DRIVE0)
    drive.load()
    with pytest.raises(MediaError, match="block 0 of VOL002"):
        drive.write_block(b"bad")


@pytest.mark.parametrize(
    ("op", "call"),
    [
        ("write", lambda d: d.write_block(b"x")),
        ("write", lambda d: d.write_filemarks(1)),
        ("read", lambda d: d.read_block(10)),
        ("locate", lambda d: d.locate(0)),
        ("locate", lambda d: d.space(1)),
        ("locate", lambda d: d.rewind()),
        ("load", lambda d: d.load()),
        ("unload", lambda d: d.unload()),
        ("any", lambda d: d.read_block(10)),
    ],
)
def test_drive_error_on_the_next_operation_of_a_kind(
    emu_libdir: Path, emu_drive: TapeDrive, op: str, call
) -> None:
    emu_drive.write_block(b"x")
    emu_drive.rewind()
    inject_fault(emu_libdir, kind="drive", drive="drive0", op=op)
    with pytest.raises(DriveError) as e:
        call(emu_drive)
    assert e.value.error_class == ErrorClass.DRIVE
    assert e.value.alerts == {30}
    assert 30 in emu_drive.alerts()
    assert list_faults(emu_libdir) == []
    call(emu_drive)  # once only (count defaults to 1)
    assert emu_drive.statistics()["drive_errors"] == 1


def test_drive_error_spares_other_kinds_and_other_drives(
    emu_libdir: Path, emu_library: Library, emu_drive: TapeDrive
) -> None:
    inject_fault(emu_libdir, kind="drive", drive="drive0", op="read", count=2)
    emu_drive.write_block(b"x")  # a write is not a read
    emu_drive.rewind()
    emu_library.changer.move(SLOT0 + 1, DRIVE1)
    other = emu_library.drives[DRIVE1]
    other.load()  # drive1 is fine
    other.write_block(b"y")
    for _ in range(2):
        with pytest.raises(DriveError):
            emu_drive.read_block(10)
    assert emu_drive.read_block(10) == b"x"


def test_drive_error_forever_until_cleared(emu_libdir: Path, emu_drive: TapeDrive) -> None:
    fault = inject_fault(emu_libdir, kind="drive", drive="drive0", op="write", count=None)
    for _ in range(5):
        with pytest.raises(DriveError):
            emu_drive.write_block(b"x")
    assert list_faults(emu_libdir)[0]["id"] == fault
    assert clear_faults(emu_libdir) == 1
    emu_drive.write_block(b"x")


def test_drive_error_for_every_drive(emu_libdir: Path, emu_library: Library) -> None:
    inject_fault(emu_libdir, kind="drive", op="load", count=2)
    emu_library.changer.move(SLOT0, DRIVE0)
    emu_library.changer.move(SLOT0 + 1, DRIVE1)
    for address in (DRIVE0, DRIVE1):
        with pytest.raises(DriveError):
            emu_library.drives[address].load()
    emu_library.drives[DRIVE0].load()


def test_fault_injected_from_another_process(emu_libdir: Path, emu_drive: TapeDrive) -> None:
    """The way tests use it: the daemon (here, this process) is busy with the drive, the
    test injects from outside, the next command fails."""
    emu_drive.write_block(b"before")
    result = run_python(
        """
        import sys
        from drivers.emulated import inject_fault
        print(inject_fault(sys.argv[1], kind="drive", drive="drive0", op="write"))
        """,
        str(emu_libdir),
    )
    assert result.returncode == 0, result.stderr
    with pytest.raises(DriveError, match=f"injected fault {result.stdout.strip()}"):
        emu_drive.write_block(b"after")
    emu_drive.write_block(b"after")
    result = run_python(
        """
        import sys
        from drivers.emulated import inject_fault
        inject_fault(sys.argv[1], kind="media", volume="VOL001", block=0, op="read")
        """,
        str(emu_libdir),
    )
    assert result.returncode == 0, result.stderr
    emu_drive.rewind()
    with pytest.raises(MediaError):
        emu_drive.read_block(100)
    result = run_python(
        "import sys; from drivers.emulated import clear_faults; clear_faults(sys.argv[1])",
        str(emu_libdir),
    )
    assert result.returncode == 0, result.stderr
    emu_drive.rewind()
    assert emu_drive.read_block(100) == b"before"


def test_faults_injected_in_quick_succession_are_all_seen(
    emu_libdir: Path, emu_drive: TapeDrive
) -> None:
    """Changes within one file-system timestamp tick must not go unnoticed."""
    for op in ("write", "read", "locate"):
        inject_fault(emu_libdir, kind="drive", drive="drive0", op=op)
        clear_faults(emu_libdir)
    inject_fault(emu_libdir, kind="drive", drive="drive0", op="write")
    with pytest.raises(DriveError):
        emu_drive.write_block(b"x")
    inject_fault(emu_libdir, kind="drive", drive="drive0", op="write")
    clear_faults(emu_libdir)
    emu_drive.write_block(b"x")


def test_write_protected_volume(emu_libdir: Path, emu_drive: TapeDrive) -> None:
    emu_drive.write_block(b"old")
    emu_drive.rewind()
    inject_fault(emu_libdir, kind="write_protect", volume="VOL001")
    assert emu_drive.status().write_protected is True
    with pytest.raises(WriteProtectedError, match="write-protected") as e:
        emu_drive.write_block(b"new")
    assert e.value.alerts == {9}
    with pytest.raises(WriteProtectedError, match="write-protected"):
        emu_drive.write_filemarks(1)
    assert emu_drive.read_block(100) == b"old"  # reading is fine
    assert 9 in emu_drive.alerts()
    clear_faults(emu_libdir)
    assert emu_drive.status().write_protected is False
    emu_drive.write_block(b"new")


def test_clean_now_until_a_cleaning_cartridge_is_loaded(
    emu_libdir: Path, emu_library: Library
) -> None:
    inject_fault(emu_libdir, kind="clean", drive="drive1")
    drive0, drive1 = emu_library.drives[DRIVE0], emu_library.drives[DRIVE1]
    assert 20 in drive1.alerts()
    assert 20 in drive1.alerts()  # the condition stays until cleaned
    assert 20 not in drive0.alerts()
    changer = emu_library.changer
    changer.move(CLEAN_SLOT, DRIVE1)
    assert 20 in drive1.alerts()  # moving it in is not enough: the drive must load it
    drive1.load()
    assert drive1.alerts() == frozenset()
    status = drive1.status()
    assert status.loaded and not status.ready
    assert status.volume == "CLN001"
    assert "cleaned with CLN001 (use 1 of 2)" in status.detail
    drive1.unload()
    changer.move(DRIVE1, CLEAN_SLOT)
    assert list_faults(emu_libdir) == []


def test_cleaning_cartridge_expires(emu_libdir: Path, emu_library: Library) -> None:
    changer, drive = emu_library.changer, emu_library.drives[DRIVE0]
    changer.move(CLEAN_SLOT, DRIVE0)
    for _ in range(CLEANING_USES):
        inject_fault(emu_libdir, kind="clean", drive="drive0")
        drive.load()
        assert drive.alerts() == frozenset()
        drive.unload()
    inject_fault(emu_libdir, kind="clean", drive="drive0")
    drive.load()
    assert drive.alerts() == {20, 22}  # expired, nothing cleaned
    assert "expired (2 of 2 uses)" in drive.status().detail
    drive.unload()
    assert drive.alerts() == {20}
    assert [f["kind"] for f in list_faults(emu_libdir)] == ["clean"]


def test_data_operations_on_a_cleaning_cartridge_fail(emu_library: Library) -> None:
    emu_library.changer.move(CLEAN_SLOT, DRIVE0)
    drive = emu_library.drives[DRIVE0]
    drive.load()
    for op in (
        lambda: drive.write_block(b"x"),
        lambda: drive.read_block(10),
        lambda: drive.write_filemarks(1),
        lambda: drive.locate(0),
        lambda: drive.space(1),
        drive.read_position,
    ):
        with pytest.raises(IllegalRequestError, match="cleaning cartridge"):
            op()
    assert drive.remaining_capacity() is None


def test_changer_failure(emu_libdir: Path, emu_library: Library) -> None:
    inject_fault(emu_libdir, kind="changer")
    with pytest.raises(DriveError, match="picker failure"):
        emu_library.changer.move(SLOT0, DRIVE0)
    assert emu_library.changer.inventory().by_address(SLOT0).barcode == "VOL001"
    emu_library.changer.move(SLOT0, DRIVE0)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "gremlin"}, "fault kind must be one of"),
        ({"kind": "media", "block": 1}, "needs volume"),
        ({"kind": "media", "volume": "VOL001"}, "needs block"),
        ({"kind": "media", "volume": "VOL001", "block": -1}, "needs block"),
        ({"kind": "media", "volume": "vol001", "block": 1}, "invalid barcode"),
        ({"kind": "media", "volume": "VOL001", "block": 1, "op": "load"}, "op must be"),
        ({"kind": "drive", "drive": "drive9"}, "no drive named 'drive9'"),
        ({"kind": "drive", "op": "dance"}, "op must be"),
        ({"kind": "drive", "count": 0}, "count must be"),
        ({"kind": "drive", "volume": "VOL001"}, "unknown parameter"),
        ({"kind": "clean"}, "needs drive"),
        ({"kind": "write_protect"}, "needs volume"),
    ],
)
def test_bad_fault_specs_are_refused(emu_libdir: Path, spec: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        inject_fault(emu_libdir, **spec)
    assert list_faults(emu_libdir) == []


def test_clear_one_fault(emu_libdir: Path) -> None:
    first = inject_fault(emu_libdir, kind="clean", drive="drive0")
    second = inject_fault(emu_libdir, kind="write_protect", volume="VOL002")
    assert second == first + 1
    assert clear_faults(emu_libdir, first) == 1
    assert [f["id"] for f in list_faults(emu_libdir)] == [second]
    assert clear_faults(emu_libdir) == 1
    assert not (emu_libdir / "faults.json").exists()

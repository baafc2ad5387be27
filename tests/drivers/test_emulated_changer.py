"""The emulated changer: SMC addressing and inventory, refused moves, import/export by the
operator, and a state that survives the death of the process using the library."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from drivers.emulated import insert_cartridge, open_library, remove_cartridge
from drivers.tape import (
    ElementType,
    ErrorClass,
    IllegalRequestError,
    Library,
    NotReadyError,
    Position,
    SpaceUnit,
)
from tests.drivers.emulated_support import DRIVE0, DRIVE1, IE0, IE1, SLOT0, run_python


def test_inventory_uses_smc_style_addresses(emu_library: Library) -> None:
    inv = emu_library.changer.inventory()
    assert [(e.address, e.type) for e in inv.elements] == [
        (1, ElementType.TRANSPORT),
        (16, ElementType.IMPORT_EXPORT),
        (17, ElementType.IMPORT_EXPORT),
        (256, ElementType.DRIVE),
        (257, ElementType.DRIVE),
        *[(1024 + i, ElementType.SLOT) for i in range(8)],
    ]
    slots = inv.of_type(ElementType.SLOT)
    assert [s.barcode for s in slots] == ["VOL001", "VOL002", "VOL003", "CLN001", *[None] * 4]
    assert [s.full for s in slots] == [True] * 4 + [False] * 4
    assert not any(e.full for e in inv.of_type(ElementType.DRIVE))


def test_drive_elements_carry_the_drive_serials(emu_library: Library) -> None:
    inv = emu_library.changer.inventory()
    for address, drive in emu_library.drives.items():
        assert inv.by_address(address).identifier == drive.serial
    assert sorted(emu_library.drives) == [DRIVE0, DRIVE1]


def test_cartridge_in_a_drive_reports_its_home_slot(emu_library: Library) -> None:
    changer = emu_library.changer
    changer.move(SLOT0 + 1, DRIVE0)
    element = changer.inventory().by_address(DRIVE0)
    assert (element.full, element.barcode, element.source) == (True, "VOL002", SLOT0 + 1)
    assert changer.inventory().by_address(SLOT0 + 1).full is False
    changer.move(DRIVE0, DRIVE1)  # drive to drive keeps the home
    assert changer.inventory().find("VOL002").source == SLOT0 + 1
    changer.move(DRIVE1, SLOT0 + 5)
    element = changer.inventory().by_address(SLOT0 + 5)
    assert (element.barcode, element.source) == ("VOL002", None)


def test_move_out_of_a_loaded_drive_is_refused(emu_library: Library) -> None:
    changer = emu_library.changer
    changer.move(SLOT0, DRIVE0)
    emu_library.drives[DRIVE0].load()
    with pytest.raises(IllegalRequestError, match="has not been unloaded") as e:
        changer.move(DRIVE0, SLOT0)
    assert e.value.error_class == ErrorClass.ILLEGAL_REQUEST
    assert changer.inventory().by_address(DRIVE0).barcode == "VOL001"
    emu_library.drives[DRIVE0].unload()
    changer.move(DRIVE0, SLOT0)
    assert changer.inventory().by_address(SLOT0).barcode == "VOL001"


def test_moves_from_empty_or_to_full_elements_are_refused(emu_library: Library) -> None:
    changer = emu_library.changer
    with pytest.raises(IllegalRequestError, match="empty"):
        changer.move(SLOT0 + 7, DRIVE0)
    with pytest.raises(IllegalRequestError, match=r"full \(holds VOL002\)"):
        changer.move(SLOT0, SLOT0 + 1)
    changer.move(SLOT0, DRIVE0)
    with pytest.raises(IllegalRequestError, match=r"drive0.*full"):
        changer.move(SLOT0 + 1, DRIVE0)
    inv = changer.inventory()
    assert inv.by_address(DRIVE0).barcode == "VOL001"
    assert inv.by_address(SLOT0 + 1).barcode == "VOL002"


def test_moves_to_nowhere_or_the_transport_are_refused(emu_library: Library) -> None:
    changer = emu_library.changer
    with pytest.raises(IllegalRequestError, match="no element at destination address 999"):
        changer.move(SLOT0, 999)
    with pytest.raises(IllegalRequestError, match="no element at source address 5000"):
        changer.move(5000, SLOT0 + 7)
    with pytest.raises(IllegalRequestError, match="transport"):
        changer.move(SLOT0, 1)


def test_move_to_the_same_element_is_a_no_op(emu_library: Library) -> None:
    emu_library.changer.move(SLOT0, SLOT0)
    assert emu_library.changer.inventory().by_address(SLOT0).barcode == "VOL001"


def test_export_remove_insert_brings_the_data_back(emu_libdir: Path, emu_library: Library) -> None:
    changer = emu_library.changer
    drive = emu_library.drives[DRIVE0]
    changer.move(SLOT0, DRIVE0)
    drive.load()
    drive.write_block(b"kept across export")
    drive.write_filemarks(1)
    drive.unload()
    changer.move(DRIVE0, IE1)
    assert remove_cartridge(emu_libdir, IE1) == "VOL001"
    assert changer.inventory().find("VOL001") is None
    assert (emu_libdir / "tapes" / "VOL001.tape").exists()
    with pytest.raises(ValueError, match="empty"):
        remove_cartridge(emu_libdir, IE1)
    assert insert_cartridge(emu_libdir, "VOL001") == IE0
    changer.move(IE0, DRIVE1)
    other = emu_library.drives[DRIVE1]
    other.load()
    assert other.read_block(100) == b"kept across export"


def test_insert_new_blank_cartridge(emu_libdir: Path, emu_library: Library) -> None:
    assert insert_cartridge(emu_libdir, "NEW001", address=IE1) == IE1
    assert insert_cartridge(emu_libdir, "NEW002") == IE0
    inv = emu_library.changer.inventory()
    assert inv.by_address(IE1).barcode == "NEW001"
    assert inv.by_address(IE0).barcode == "NEW002"
    emu_library.changer.move(IE1, SLOT0 + 7)
    emu_library.changer.move(SLOT0 + 7, DRIVE0)
    drive = emu_library.drives[DRIVE0]
    drive.load()
    with pytest.raises(Exception, match="end of data"):
        drive.read_block(10)


def test_insert_and_remove_refusals(emu_libdir: Path) -> None:
    with pytest.raises(ValueError, match="already in the library"):
        insert_cartridge(emu_libdir, "VOL002")
    with pytest.raises(ValueError, match="invalid barcode"):
        insert_cartridge(emu_libdir, "vol-1")
    with pytest.raises(ValueError, match="not an import/export slot"):
        insert_cartridge(emu_libdir, "NEW001", address=SLOT0 + 7)
    with pytest.raises(ValueError, match="not an import/export slot"):
        remove_cartridge(emu_libdir, SLOT0)
    insert_cartridge(emu_libdir, "NEW001")
    with pytest.raises(ValueError, match="slot 16 is full"):
        insert_cartridge(emu_libdir, "NEW002", address=IE0)
    insert_cartridge(emu_libdir, "NEW002")
    with pytest.raises(ValueError, match="no empty import/export slot"):
        insert_cartridge(emu_libdir, "NEW003")
    remove_cartridge(emu_libdir, IE0)
    with pytest.raises(ValueError, match="capacity"):
        insert_cartridge(emu_libdir, "NEW001", capacity=12345)
    with pytest.raises(ValueError, match="capacity"):
        insert_cartridge(emu_libdir, "NEW004", capacity=0)


def test_inserting_a_cleaning_cartridge(emu_libdir: Path, emu_library: Library) -> None:
    address = insert_cartridge(emu_libdir, "CLN002")
    emu_library.changer.move(address, DRIVE0)
    drive = emu_library.drives[DRIVE0]
    drive.load()
    assert "cleaned with CLN002" in drive.status().detail


def test_concurrent_operators_never_lose_a_cartridge(tmp_path: Path) -> None:
    """Four processes insert at once: the lock serialises them into four different slots."""
    import subprocess
    import sys

    from drivers.emulated import create_library

    libdir = tmp_path / "lib"
    create_library(libdir, drives=1, slots=1, volumes=[], capacity=10_000, ie_slots=4)
    code = (
        "import sys; from drivers.emulated import insert_cartridge;"
        " print(insert_cartridge(sys.argv[1], sys.argv[2]))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(libdir), f"OP{i}"], stdout=subprocess.PIPE, text=True
        )
        for i in range(4)
    ]
    addresses = [int(p.communicate(timeout=60)[0]) for p in procs]
    assert sorted(addresses) == [16, 17, 18, 19]
    library = open_library(libdir)
    inv = library.changer.inventory()
    library.close()
    assert sorted(e.barcode for e in inv.of_type(ElementType.IMPORT_EXPORT)) == [
        "OP0",
        "OP1",
        "OP2",
        "OP3",
    ]


def test_state_survives_kill_of_the_owning_process(emu_libdir: Path) -> None:
    """A daemon killed with a tape loaded: a new process finds it in the drive, with its home
    slot, refuses to move it until it is unloaded, then puts it home."""
    result = run_python(
        """
        import os, signal, sys
        from pathlib import Path
        from drivers.emulated import open_library
        lib = open_library(Path(sys.argv[1]))
        lib.changer.move(1025, 257)
        drive = lib.drives[257]
        drive.load()
        drive.write_block(b"synced")
        drive.write_filemarks(1)
        drive.write_block(b"not synced, but written")
        print("ready", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """,
        str(emu_libdir),
    )
    assert result.returncode == -9 and result.stdout == "ready\n", result.stderr
    library = open_library(emu_libdir)
    try:
        element = library.changer.inventory().by_address(DRIVE1)
        assert (element.full, element.barcode, element.source) == (True, "VOL002", SLOT0 + 1)
        with pytest.raises(IllegalRequestError, match="has not been unloaded"):
            library.changer.move(DRIVE1, SLOT0 + 1)
        drive = library.drives[DRIVE1]
        status = drive.status()
        assert (status.loaded, status.volume) == (True, "VOL002")
        # the records the dead process wrote are there, as on a real drive
        drive.space(0, SpaceUnit.END_OF_DATA)
        assert drive.read_position() == Position(3, 1)
        drive.unload()
        library.changer.move(DRIVE1, SLOT0 + 1)
        assert library.changer.inventory().by_address(SLOT0 + 1).barcode == "VOL002"
    finally:
        library.close()


KILLED_WITH_TAPE_LOADED = """
    import os, signal, sys
    from drivers.emulated import open_library
    lib = open_library(sys.argv[1])
    lib.changer.move(1024, 256)
    drive = lib.drives[256]
    drive.load()
    drive.write_block(b"written, never synced")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_cleaner_can_unload_without_loading_first(emu_libdir: Path) -> None:
    result = run_python(KILLED_WITH_TAPE_LOADED, str(emu_libdir))
    assert result.returncode == -9, result.stderr
    index = emu_libdir / "tapes" / "VOL001.index"
    assert struct.unpack_from("<Q", index.read_bytes(), 512 + 32)[0] == 0  # nothing durable
    result = run_python(
        """
        import sys
        from drivers.emulated import open_library
        lib = open_library(sys.argv[1])
        lib.drives[256].unload()
        home = lib.changer.inventory().by_address(256).source
        lib.changer.move(256, home)
        print(home)
        """,
        str(emu_libdir),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(SLOT0)
    # the unload wrote out what the dead process had written, as a drive does on eject
    assert struct.unpack_from("<Q", index.read_bytes(), 512 + 32)[0] == 1


def test_a_damaged_cartridge_can_still_be_unloaded(emu_libdir: Path) -> None:
    result = run_python(KILLED_WITH_TAPE_LOADED, str(emu_libdir))
    assert result.returncode == -9, result.stderr
    index = emu_libdir / "tapes" / "VOL001.index"
    index.write_bytes(b"garbage" + index.read_bytes()[7:])
    library = open_library(emu_libdir)
    try:
        drive = library.drives[DRIVE0]
        assert drive.status().ready is False
        drive.unload()
        library.changer.move(DRIVE0, SLOT0)
    finally:
        library.close()


def test_state_file_is_plain_json(emu_libdir: Path, emu_library: Library) -> None:
    emu_library.changer.move(SLOT0, DRIVE0)
    emu_library.drives[DRIVE0].load()
    state = json.loads((emu_libdir / "state.json").read_text())
    assert state["version"] == 1
    assert state["elements"]["256"] == {"barcode": "VOL001", "source": 1024, "loaded": True}
    assert state["elements"]["1024"] is None
    assert not list(emu_libdir.glob(".*.tmp"))


def test_unload_of_empty_drive_is_not_ready(emu_library: Library) -> None:
    with pytest.raises(NotReadyError):
        emu_library.drives[DRIVE1].unload()
    emu_library.changer.move(SLOT0, DRIVE1)
    emu_library.drives[DRIVE1].unload()  # present but not loaded: nothing to do
    emu_library.changer.move(DRIVE1, SLOT0)

"""The SMC changer driver against tgt's virtual changer: inventory, moves, errors, the
drive-to-element mapping."""

from __future__ import annotations

import pytest
from pyscsi.pyscsi.scsi import SCSI

from drivers.scsi import LibraryMappingError, ScsiMediaChanger, open_changer, open_library
from drivers.tape import ElementType, IllegalRequestError

pytestmark = pytest.mark.slow


def test_inventory_of_the_vtl(vtl, library):
    inv = library.changer.inventory()
    assert [e.address for e in inv.of_type(ElementType.TRANSPORT)] == [1]
    slots = inv.of_type(ElementType.SLOT)
    assert [s.address for s in slots] == vtl.slots
    for barcode, home in vtl.tapes.items():
        el = inv.find(barcode)
        assert el is not None and el.address == home and el.type is ElementType.SLOT
    assert [e.address for e in inv.of_type(ElementType.IMPORT_EXPORT)] == vtl.import_export
    assert not any(e.full for e in inv.of_type(ElementType.IMPORT_EXPORT))
    drives = inv.of_type(ElementType.DRIVE)
    assert [d.address for d in drives] == vtl.drive_elements
    # the last drive's serial is cut short by tgt; the library restored it from the mapping
    assert [d.identifier for d in drives] == vtl.drive_serials
    assert not any(d.full for d in drives)
    assert isinstance(library.changer, ScsiMediaChanger)
    assert library.changer.is_cleaning(inv.by_address(vtl.tapes["CLN001"]).barcode)


def test_drives_are_mapped_by_serial(vtl, library):
    assert sorted(library.drives) == vtl.drive_elements
    for address, serial in zip(vtl.drive_elements, vtl.drive_serials, strict=True):
        assert library.drives[address].serial == serial


def test_move_between_slots_records_the_source(vtl, library):
    ch = library.changer
    home = vtl.tapes["RL0006"]
    spare = 1006
    ch.move(home, spare)
    try:
        inv = ch.inventory()
        moved = inv.by_address(spare)
        assert moved.full and moved.barcode == "RL0006" and moved.source == home
        assert not inv.by_address(home).full
    finally:
        ch.move(spare, home)
    assert ch.inventory().find("RL0006").address == home


def test_move_errors_are_illegal_requests(vtl, library):
    ch = library.changer
    with pytest.raises(IllegalRequestError, match="3B/0D"):
        ch.move(vtl.tapes["RL0001"], vtl.tapes["RL0002"])  # destination full
    with pytest.raises(IllegalRequestError, match="3B/0E"):
        ch.move(1006, 1007)  # source empty
    with pytest.raises(IllegalRequestError, match="24/00"):
        ch.move(vtl.tapes["RL0001"], 4242)  # no such element


def test_move_into_a_drive_tells_the_drive_its_volume(vtl, library):
    ch = library.changer
    drive = library.drives[500]
    ch.inventory()
    ch.move(vtl.tapes["RL0003"], 500)
    assert drive.volume == "RL0003"
    assert ch.inventory().by_address(500).source == vtl.tapes["RL0003"]
    ch.move(500, vtl.tapes["RL0003"])
    assert drive.volume is None


def test_initialize_element_status_and_no_mail_slot_door(vtl, library):
    ch = library.changer
    ch.initialize_element_status()
    assert ch.open_import_export(vtl.import_export[0]) is False  # tgt: plain slots
    assert ch.lock_import_export(True) is False


def test_explicit_drive_elements(vtl):
    lib = open_library(vtl.changer, vtl.drives, drive_elements=[501, 500])
    try:
        assert lib.drives[501].device.url == vtl.drives[0]
        assert lib.drives[500].device.url == vtl.drives[1]
    finally:
        lib.close()
    with pytest.raises(LibraryMappingError, match="2 drives"):
        open_library(vtl.changer, vtl.drives, drive_elements=[500])
    with pytest.raises(LibraryMappingError, match="no drive element"):
        open_library(vtl.changer, vtl.drives, drive_elements=[500, 777])


def test_pyscsi_scsi_object_uses_our_device(vtl):
    changer = open_changer(vtl.changer)
    try:
        s = SCSI(changer.device)
        assert changer.device.devicetype == 0x08  # PyScsi set the SMC opcodes
        assert bytes(s.inquiry().result["t10_vendor_identification"]).strip() == b"REELFS"
        s.testunitready()
    finally:
        changer.close()


def test_reelfs_toml_library_table_opens_the_vtl(vtl, tmp_path):
    from drivers.library import open_library as open_configured
    from drivers.tape import LibraryConfigError

    spec = {"type": "scsi", "changer": vtl.changer, "drives": vtl.drives}
    lib = open_configured(spec, tmp_path)
    try:
        assert sorted(lib.drives) == vtl.drive_elements
        assert lib.changer.inventory().find("RL0001") is not None
    finally:
        lib.close()
    forced = {**spec, "drives": [u + "?quirks=tgt" for u in vtl.drives]}
    lib = open_configured(forced, tmp_path)
    lib.close()
    with pytest.raises(LibraryConfigError):
        open_configured({"type": "scsi", "changer": vtl.changer}, tmp_path)
    with pytest.raises(ValueError, match="unknown options"):
        open_configured({**spec, "changer": vtl.changer + "?speed=fast"}, tmp_path)

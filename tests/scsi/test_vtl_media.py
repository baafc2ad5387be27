"""Cartridges coming and going on tgt's VTL: the mail slots with `tgtadm` as the operator, the
end of a small tape, and a cleaning cartridge's cycle."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.scsi import CleaningResult, ScsiMediaChanger, clean_drive
from drivers.tape import ElementType, Library

pytestmark = pytest.mark.slow


def changer_of(library: Library) -> ScsiMediaChanger:
    assert isinstance(library.changer, ScsiMediaChanger)
    return library.changer


def test_import_and_export_through_the_mail_slots(vtl, vtl_ops, library):
    ch = changer_of(library)
    mail = vtl.import_export[0]
    vtl_ops.operator_insert(Path(vtl.directory), "IMP001", mail)
    inv = ch.inventory()
    assert inv.by_address(mail).full and inv.by_address(mail).barcode == "IMP001"
    moved = ch.import_all(inv)
    assert moved == [("IMP001", mail, 1006)]
    inv = ch.inventory()
    assert inv.find("IMP001").address == 1006 and not inv.by_address(mail).full
    assert ch.export(1006) == mail
    assert ch.inventory().find("IMP001").address == mail
    vtl_ops.operator_remove(Path(vtl.directory), mail)
    inv = ch.inventory()
    assert not inv.by_address(mail).full and inv.find("IMP001") is None


def test_end_of_medium_on_a_small_tape(vtl, vtl_ops, library):
    """tgt signals early warning only after the write that crossed the capacity (NO SENSE +
    EOM, 00/00) and never refuses a write; the driver reports it as early warning."""
    ch = changer_of(library)
    mail = vtl.import_export[1]
    vtl_ops.operator_insert(Path(vtl.directory), "EOM001", mail, size_mb=1)
    ch.move(mail, 500)
    drive = library.drives[500]
    try:
        drive.load()
        record = bytes(65536)
        warnings = [drive.write_block(record) for _ in range(18)]
        # 1152 + n * (48 + 65536) passes 1 MiB at the 16th record
        assert warnings.index(True) == 15
        assert all(warnings[15:])
        assert drive.status().early_warning
        drive.write_filemarks(1)
        drive.rewind()
        assert sum(1 for _ in range(18) if drive.read_block(65536) == record) == 18
        assert drive.remaining_capacity() is None  # tgt has no LOG SENSE
        drive.unload()
    finally:
        ch.move(500, mail)
        vtl_ops.operator_remove(Path(vtl.directory), mail)


def test_cleaning_cycle(vtl, library):
    image = Path(vtl.directory) / "tapes" / "CLN001"
    before = image.read_bytes()
    result = clean_drive(library, 501)
    assert isinstance(result, CleaningResult)
    assert result.cleaned is False and "no cleaning semantics" in result.detail
    inv = library.changer.inventory()
    assert inv.find("CLN001").address == vtl.tapes["CLN001"]
    assert not inv.by_address(501).full
    assert image.read_bytes() == before  # nothing written to the cleaning cartridge
    assert not any(e.full for e in inv.of_type(ElementType.DRIVE))
